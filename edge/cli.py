"""The ``drsn-edge`` console script.

Each subcommand is a thin layer over a library call, so everything the CLI does can
be done from Python too.  Errors drsn-edge raises on purpose are printed as one clear
line (exit status 2), never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from edge.errors import DataError, DrsnEdgeError
from firmware_bridge.transport import PortError

EPILOG_TRAIN = """\
examples:
  drsn-edge train --model drsn1d-cw --data ../shared/data/cwru --out runs/drsn
  drsn-edge train --model resnet1d --snr-train none --epochs 10 --out runs/plain
  drsn-edge train --window 1024 --loads 0 --width 8 --depth 1 --out runs/tiny

The run directory holds model.pt (plain state dict), config.json, split.json and
metrics.json.  Each record is split in time: the first 70% trains, the next 15%
validates (model selection), the last 15% is kept for `drsn-edge evaluate`, with a
window-long gap between segments so no window crosses a split.
"""

EPILOG_EVALUATE = """\
examples:
  drsn-edge evaluate --run runs/drsn
  drsn-edge evaluate --run runs/drsn --snr -4,0,none --json
  drsn-edge evaluate --run runs/drsn --data /data/CWRU --loads 3

Records the run trained on (recognised by content hash) contribute only their
held-out test segment; records it never saw (another load, another copy) contribute
all their windows.  Noise is white Gaussian at each SNR, seeded, so every model is
scored on the same noisy windows.
"""


def _checked(kind, ok, message: str):
    """An argparse ``type`` that converts with ``kind`` and refuses values failing ``ok``."""
    def convert(value: str):
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
        if not ok(number):
            raise argparse.ArgumentTypeError(message)
        return number
    return convert


_positive = _checked(int, lambda n: n >= 1, "must be a positive integer")
_threads = _checked(int, lambda n: n >= 1, "threads must be >= 1")
_probability = _checked(float, lambda p: 0.0 <= p < 1.0, "a probability in [0, 1)")


def _range_text(snr_range: tuple[float, float] | None) -> str:
    return "none" if snr_range is None else f"{snr_range[0]:g}:{snr_range[1]:g}"


def _snr_text(snr: float | None) -> str:
    return "none" if snr is None else f"{snr:g}"


def _add_train(sub: argparse._SubParsersAction) -> None:
    from edge.models import MODELS
    from edge.train.trainer import TrainSettings

    defaults = TrainSettings()

    p = sub.add_parser("train", help="train a vibration model on CWRU and write a run directory",
                       description="Train a DRSN (or the plain ResNet-1D baseline) on CWRU bearing data.",
                       epilog=EPILOG_TRAIN, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="drsn1d-cw", choices=sorted(MODELS),
                   help="network: drsn1d-cw (channel-wise thresholds, default), drsn1d-cs (shared), "
                        "sarsn1d (self-adaptive slope), resnet1d (no shrinkage baseline), "
                        "dca-cnn (time + wavelet branches fused by DCA, a literature baseline)")
    p.add_argument("--dataset", default="cwru", choices=["cwru"], help="data set (default cwru)")
    p.add_argument("--data", type=Path, default=None,
                   help="folder of CWRU .mat files (default: $DRSN_EDGE_DATA/cwru or ../shared/data/cwru)")
    p.add_argument("--out", type=Path, required=True, help="run directory to write, e.g. runs/drsn")
    p.add_argument("--loads", default="0,1,2", help="motor loads in hp, comma-separated (default 0,1,2)")
    p.add_argument("--channel", default="DE", choices=["DE", "FE", "BA"], help="accelerometer (default DE)")
    p.add_argument("--rate", type=_positive, default=12000, help="common sampling rate in Hz (default 12000)")
    p.add_argument("--window", type=_positive, default=2048, help="window length in samples (default 2048)")
    p.add_argument("--snr-train", default=_range_text(defaults.snr_train),
                   help="noise augmentation: uniform SNR range LO:HI in dB, or 'none' "
                        f"(default {_range_text(defaults.snr_train)})")
    p.add_argument("--clean-fraction", type=float, default=defaults.clean_fraction,
                   help=f"share of each batch kept clean when augmenting (default {defaults.clean_fraction})")
    p.add_argument("--noise", default="gaussian", choices=["gaussian", "pink", "laplacian"],
                   help="noise kind for augmentation (default gaussian)")
    p.add_argument("--speed-jitter", type=float, default=defaults.speed_jitter,
                   help="stretch training windows as if the shaft turned up to this fraction faster or slower; "
                        f"the motor load changes the speed (default {defaults.speed_jitter}, 0 = off)")
    p.add_argument("--val-snr", default=",".join(_snr_text(v) for v in defaults.val_snrs),
                   help="the epoch kept is the best mean validation accuracy over these SNRs "
                        f"(default {','.join(_snr_text(v) for v in defaults.val_snrs)}; clean only without noise "
                        "augmentation)")
    p.add_argument("--epochs", type=_positive, default=30, help="epochs (default 30)")
    p.add_argument("--steps", type=_positive, default=100, help="batches per epoch (default 100)")
    p.add_argument("--batch-size", type=_positive, default=64, help="windows per batch (default 64)")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate, one-cycle schedule (default 3e-3)")
    p.add_argument("--width", type=_positive, default=None, help="channels of the first stage (default 16)")
    p.add_argument("--depth", type=_positive, default=None, help="residual units per stage (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed for weights, sampling and noise (default 0)")
    p.add_argument("--threads", type=_threads, default=None, help="CPU threads for torch (default: all)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or messages")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from edge.data.catalog import default_cwru_dir
    from edge.data.cwru import parse_loads
    from edge.data.noise import parse_snr_list, parse_snr_range
    from edge.train.trainer import TrainSettings
    from edge.train.vibration import WindowSettings, train_cwru

    snr_train = parse_snr_range(args.snr_train)
    if not 0.0 <= args.speed_jitter < 0.5:
        raise DataError(f"--speed-jitter must be in [0, 0.5), got {args.speed_jitter}")
    settings = TrainSettings(epochs=args.epochs, steps_per_epoch=args.steps, batch_size=args.batch_size,
                             lr=args.lr, snr_train=snr_train, clean_fraction=args.clean_fraction,
                             noise_kind=args.noise, seed=args.seed, speed_jitter=args.speed_jitter,
                             val_snrs=parse_snr_list(args.val_snr) if snr_train else [None])
    train_cwru(args.data or default_cwru_dir(), args.out, model_name=args.model, loads=parse_loads(args.loads),
               channel=args.channel, rate_hz=args.rate, windows=WindowSettings(length=args.window),
               settings=settings, width=args.width, depth=args.depth, threads=args.threads, quiet=args.quiet)
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score a run on held-out or unseen data, clean and under noise",
                       description="Accuracy, macro-F1, per-class recall and confusion matrix of a trained run.",
                       epilog=EPILOG_EVALUATE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="run directory written by `drsn-edge train`")
    p.add_argument("--data", type=Path, default=None, help="folder of CWRU .mat files (default: the run's)")
    p.add_argument("--loads", default=None, help="motor loads to score, e.g. 3 (default: the run's)")
    p.add_argument("--snr", default="none,-4,0,4,8",
                   help="SNRs in dB, comma-separated; 'none' is clean (default none,-4,0,4,8)")
    p.add_argument("--split", default="test", choices=["test", "val"],
                   help="segment of trained records to score (default test)")
    p.add_argument("--hop", type=_positive, default=None, help="hop between windows (default: window/8)")
    p.add_argument("--noise", default="gaussian", choices=["gaussian", "pink", "laplacian"],
                   help="noise kind (default gaussian)")
    p.add_argument("--noise-file", type=Path, default=None,
                   help="a recorded background noise (.npy, .wav or .mat) mixed in at each SNR instead")
    p.add_argument("--seed", type=int, default=1234, help="noise seed (default 1234)")
    p.add_argument("--threads", type=_threads, default=None, help="CPU threads for torch (default: all)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from edge.data.cwru import parse_loads
    from edge.data.noise import parse_snr_list
    from calibration.cli import noise_kind
    from edge.train.vibration import evaluate_cwru, format_evaluation

    result = evaluate_cwru(args.run, args.data, parse_loads(args.loads) if args.loads else None,
                           parse_snr_list(args.snr), args.split, noise_kind(args), args.seed, args.hop, args.threads)
    print(json.dumps(result) if args.json else format_evaluation(result))
    return 0


def _add_datasets(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("datasets", help="list the data sets drsn-edge can see and check them",
                       description="List CWRU records (class x load), X-ray and NEU images under a data root.")
    p.add_argument("--data", type=Path, default=None,
                   help="data root holding cwru/, xray/, neu/ (default: $DRSN_EDGE_DATA or ../shared/data)")
    p.add_argument("--check", action="store_true", help="verify every file against its sha256 list")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_datasets)


def _cmd_datasets(args: argparse.Namespace) -> int:
    from edge.data.catalog import default_data_root, format_survey, survey

    root = args.data or default_data_root()
    if not root.is_dir():
        raise DrsnEdgeError(f"data root {root} does not exist; pass --data or set $DRSN_EDGE_DATA")
    found = survey(root, check=args.check)
    print(json.dumps(found, indent=2) if args.json else format_survey(root, found, checked=args.check))
    return 1 if any(r["problems"] for r in found.values()) else 0


EPILOG_SIMULATE = """\
examples:
  drsn-edge simulate --source cwru --data ../shared/data/cwru --link pty
  drsn-edge simulate --source gdxray --data ../shared/data/xray --link tcp --rate x10 --corrupt 0.001
  drsn-edge simulate --source cwru --link pty --link-path /tmp/sensor --disconnect-every 5 --loop

