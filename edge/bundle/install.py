"""Install a verified bundle on a gateway: versioned directories, an atomic ``current`` switch, rollback.

Layout under ``root`` (``/`` on a gateway; a temporary directory in tests)::

    opt/drsn-edge/bundles/<name>-<sha8>/    one directory per installed bundle
    opt/drsn-edge/current  -> bundles/...   what the runtime loads
    opt/drsn-edge/previous -> bundles/...   what ``rollback`` returns to (older ones: ``prune``)
    opt/drsn-edge/keys/<name>-<sha8>.pub    the trusted public keys the service verifies with
    var/lib/drsn-edge/decisions.db          the decision log
    etc/systemd/system/drsn-edge.service    the runtime as a service

The unit refers only to files under these paths and to the Python that ran the
install, so the service does not depend on the directory ``install`` was run from
or on where the keys were kept.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

from edge import durable
from edge.bundle.package import BundleError, open_bundle
from edge.runtime.decisions import DecisionPolicy, PolicyError, settings_problem
from edge.runtime.realtime import DEFAULT_SERVICE_PRIORITY

HOME = Path("opt/drsn-edge")
KEYS = HOME / "keys"
STATE = Path("var/lib/drsn-edge")
#: The installed service's decision log, where `drsn-edge decisions` looks for it too.
SERVICE_LOG = Path("/") / STATE / "decisions.db"
UNIT = Path("etc/systemd/system/drsn-edge.service")

UNIT_TEMPLATE = """[Unit]
Description=drsn-edge runtime (installed: {family} {precision} on {backend}; see opt/drsn-edge/current)
After=network.target

[Service]
Type=notify
StateDirectory=drsn-edge
ExecStart={command}
Restart=always
RestartSec=2
WatchdogSec=10
KillSignal=SIGTERM
TimeoutStopSec=15

[Install]
WantedBy=multi-user.target
"""


def unit_copy(bundle_dir: Path) -> Path:
    """Where the service unit a bundle was installed with is kept, beside it: a rollback restores it, so the
    previous bundle runs with its own settings (port, budget, reject classes), not the newer install's."""
    return bundle_dir.with_name(bundle_dir.name + ".service")


def _switch(link: Path, target: Path) -> None:
    """Point ``link`` at ``target`` atomically (a new symlink renamed over the old one)."""
    tmp = link.with_name(link.name + ".new")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(os.path.relpath(target, link.parent))
    durable.replace(tmp, link)


@contextmanager
def _disk_errors(root: str | Path):
    """An install step the disk refuses (permissions, a full disk, a file in the way) as a ``BundleError``."""
    try:
        yield
    except OSError as exc:
        raise BundleError(f"cannot install under {root}: {exc.strerror or exc} ({exc.filename}); run as root, or "
                          "give --root a directory this user may write; nothing was switched") from exc


def service_keys(root: str | Path = "/") -> list[Path]:
    """The public keys the installed service verifies its bundles with (its unit's ``--trust``), under ``root``.

    An install that names no key keeps to these: a gateway that once required signed bundles
    must not take an unsigned one because an update forgot ``--trusted-key``.
    """
    unit = Path(root) / UNIT
    if not unit.is_file():
        return []
    start = next((line for line in unit.read_text().splitlines() if line.startswith("ExecStart=")), "")
    args = shlex.split(start.removeprefix("ExecStart="))
    return [Path(root) / key.lstrip("/") for flag, key in zip(args, args[1:]) if flag == "--trust"]


def _keep_keys(keys: list[str | Path], root: Path) -> list[Path]:
    """Copy the trusted public keys under ``root``; returns the paths the service reads them from.

    Each copy is named by its content, so two keys of one name from different folders both stay;
    a key already kept there stays as it is.
    """
    kept = []
    for key in keys:
        if Path(key).resolve().parent == (root / KEYS).resolve():
            kept.append(Path("/") / KEYS / Path(key).name)
            continue
        data = Path(key).read_bytes()
        name = f"{Path(key).stem}-{hashlib.sha256(data).hexdigest()[:8]}.pub"
        durable.write_atomically(root / KEYS / name, data)
        kept.append(Path("/") / KEYS / name)
    return kept


