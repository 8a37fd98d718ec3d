"""The long fuzz run of the frame decoder (CI runs 1e5 inputs; this runs 2e6 by default).

Random byte strings and bit-flipped valid frames of every message type; counts any
exception that escapes the decoder and any corrupted frame delivered as valid (both
must be zero).  Writes benchmarks/results/fuzz_decoder.json.

    python benchmarks/fuzz_decoder.py [--inputs N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from firmware_bridge.codec import FrameDecoder
from firmware_bridge.vectors import fuzz_inputs, valid_payloads
from results_file import write_results

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=lambda text: int(float(text)), default=2_000_000,
                        help="how many inputs to feed the decoder (default 2e6)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "fuzz_decoder.json",
                        help="where the figures go (default benchmarks/results/fuzz_decoder.json)")
    args = parser.parse_args()
    n = args.inputs
    valid = valid_payloads()
    decoder = FrameDecoder()
    escaped, bad_delivered, delivered = 0, 0, 0
    started = time.perf_counter()
    for data in fuzz_inputs(n, np.random.default_rng(1), max_random=256, max_flips=5):
        try:
            for frame in decoder.feed(data):
                delivered += 1
                bad_delivered += frame.message.pack() not in valid
        except Exception:  # noqa: BLE001 - counting exactly this is the point
            escaped += 1
    doc = {"benchmark": "fuzz_decoder", "inputs": n, "seconds": round(time.perf_counter() - started, 1),
           "exceptions_escaped": escaped, "corrupted_frames_delivered": bad_delivered,
           "frames_delivered": delivered, "decoder": decoder.stats.to_dict(), "date": time.strftime("%Y-%m-%d")}
    write_results(doc, args.out)
    print(json.dumps(doc, indent=2))
    return 0 if escaped == 0 and bad_delivered == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
