"""The ``drsn-edge`` console script.

Each subcommand is a thin layer over a library call, so everything the CLI does can
be done from Python too.  Errors drsn-edge raises on purpose, and files the system refuses,
are printed as one clear line (exit status 2), never as a traceback.

The subcommands live by side: ``training``, ``compression``, ``ensemble`` and ``bundles`` (build side), ``gateway``
(the runtime and installation; never imports torch), ``decisions`` (reading the decision
log; gateway side too), ``device`` (simulator and
ports), and ``calibration.cli`` (accuracy against latency).
"""

from __future__ import annotations

import argparse
import sys

from edge.errors import DrsnEdgeError
from firmware_bridge.transport import PortError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="drsn-edge",
        description="Defect classifiers from training to the production line. "
                    "Start with `drsn-edge datasets`, then `train` and `evaluate`.")
    from edge import __version__

    parser.add_argument("--version", action="version", version=f"drsn-edge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    from calibration.cli import add_calibrate
    from edge.cli import bundles, compression, decisions, device, ensemble, gateway, training

    training.register(sub)
    compression.register(sub)
    ensemble.register(sub)
    device.register(sub)
    bundles.register(sub)
    gateway.register(sub)
    decisions.register(sub)
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
    except OSError as exc:  # a file the system refused that no check foresaw: name it, in one line
        if exc.filename is None:
            raise
        print(f"drsn-edge {args.command}: error: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"drsn-edge {args.command}: interrupted", file=sys.stderr)
        return 130