def _check_runs_here(verified, name: str) -> None:
    """Load the bundle's backend as the service will, or refuse the install with what is missing.

    A TensorRT bundle may lack only its engine, which ``compile-trt`` builds after the install.
    """
    from edge.backends import BackendError, EngineMissing, load_backend

    try:
        load_backend(verified, threads=1)
    except EngineMissing:
        pass
    except BackendError as exc:
        raise BundleError(f"this gateway cannot run {name}: {exc}; nothing was installed") from exc


def install(bundle: str | Path, root: str | Path = "/", trusted_keys: list[str] | None = None,
            port: str = "usb:0483:5740", budget_ms: float | None = None, python: str | None = None,
            realtime_priority: int = DEFAULT_SERVICE_PRIORITY, log_max_mb: float | None = None,
            check_runs_here: bool | None = None, distance: int | None = None, max_consecutive: int = 0,
            on_miss: str | None = None, reject_classes: list[str] | None = None, threshold: float | None = None,
            channel: int | None = None, run_options: list[str] | None = None) -> Path:
    """Verify ``bundle`` and make it current; the one it replaces becomes ``previous``.

    The unit runs the service as root, so its reader and decider get ``realtime_priority``
    (SCHED_FIFO; 0 leaves them under the ordinary scheduler).  ``python`` is the interpreter
    the service runs; by default the one running this install, whose environment holds
    drsn-edge and the bundle's backend.  The trusted keys are copied beside the bundles; with
    none given, the bundle must be signed by a key the installed service already trusts, if any.
    ``log_max_mb`` bounds the decision log (default: the runtime's).  A line-scan bundle needs
    ``distance``, the encoder counts from scanner to actuator, which only the line knows;
    ``max_consecutive`` sets the reject lockout (0: off); ``channel`` the axis a vibration bundle reads
    (default: the runtime's, the first).  ``on_miss``, ``reject_classes`` and
    ``threshold`` replace the bundle's decision policy, checked against the bundle here rather
    than at the service's first start.  ``run_options`` are further `drsn-edge run` arguments
    for the unit (``["--http", "off"]``).  ``check_runs_here``
    loads the bundle's backend first and refuses a bundle it cannot run (default: when
    installing on this system for this Python, the only case where the check means anything).
    """
    here = Path(root).resolve() == Path("/")
    if here and python and not os.access(python, os.X_OK):
        raise BundleError(f"the service's Python {python} is not an executable file; pass --python")
    if check_runs_here is None:
        check_runs_here = here and python is None
    python = python or os.path.abspath(sys.executable)
    kept_keys = [] if trusted_keys else service_keys(root)
    trusted_keys = trusted_keys or kept_keys
    try:
        verified = open_bundle(bundle, trusted_keys=trusted_keys)
    except BundleError as exc:
        if not kept_keys:
            raise
        raise BundleError(f"{exc}; the installed service trusts {', '.join(k.name for k in kept_keys)}: nothing "
                          "was installed (give --trusted-key PUB to trust another key)") from exc
    name = Path(str(bundle)).name.removesuffix(".tar.gz")
    m = verified.manifest
    if problem := settings_problem(verified.kind, distance or 0, channel or 0):
        raise BundleError(f"{problem}; nothing was installed")
    try:
        DecisionPolicy.for_bundle(m, reject_classes, threshold, on_miss)
    except PolicyError as exc:
        raise BundleError(f"{exc}; nothing was installed") from exc
    if check_runs_here:
        _check_runs_here(verified, name)
    home = Path(root) / HOME
    target = home / "bundles" / f"{name}-{verified.manifest_sha256[:8]}"
    # Everything that writes to the disk comes before the switch, so a disk that refuses leaves the
    # running service's bundle and unit as they were.
    with _disk_errors(root):
        if not target.exists():
            staging = target.with_name(target.name + ".partial")
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(verified.path, staging)
            open_bundle(staging, trusted_keys=trusted_keys)  # the copy is what runs: verify it too
            durable.sync_tree(staging)
            durable.replace(staging, target)
        keys = _keep_keys(trusted_keys or [], Path(root))
        (Path(root) / STATE).mkdir(parents=True, exist_ok=True)  # systemd's StateDirectory= creates it too
    command = [python, "-m", "edge.cli", "run", "--bundle", str(Path("/") / HOME / "current"), "--port", port,
               "--budget-ms", f"{budget_ms or m['runtime']['budget_ms']:g}",
               "--log", str(SERVICE_LOG), "--realtime-priority", str(realtime_priority)]
    if log_max_mb is not None:
        command += ["--log-max-mb", f"{log_max_mb:g}"]
    if distance:
        command += ["--distance", str(distance)]
    if max_consecutive:
        command += ["--max-consecutive", str(max_consecutive)]
    if on_miss:
        command += ["--on-miss", on_miss]
    if reject_classes:
        command += ["--reject-classes", ",".join(reject_classes)]
    if threshold is not None:
        command += ["--threshold", f"{threshold:g}"]
    if channel is not None:
        command += ["--channel", str(channel)]
    command += run_options or []
    for key in keys:
        command += ["--trust", str(key)]
    unit_text = UNIT_TEMPLATE.format(family=m["model"]["family"], precision=m["precision"],
                                     backend=m["backend"]["name"], command=shlex.join(command)).encode()
    with _disk_errors(root):
        durable.write_atomically(unit_copy(target), unit_text)
        unit = durable.stage(Path(root) / UNIT, unit_text)
    replaced = linked(root, "current")
    if replaced and replaced != target.resolve():
        _switch(home / "previous", replaced)
    _switch(home / "current", target)
    durable.replace(unit, Path(root) / UNIT)
    return target


