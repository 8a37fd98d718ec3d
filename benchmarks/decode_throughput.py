"""Frame decoding speed on one core, as a multiple of the highest real rates we serve.

Streams are built from real data: CWRU 105.mat with its three accelerometers (drive
end, fan end, base) as int16 SAMPLES at 12 kHz, and GDXray casting patches tiled
across a 1,024-pixel, 16-bit line at 1,250 lines/s.  Each stream is encoded once,
then decoded in 4 KiB reads (what a serial read returns) several times; the median
is reported.  Target: at least 20x real time for both.

    python benchmarks/decode_throughput.py
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from edge.data.catalog import default_data_root
from edge.data.cwru import read_cwru_mat
from edge.host import processor_name
from firmware_bridge.codec import FrameDecoder, encode_frame
from firmware_bridge.protocol import Line, Samples
from results_file import write_results

HERE = Path(__file__).resolve().parent
TARGET = 20.0


def vibration_stream(data: Path, seconds: float) -> tuple[bytes, int, float]:
    """(wire bytes, frames, real seconds) of 3-axis int16 SAMPLES at 12 kHz from 105.mat."""
    axes = [read_cwru_mat(data / "cwru" / "105.mat", channel=ch)[0] for ch in ("DE", "FE", "BA")]
    x = np.stack(axes, axis=1)
    scale = float(np.float32(np.abs(x).max() / 32000))
    q = np.round(x / scale).astype(np.int16)
    n = int(seconds * 12000) // 120 * 120
    q = np.resize(q, (n, 3)) if n > q.shape[0] else q[:n]
    frames = [encode_frame(Samples(q[i:i + 120], scale), k, k * 10_000) for k, i in enumerate(range(0, n, 120))]
    return b"".join(frames), len(frames), n / 12000


def linescan_stream(data: Path, seconds: float) -> tuple[bytes, int, float]:
    """(wire bytes, frames, real seconds) of 1,024-px 16-bit LINEs at 1,250 lines/s from casting patches."""
    from PIL import Image

    files = sorted((data / "xray" / "castings" / "test").glob("class_*/*.jpg"))[:64]
    patches = [np.asarray(Image.open(p).convert("L"), dtype=np.uint16) for p in files]
    bands = [np.concatenate(patches[i:i + 32], axis=1) for i in range(0, 64, 32)]  # 32 x 32 px = 1,024
    belt = np.concatenate(bands, axis=0)
    belt = (belt << 8) | (belt >> 0)  # 8-bit patches spread over 16 bits
    lines = int(seconds * 1250)
    frames = [encode_frame(Line(belt[i % belt.shape[0]], 16), i, i * 800, i) for i in range(lines)]
    return b"".join(frames), lines, lines / 1250


def decode_seconds(stream: bytes, frames: int, chunk: int = 4096) -> float:
    decoder = FrameDecoder()
    started = time.perf_counter()
    got = 0
    for i in range(0, len(stream), chunk):
        got += len(decoder.feed(stream[i:i + chunk]))
    elapsed = time.perf_counter() - started
    if got != frames or decoder.stats.rejected:
        raise RuntimeError(f"decoded {got} of {frames} frames, {decoder.stats.rejected} rejected")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None,
                        help="the shared data folder (default: the bundled one) holding cwru/ and xray/castings/")
    parser.add_argument("--seconds", type=float, default=8.0, help="real seconds of each stream (default 8)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "decode_throughput.json",
                        help="where the figures go (default benchmarks/results/decode_throughput.json)")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    data = args.data or default_data_root()
    results = {}
    for name, build, real_rate in (("vibration_3axis_int16_12kHz", vibration_stream, "12,000 samples/s x 3 axes"),
                                   ("linescan_1024px_16bit_1250lps", linescan_stream, "1,250 lines/s x 1,024 px")):
        stream, frames, real_s = build(data, args.seconds)
        runs = [decode_seconds(stream, frames) for _ in range(7)]
        t = statistics.median(runs)
        results[name] = {
            "real_rate": real_rate, "stream_bytes": len(stream), "frames": frames, "real_seconds": real_s,
            "decode_seconds_runs": [round(r, 5) for r in runs], "decode_seconds_median": round(t, 5),
            "mb_per_s": round(len(stream) / t / 1e6, 1), "frames_per_s": round(frames / t),
            "real_time_multiple": round(real_s / t, 1), "target_multiple": TARGET,
            "meets_target": real_s / t >= TARGET,
        }
    doc = {"benchmark": "decode_throughput", "cores": 1, "chunk_bytes": 4096,
           "machine": {"cpu": processor_name(), "python": platform.python_version()},
           "date": time.strftime("%Y-%m-%d"), "results": results}
    write_results(doc, args.out)
    print(f"{'stream':<32}{'MB/s':>8}{'frames/s':>11}{'x real time':>13}  target {TARGET:g}x")
    for name, r in results.items():
        print(f"{name:<32}{r['mb_per_s']:>8}{r['frames_per_s']:>11}{r['real_time_multiple']:>13}  "
              f"{'met' if r['meets_target'] else 'MISSED'}")
    return 0 if all(r["meets_target"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
