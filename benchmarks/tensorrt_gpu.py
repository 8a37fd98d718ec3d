"""The TensorRT backend on an NVIDIA GPU: its CUDA copies, then its engines built and timed.

Run it on the Jetson or GPU bench (``pip install -e '.[tensorrt]'``; on a Jetson the
``jetson`` extra beside JetPack's TensorRT), with the bundles it will serve:

1. **The GPU**: name, compute capability, the driver's CUDA and the cuda-bindings' CUDA.
2. **CUDA copies**: for each bundle's input (a vibration window at batch 1, a line-scan
   tile's patches at the tile's batch), round trips through the backend's own page-locked
   buffers and stream, from a second thread as the runtime's decider does: every trip
   is checked byte for byte, and its time is the least any inference on this GPU pays.
3. **Engines** (TensorRT bundles, where TensorRT is installed): builds each engine as
   ``drsn-edge compile-trt`` does, then times the backend against ONNX Runtime on the
   CPU on the bundle's own ONNX, in interleaved rounds, and counts the decisions on
   which the two disagree.  Without TensorRT the JSON says so and why.

Inputs are the bundle's input shape filled with seeded noise, or ``--inputs FILE.npy``
(real preprocessed windows or patches).  Writes benchmarks/results/tensorrt_gpu.json.

    python benchmarks/tensorrt_gpu.py --bundle dist/drsn-trt-int8 --bundle dist/castings-w16-x4-ov-int8
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np

from calibration.latency import percentiles, time_interleaved
from edge.backends import load_backend
from edge.backends.base import BackendError
from edge.backends.cuda_buffers import CudaStream, HostDeviceBuffer, open_device
from edge.bundle import Bundle, open_bundle
from edge.compile.tensorrt import batch_profile
from edge.host import processor_name
from results_file import write_results

HERE = Path(__file__).resolve().parent


def tile_batch(manifest: dict) -> int:
    """Inputs per inference in the runtime: one window, or the patches across one detector line (the engine
    profile's optimum)."""
    return batch_profile(manifest["preprocessing"])[1]


def copy_round_trips(shape: tuple[int, ...], trips: int, seed: int) -> dict:
    """Host -> GPU -> host through one of the backend's buffers, on a thread other than the one that made it.

    Between the upload and the download the host array is zeroed (not timed), so a copy that did
    not happen either way shows as a wrong trip.
    """
    buffer, stream = HostDeviceBuffer(shape), CudaStream()
    rng = np.random.default_rng(seed)
    samples = rng.standard_normal((16, *shape)).astype(np.float32)
    times: list[float] = []
    wrong: list[int] = []

    def trip_all() -> None:
        for i in range(trips):
            x = samples[i % len(samples)]
            started = time.perf_counter()
            np.copyto(buffer.host, x)
            buffer.upload(stream)
            stream.synchronize()
            up = time.perf_counter() - started
            buffer.host.fill(0.0)
            started = time.perf_counter()
            buffer.download(stream)
            stream.synchronize()
            got = buffer.host.copy()
            times.append(up + time.perf_counter() - started)
            if not np.array_equal(got, x):
                wrong.append(i)

    worker = threading.Thread(target=trip_all, name="decider-like")
    worker.start()
    worker.join()
    nbytes = buffer.nbytes
    buffer.close()
    stream.close()
    return {"shape": list(shape), "bytes": nbytes, "trips": trips, "wrong": len(wrong),
            "latency": percentiles(times[min(50, trips // 10):])}


def engine_timing(bundle: Bundle, inputs: np.ndarray, rounds: int, per_round: int) -> dict:
    """Build the bundle's engine, time it beside ONNX Runtime on the same ONNX, count changed decisions."""
    from edge.compile.tensorrt import build_engine, device_build_settings, engine_path_for

    trt = bundle.manifest["tensorrt"]
    engine = engine_path_for(bundle.path, bundle.manifest)
    started = time.monotonic()
    built = build_engine(bundle.path / trt["onnx_file"], engine,   # as compile-trt builds it, with its defaults
                         device_build_settings(bundle.path, bundle.manifest))
    build_s = time.monotonic() - started
    gpu = load_backend(bundle)
    import onnxruntime as ort

    session = ort.InferenceSession(str(bundle.path / trt["onnx_file"]), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    runners = {"tensorrt": gpu.infer, "onnxruntime cpu": lambda x: session.run(None, {name: x})[0]}
    batch = tile_batch(bundle.manifest)
    stats = time_interleaved(runners, inputs, rounds=rounds, per_round=per_round, batch=batch)
    starts = range(0, inputs.shape[0] - batch + 1, batch)
    on_gpu = np.concatenate([gpu.infer(inputs[s:s + batch]) for s in starts])
    on_cpu = np.concatenate([runners["onnxruntime cpu"](inputs[s:s + batch]) for s in starts])
    changed = float(np.mean(on_gpu.argmax(1) != on_cpu.argmax(1)))
    gpu.close()
    return {"status": "ok", "build_seconds": round(build_s, 1), "build": built, "batch": batch,
            "latency": stats, "decisions_changed_vs_onnxruntime": changed, "compared": int(on_gpu.shape[0])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, action="append", required=True,
                        help="a bundle directory; repeat for several (TensorRT bundles also get an engine)")
    parser.add_argument("--inputs", type=Path, default=None,
                        help="a .npy of preprocessed inputs in the bundles' shape (default: seeded noise)")
    parser.add_argument("--trips", type=int, default=5000, help="copy round trips per bundle (5000)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--per-round", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "tensorrt_gpu.json",
                        help="where the figures go (default benchmarks/results/tensorrt_gpu.json)")
    args = parser.parse_args()

    try:
        device = open_device(0)
    except BackendError as exc:
        print(f"no GPU to measure: {exc}", file=sys.stderr)
        return 2
    print(f"GPU: {device.name} (compute {device.compute_capability}, {device.memory_mib} MiB), "
          f"driver CUDA {device.driver_cuda}, cuda-bindings CUDA {device.runtime_cuda}")
    have_trt = importlib.util.find_spec("tensorrt") is not None
    rows = {}
    for path in args.bundle:
        bundle = open_bundle(path)
        manifest = bundle.manifest
        shape = (tile_batch(manifest), *manifest["input"]["shape"][1:])
        copies = copy_round_trips(shape, args.trips, args.seed)
        lat = copies["latency"]
        print(f"{path.name}: {copies['trips']} round trips of {copies['bytes']} B {tuple(shape)}, "
              f"{copies['wrong']} wrong; p50 / p99 / max {lat['p50_ms']:.3f} / {lat['p99_ms']:.3f} / "
              f"{lat['max_ms']:.3f} ms")
        row = {"backend": manifest["backend"]["name"], "precision": manifest["precision"], "copies": copies}
        if manifest["backend"]["name"] != "tensorrt":
            row["engine"] = {"status": "not built", "why": f"a bundle for {manifest['backend']['name']}"}
        elif not have_trt:
            row["engine"] = {"status": "not built", "why": "TensorRT is not installed on this host"}
        else:
            if args.inputs:
                inputs = np.load(args.inputs).astype(np.float32)
            else:
                rng = np.random.default_rng(args.seed)
                inputs = rng.standard_normal((400 * shape[0], *shape[1:])).astype(np.float32)
            row["engine"] = engine_timing(bundle, inputs, args.rounds, args.per_round)
        print(f"  engine: {row['engine']['status']}" + (f" ({row['engine']['why']})" if "why" in row["engine"]
                                                         else ""))
        rows[path.name] = row
    doc = {"benchmark": "tensorrt_gpu", "date": time.strftime("%Y-%m-%d"), "gpu": device.to_dict(),
           "tensorrt": "installed" if have_trt else "not installed",
           "machine": {"cpu": processor_name(), "python": platform.python_version(), "numpy": np.__version__},
           "bundles": rows}
    write_results(doc, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
