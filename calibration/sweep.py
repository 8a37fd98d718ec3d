"""The sweep: build every candidate through the normal build path, score it, time it, keep every figure.

1. Accuracy, once per bundle: the bundle is built by :func:`edge.export.build.build_bundle`
   (exactly what `build.py` does) and its backend scores the run's *validation*
   windows, clean and at every SNR asked (seeded noise, the same for every candidate).
   ``jobs`` bundles are built and scored in parallel.
2. Latency, once per candidate (bundle x threads x batch), alone: a fresh process
   (:mod:`calibration.probe`) pinned to its cores times the runtime's per-window path
   (manifest preprocessing + backend inference) in rounds after warm-up, and reports
   its peak RSS.  TensorRT candidates are timed only where TensorRT and a GPU exist;
   elsewhere they are listed as "measure on target" with the commands to run there.
3. Runtime overhead, once: the real runtime on a pty fed by the device simulator, so the
   budget choice counts what the runtime adds to inference (decode, assembly, decision,
   log, port write).

Every result is appended to ``results.jsonl`` as soon as it exists, so an interrupted
sweep resumes where it stopped.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from calibration.candidates import CalibrationError, Candidate, expand_grid
from calibration.pareto import choose_for_budget, pareto_front
from edge import durable
from edge.host import processor_name
from edge.run_files import read_run_files

LATENCY_INPUTS = 200   # validation windows the latency probe cycles through


@dataclass
class SweepSettings:
    runs: list[str]
    backends: list[str] = field(default_factory=lambda: ["openvino", "onnxruntime"])
    precisions: list[str] = field(default_factory=lambda: ["fp32", "int8"])
    threads: list[int] = field(default_factory=lambda: [1])
    batches: list[int] = field(default_factory=lambda: [1])
    calib_sizes: list[int] = field(default_factory=lambda: [256])
    calib_methods: list[str] = field(default_factory=lambda: ["minmax"])
    snrs: list = field(default_factory=lambda: [None, -4.0])
    noise_kind: str = "gaussian"
    noise_seed: int = 1234
    data: str | None = None
    jobs: int = 1
    rounds: int = 10
    per_round: int = 200
    prune_rates: list[float] = field(default_factory=lambda: [0.0])   # image runs: L1-pruned copies
    prune_epochs: int = 5             # fine-tuning epochs after pruning
    reference_eager: bool = True      # also time PyTorch eager FP32 (the naive choice; never chosen)
    overhead_ms: float | None = None  # None: measure it with the real runtime
    overhead_seconds: float = 20.0

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- results file

class ResultsLog:
    """``results.jsonl``: one JSON object per finished measurement, appended and flushed at once."""

    def __init__(self, path: Path):
        self.path = path
        self.records: list[dict] = []
        if path.exists():
            text = path.read_text()
            for line in text.splitlines():
                try:
                    self.records.append(json.loads(line))
                except json.JSONDecodeError:
                    pass   # the last line of an interrupted sweep: measured again
            if len(self.records) != len(text.splitlines()) or (text and not text.endswith("\n")):
                # Drop the cut record, so that new ones start on a line of their own.
                durable.write_atomically(path, "".join(json.dumps(r) + "\n" for r in self.records).encode())

    def find(self, kind: str, key: str) -> dict | None:
        return next((r for r in self.records if r["kind"] == kind and r["key"] == key), None)

    def add(self, record: dict) -> dict:
        self.records.append(record)
        with self.path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return record


# ---------------------------------------------------------------- phase 1: build and score

@functools.lru_cache(maxsize=4)
def _validation_inputs(run_dir: str, data: str | None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Raw validation inputs of a run (windows (N, L) or images (N, 1, H, W)), labels and config.

    Read once per run and process: every bundle of a run is scored on the same inputs (callers
    never modify them)."""
    from edge.train.runs import load_run

    run = load_run(run_dir)
    if run.config["preprocessing"].get("input") == "image":
        from edge.train.images import run_images

        x, y = run_images(run, "val", data)
    else:
        from edge.train.vibration import run_split_windows

        x, y = run_split_windows(run.config, "val", data_dir=data)
    return x, y, run.config


