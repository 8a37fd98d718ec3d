"""Bundles: a directory and a ``.tar.gz`` of model files, ``manifest.json`` and ``manifest.sig``.

The manifest records the sha256 and size of every file; ``manifest.sig`` is an
Ed25519 signature over the manifest's bytes.  :func:`open_bundle` refuses a bundle
whose files are missing, extra, truncated or altered, or whose signature does not
verify against a trusted key.  Nothing on the load path unpickles anything.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.bundle.signing import SignatureError, load_public_key, sign, verify
from edge.errors import DrsnEdgeError

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
FORMAT = "drsn-edge-bundle/1"


class BundleError(DrsnEdgeError):
    """A bundle that cannot be trusted or read, with what is wrong with it."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Bundle:
    """A verified bundle on disk."""

    path: Path
    manifest: dict
    signed_by_trusted_key: bool
    unpacked: tempfile.TemporaryDirectory | None = field(default=None, repr=False, compare=False)  # an archive's

    @property
    def manifest_sha256(self) -> str:
        """Identifies the bundle: the manifest lists every file's hash, so this covers them all."""
        return hashlib.sha256((self.path / MANIFEST).read_bytes()).hexdigest()

    @property
    def kind(self) -> str:
        """``linescan`` (tiles of lines cut into patches) or ``vibration`` (sliding windows of samples)."""
        return "linescan" if "tile_lines" in self.manifest["preprocessing"] else "vibration"

    def file(self, role: str) -> Path:
        """The path of the file the manifest names for ``role`` (``model``, ``weights``, ...)."""
        name = self.manifest["model"]["files"].get(role)
        if name is None:
            raise BundleError(f"bundle {self.path} has no {role!r} file")
        return self.path / name


