"""LEGACY: an implicit-calibration cache for TensorRT <= 10 and DLA (IInt8EntropyCalibrator2 format).

TensorRT 10 deprecates implicit INT8 calibration; drsn-edge's TensorRT path is the
explicit Q/DQ ONNX (:mod:`edge.quantize.qdq`).  Older JetPacks (TensorRT 8.5/8.6) and
DLA builds that still want a calibrator can read this cache instead of calibrating
on the device: ``trtexec --onnx=model.onnx --int8 --calib=model.calib.cache``.

The file is what IInt8EntropyCalibrator2 writes: a header line
``TRT-<version>-EntropyCalibration2`` and one ``<tensor>: <scale>`` line per tensor,
the scale (dynamic range / 127) as the hexadecimal bits of an IEEE-754 float32.
Ranges come from the same calibration as the Q/DQ model's
(:func:`edge.quantize.qdq.tensor_ranges`), over every tensor of the graph, on the
same calibration windows.  TensorRT refuses a cache whose header names another
TensorRT version: pass the target's (``8601`` for 8.6.1).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from edge.quantize.qdq import tensor_ranges


def scale_hex(scale: float) -> str:
    """The 8 hex digits of a float32's bits, as TensorRT writes a scale."""
    return f"{struct.unpack('>I', struct.pack('>f', scale))[0]:08x}"


def hex_scale(text: str) -> float:
    return struct.unpack(">f", bytes.fromhex(text.strip()))[0]


def write_calibration_cache(onnx_path: str | Path, calibration: np.ndarray, out_path: str | Path,
                            trt_version: str = "8601", method: str = "entropy") -> Path:
    """Write the LEGACY calibration cache of ``onnx_path`` (see the module notes); returns its path."""
    if not trt_version.isdigit():
        raise ValueError(f"TensorRT version for the cache header must be digits like 8601, got {trt_version!r}")
    ranges = tensor_ranges(onnx_path, calibration, method)
    lines = [f"TRT-{trt_version}-EntropyCalibration2"]
    lines += [f"{name}: {scale_hex(max(r, 1e-12) / 127.0)}" for name, r in sorted(ranges.items())]
    out = Path(out_path)
    out.write_text("\n".join(lines) + "\n")
    return out


def read_calibration_cache(path: str | Path) -> tuple[str, dict[str, float]]:
    """(header, {tensor: dynamic range}) of a cache, as TensorRT would read it."""
    header, *rows = Path(path).read_text().splitlines()
    ranges = {}
    for row in rows:
        name, _, value = row.rpartition(":")
        ranges[name.strip()] = hex_scale(value) * 127.0
    return header, ranges
