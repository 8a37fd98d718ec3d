"""Build side, packaging: `build`, `keygen`, `verify`."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge.cli.common import (add_trusted_keys, class_names, non_negative_float, output_path, positive_float,
                             positive_int)
from edge.errors import DrsnEdgeError


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
    p.add_argument("--calib-size", type=positive_int, default=256, help="calibration windows from the training split")
    p.add_argument("--calib-method", default="auto", choices=["auto", "minmax", "percentile", "entropy"],
                   help="activation ranges for Q/DQ models (TensorRT, ONNX Runtime int8): minmax, percentile "
                        "(99.999th), entropy (TensorRT's KL-divergence clip on a 2,048-bin histogram), or auto "
                        "(default): each is tried and the one that changes fewest of FP32's decisions on "
                        "validation and training inputs is kept")
    p.add_argument("--unbalanced-calib", action="store_true", help="draw calibration windows without class balance")
    p.add_argument("--max-drop", type=non_negative_float, default=None, metavar="PT",
                   help="largest accuracy drop allowed, in points (0.5 = 0.5 pt): layers return to float until "
                        "met on the validation split (both backends) and, for Q/DQ models, until at most this "
                        "share of FP32's decisions changes on validation and uncalibrated training inputs. "
                        "Without it, a build more than 1 pt below FP32 on the validation split is refused")
    p.add_argument("--budget-ms", type=positive_float, default=None,
                   help="latency budget written into the manifest (default 5 ms a vibration window, 20 ms an image tile)")
    p.add_argument("--reject-classes", type=class_names, default=None,
                   help="comma-separated classes that trigger a reject (default: every class but one named "
                        "normal, good, ok, healthy, flawless, no_defect, pass or class_0, in any case)")
    p.add_argument("--data", type=Path, default=None, help="the run's data folder, if it moved")
    p.add_argument("--key", type=Path, default=None, help="Ed25519 private key to sign with (drsn-edge keygen)")
    p.add_argument("--out", type=output_path, required=True, help="bundle directory to write, e.g. dist/NAME")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration draw")
    p.add_argument("--legacy-calib-cache", default=None, metavar="TRT_VERSION",
                   help="tensorrt int8: also pack the float ONNX and an IInt8EntropyCalibrator2 cache for TensorRT "
                        "<= 10 / DLA builds, headed for this TensorRT version (e.g. 8601); legacy")
    p.set_defaults(func=_cmd_build)


def _cmd_build(args: argparse.Namespace) -> int:
    from edge.export.build import BuildOptions, build_bundle

    options = BuildOptions(target=args.target, precision=args.precision, calib_size=args.calib_size,
                           calib_method=args.calib_method, calib_balanced=not args.unbalanced_calib,
                           max_drop=None if args.max_drop is None else args.max_drop / 100.0,
                           budget_ms=args.budget_ms, seed=args.seed,
                           reject_classes=tuple(args.reject_classes) if args.reject_classes else None,
                           data=str(args.data) if args.data else None, legacy_calib_cache=args.legacy_calib_cache)
    build_bundle(args.run, args.out, options, key=args.key)
    return 0


def _add_keys(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keygen", help="create an Ed25519 key pair for signing bundles",
                       description="Write NAME.key (private, keep it on the build machine) and NAME.pub "
                                   "(copy it to every gateway that should trust the bundles).")
    p.add_argument("name", type=output_path, help="path stem, e.g. keys/line3")
    p.set_defaults(func=_cmd_keygen)
    p = sub.add_parser("verify", help="check a bundle's hashes and signature",
                       description="Verify a bundle directory or .tar.gz: every file against its sha256 and, "
                                   "with --trusted-key, the signature.",
                       epilog="example: drsn-edge verify --bundle dist/drsn-openvino-int8.tar.gz "
                              "--trusted-key keys/line3.pub")
    p.add_argument("bundle", type=Path, nargs="?", help="bundle directory or .tar.gz (or give it as --bundle)")
    p.add_argument("--bundle", dest="bundle_option", type=Path, metavar="BUNDLE",
                   help="the same, spelt as for install and run")
    add_trusted_keys(p, "public key file (from `drsn-edge keygen`) the bundle must be signed with; repeatable")
    p.set_defaults(func=_cmd_verify)


def _cmd_keygen(args: argparse.Namespace) -> int:
    from edge.bundle import generate_keypair

    private, public = generate_keypair(args.name)
    print(f"wrote {private} (private: keep it secret) and {public} (public: copy it to the gateways)")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from edge.bundle import open_bundle
    from edge.bundle.package import SIGNATURE

    if (args.bundle is None) == (args.bundle_option is None):
        raise DrsnEdgeError("give the bundle to verify once: `drsn-edge verify BUNDLE` or `--bundle BUNDLE`")
    path = args.bundle or args.bundle_option
    bundle = open_bundle(path, trusted_keys=args.trusted_keys)
    m = bundle.manifest
    signature = ("signed by a trusted key" if bundle.signed_by_trusted_key else
                 "signed, but the signature was not checked (give --trusted-key PUB)"
                 if (bundle.path / SIGNATURE).is_file() else "not signed")
    print(f"{path}: ok, every listed file matches its sha256 ({len(m['files'])}); {signature}")
    print(f"  {m['model']['family']} {m['precision']} for {m['backend']['name']}; classes {', '.join(m['classes'])}")
    acc = m["accuracy"]
    deployed = f", deployed {m['precision']} {100 * acc[m['precision']]:.2f}%" if m["precision"] != "fp32" else ""
    print(f"  held-out {acc.get('split', 'test')} accuracy: fp32 {100 * acc['fp32']:.2f}%{deployed}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    _add_build(sub)
    _add_keys(sub)