def _bundle_predictor(bundle_dir: Path):
    """The bundle's own backend; a TensorRT bundle's ONNX on ONNX Runtime CPU (the engine is built on target)."""
    from edge.backends import load_backend
    from edge.bundle import open_bundle
    from edge.export.onnx_export import onnxruntime_predictor

    bundle = open_bundle(bundle_dir)
    if bundle.manifest["backend"]["name"] == "tensorrt":
        return onnxruntime_predictor(bundle.path / bundle.manifest["model"]["files"]["model"]), "onnxruntime CPU (Q/DQ)"
    backend = load_backend(bundle, threads=1)
    return backend.infer, f"{backend.name} CPU"


def _eager_predictor(run_dir: str):
    import torch

    from edge.train.runs import load_run

    model = load_run(run_dir).load_model()

    @torch.no_grad()
    def predict(x: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(x)).numpy()
    return predict


def score_bundle(candidate: dict, bundles_dir: str, snrs: list, noise_kind: str, noise_seed: int,
                 data: str | None) -> dict:
    """Build one bundle (unless eager) and score it on the run's validation windows at every SNR."""
    import torch

    from edge.export.build import BuildOptions, build_bundle
    from edge.data.preprocess import model_input
    from edge.quantize.calibration import accuracy
    from edge.train.evaluate import noisy_copies, snr_key

    torch.set_num_threads(1)
    c = Candidate(**{k: v for k, v in candidate.items() if k in Candidate.__dataclass_fields__})
    record = {"kind": "accuracy", "key": c.bundle_key(), "candidate": c.to_dict()}
    started = time.monotonic()
    try:
        if c.backend == "pytorch":
            predict, measured_with, bundle_dir, size = _eager_predictor(c.run), "pytorch CPU", None, \
                (Path(c.run) / "model.pt").stat().st_size
        else:
            bundle_dir = Path(bundles_dir) / c.bundle_key()
            options = BuildOptions(target=c.backend, precision=c.precision, calib_size=c.calib_size or 256,
                                   calib_method=c.calib_method or "minmax", data=data)
            manifest = build_bundle(c.run, bundle_dir, options, log=lambda *_: None)
            size = sum((bundle_dir / name).stat().st_size for name in manifest["model"]["files"].values())
            predict, measured_with = _bundle_predictor(bundle_dir)
        raw, labels, config = _validation_inputs(c.run, data)
        normalization = config["preprocessing"]["normalization"]
        flat = raw.reshape(raw.shape[0], -1)     # noise at the SNR of each whole window or image
        by_snr = {snr_key(snr): accuracy(predict, model_input(x.reshape(raw.shape), normalization), labels, batch=64)
                  for snr, x in noisy_copies(flat, snrs, noise_seed, noise_kind)}
        record |= {"status": "ok", "bundle": str(bundle_dir) if bundle_dir else None, "model_bytes": size,
                   "accuracy_by_snr": by_snr, "accuracy": float(np.mean(list(by_snr.values()))),
                   "validation_windows": int(labels.shape[0]), "measured_with": measured_with}
    except Exception as exc:   # a candidate that cannot be built is a result, not the end of the sweep
        record |= {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
    record["seconds"] = round(time.monotonic() - started, 1)
    return record


# ---------------------------------------------------------------- phase 2: latency

def tensorrt_available() -> bool:
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        return False
    from edge.backends.base import BackendError
    from edge.backends.cuda_buffers import open_device

    try:
        open_device(0)
    except BackendError:
        return False
    return True


def probe_latency(candidate: Candidate, bundle: str | None, inputs: Path, rounds: int, per_round: int) -> dict:
    """Time one candidate in a fresh pinned process (:mod:`calibration.probe`)."""
    what = ["--bundle", bundle] if bundle else ["--run", candidate.run]
    cmd = [sys.executable, "-m", "calibration.probe", *what, "--inputs", str(inputs),
           "--threads", str(candidate.threads), "--batch", str(candidate.batch),
           "--rounds", str(rounds), "--per-round", str(per_round)]
    env = os.environ | {"OMP_NUM_THREADS": str(candidate.threads)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if done.returncode != 0:
        raise CalibrationError(f"latency probe failed for {candidate.label()}: {done.stderr.strip()[-800:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def on_target_commands(candidate: Candidate, bundle: str | None) -> list[str]:
    from edge.bundle import open_bundle
    from edge.compile.tensorrt import TrtBuildSettings, trtexec_command

    if not bundle:
        return []
    manifest = open_bundle(bundle).manifest
    engine = f"model.{candidate.precision}.engine"
    return [f"drsn-edge compile-trt --bundle {bundle}",
            trtexec_command(manifest, engine, TrtBuildSettings(precision=candidate.precision))
            + f" --shapes=window:{candidate.batch}x" + "x".join(str(d) for d in manifest["input"]["shape"][1:]),
            f"drsn-edge calibrate --bundle {bundle} --on-device"]


# ---------------------------------------------------------------- runtime overhead

def measure_runtime_overhead(bundle: str, inference_p99_ms: float, seconds: float, data: str | None,
                             run_dir: str) -> dict:
    """End-to-end p99 of the real runtime on ``bundle`` (simulator on a pty) minus its inference p99."""
    from calibration.on_device import measure_bundle

    measured = measure_bundle(bundle, seconds=seconds, data=data, run_dir=run_dir)
    e2e = measured["latency"]["p99_ms"]
    return {"kind": "overhead", "key": "runtime", "bundle": bundle, "end_to_end_p99_ms": e2e,
            "inference_p99_ms": inference_p99_ms, "overhead_ms": max(0.0, e2e - inference_p99_ms),
            "decisions": measured["counters"]["decisions"], "seconds": seconds}


# ---------------------------------------------------------------- the table

def device_description() -> dict:
    versions = {"python": platform.python_version()}
    for module in ("openvino", "onnxruntime", "torch", "nncf"):
        try:
            versions[module] = __import__(module).__version__
        except Exception:
            versions[module] = None
    import edge

    versions["drsn_edge"] = edge.__version__
    return {"cpu": processor_name(), "cores": os.cpu_count(), "machine": platform.machine(),
            "system": platform.platform(), "versions": versions}


def candidate_rows(candidates: list[Candidate], log: ResultsLog) -> list[dict]:
    """One row per candidate: its settings, accuracy, latency, size, or why a figure is missing."""
    rows = []
    for c in candidates:
        acc = log.find("accuracy", c.bundle_key()) or {}
        lat = log.find("latency", c.key()) or {}
        row = c.to_dict() | {"status": acc.get("status", "not measured")}
        if acc.get("status") == "ok":
            row |= {k: acc[k] for k in ("accuracy", "accuracy_by_snr", "model_bytes", "bundle", "measured_with")}
        elif acc:  # the build's own reason: its latency record only says it was skipped
            row["reason"] = acc.get("reason")
            lat = {}
        if lat.get("status") == "ok":
            row |= {k: lat[k] for k in ("p50_ms", "p99_ms", "p99_9_ms", "max_ms", "peak_rss_mb", "windows_per_s")}
        elif lat.get("status") == "measure on target":
            row |= {"status": "measure on target", "commands": lat["commands"]}
        elif lat:
            row |= {"status": lat["status"], "reason": lat.get("reason")}
        row["reference_only"] = c.backend == "pytorch"
        rows.append(row)
    return rows


def selectable(rows: list[dict]) -> list[dict]:
    """Rows that are deployable on a gateway and fully measured here."""
    return [r for r in rows if r["status"] == "ok" and "p99_ms" in r and not r["reference_only"]]


# ---------------------------------------------------------------- the sweep

def run_sweep(settings: SweepSettings, out: str | Path, progress: bool = True, log=print) -> dict:
    """Run (or resume) a sweep into ``out``; returns the calibration document (also in calibration.json)."""
    out = Path(out)
    for run in settings.runs:  # a mistyped or damaged run stops the sweep before anything is built or written
        read_run_files(run)
    out.mkdir(parents=True, exist_ok=True)
    backends = list(settings.backends) + (["pytorch"] if settings.reference_eager else [])
    runs, prune_notes = prepare_runs(settings, out, log)
    candidates, notes = expand_grid(runs, backends, settings.precisions, settings.threads,
                                    settings.batches, settings.calib_sizes, settings.calib_methods)
    notes = sorted(set(notes + prune_notes))
    results = ResultsLog(out / "results.jsonl")
    builds = {c.bundle_key(): c for c in candidates}
    todo_builds = [c for k, c in builds.items() if not results.find("accuracy", k)]
    trt_here = tensorrt_available()
    todo_timing = [c for c in candidates if not results.find("latency", c.key())]
    log(f"calibrate: {len(candidates)} candidates from {len(builds)} bundles; "
        f"{len(builds) - len(todo_builds)} bundles and {len(candidates) - len(todo_timing)} timings already in "
        f"{results.path}" + (f"; left out: {'; '.join(notes)}" if notes else ""))
    bar = tqdm(total=len(todo_builds) + len(todo_timing), desc="calibrate", unit="step", disable=not progress)

    args = (str(out / "bundles"), settings.snrs, settings.noise_kind, settings.noise_seed, settings.data)
    if settings.jobs > 1 and len(todo_builds) > 1:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=settings.jobs, mp_context=ctx) as pool:
            futures = [pool.submit(score_bundle, c.to_dict(), *args) for c in todo_builds]
            for future in as_completed(futures):
                _report_build(results.add(future.result()), bar)
    else:
        for c in todo_builds:
            _report_build(results.add(score_bundle(c.to_dict(), *args)), bar)

    inputs_dir = out / "inputs"
    inputs_dir.mkdir(exist_ok=True)
    for c in todo_timing:
        acc = results.find("accuracy", c.bundle_key())
        record = {"kind": "latency", "key": c.key(), "candidate": c.to_dict()}
        if acc["status"] != "ok":
            record |= {"status": "skipped", "reason": f"the bundle failed to build or score: {acc.get('reason')}"}
        elif c.backend == "tensorrt" and not trt_here:
            record |= {"status": "measure on target", "commands": on_target_commands(c, acc["bundle"])}
        else:
            inputs = _latency_inputs(c.run, inputs_dir, settings.data)
            try:
                record |= {"status": "ok"} | probe_latency(c, acc["bundle"], inputs, settings.rounds,
                                                          settings.per_round)
            except CalibrationError as exc:
                record |= {"status": "failed", "reason": str(exc)}
        results.add(record)
        bar.update(1)
        bar.set_postfix_str(f"{c.key()}: " + (f"p99 {record['p99_ms']:.3f} ms" if "p99_ms" in record
                                              else record["status"]))
    bar.close()

    overhead = _overhead(settings, results, candidates, log)
    return write_calibration(settings, candidates, results, overhead, notes, out)


def prepare_runs(settings: SweepSettings, out: Path, log) -> tuple[list[str], list[str]]:
    """The runs to sweep: each given run, and for image runs an L1-pruned, fine-tuned copy per prune rate
    (made once, under ``out/pruned``, and reused when the sweep resumes)."""
    runs, notes = [], []
    for run in settings.runs:
        for rate in settings.prune_rates:
            if not 0 <= rate < 1:
                raise CalibrationError(f"prune rates must be in [0, 1), got {rate}")
            if rate == 0:
                runs.append(str(run))
                continue
            config = json.loads((Path(run) / "config.json").read_text())
            if config["preprocessing"].get("input") != "image":
                notes.append(f"{Path(run).name}: pruning applies to image models; prune rate {rate:g} left out")
                continue
            target = out / "pruned" / f"{Path(run).name}-p{round(100 * rate)}"
            if not (target / "metrics.json").is_file():
                from edge.train.compression import prune_run

                log(f"calibrate: pruning {run} at {rate:g} and fine-tuning {settings.prune_epochs} epochs -> {target}")
                prune_run(run, target, "l1", 1, rate, settings.prune_epochs, data=settings.data, quiet=True)
            runs.append(str(target))
    return runs, notes


def _report_build(record: dict, bar) -> None:
    bar.update(1)
    text = f"{record['key']}: " + (f"{100 * record['accuracy']:.2f}%" if record["status"] == "ok"
                                   else record["reason"][:60])
    bar.set_postfix_str(text)


def _latency_inputs(run_dir: str, inputs_dir: Path, data: str | None) -> Path:
    path = inputs_dir / f"{Path(run_dir).name}.npy"
    if not path.exists():
        raw, _, _ = _validation_inputs(run_dir, data)
        picks = np.linspace(0, raw.shape[0] - 1, min(LATENCY_INPUTS, raw.shape[0])).astype(int)
        np.save(path, raw[picks])
    return path


def _overhead(settings: SweepSettings, results: ResultsLog, candidates: list[Candidate], log) -> dict:
    if settings.overhead_ms is not None:
        return {"overhead_ms": settings.overhead_ms, "source": "given with --overhead-ms"}
    done = results.find("overhead", "runtime")
    if done:
        return done | {"source": "measured with the real runtime"}
    timed = [(c, results.find("latency", c.key())) for c in candidates
             if c.backend in ("openvino", "onnxruntime") and c.threads == 1 and c.batch == 1]
    timed = [(c, r) for c, r in timed if r and r.get("status") == "ok"]
    if not timed:
        return {"overhead_ms": 0.0, "source": "not measured (no CPU bundle timed at 1 thread, batch 1)"}
    c, lat = min(timed, key=lambda cr: cr[1]["p99_ms"])
    bundle = results.find("accuracy", c.bundle_key())["bundle"]
    log(f"calibrate: measuring the runtime's own overhead with {c.bundle_key()} on a pty for "
        f"{settings.overhead_seconds:g} s")
    record = measure_runtime_overhead(bundle, lat["p99_ms"], settings.overhead_seconds, settings.data, c.run)
    return results.add(record) | {"source": "measured with the real runtime"}


def write_calibration(settings: SweepSettings, candidates: list[Candidate], results: ResultsLog, overhead: dict,
                      notes: list[str], out: Path) -> dict:
    from calibration.report import write_plot, write_report

    rows = candidate_rows(candidates, results)
    front = pareto_front(selectable(rows))
    doc = {
        "tool": "drsn-edge calibrate",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "device": device_description(),
        "settings": settings.to_dict(),
        "accuracy_definition": "mean validation accuracy over the SNR conditions "
                               + ", ".join("clean" if s is None else f"{s:g} dB" for s in settings.snrs)
                               + f" ({settings.noise_kind} noise); validation segments of each run's records",
        "latency_definition": "per call of the runtime's per-window path (manifest preprocessing + backend "
                              "inference) in a fresh process pinned to its cores, after warm-up",
        "runtime_overhead": overhead,
        "left_out": notes,
        "candidates": rows,
        "pareto_front": [r["key"] for r in front],
    }
    (out / "calibration.json").write_text(json.dumps(doc, indent=2) + "\n")
    write_plot(doc, out / "pareto.png")
    write_report(doc, out / "report.html", plot="pareto.png")
    return doc


def choose(doc: dict, budget_ms: float, margin: float = 0.2, min_accuracy: float | None = None,
           overhead_ms: float | None = None):
    """The budget choice on a calibration document (see :func:`calibration.pareto.choose_for_budget`).

    ``overhead_ms`` defaults to the runtime overhead the sweep measured; 0 asks for inference alone."""
    if overhead_ms is None:
        overhead_ms = doc["runtime_overhead"]["overhead_ms"]
    return choose_for_budget(selectable(doc["candidates"]), budget_ms, margin, overhead_ms, min_accuracy)


def build_command(row: dict, out: str) -> str:
    """The `build.py` line that makes the chosen candidate's bundle."""
    parts = ["python build.py", f"--run {row['run']}", f"--target {row['backend']}", f"--precision {row['precision']}"]
    if row.get("calib_size"):
        parts.append(f"--calib-size {row['calib_size']}")
    if row.get("calib_method"):
        parts.append(f"--calib-method {row['calib_method']}")
    parts.append(f"--out {out}")
    return " ".join(parts)