def write_bundle(out: str | Path, files: dict[str, Path], manifest: dict,
                 private_key: Ed25519PrivateKey | None = None, archive: bool = True) -> Path:
    """Copy ``files`` (name in bundle -> source path) into ``out``, hash them, write and sign the manifest.

    Everything is written beside ``out`` first and swapped in whole: a build that fails
    halfway (a full disk, a file gone) leaves the bundle and archive already at ``out`` as
    they were.  The key comes loaded (``load_private_key``) for the same reason.
    """
    out = Path(out)
    staging = out.with_name(out.name + ".partial")
    packed = out.with_name(out.name + ".tar.gz.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for name, source in files.items():
            if "/" in name or name in (MANIFEST, SIGNATURE):
                raise BundleError(f"invalid file name in bundle: {name!r}")
            shutil.copyfile(source, staging / name)
        manifest = dict(manifest, format=FORMAT, files={
            name: {"sha256": sha256_file(staging / name), "bytes": (staging / name).stat().st_size}
            for name in sorted(files)})
        data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        (staging / MANIFEST).write_bytes(data)
        if private_key is not None:
            (staging / SIGNATURE).write_bytes(sign(data, private_key))
        if archive:
            with tarfile.open(packed, "w:gz") as tar:
                for path in sorted(staging.iterdir()):
                    tar.add(path, arcname=f"{out.name}/{path.name}")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        packed.unlink(missing_ok=True)
        raise
    replaced = out.with_name(out.name + ".old")
    shutil.rmtree(replaced, ignore_errors=True)
    if out.exists():
        out.rename(replaced)
    staging.rename(out)
    if archive:
        packed.replace(out.with_name(out.name + ".tar.gz"))
    shutil.rmtree(replaced, ignore_errors=True)
    return out


def _extract(archive: Path) -> tempfile.TemporaryDirectory:
    """Unpack a bundle archive into a temporary directory, refusing links and paths outside it.

    The directory goes with its ``Bundle`` (or at exit): a gateway that verifies, runs or
    installs archives day after day must not fill its /tmp with copies of them.
    """
    unpacked = tempfile.TemporaryDirectory(prefix="drsn-bundle-")
    target = Path(unpacked.name)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            for m in members:
                parts = Path(m.name).parts
                if not (m.isfile() or m.isdir()) or Path(m.name).is_absolute() or ".." in parts or len(parts) > 2:
                    raise BundleError(f"{archive}: unsafe or unexpected entry {m.name!r}")
            for m in members:
                if m.isfile():
                    dest = target / Path(m.name).name
                    with tar.extractfile(m) as src, dest.open("wb") as dst:
                        shutil.copyfileobj(src, dst)
    except (tarfile.TarError, EOFError, OSError) as exc:
        unpacked.cleanup()
        raise BundleError(f"{archive}: not a complete bundle archive ({type(exc).__name__}: {exc}); "
                          "copy it again") from exc
    except BaseException:
        unpacked.cleanup()
        raise
    return unpacked


def open_bundle(path: str | Path, trusted_keys: list[str | Path] | None = None,
                require_signature: bool | None = None) -> Bundle:
    """Verify a bundle directory or ``.tar.gz`` and return it.

    With ``trusted_keys`` a valid signature by one of them is required (unless
    ``require_signature`` is False); without keys the hashes are still checked.
    An archive is unpacked into a temporary directory that lives as long as the
    returned ``Bundle``; errors name the archive, not that directory.
    """
    path = Path(path)
    if not path.exists():
        raise BundleError(f"bundle {path} not found")
    if path.is_dir():
        return _verified(path, path, trusted_keys, require_signature)
    unpacked = _extract(path)
    try:
        bundle = _verified(Path(unpacked.name), path, trusted_keys, require_signature)
    except BaseException:
        unpacked.cleanup()
        raise
    bundle.unpacked = unpacked
    return bundle


def _verified(directory: Path, named: Path, trusted_keys: list[str | Path] | None,
              require_signature: bool | None) -> Bundle:
    """The bundle in ``directory`` once its files and signature check out; ``named`` is what errors call it."""
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{named} has no {MANIFEST}; is it a drsn-edge bundle?")
    data = manifest_path.read_bytes()
    try:
        manifest = json.loads(data)
    except json.JSONDecodeError as exc:
        raise BundleError(f"{named}: {MANIFEST} is not valid JSON ({exc}); the bundle is damaged") from exc
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{named}: bundle format {manifest.get('format')!r}, this drsn-edge reads {FORMAT!r}")
    listed = manifest.get("files", {})
    present = {p.name for p in directory.iterdir() if p.name not in (MANIFEST, SIGNATURE)}
    problems = [f"missing {n}" for n in sorted(set(listed) - present)]
    problems += [f"unlisted file {n}" for n in sorted(present - set(listed))]
    for name in sorted(set(listed) & present):
        size = (directory / name).stat().st_size
        if size != listed[name]["bytes"]:
            problems.append(f"{name} is {size} bytes, the manifest says {listed[name]['bytes']} (truncated?)")
        elif sha256_file(directory / name) != listed[name]["sha256"]:
            problems.append(f"{name} does not match its sha256 (altered)")
    if problems:
        raise BundleError(f"bundle {named} refused: " + "; ".join(problems))
    keys = [load_public_key(k) for k in (trusted_keys or [])]
    require = bool(keys) if require_signature is None else require_signature
    signed = False
    sig_path = directory / SIGNATURE
    if keys and sig_path.is_file():
        signed = verify(data, sig_path.read_bytes(), keys)
        if not signed:
            raise BundleError(f"bundle {named} refused: the signature does not verify against the trusted keys")
    if require and not signed:
        raise BundleError(f"bundle {named} refused: it is not signed" + (
            " and no trusted key is configured" if not keys else
            "; sign it when building (`drsn-edge build --key KEY`) with the key whose .pub the gateway trusts"))
    return Bundle(path=directory, manifest=manifest, signed_by_trusted_key=signed)


__all__ = ["Bundle", "BundleError", "SignatureError", "open_bundle", "sha256_file", "write_bundle"]