It prints the port to open (a pty such as /dev/pts/7, or socket://127.0.0.1:PORT),
then streams: CWRU at 12 kHz in SAMPLES blocks of 10 ms; X-ray or NEU images as a
conveyor belt of patches side by side, one LINE per row at 1,250 lines/s with an
increasing encoder count.  It answers HELLO and HEARTBEAT, acknowledges every
REJECT and appends it to --rejects with the encoder position it would fire at.
--truth writes the ground truth (label of every record span or tile).
"""


def _rate(value: str) -> float | None:
    value = value.strip().lower()
    if value == "realtime":
        return 1.0
    if value == "max":
        return None
    try:
        factor = float(value[1:] if value.startswith("x") else value)
    except ValueError:
        raise argparse.ArgumentTypeError("use realtime, xN (N times faster) or max") from None
    if factor <= 0:
        raise argparse.ArgumentTypeError("the speed factor must be positive")
    return factor


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="a sensor device on a real pty or TCP port, streaming real data",
                       description="Device simulator: streams real data over the drsn-edge wire protocol.",
                       epilog=EPILOG_SIMULATE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True, choices=["cwru", "gdxray", "neu"], help="what the device streams")
    p.add_argument("--data", type=Path, default=None,
                   help="data folder (default: cwru/, xray/ or neu/ under $DRSN_EDGE_DATA or ../shared/data)")
    p.add_argument("--link", default="pty", choices=["pty", "tcp"], help="pty pair (default) or TCP loopback")
    p.add_argument("--rate", type=_rate, default=1.0, help="realtime (default), xN (N times faster) or max")
    p.add_argument("--corrupt", type=_probability, default=0.0, help="probability of a bit flip per byte")
    p.add_argument("--drop", type=_probability, default=0.0, help="probability of dropping a frame")
    p.add_argument("--disconnect-every", type=float, default=None, metavar="S",
                   help="disconnect every S seconds of streaming (USB unplug); --outage sets how long")
    p.add_argument("--outage", type=float, default=0.5, metavar="S", help="seconds away per disconnect (0.5)")
    p.add_argument("--link-path", default=None,
                   help="pty: keep this symlink pointing at the current pty (stable across disconnects)")
    p.add_argument("--tcp-port", type=int, default=0, help="tcp: port on 127.0.0.1 (default: any free)")
    p.add_argument("--loop", action="store_true", help="start over when the data ends")
    p.add_argument("--start-on-hello", action="store_true", help="stream only once the gateway has said HELLO")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds")
    p.add_argument("--rejects", type=Path, default=None, help="append every REJECT received here (JSON lines)")
    p.add_argument("--truth", type=Path, default=None, help="write the stream's ground truth here (JSON)")
    p.add_argument("--loads", default="0", help="cwru: motor loads streamed, in order (default 0)")
    p.add_argument("--held-out", type=Path, default=None, metavar="RUN",
                   help="cwru: stream only the held-out test segments of this training run's records")
    p.add_argument("--subset", default="castings", choices=["castings", "fishbones"], help="gdxray set")
    p.add_argument("--split", default="test", choices=["train", "test"], help="gdxray split (default test)")
    p.add_argument("--lanes", type=_positive, default=None, help="images: patches across the belt")
    p.add_argument("--bands", type=_positive, default=20, help="images: rows of patches along the belt")
    p.add_argument("--bit-depth", type=int, default=8, choices=[8, 12, 16], help="images: line bit depth")
    p.add_argument("--seed", type=int, default=0, help="seed for belt layout and faults")
    p.set_defaults(func=_cmd_simulate)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from edge.data.catalog import default_data_root
    from edge.data.cwru import parse_loads
    from firmware_bridge.simulator import DeviceSimulator, Faults
    from firmware_bridge.sources import belt_source, cwru_source, held_out_spans

    folder = {"cwru": "cwru", "gdxray": "xray", "neu": "neu"}[args.source]
    data = args.data or default_data_root() / folder
    if not data.is_dir():
        raise DrsnEdgeError(f"data folder {data} does not exist; pass --data")
    if args.source == "cwru":
        spans = held_out_spans(args.held_out / "split.json") if args.held_out else None
        source = cwru_source(data, loads=parse_loads(args.loads), spans=spans)
    else:
        try:
            source = belt_source(data, args.source, args.subset, args.split, args.lanes, args.bands, args.seed,
                                 args.bit_depth)
        except (FileNotFoundError, ValueError) as exc:
            raise DrsnEdgeError(str(exc)) from exc
    if args.truth:
        args.truth.write_text(json.dumps({"hello": source.hello.__dict__ | {
            "sensor": source.hello.sensor.name, "sample_format": source.hello.sample_format.name},
            "truth": source.truth}, indent=1, default=str) + "\n")
    faults = Faults(args.corrupt, args.drop, args.disconnect_every, args.outage, args.seed)
    sim = DeviceSimulator(source, link=args.link, speed=args.rate, faults=faults, link_path=args.link_path,
                          tcp_port=args.tcp_port, rejects_path=str(args.rejects) if args.rejects else None,
                          loop=args.loop, start_on_hello=args.start_on_hello)
    signal.signal(signal.SIGTERM, lambda *_: sim.stop())
    print(f"simulate: {args.source} device on {sim.port}", flush=True)
    try:
        stats = sim.run(duration=args.duration)
    except KeyboardInterrupt:
        stats = sim.stats
    finally:
        sim.close()
    print("simulate: " + json.dumps(stats.to_dict()), flush=True)
    return 0


def _add_ports(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ports", help="list serial ports (USB VID:PID, serial number) a device could be on",
                       description="List serial ports as pyserial sees them. Open a USB device by id with "
                                   "--port usb:VID:PID[:SERIAL], which survives re-enumeration after an unplug.")
    p.add_argument("--usb", default=None, metavar="VID[:PID]", help="only USB devices with this id (hex)")
    p.set_defaults(func=_cmd_ports)


def _cmd_ports(args: argparse.Namespace) -> int:
    from serial.tools import list_ports

    from firmware_bridge.transport import find_usb_ports, parse_vid_pid

    ports = find_usb_ports(*parse_vid_pid(args.usb)) if args.usb else sorted(list_ports.comports(),
                                                                             key=lambda p: p.device)
    if not ports:
        print("no serial ports found" + (f" with USB id {args.usb}" if args.usb else ""))
        return 1
    for port in ports:
        usb = f"usb:{port.vid:04x}:{port.pid:04x}" + (f":{port.serial_number}" if port.serial_number else "") \
            if port.vid is not None else "-"
        print(f"{port.device:<24}{usb:<36}{port.description}")
    return 0


EPILOG_BUILD = """\
examples:
  drsn-edge build --run runs/drsn --target openvino --precision int8 --out dist/drsn-ov-int8
  drsn-edge build --run runs/drsn --target tensorrt --precision int8 --calib-method entropy --out dist/drsn-trt
  drsn-edge build --run runs/drsn --target onnxruntime --precision int8 --max-drop 0.5 --key keys/line3.key --out dist/x

The bundle is a directory and a .tar.gz: model files, manifest.json (preprocessing,
classes, reject classes, precision, backend, calibration hash, FP32 and deployed
accuracy on the held-out test split) and, with --key, an Ed25519 signature.
TensorRT bundles carry the Q/DQ (int8) or plain ONNX; the engine is built on the
Jetson with `drsn-edge compile-trt` (or the trtexec line in the manifest).
"""


def _add_build(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="export, quantize and pack a trained run as a verified bundle",
                       description="Build a deployable bundle from a training run.", epilog=EPILOG_BUILD,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="run directory written by `drsn-edge train`")
    p.add_argument("--target", default="openvino", choices=["openvino", "onnxruntime", "tensorrt"],
                   help="backend the gateway runs (default openvino)")
    p.add_argument("--precision", default="int8", choices=["fp32", "fp16", "int8"], help="default int8")
    p.add_argument("--calib-size", type=_positive, default=256, help="calibration windows from the training split")
    p.add_argument("--calib-method", default="minmax", choices=["minmax", "percentile", "entropy"],
                   help="activation ranges for Q/DQ models (TensorRT, ONNX Runtime int8)")
    p.add_argument("--unbalanced-calib", action="store_true", help="draw calibration windows without class balance")
    p.add_argument("--max-drop", type=float, default=None, metavar="PT",
                   help="largest accuracy drop allowed, in points (0.5 = 0.5 pt): layers return to float until met")
    p.add_argument("--budget-ms", type=float, default=5.0, help="default latency budget in the manifest (5)")
    p.add_argument("--reject-classes", default=None, help="comma-separated classes that trigger a reject "
                                                          "(default: every class but normal)")
    p.add_argument("--data", type=Path, default=None, help="the run's data folder, if it moved")
    p.add_argument("--key", type=Path, default=None, help="Ed25519 private key to sign with (drsn-edge keygen)")
    p.add_argument("--out", type=Path, required=True, help="bundle directory to write, e.g. dist/NAME")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration draw")
    p.set_defaults(func=_cmd_build)


def _cmd_build(args: argparse.Namespace) -> int:
    from edge.export.build import BuildOptions, build_bundle

    options = BuildOptions(target=args.target, precision=args.precision, calib_size=args.calib_size,
                           calib_method=args.calib_method, calib_balanced=not args.unbalanced_calib,
                           max_drop=None if args.max_drop is None else args.max_drop / 100.0,
                           budget_ms=args.budget_ms, seed=args.seed,
                           reject_classes=tuple(args.reject_classes.split(",")) if args.reject_classes else None,
                           data=str(args.data) if args.data else None)
    build_bundle(args.run, args.out, options, key=args.key)
    return 0


def _add_keys(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keygen", help="create an Ed25519 key pair for signing bundles",
                       description="Write NAME.key (private, keep it on the build machine) and NAME.pub "
                                   "(copy it to every gateway that should trust the bundles).")
    p.add_argument("name", type=Path, help="path stem, e.g. keys/line3")
    p.set_defaults(func=_cmd_keygen)
    p = sub.add_parser("verify", help="check a bundle's hashes and signature",
                       description="Verify a bundle directory or .tar.gz: every file against its sha256 and, "
                                   "with --trust, the signature.")
    p.add_argument("bundle", type=Path, help="bundle directory or .tar.gz")
    p.add_argument("--trust", type=Path, action="append", default=[], help="trusted public key (repeatable)")
    p.set_defaults(func=_cmd_verify)


def _cmd_keygen(args: argparse.Namespace) -> int:
    from edge.bundle import generate_keypair

    private, public = generate_keypair(args.name)
    print(f"wrote {private} (private: keep it secret) and {public} (public: copy it to the gateways)")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from edge.bundle import open_bundle

    bundle = open_bundle(args.bundle, trusted_keys=args.trust)
    m = bundle.manifest
    print(f"{args.bundle}: ok, {len(m['files'])} files match their sha256"
          + (", signed by a trusted key" if bundle.signed_by_trusted_key else ", signature not checked (no --trust)"))
    print(f"  {m['model']['family']} {m['precision']} for {m['backend']['name']}; classes {', '.join(m['classes'])}")
    acc = m["accuracy"]
    print(f"  held-out accuracy: fp32 {100 * acc['fp32']:.2f}%, {m['precision']} {100 * acc[m['precision']]:.2f}%")
    return 0


def _add_compile_trt(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compile-trt", help="build the TensorRT engine of a bundle, on the Jetson or GPU host",
                       description="Build a TensorRT engine from a bundle's ONNX on this device (engines are "
                                   "not portable). Without TensorRT or CUDA it says so and prints the trtexec line.")
    p.add_argument("--bundle", type=Path, required=True, help="a verified tensorrt bundle directory")
    p.add_argument("--workspace-mb", type=int, default=256, help="builder workspace (256 MiB)")
    p.add_argument("--dla-core", type=int, default=None, help="DLA core (AGX/NX); falls back to the GPU")
    p.add_argument("--no-gpu-fallback", action="store_true", help="fail instead of falling back from DLA")
    p.add_argument("--timing-cache", default=None, help="timing cache file (default: next to the bundle)")
    p.set_defaults(func=_cmd_compile_trt)


def _cmd_compile_trt(args: argparse.Namespace) -> int:
    from edge.bundle import open_bundle
    from edge.compile.tensorrt import TrtBuildSettings, build_engine, engine_path_for

    bundle = open_bundle(args.bundle)
    trt = bundle.manifest.get("tensorrt")
    if not trt:
        raise DrsnEdgeError(f"{args.bundle} is a {bundle.manifest['backend']['name']} bundle, not tensorrt")
    settings = TrtBuildSettings(**(trt["build_settings"] | {
        "workspace_mb": args.workspace_mb, "dla_core": args.dla_core, "gpu_fallback": not args.no_gpu_fallback,
        "timing_cache": args.timing_cache or str(bundle.path.parent / "timing.cache")}))
    info = build_engine(bundle.path / trt["onnx_file"], engine_path_for(bundle.path, bundle.manifest), settings)
    print(json.dumps(info, indent=2))
    return 0


EPILOG_RUN = """\
examples:
  drsn-edge run --bundle /opt/drsn-edge/current --port usb:0483:5740 --budget-ms 5
  drsn-edge run --bundle dist/drsn-ov-int8 --port /dev/pts/7 --on-miss reject --log decisions.db --duration 60

Latency is measured from the arrival of a window's last sample to its decision being
written to the port. A window that cannot be decided within --budget-ms gets the
--on-miss decision at once; overload sheds the oldest window with the same fail-safe.
Every decision is a row in the SQLite log (WAL); /metrics (Prometheus), /status.json
and a live page are served on --http (loopback by default).
"""


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="classify a live serial stream within a latency budget (the gateway runtime)",
                       description="The gateway runtime: frames in, decisions and timed REJECTs out.",
                       epilog=EPILOG_RUN, formatter_class=argparse.RawDescriptionHelpFormatter)
    _runtime_arguments(p)
    p.add_argument("--port", required=True, help="device path, usb:VID:PID[:SERIAL], socket://HOST:PORT or a pty")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds (default: run)")
    p.set_defaults(func=_cmd_run)


def _runtime_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", type=Path, required=True, help="bundle directory or .tar.gz")
    p.add_argument("--budget-ms", type=float, default=None, help="latency budget (default: the bundle's)")
    p.add_argument("--on-miss", choices=["reject", "pass", "hold"], default=None,
                   help="decision for a window not decided in time (default: the bundle's, reject)")
    p.add_argument("--reject-classes", default=None, help="comma-separated (default: the bundle's)")
    p.add_argument("--threshold", type=float, default=None,
                   help="reject when the reject classes' total probability reaches this (default: argmax)")
    p.add_argument("--log", default="decisions.db", help="SQLite decision log (default decisions.db)")
    p.add_argument("--http", default="127.0.0.1:9108", help="status/metrics address, or 'off' (default loopback)")
    p.add_argument("--distance", type=int, default=0, help="line-scan: encoder counts from scanner to actuator")
    p.add_argument("--max-consecutive", type=int, default=0, help="reject lockout after N in a row (0: off)")
    p.add_argument("--threads", type=_threads, default=1, help="inference threads (default 1)")
    p.add_argument("--trust", action="append", default=[], help="trusted public key; requires a signed bundle")


def _runtime_settings(args: argparse.Namespace, port: str):
    from edge.runtime.loop import RuntimeSettings

    return RuntimeSettings(port=port, budget_ms=args.budget_ms, on_miss=args.on_miss,
                           reject_classes=args.reject_classes.split(",") if args.reject_classes else None,
                           threshold=args.threshold, log_path=args.log,
                           http=None if args.http == "off" else args.http, distance=args.distance,
                           max_consecutive=args.max_consecutive, threads=args.threads, trusted_keys=args.trust)


def _print_summary(summary: dict) -> None:
    lat = summary["latency"]
    c = summary["counters"]
    print(f"decisions {c['decisions']} in {summary['seconds']:.0f} s; latency p50 {lat.get('p50_ms', 0):.2f} ms, "
          f"p99 {lat.get('p99_ms', 0):.2f} ms, max {lat.get('max_ms', 0):.2f} ms against a {summary['budget_ms']:g} ms "
          f"budget; fail-safe: deadline {c['deadline_fail_safe']}, overload {c['overload_fail_safe']}; "
          f"late {c['late_decisions']}")
    print(f"frames {c['decoder_frames']}, rejected {c['decoder_rejected']}, lost {c['decoder_lost_frames']}; "
          f"outages {c['link_outages']}; rejects sent {c['rejects_sent']}, acked {c['acks']}, naks {c['naks']}")


def _cmd_run(args: argparse.Namespace) -> int:
    from edge.runtime.loop import Runtime

    runtime = Runtime(args.bundle, _runtime_settings(args, args.port))
    signal.signal(signal.SIGTERM, lambda *_: runtime.stop())
    if runtime.server:
        print(f"run: status page {runtime.server.address}/ , metrics {runtime.server.address}/metrics", flush=True)
    try:
        summary = runtime.run(args.duration)
    except KeyboardInterrupt:
        runtime.stop()
        summary = runtime.summary(0)
    finally:
        runtime.close()
    _print_summary(summary)
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole loop on real data: simulator on a pty -> runtime -> live accuracy",
                       description="Stream a run's held-out CWRU test segments at real rate from the device "
                                   "simulator over a real pty, run the gateway runtime against it, and score the "
                                   "live decisions.")
    _runtime_arguments(p)
    p.add_argument("--run", type=Path, required=True, help="the training run the bundle was built from")
    p.add_argument("--data", type=Path, default=None, help="CWRU folder (default: the run's)")
    p.add_argument("--seconds", type=float, default=60.0, help="how long to stream (default 60)")
    p.add_argument("--rate", type=_rate, default=1.0, help="realtime (default), xN or max")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from edge.runtime.scoring import score_vibration
    from edge.runtime.simulated import run_with_simulator
    from edge.train.runs import load_run
    from firmware_bridge.sources import cwru_source, held_out_spans

    run = load_run(args.run)
    data = args.data or Path(run.config["data"]["path"])
    source = cwru_source(data, loads=tuple(run.config["data"]["loads"]),
                         spans=held_out_spans(args.run / "split.json"))

    def announce(port, runtime):
        print(f"demo: simulator streaming the held-out segments of {len(source.truth)} records on {port}; "
              f"runtime on {runtime.manifest['backend']['name']} {runtime.manifest['precision']}", flush=True)

    session = run_with_simulator(args.bundle, _runtime_settings(args, ""), source, args.seconds, args.rate, announce)
    summary = session.summary
    score = score_vibration(args.log, source.truth, since_id=session.first_decision_id)
    _print_summary(summary)
    acc = score["accuracy"]
    print(f"live accuracy {100 * acc:.2f}% on {score['scored']} windows of held-out data "
          f"({score['straddling_records']} windows straddling two records not scored, "
          f"{score['fail_safe']} fail-safe)" if acc is not None else "no decision to score")
    print(f"device streamed {session.frames_streamed} data frames; the runtime received "
          f"{summary['counters']['data_frames']}, lost {summary['counters']['decoder_lost_frames']}")
    return 0


def _add_install(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("install", help="verify a bundle and make it the gateway's current one",
                       description="Install a bundle under ROOT/opt/drsn-edge with an atomic 'current' switch, "
                                   "keep the previous one for rollback, and write the systemd unit.")
    p.add_argument("--bundle", type=Path, required=True, help="bundle .tar.gz or directory")
    p.add_argument("--root", type=Path, default=Path("/"), help="file system root (default /)")
    p.add_argument("--trusted-key", action="append", default=[], help="public key the bundle must be signed with")
    p.add_argument("--port", default="usb:0483:5740", help="serial port the service opens")
    p.add_argument("--budget-ms", type=float, default=None, help="latency budget (default: the bundle's)")
    p.set_defaults(func=_cmd_install)
    p = sub.add_parser("rollback", help="return to the previously installed bundle")
    p.add_argument("--root", type=Path, default=Path("/"), help="file system root (default /)")
    p.set_defaults(func=_cmd_rollback)


def _cmd_install(args: argparse.Namespace) -> int:
    from edge.bundle.install import install

    target = install(args.bundle, args.root, args.trusted_key, args.port, args.budget_ms)
    print(f"installed {target}; current -> {target.name}. Restart the service: systemctl restart drsn-edge")
    return 0


def _cmd_rollback(args: argparse.Namespace) -> int:
    from edge.bundle.install import rollback

    print(f"current -> {rollback(args.root).name}. Restart the service: systemctl restart drsn-edge")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="drsn-edge",
        description="Defect classifiers from training to the production line. "
                    "Start with `drsn-edge datasets`, then `train` and `evaluate`.")
    from edge import __version__

    parser.add_argument("--version", action="version", version=f"drsn-edge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_datasets(sub)
    _add_train(sub)
    _add_evaluate(sub)
    _add_simulate(sub)
    _add_ports(sub)
    _add_build(sub)
    _add_keys(sub)
    _add_compile_trt(sub)
    _add_run(sub)
    _add_demo(sub)
    _add_install(sub)
    from calibration.cli import add_calibrate

    add_calibrate(sub)
    return parser


#: Options whose values usually start with a minus sign (``--snr -4,0``, ``--snr-train -6:10``).
NEGATIVE_VALUE_OPTIONS = ("--snr", "--snr-train", "--val-snr")


def _glue_negative_values(argv: list[str]) -> list[str]:
    """Turn ``--snr -4,0`` into ``--snr=-4,0``: argparse would take ``-4,0`` for an option."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in NEGATIVE_VALUE_OPTIONS and i + 1 < len(argv) and argv[i + 1][:2].lstrip("-")[:1].isdigit() \
                and argv[i + 1].startswith("-"):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_glue_negative_values(list(sys.argv[1:] if argv is None else argv)))
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except (DrsnEdgeError, PortError) as exc:
        print(f"drsn-edge {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"drsn-edge {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
