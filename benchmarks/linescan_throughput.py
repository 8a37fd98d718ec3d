"""Line-scan throughput of the full gateway runtime: decode + tile + infer + decide, through a real pty.

The device simulator streams a belt of real X-ray test patches (640 px wide) as LINE
frames; the runtime cuts tiles, infers every tile's patches as one batch and decides.
Runs per bundle at 1x, 2x, 4x ... the nominal 1,250 lines/s until a tile misses its
deadline (a fail-safe decision, or one written past the budget), is shed or a frame is
lost: the highest clean multiple is the sustainable line rate (1,250 lines/s x 640 px
= 1x), with the latency tail at each rate.  Writes benchmarks/results/linescan_throughput.json.

    python benchmarks/linescan_throughput.py --bundles dist/castings-ov-int8 dist/castings-ort-fp32
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from results_file import write_results

HERE = Path(__file__).resolve().parent
NOMINAL_LINES_PER_S = 1250.0


def castings_belt(data: Path):
    """The belt these benchmarks stream: 200 bands of X-ray castings test patches across a 640 px detector."""
    from firmware_bridge.sources import belt_source

    return belt_source(data / "xray", "xray", "castings", "test", bands=200, seed=0)


def measure(bundle: str, data: Path, seconds: float, rate: float | None, threads: int,
            log_max_mb: float = 0.0, paced_reads: bool = True) -> dict:
    """One run of the runtime on the belt at ``rate`` x nominal; ``log_max_mb`` bounds its decision log (0: not);
    ``paced_reads`` False wakes the reader for every line (``--read-every-frame``)."""
    from edge.runtime.loop import RuntimeSettings
    from edge.runtime.simulated import run_with_simulator
    belt = castings_belt(data)
    with tempfile.TemporaryDirectory() as tmp:
        settings = RuntimeSettings(port="", log_path=str(Path(tmp) / "log.db"), http=None, threads=threads,
                                   queue_size=8, log_max_mb=log_max_mb, paced_reads=paced_reads)
        session = run_with_simulator(bundle, settings, belt, seconds, rate, loop=True)  # the belt for --seconds
        log_bytes = (Path(tmp) / "log.db").stat().st_size
    s = session.summary
    c = s["counters"]
    decided = c["decisions"] - c["deadline_fail_safe"] - c["overload_fail_safe"]
    from edge.bundle import open_bundle

    pre = open_bundle(bundle).manifest["preprocessing"]
    lanes = belt.rows.shape[1] // pre["patch_width"]
    lines_decided = decided / lanes * pre["tile_lines"]
    return {"rate": "max" if rate is None else rate, "seconds": s["seconds"], "decisions": c["decisions"],
            "decided": decided, "deadline_fail_safe": c["deadline_fail_safe"], "late_decisions": c["late_decisions"],
            "overload_fail_safe": c["overload_fail_safe"], "lost_frames": c["decoder_lost_frames"],
            "frames": c["data_frames"], "frames_streamed": session.frames_streamed, "latency": s["latency"],
            "stage_seconds": s["stages_s"], "thread_cpu_s": s["thread_cpu_s"],
            "pacing": {k: c[f"pacing_{k}"] for k in ("overruns", "late_wakeups", "backlogs")} | {
                "sleeps": c["paced_sleeps"]},
            "log": {"written": c["log_written"], "retired": c["log_retired"], "failed": c["log_failed"],
                    "file_bytes": log_bytes},
            "overhead_fraction_of_inference": s["overhead_fraction_of_inference"],
            "lines_per_s_decided": lines_decided / max(s["seconds"], 1e-9),
            "multiple_of_nominal": lines_decided / max(s["seconds"], 1e-9) / NOMINAL_LINES_PER_S}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundles", nargs="+", required=True, help="image bundles built for 32 px castings patches")
    parser.add_argument("--data", type=Path, default=None, help="data root (default ../shared/data)")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=1, help="inference threads (default 1)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "linescan_throughput.json")
    args = parser.parse_args()

    from edge.bundle import open_bundle
    from edge.data.catalog import default_data_root

    data = args.data or default_data_root()
    rows = []
    for bundle in args.bundles:
        m = open_bundle(bundle).manifest
        print(f"== {bundle}: {m['model']['family']} {m['precision']} on {m['backend']['name']}", flush=True)
        runs = []
        for multiple in (1, 2, 4, 8, 16, 32):
            r = measure(bundle, data, args.seconds, float(multiple), args.threads)
            # A decision written past the budget missed its deadline as surely as a fail-safe one did.
            r["clean"] = (r["deadline_fail_safe"] + r["overload_fail_safe"] + r["late_decisions"]
                          + r["lost_frames"]) == 0
            runs.append(r)
            print(f"   {multiple:>2}x: {r['decisions']} decisions, p99 {r['latency'].get('p99_ms', 0):.2f} ms, "
                  f"fail-safe {r['deadline_fail_safe'] + r['overload_fail_safe']}, late {r['late_decisions']}, "
                  f"lost {r['lost_frames']}, "
                  f"overhead {100 * (r['overhead_fraction_of_inference'] or 0):.0f}% of inference", flush=True)
            if not r["clean"]:
                break
        sustained = max((r["rate"] for r in runs if r["clean"]), default=0.0)
        rows.append({"bundle": bundle, "model": m["model"]["family"], "precision": m["precision"],
                     "backend": m["backend"]["name"], "budget_ms": m["runtime"]["budget_ms"],
                     "sustained_multiple": sustained, "runs": runs})
        print(f"   sustained: {sustained:g}x nominal ({sustained * NOMINAL_LINES_PER_S:.0f} lines/s x 640 px)", flush=True)
    doc = {"benchmark": "linescan_throughput", "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(),
           "detector": {"pixels": 640, "nominal_lines_per_s": NOMINAL_LINES_PER_S, "patch": 32}, "rows": rows}
    write_results(doc, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
