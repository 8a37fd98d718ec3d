"""The candidates of a sweep: which run, in which precision, on which backend, how many threads, what batch.

A candidate is what a plant engineer could deploy.  Several candidates share one
bundle (threads and batch size are runtime settings, not build settings), so
bundles are built and scored once per :meth:`Candidate.bundle_key`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from edge.errors import DrsnEdgeError

BACKENDS = ("openvino", "onnxruntime", "tensorrt", "pytorch")
PRECISIONS = ("fp32", "fp16", "int8")
CALIB_METHODS = ("minmax", "percentile", "entropy")


class CalibrationError(DrsnEdgeError):
    """A sweep that cannot run as asked."""


@dataclass(frozen=True)
class Candidate:
    run: str
    backend: str
    precision: str
    threads: int = 1
    batch: int = 1
    calib_size: int | None = None     # INT8 only
    calib_method: str | None = None   # INT8 Q/DQ only (ONNX Runtime, TensorRT); NNCF chooses its own ranges

    @property
    def model(self) -> str:
        return Path(self.run).name

    def bundle_key(self) -> str:
        """What is built: the same key means the same bundle."""
        parts = [self.model, self.backend, self.precision]
        if self.calib_size:
            parts.append(f"c{self.calib_size}")
        if self.calib_method:
            parts.append(self.calib_method)
        return "-".join(parts)

    def key(self) -> str:
        """What is timed: the bundle under one runtime setting."""
        return f"{self.bundle_key()}-t{self.threads}-b{self.batch}"

    def label(self) -> str:
        calib = f" calib {self.calib_size}{'/' + self.calib_method if self.calib_method else ''}" \
            if self.calib_size else ""
        return f"{self.model} {self.backend} {self.precision}{calib}, {self.threads} thread(s), batch {self.batch}"

    def to_dict(self) -> dict:
        return asdict(self) | {"key": self.key(), "bundle_key": self.bundle_key()}


def expand_grid(runs: list[str], backends: list[str], precisions: list[str], threads: list[int],
                batches: list[int], calib_sizes: list[int], calib_methods: list[str]) -> tuple[list[Candidate], list[str]]:
    """Every meaningful combination, and a note for each combination left out (and why)."""
    for name, values, known in (("backend", backends, BACKENDS), ("precision", precisions, PRECISIONS),
                                ("calibration method", calib_methods, CALIB_METHODS)):
        unknown = [v for v in values if v not in known]
        if unknown:
            raise CalibrationError(f"unknown {name} {', '.join(unknown)}; choose from {', '.join(known)}")
    if not runs:
        raise CalibrationError("no runs to calibrate: pass --runs runs/A runs/B ...")
    if min(threads + batches + calib_sizes, default=1) < 1:
        raise CalibrationError("threads, batch sizes and calibration sizes must be at least 1")
    names = [Path(r).name for r in runs]
    if len(set(names)) != len(names):
        raise CalibrationError(f"two runs share a directory name ({', '.join(names)}); candidates are named by it")
    out: list[Candidate] = []
    notes: list[str] = []
    for run in runs:
        for backend in backends:
            for precision in precisions:
                if backend == "pytorch" and precision != "fp32":
                    notes.append(f"pytorch {precision}: the eager reference runs in fp32 only")
                    continue
                if backend == "onnxruntime" and precision == "fp16":
                    notes.append("onnxruntime fp16: ONNX Runtime's CPU provider has no FP16 kernels")
                    continue
                builds = [Candidate(str(run), backend, precision)]
                if precision == "int8":
                    methods = calib_methods if backend in ("onnxruntime", "tensorrt") else [None]
                    builds = [replace(builds[0], calib_size=size, calib_method=method)
                              for size in calib_sizes for method in methods]
                for build in builds:
                    out += [replace(build, threads=t, batch=b) for t in threads for b in batches]
    seen: dict[str, Candidate] = {}
    for c in out:
        seen.setdefault(c.key(), c)
    return list(seen.values()), sorted(set(notes))
