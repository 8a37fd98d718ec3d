"""Line-scan reader pacing against waking for every line, side by side on one build.

The same bundle, belt and rates as ``linescan_throughput.py``; sessions alternate between
the paced reader (the default) and ``--read-every-frame``, the order swapped every other
round so that a drift in the machine's load is shared by both.  Per arm and rate: the
reader's and decider's CPU time per tile, the stage clocks per tile, the overhead
(everything but inference, as a fraction of inference), deadline misses, the latency
tail, the frames the device streamed (a device held back by a full kernel buffer would
stream fewer), and the time the host's hypervisor stole.  Writes
benchmarks/results/linescan_pacing_ab.json.

    python benchmarks/linescan_pacing_ab.py --bundle dist/castings-w16-distilled-ov-int8 --rounds 3 --seconds 15
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from linescan_throughput import measure  # noqa: E402 - the throughput benchmark's session, shared
from runtime_soak import stolen_seconds  # noqa: E402 - the soak's reading of the hypervisor's steal
from edge.cli.common import float_list  # noqa: E402
from results_file import write_results  # noqa: E402

ARMS = {"paced": True, "every_frame": False}
PATCHES_PER_TILE = 20  # 32 px patches across the belt's 640 px


def _session(bundle: str, data: Path, seconds: float, rate: float, paced: bool) -> dict:
    """One session, reduced to per-tile figures."""
    stolen = stolen_seconds()
    r = measure(bundle, data, seconds, rate, threads=1, paced_reads=paced)
    tiles = max(r["decisions"] / PATCHES_PER_TILE, 1)
    return {"rate": rate, "paced": paced, "decisions": r["decisions"],
            "fail_safe": r["deadline_fail_safe"] + r["overload_fail_safe"], "late": r["late_decisions"],
            "lost_frames": r["lost_frames"], "frames": r["frames"], "frames_streamed": r["frames_streamed"],
            "latency": r["latency"], "overhead_fraction_of_inference": r["overhead_fraction_of_inference"],
            "stage_ms_per_tile": {k: v * 1e3 / tiles for k, v in r["stage_seconds"].items()},
            "thread_cpu_ms_per_tile": {k: v * 1e3 / tiles for k, v in r["thread_cpu_s"].items()},
            "pacing": r["pacing"],
            "stolen_s": None if stolen is None else round(stolen_seconds() - stolen, 2)}


def _arm_summary(sessions: list[dict]) -> dict:
    """Medians over an arm's sessions at one rate, and its totals of misses and lost frames."""
    med = lambda f: float(np.median([f(s) for s in sessions]))  # noqa: E731
    return {"sessions": len(sessions),
            "reader_cpu_ms_per_tile": med(lambda s: s["thread_cpu_ms_per_tile"]["reader"]),
            "decider_cpu_ms_per_tile": med(lambda s: s["thread_cpu_ms_per_tile"]["decider"]),
            "decode_assemble_ms_per_tile": med(lambda s: s["stage_ms_per_tile"]["decode_assemble"]),
            "overhead_fraction_of_inference": med(lambda s: s["overhead_fraction_of_inference"]),
            "p99_ms": med(lambda s: s["latency"].get("p99_ms", 0.0)),
            "fail_safe": sum(s["fail_safe"] for s in sessions), "late": sum(s["late"] for s in sessions),
            "lost_frames": sum(s["lost_frames"] for s in sessions),
            "frames_streamed": sum(s["frames_streamed"] for s in sessions),
            "stolen_s": sum(s["stolen_s"] or 0.0 for s in sessions)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True, help="an image bundle built for 32 px castings patches")
    parser.add_argument("--data", type=Path, default=None, help="data root (default ../shared/data)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rates", type=float_list, default="1,2", help="multiples of 1,250 lines/s (default 1,2)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "linescan_pacing_ab.json")
    args = parser.parse_args()

    from edge.data.catalog import default_data_root

    data = args.data or default_data_root()
    rates = args.rates
    sessions = []
    for k in range(args.rounds):
        order = list(ARMS) if k % 2 == 0 else list(reversed(ARMS))
        for rate in rates:
            for arm in order:
                s = _session(args.bundle, data, args.seconds, rate, ARMS[arm]) | {"arm": arm, "round": k + 1}
                sessions.append(s)
                print(f"round {k + 1}, {rate:g}x, {arm:>11}: reader {s['thread_cpu_ms_per_tile']['reader']:.2f} ms CPU "
                      f"per tile, overhead {100 * (s['overhead_fraction_of_inference'] or 0):.0f}% of inference, "
                      f"p99 {s['latency'].get('p99_ms', 0):.1f} ms, fail-safe {s['fail_safe']}, late {s['late']}, "
                      f"frames {s['frames']}/{s['frames_streamed']}, stolen {s['stolen_s']} s", flush=True)
    summary = {f"{rate:g}x": {arm: _arm_summary([s for s in sessions if s["arm"] == arm and s["rate"] == rate])
                              for arm in ARMS} for rate in rates}
    for rate, arms in summary.items():
        p, e = arms["paced"], arms["every_frame"]
        ratio = p["reader_cpu_ms_per_tile"] / e["reader_cpu_ms_per_tile"]
        print(f"{rate}: reader CPU per tile {p['reader_cpu_ms_per_tile']:.2f} ms paced against "
              f"{e['reader_cpu_ms_per_tile']:.2f} ms ({ratio:.2f}x); "
              f"overhead {100 * p['overhead_fraction_of_inference']:.0f}% against "
              f"{100 * e['overhead_fraction_of_inference']:.0f}%; frames streamed {p['frames_streamed']} against "
              f"{e['frames_streamed']}")
    doc = {"benchmark": "linescan_pacing_ab", "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(),
           "bundle": args.bundle, "seconds": args.seconds, "rounds": args.rounds,
           "protocol": "one build; paced reader and --read-every-frame alternated, order swapped every other round; "
                       "medians per arm and rate", "summary": summary, "sessions": sessions}
    write_results(doc, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
