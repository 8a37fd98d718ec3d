"""TensorRT engine builder.  It runs on the target: engines are tied to the GPU and TensorRT version.

:func:`plan_build` turns build settings into the concrete builder choices (flags,
DLA, workspace, optimisation profile) without TensorRT, so those choices are
testable anywhere; :func:`build_engine` applies the plan through the real
``tensorrt`` Python API; :func:`trtexec_command` is the equivalent ``trtexec``
line, recorded in the manifest and shown when TensorRT is not available.
Never imports torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from edge import durable
from edge.errors import DrsnEdgeError

PRECISIONS = ("fp32", "fp16", "int8")


class TensorRtBuildError(DrsnEdgeError):
    """TensorRT or CUDA missing, or the settings cannot be honoured on this device."""


@dataclass
class TrtBuildSettings:
    precision: str = "fp16"          # int8 expects a Q/DQ ONNX (explicit quantization)
    workspace_mb: int = 256
    timing_cache: str | None = "timing.cache"
    dla_core: int | None = None      # Jetson AGX/NX only; Orin Nano has no DLA
    gpu_fallback: bool = True        # layers DLA cannot run go to the GPU
    batch: tuple[int, int, int] = (1, 1, 8)   # min, opt, max of the dynamic batch axis
    input_name: str = "window"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise TensorRtBuildError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.workspace_mb < 16:
            raise TensorRtBuildError(f"workspace of {self.workspace_mb} MiB is too small (>= 16)")
        lo, opt, hi = self.batch
        if not 1 <= lo <= opt <= hi:
            raise TensorRtBuildError(f"batch profile must satisfy 1 <= min <= opt <= max, got {self.batch}")
        if self.dla_core is not None and self.dla_core < 0:
            raise TensorRtBuildError(f"DLA core must be >= 0, got {self.dla_core}")
        if self.dla_core is not None and self.precision == "fp32":
            raise TensorRtBuildError("DLA runs only FP16 or INT8; choose --precision fp16 or int8")

    def to_dict(self) -> dict:
        return asdict(self)


#: Detector widths a line-scan engine serves: the runtime's expected width (``drsn-edge run --pixels``,
#: 640) is the profile's optimum, and lines up to 2,048 pixels fit its maximum.
LINE_PIXELS_OPT, LINE_PIXELS_MAX = 640, 2048


def batch_profile(preprocessing: dict) -> tuple[int, int, int]:
    """The batch sizes (min, opt, max) an engine must accept for a bundle's input.

    A vibration window is decided alone (up to 8 for offline scoring).  A line-scan tile's
    patches are decided together, one per patch width across the detector line: 20 on a
    640-pixel line of 32-pixel patches.  An engine refuses a batch beyond its maximum.
    """
    width = preprocessing.get("patch_width")
    if not width:
        return (1, 1, 8)
    return (1, max(1, LINE_PIXELS_OPT // width), max(1, LINE_PIXELS_MAX // width))


@dataclass
class BuildPlan:
    """The builder choices for one TensorRT version and device."""

    flags: list[str] = field(default_factory=list)       # BuilderFlag names
    strongly_typed: bool = False                         # NetworkDefinitionCreationFlag.STRONGLY_TYPED
    dla_core: int | None = None
    notes: list[str] = field(default_factory=list)


def plan_build(settings: TrtBuildSettings, trt_version: str, dla_cores_available: int) -> BuildPlan:
    """Choose flags for ``settings`` on a TensorRT ``trt_version`` with ``dla_cores_available`` DLA cores."""
    major, minor = (int(p) for p in trt_version.split(".")[:2])
    if (major, minor) < (8, 6):
        raise TensorRtBuildError(f"TensorRT {trt_version} is too old; drsn-edge needs 8.6 (JetPack 5) or newer")
    plan = BuildPlan()
    if settings.precision == "int8":
        if major >= 10:
            # Explicit quantization: the Q/DQ nodes carry every scale; a strongly typed network
            # keeps TensorRT from re-choosing precisions around them.
            plan.strongly_typed = True
            plan.notes.append("INT8 from Q/DQ scales, strongly typed network")
        else:
            plan.flags.append("INT8")
            plan.notes.append("TensorRT 8.6: INT8 flag with the Q/DQ scales of the ONNX (no calibrator)")
    if settings.precision == "fp16" or (settings.precision == "int8" and major < 10):
        plan.flags.append("FP16")
    if settings.dla_core is not None:
        if dla_cores_available == 0:
            if not settings.gpu_fallback:
                raise TensorRtBuildError("this device has no DLA core and GPU fallback is off")
            plan.notes.append("no DLA core on this device: building for the GPU")
        elif settings.dla_core >= dla_cores_available:
            raise TensorRtBuildError(f"DLA core {settings.dla_core} requested, this device has {dla_cores_available}")
        else:
            plan.dla_core = settings.dla_core
            if plan.strongly_typed:
                plan.strongly_typed = False  # DLA needs precision flags, not a strongly typed network
                plan.flags.append("INT8")
                plan.flags.append("FP16")
            if settings.gpu_fallback:
                plan.flags.append("GPU_FALLBACK")
    return plan


def engine_path_for(bundle_path: str | Path, manifest: dict) -> Path:
    """Where the engine built from a bundle lives: beside the bundle, whose own files stay as signed.

    The name follows the bundle's real directory, not a link to it (a gateway's ``current``
    moves at every install and rollback), and the ONNX the engine is built from: an engine
    left from another model is never loaded for this one; the runtime asks for a build instead.
    """
    bundle_path = Path(bundle_path).resolve()
    trt = manifest["tensorrt"]
    onnx = manifest["files"][trt["onnx_file"]]["sha256"][:12]
    return bundle_path.parent / f"{bundle_path.name}.{onnx}.{trt['engine_file']}"


def device_build_settings(bundle_path: str | Path, manifest: dict, workspace_mb: int = 256,
                          dla_core: int | None = None, gpu_fallback: bool = True, timing_cache: str | None = None,
                          max_batch: int | None = None) -> TrtBuildSettings:
    """The settings ``drsn-edge compile-trt`` builds a bundle's engine with: the bundle's own, with this
    device's choices over them; the timing cache beside the bundle unless named, and the batch profile's
    maximum raised to ``max_batch`` for a wider detector line."""
    recorded = manifest["tensorrt"]["build_settings"]
    lo, opt, hi = recorded["batch"]
    return TrtBuildSettings(**(recorded | {
        "workspace_mb": workspace_mb, "dla_core": dla_core, "gpu_fallback": gpu_fallback,
        "timing_cache": timing_cache or str(Path(bundle_path).parent / "timing.cache"),
        "batch": (lo, opt, max(opt, max_batch or hi))}))


def trtexec_command(manifest: dict, engine_path: str | Path, settings: TrtBuildSettings | None = None) -> str:
    """The equivalent ``trtexec`` line for the bundle's ONNX."""
    settings = settings or TrtBuildSettings(**manifest.get("tensorrt", {}).get("build_settings", {}))
    onnx_name = manifest.get("tensorrt", {}).get("onnx_file", "model.onnx")
    shape = "x".join(str(d) for d in manifest["input"]["shape"][1:])
    lo, opt, hi = settings.batch
    name = settings.input_name
    parts = ["trtexec", f"--onnx={onnx_name}", f"--saveEngine={engine_path}",
             f"--minShapes={name}:{lo}x{shape}", f"--optShapes={name}:{opt}x{shape}",
             f"--maxShapes={name}:{hi}x{shape}", f"--memPoolSize=workspace:{settings.workspace_mb}M"]
    if settings.precision == "fp16":
        parts.append("--fp16")
    elif settings.precision == "int8":
        parts.append("--stronglyTyped")
    if settings.timing_cache:
        parts.append(f"--timingCacheFile={settings.timing_cache}")
    if settings.dla_core is not None:
        parts.append(f"--useDLACore={settings.dla_core}")
        if settings.gpu_fallback:
            parts.append("--allowGPUFallback")
    return " ".join(parts)


