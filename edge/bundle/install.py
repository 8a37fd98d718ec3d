"""Install a verified bundle on a gateway: versioned directories, an atomic ``current`` switch, rollback.

Layout under ``root`` (``/`` on a gateway; a temporary directory in tests)::

    opt/drsn-edge/bundles/<name>-<sha8>/    one directory per installed bundle
    opt/drsn-edge/current  -> bundles/...   what the runtime loads
    opt/drsn-edge/previous -> bundles/...   what ``rollback`` returns to
    etc/systemd/system/drsn-edge.service    the runtime as a service
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from edge.bundle.package import BundleError, open_bundle
from edge.runtime.realtime import DEFAULT_SERVICE_PRIORITY

HOME = Path("opt/drsn-edge")
UNIT = Path("etc/systemd/system/drsn-edge.service")

UNIT_TEMPLATE = """[Unit]
Description=drsn-edge runtime (installed: {family} {precision} on {backend}; see opt/drsn-edge/current)
After=network.target

[Service]
Type=notify
ExecStart={python} -m edge.cli run --bundle {current} --port {port} --budget-ms {budget} --log {log} --realtime-priority {priority} {trust}
Restart=always
RestartSec=2
WatchdogSec=10
KillSignal=SIGTERM
TimeoutStopSec=15

[Install]
WantedBy=multi-user.target
"""


def _switch(link: Path, target: Path) -> None:
    """Point ``link`` at ``target`` atomically (a new symlink renamed over the old one)."""
    tmp = link.with_name(link.name + ".new")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(os.path.relpath(target, link.parent))
    tmp.replace(link)


def install(bundle: str | Path, root: str | Path = "/", trusted_keys: list[str] | None = None,
            port: str = "usb:0483:5740", budget_ms: float | None = None, python: str = "/usr/bin/python3",
            realtime_priority: int = DEFAULT_SERVICE_PRIORITY) -> Path:
    """Verify ``bundle`` and make it current; the one it replaces becomes ``previous``.

    The unit runs the service as root, so its reader and decider get ``realtime_priority``
    (SCHED_FIFO; 0 leaves them under the ordinary scheduler).
    """
    verified = open_bundle(bundle, trusted_keys=trusted_keys)
    m = verified.manifest
    digest = verified.manifest_sha256[:8]
    name = Path(str(bundle)).name.removesuffix(".tar.gz")
    home = Path(root) / HOME
    target = home / "bundles" / f"{name}-{digest}"
    if not target.exists():
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(verified.path, staging)
        open_bundle(staging, trusted_keys=trusted_keys)  # the copy is what runs: verify it too
        staging.rename(target)
    current = home / "current"
    if current.is_symlink() and current.resolve() != target.resolve():
        _switch(home / "previous", current.resolve())
    _switch(current, target)
    unit = Path(root) / UNIT
    unit.parent.mkdir(parents=True, exist_ok=True)
    trust = " ".join(f"--trust {k}" for k in (trusted_keys or []))
    unit.write_text(UNIT_TEMPLATE.format(
        family=m["model"]["family"], precision=m["precision"], backend=m["backend"]["name"], python=python,
        current=Path("/") / HOME / "current", port=port, budget=budget_ms or m["runtime"]["budget_ms"],
        log=Path("/var/lib/drsn-edge/decisions.db"), priority=realtime_priority, trust=trust).replace(" \n", "\n"))
    return target


def rollback(root: str | Path = "/") -> Path:
    """Make ``previous`` current again (and the current one previous)."""
    home = Path(root) / HOME
    previous, current = home / "previous", home / "current"
    if not previous.is_symlink() or not previous.resolve().is_dir():
        raise BundleError(f"nothing to roll back to: {previous} does not exist")
    old_current = current.resolve()
    _switch(current, previous.resolve())
    _switch(previous, old_current)
    return current.resolve()