def linked(root: str | Path, name: str) -> Path | None:
    """The installed bundle ``current`` or ``previous`` points at, or None where that link is not there."""
    link = Path(root) / HOME / name
    return link.resolve() if link.is_symlink() else None


def prune(root: str | Path = "/", keep: int = 3) -> list[Path]:
    """Remove installed bundles beyond the ``keep`` newest, never ``current`` or ``previous``; returns them.

    Each goes with the TensorRT engines built beside it; leftovers of an interrupted install go
    too.  ``keep`` 0 keeps everything.  Only ``current`` and ``previous`` are reachable by
    ``rollback``, so without pruning every update would stay on the gateway's disk for good.
    """
    home = Path(root) / HOME
    bundles = home / "bundles"
    if not keep or not bundles.is_dir():
        return []
    kept = {linked(root, "current"), linked(root, "previous")} - {None}
    installed = sorted((d for d in bundles.iterdir() if d.is_dir() and not d.name.endswith(".partial")),
                       key=lambda d: d.stat().st_mtime, reverse=True)
    stale = [d for d in installed if d.resolve() not in kept][max(0, keep - len(kept)):]
    stale += [d for d in bundles.iterdir() if d.is_dir() and d.name.endswith(".partial")]
    for directory in stale:
        shutil.rmtree(directory)
        for engine in [*bundles.glob(f"{directory.name}.*.engine"), *bundles.glob(f"{directory.name}.*.engine.new")]:
            engine.unlink()  # and one an interrupted `compile-trt` was writing
        unit_copy(directory).unlink(missing_ok=True)
    return stale


def rollback(root: str | Path = "/") -> Path:
    """Make ``previous`` current again (and the current one previous), with the service unit it was installed
    with where one was kept (``unit_copy``)."""
    home = Path(root) / HOME
    previous, current = home / "previous", home / "current"
    if not previous.is_symlink() or not previous.resolve().is_dir():
        raise BundleError(f"nothing to roll back to: {previous} does not exist")
    saved = unit_copy(previous.resolve())
    with _disk_errors(root):
        unit = durable.stage(Path(root) / UNIT, saved.read_bytes()) if saved.is_file() else None
    old_current = current.resolve()
    _switch(current, previous.resolve())
    _switch(previous, old_current)
    if unit:
        durable.replace(unit, Path(root) / UNIT)
    return current.resolve()