def build_engine(onnx_path: str | Path, engine_path: str | Path, settings: TrtBuildSettings) -> dict:
    """Build and save an engine with the real TensorRT API; returns what was built, for the manifest."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise TensorRtBuildError(
            "TensorRT is not installed here. Engines are built on the target: on a Jetson, "
            "`apt install python3-libnvinfer` and a venv with --system-site-packages; on an x86 GPU host, "
            "pip install 'drsn-edge[tensorrt]'. Or run there: "
            + trtexec_command({"input": {"shape": ["N", "..."]}, "tensorrt": {"onnx_file": str(onnx_path)}},
                              engine_path, settings)) from exc
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    if builder is None:
        raise TensorRtBuildError("no usable CUDA device for TensorRT here; build on the target GPU")
    plan = plan_build(settings, trt.__version__, getattr(builder, "num_DLA_cores", 0))
    creation = 0
    if int(trt.__version__.split(".")[0]) < 10:
        creation |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if plan.strongly_typed:
        creation |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(creation)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TensorRtBuildError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mb << 20)
    for flag in plan.flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if plan.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = plan.dla_core
    cache = None
    if settings.timing_cache:
        cache_path = Path(settings.timing_cache)
        cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    shape = tuple(network.get_input(0).shape)[1:]
    lo, opt, hi = settings.batch
    profile.set_shape(network.get_input(0).name, (lo, *shape), (opt, *shape), (hi, *shape))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TensorRtBuildError("TensorRT failed to build the engine; see the messages above")
    durable.write_atomically(engine_path, bytes(serialized))  # an interrupted build leaves no torn engine
    if cache is not None:
        durable.write_atomically(settings.timing_cache, bytes(config.get_timing_cache().serialize()))
    return {"tensorrt": trt.__version__, "plan": asdict(plan), "settings": settings.to_dict(),
            "engine": str(engine_path)}
