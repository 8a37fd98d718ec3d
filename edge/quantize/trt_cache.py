"""LEGACY: an implicit-calibration cache for TensorRT <= 10 and DLA (IInt8EntropyCalibrator2 format).

TensorRT 10 deprecates implicit INT8 calibration; drsn-edge's TensorRT path is the
explicit Q/DQ ONNX (:mod:`edge.quantize.qdq`).  Older JetPacks (TensorRT 8.5/8.6) and
DLA builds that still want a calibrator can read this cache instead of calibrating
on the device: ``trtexec --onnx=model.onnx --int8 --calib=model.calib.cache``.

The file is what IInt8EntropyCalibrator2 writes: a header line
``TRT-<version>-EntropyCalibration2`` and one ``<tensor>: <scale>`` line per tensor,
the scale (dynamic range / 127) as the hexadecimal bits of an IEEE-754 float32.
Ranges come from ONNX Runtime's calibrators over every tensor of the graph, on the
same calibration windows as the Q/DQ model.  TensorRT refuses a cache whose header
names another TensorRT version: pass the target's (``8601`` for 8.6.1).
"""

from __future__ import annotations

import contextlib
import io
import struct
import tempfile
from pathlib import Path

import numpy as np

from edge.quantize.qdq import CALIBRATION_METHODS, CalibrationReader


def scale_hex(scale: float) -> str:
    """The 8 hex digits of a float32's bits, as TensorRT writes a scale."""
    return f"{struct.unpack('>I', struct.pack('>f', scale))[0]:08x}"


def hex_scale(text: str) -> float:
    return struct.unpack(">f", bytes.fromhex(text.strip()))[0]


def tensor_ranges(onnx_path: str | Path, calibration: np.ndarray, method: str = "entropy") -> dict[str, float]:
    """Symmetric dynamic range (max |x|) of every tensor of the graph, calibrated on ``calibration``."""
    import onnx
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}, got {method!r}")
    input_name = onnx.load(str(onnx_path)).graph.input[0].name
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        calibrator = create_calibrator(
            str(onnx_path), op_types_to_calibrate=None, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method={"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                              "entropy": CalibrationMethod.Entropy}[method],
            extra_options={"symmetric": True})
        calibrator.collect_data(CalibrationReader(calibration, input_name))
        data = calibrator.compute_data()
    ranges = {}
    for name, value in data.data.items():
        low, high = value.range_value
        ranges[name] = float(max(np.abs(low).max(), np.abs(high).max()))
    return ranges


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
