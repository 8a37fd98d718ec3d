"""Argument types shared by the subcommands."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def checked(kind, ok, message: str):
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


positive_int = checked(int, lambda n: n >= 1, "must be a positive integer")
non_negative_int = checked(int, lambda n: n >= 0, "must be 0 or a positive integer")
thread_count = checked(int, lambda n: n >= 1, "threads must be >= 1")
probability = checked(float, lambda p: 0.0 <= p < 1.0, "a probability in [0, 1)")
positive_float = checked(float, lambda x: 0.0 < x < float("inf"), "must be a positive number")  # budgets, durations
non_negative_float = checked(float, lambda x: 0.0 <= x < float("inf"), "must be 0 or a positive number")
share = checked(float, lambda x: 0.0 < x < 1.0, "must be a share between 0 and 1, exclusive")
share_of_all = checked(float, lambda x: 0.0 <= x <= 1.0, "must be a share between 0 and 1 (0.98 for 98 %)")
tcp_port = checked(int, lambda n: 0 <= n <= 65535, "a TCP port, 1-65535 (0: any free one)")
log_size_mb = checked(float, lambda mb: mb == 0 or 1 <= mb < float("inf"), "0 (unbounded) or at least 1 MB")


def listed(kind, what: str):
    """An argparse ``type`` for a comma-separated list (``0,1,2``) converted item by item with ``kind``; empty
    items are skipped, and an item ``kind`` refuses is a usage error naming it."""
    def convert(value: str) -> list:
        items = [item.strip() for item in value.split(",") if item.strip()]
        try:
            return [kind(item) for item in items]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a comma-separated list of {what}") from None
    return convert


int_list = listed(int, "integers (0,1,2)")
float_list = listed(float, "numbers (0.1,0.2)")
name_list = listed(str, "names")


def snr_list(value: str) -> list[float | None]:
    """SNRs in dB, comma-separated, ``none`` for clean (``none,-8,-4``); what is wrong said as a usage error."""
    from edge.data.noise import parse_snr_list
    from edge.errors import DataError

    try:
        return parse_snr_list(value)
    except DataError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def output_path(value: str) -> Path:
    """A file or folder the command will write (a run, a bundle, a sweep, a key), checked before any work.

    Nothing is created here; what is refused is a path that cannot be: a file where one of its
    folders must be, or a folder this user may not write in.  A long training must not end in a
    traceback because its ``--out`` was mistyped.
    """
    path = Path(value)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing != path and not existing.is_dir():
        raise argparse.ArgumentTypeError(f"{value}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK):
        raise argparse.ArgumentTypeError(f"{value}: this user may not write {existing}")
    return path


def add_trusted_keys(p: argparse.ArgumentParser, help: str) -> None:
    """``--trusted-key PUB`` (also spelt ``--trust``), repeatable, as ``args.trusted_keys``.

    The same option on every command that opens a bundle, so a key given to ``install`` is
    given the same way to ``verify`` and ``run``.
    """
    p.add_argument("--trusted-key", "--trust", dest="trusted_keys", type=Path, action="append", default=[],
                   metavar="PUB", help=help)


def remember_defaults(p: argparse.ArgumentParser, names: tuple[str, ...]) -> None:
    """Keep the defaults of ``names`` (argparse names) on the parsed arguments, for :func:`given_options`."""
    p.set_defaults(option_defaults={name: p.get_default(name) for name in names})


def given_options(args: argparse.Namespace, names) -> list[str]:
    """Which of ``names`` the user set to something else than their default, as flags (``--bit-depth``):
    options a command would not read in this case are refused, not silently ignored."""
    return ["--" + name.replace("_", "-") for name in names if getattr(args, name) != args.option_defaults[name]]


def add_run_output(p: argparse.ArgumentParser, example: str) -> None:
    """``--out`` of a command that writes a run, and ``--overwrite``, its only way over an existing run."""
    p.add_argument("--out", type=output_path, required=True,
                   help=f"run directory to write, e.g. {example}; one that already holds a run is refused "
                        "unless --overwrite")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --out (kept until the new one is written whole)")


def refuse_existing_run(out: Path, overwrite: bool) -> None:
    """A run in ``out`` is hours of training: it is replaced only when asked, and before any work is done."""
    from datetime import datetime

    from edge.errors import DrsnEdgeError
    from edge.run_files import RUN_FILES

    held = [name for name in RUN_FILES if (out / name).is_file()]
    if held and not overwrite:
        written = datetime.fromtimestamp(max((out / name).stat().st_mtime for name in held))
        raise DrsnEdgeError(f"{out} already holds a run ({', '.join(held)}, written {written:%Y-%m-%d %H:%M}); "
                            "give another --out, or add --overwrite to replace it")


def port_spec(value: str) -> str:
    """``--port``: a device path, ``usb:VID:PID[:SERIAL]`` or a pyserial URL, checked for form only.

    A device that is not there yet is waited for; a spelling no device could ever have is refused here.
    """
    import importlib.util

    from firmware_bridge.transport import USB_PREFIX, PortError, parse_vid_pid

    if value.startswith(USB_PREFIX):
        try:
            parse_vid_pid(":".join(value[len(USB_PREFIX):].split(":")[:2]))
        except PortError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    elif "://" in value:
        scheme, _, rest = value.partition("://")
        if not scheme.isidentifier() or importlib.util.find_spec(f"serial.urlhandler.protocol_{scheme}") is None:
            raise argparse.ArgumentTypeError(
                f"{value!r}: no port type {scheme!r}; give a device path (/dev/ttyACM0), usb:VID:PID[:SERIAL], "
                "socket://HOST:PORT, rfc2217://HOST:PORT or loop://")
        if scheme in ("socket", "rfc2217") and not rest.split("?")[0].rpartition(":")[2].isdigit():
            raise argparse.ArgumentTypeError(f"{value!r}: give {scheme}://HOST:PORT, the port a number")
    elif not value:
        raise argparse.ArgumentTypeError("give a device path, usb:VID:PID or a URL")
    elif Path(value).is_dir():
        raise argparse.ArgumentTypeError(f"{value} is a directory, not a serial device: give the device's path, "
                                         "as `drsn-edge ports` lists them (/dev/ttyACM0)")
    elif Path(value).is_file():
        raise argparse.ArgumentTypeError(
            f"{value} is a regular file, not a serial device: something wrote to that path while no device was "
            "there, and the device cannot take its name back; remove the file, then plug the device in again")
    return value


def class_names(value: str) -> list[str] | None:
    """``--reject-classes B007,IR007`` as a list of class names (an empty value: None, the bundle's)."""
    return value.split(",") if value else None


def realtime_priority(value: str) -> int:
    """0 (ordinary scheduling) or a SCHED_FIFO priority this system offers."""
    from edge.runtime.realtime import check_priority

    number = checked(int, lambda n: n >= 0, "0 (off) or a real-time priority")(value)
    try:
        return number and check_priority(number)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def http_address(value: str) -> str:
    """``HOST:PORT`` (``:PORT`` for loopback; port 0 takes any free one), or ``off``."""
    from edge.runtime.metrics import listen_address  # the runtime's own reading of it

    if value == "off":
        return value
    try:
        listen_address(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def stream_rate(value: str) -> float | None:
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


def add_training_options(p, seed_help: str = "seed for weights, sampling and noise (default 0)") -> None:
    """--seed, --threads, --device and --quiet, as every training-like subcommand takes them."""
    p.add_argument("--seed", type=int, default=0, help=seed_help)
    p.add_argument("--threads", type=thread_count, default=None, help="CPU threads for torch (default: all)")
    add_device_option(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or messages")


def add_device_option(p) -> None:
    """--device, for the subcommands and the benchmark scripts that train."""
    p.add_argument("--device", default="cpu", metavar="cpu|cuda[:N]|auto",
                   help="where the network trains: cpu (default), cuda or cuda:N (an NVIDIA GPU, with a CUDA "
                        "build of PyTorch), or auto (a GPU if there is one). Data and augmentation stay on "
                        "the CPU; a GPU's run is alike, not bit for bit the same as the CPU's")


def checked_device(parser: argparse.ArgumentParser, name: str) -> str:
    """``--device`` as this host has it (``cpu`` or the GPU's name), or the parser's usage error.

    A script that trains many runs asks once, before the first: a GPU that is not there
    would otherwise fail every run, each in its own worker.
    """
    from edge.errors import DrsnEdgeError
    from edge.train.device import describe, training_device

    try:
        return describe(training_device(name))
    except DrsnEdgeError as exc:
        parser.error(str(exc))
