"""The signed model bundle: one file that carries a model build from one machine to another.

A bundle is an uncompressed POSIX tar holding exactly::

    signature.sig              model-signing's signature (a Sigstore bundle, key-signed)
    payload/release.json       what this release is (a :class:`ReleaseInfo`)
    payload/model/…            the model's files, as the engine loads them

The signature covers every file under ``payload/`` — the release description and every
byte of the model — so nothing can be added, removed, renamed or changed unnoticed.
Uncompressed: gzip -6 made SmolLM2's bundles 19–20 % smaller (112 → 90 MiB for onnx int4,
143 → 116 MiB for LiteRT-LM int8) but took 28–55 s to pack and 5–6 s to unpack on a shared
2-core machine, against ~3 s to write and sign the plain tar; compress it for transport
if the stick is small.

:func:`stage` unpacks a bundle (or a folder laid out the same way) into a private
staging folder and refuses, before any byte reaches the model folder, anything but
regular files under ``payload/`` and the one signature: no links of either kind, no
devices, no absolute paths or ``..``, no duplicate names, nothing past the size limit.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tarfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from assistant.core.errors import EnclaveError

FORMAT = 1
SIGNATURE = "signature.sig"
PAYLOAD = "payload"
RELEASE = "release.json"
MODEL = "model"
_CHUNK = 1 << 20


class BundleError(EnclaveError):
    """A bundle is damaged, malformed, or holds something Enclave never unpacks."""


@dataclass(frozen=True)
class ReleaseInfo:
    """``release.json``: what a bundle holds. ``version`` only ever grows per model and engine."""

    name: str
    engine: str
    version: int
    released: str
    source_sha256: str  # the combined sha256 of the model's files (as in the installed manifest)
    min_enclave: str = "0"
    expires: str | None = None
    notes: str = ""
    model: dict[str, Any] = field(default_factory=dict)  # manifest facts: chat, licence, context_length, file…
    format: int = FORMAT

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "name": self.name,
            "engine": self.engine,
            "version": self.version,
            "released": self.released,
            "expires": self.expires,
            "min_enclave": self.min_enclave,
            "source_sha256": self.source_sha256,
            "notes": self.notes,
            "model": self.model,
        }

    @classmethod
    def from_json(cls, text: str) -> ReleaseInfo:
        try:
            data = json.loads(text)
            info = cls(
                name=str(data["name"]),
                engine=str(data["engine"]),
                version=int(data["version"]),
                released=str(data["released"]),
                source_sha256=str(data["source_sha256"]),
                min_enclave=str(data.get("min_enclave") or "0"),
                expires=str(data["expires"]) if data.get("expires") else None,
                notes=str(data.get("notes") or ""),
                model=dict(data.get("model") or {}),
                format=int(data.get("format", FORMAT)),
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"The bundle's release.json is not valid ({exc}).", "Re-make the bundle.") from exc
        if info.format != FORMAT:
            raise BundleError(
                f"The bundle uses format {info.format}; this Enclave reads format {FORMAT}.", "Update Enclave first."
            )
        if info.version < 1:
            raise BundleError("The bundle's version must be 1 or more.", "Re-make it with --version N.")
        return info


@dataclass(frozen=True)
class Staged:
    """A bundle unpacked into ``root``: ``payload`` (signed) and ``signature``."""

    root: Path
    bytes: int

    @property
    def payload(self) -> Path:
        return self.root / PAYLOAD

    @property
    def signature(self) -> Path:
        return self.root / SIGNATURE

    @property
    def model(self) -> Path:
        return self.payload / MODEL

    def release(self) -> ReleaseInfo:
        return ReleaseInfo.from_json((self.payload / RELEASE).read_text(encoding="utf-8"))

    def discard(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --------------------------------------------------------------------------- writing
def write_bundle(
    output: Path, release: ReleaseInfo, model_files: Iterable[tuple[str, Path]], sign: Any, work: Path
) -> int:
    """Write the bundle for ``model_files`` (relative name, path) to ``output``.

    The payload is laid out in ``work`` (hard links where the file system allows, else
    copies), signed by ``sign(payload_dir, signature_path)``, then packed into a partial
    file that is renamed over ``output``. Returns the bundle's size in bytes."""
    shutil.rmtree(work, ignore_errors=True)
    payload = work / PAYLOAD
    (payload / MODEL).mkdir(parents=True)
    for rel, source in model_files:
        target = payload / MODEL / _safe_relative(rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)
    (payload / RELEASE).write_text(json.dumps(release.as_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    signature = work / SIGNATURE
    sign(payload, signature)
    partial = output.with_name(output.name + ".partial")
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
        # The signature first: a damaged header later in the file then loses payload
        # files, which the signature check reports, instead of the signature itself.
        tar.add(signature, arcname=SIGNATURE, filter=_plain)
        for path in sorted(p for p in payload.rglob("*") if p.is_file()):
            tar.add(path, arcname=path.relative_to(work).as_posix(), filter=_plain)
    os.replace(partial, output)
    shutil.rmtree(work, ignore_errors=True)
    return output.stat().st_size


def _plain(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """No owner, no times that change per machine: the bundle says what it holds, nothing else."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o644 if info.isfile() else 0o755
    return info


# --------------------------------------------------------------------------- staging
def _safe_relative(name: str) -> PurePosixPath:
    """``name`` as a relative path that stays inside its folder, or BundleError."""
    path = PurePosixPath(name)
    if not name or "\\" in name or path.is_absolute() or any(part in ("", ".", "..") for part in path.parts):
        raise BundleError(
            f"The bundle holds a path that would escape its folder: {name!r}.",
            "Do not install it; it was not made by `enclave models bundle`.",
        )
    return path


def _allowed(name: str) -> PurePosixPath:
    path = _safe_relative(name)
    if path.as_posix() == SIGNATURE or (path.parts[0] == PAYLOAD and len(path.parts) >= 2):
        return path
    raise BundleError(
        f"The bundle holds {name!r}, which is not part of a model bundle.",
        "A bundle holds signature.sig and payload/ only; get an intact copy from its publisher.",
    )


class _Budget:
    """The size limit, counted as bytes are written (a header can lie about a size)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, n: int) -> None:
        self.used += n
        if self.used > self.limit:
            raise BundleError(
                f"The bundle unpacks to more than the limit of {self.limit >> 20} MiB.",
                "Raise bundle_max_mb in the settings if this model really is that large.",
            )


def _copy_into(source: IO[bytes], target: Path, budget: _Budget) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL | O_NOFOLLOW: never through a link, never over a file already there.
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as out:
        while block := source.read(_CHUNK):
            budget.take(len(block))
            out.write(block)


def stage(source: Path, staging: Path, limit_bytes: int) -> Staged:
    """Unpack the bundle file or folder ``source`` into the new folder ``staging``."""
    if source.is_symlink():
        raise BundleError(f"{source} is a symbolic link.", "Give the bundle file itself.")
    if not source.exists():
        raise BundleError(f"{source} does not exist.", "Give the path of a bundle made by `enclave models bundle`.")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    os.chmod(staging, 0o700)
    budget = _Budget(limit_bytes)
    try:
        if source.is_dir():
            _stage_folder(source, staging, budget)
        else:
            if source.stat().st_size > limit_bytes + (1 << 20):
                budget.take(source.stat().st_size)
            _stage_tar(source, staging, budget)
        staged = Staged(staging, budget.used)
        if not staged.signature.is_file():
            raise BundleError(
                "The bundle holds no signature.sig.", "Unsigned models cannot be installed; sign it first."
            )
        if not (staged.payload / RELEASE).is_file():
            raise BundleError("The bundle holds no payload/release.json.", "Re-make it with `enclave models bundle`.")
        if not staged.model.is_dir() or not any(p.is_file() for p in staged.model.rglob("*")):
            raise BundleError("The bundle holds no model files.", "Re-make it with `enclave models bundle`.")
        return staged
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _stage_tar(source: Path, staging: Path, budget: _Budget) -> None:
    seen: set[str] = set()
    try:
        with tarfile.open(source, "r:") as tar:
            for member in _members(tar):
                path = _allowed(member.name)
                key = path.as_posix()
                if key in seen:
                    raise BundleError(f"The bundle holds {key!r} twice.", "Do not install it.")
                seen.add(key)
                if member.isdir():
                    continue
                if not member.isreg():
                    what = (
                        "a symbolic link" if member.issym() else "a hard link" if member.islnk() else "a special file"
                    )
                    raise BundleError(
                        f"The bundle holds {what}: {key}.", "Only regular files are unpacked; do not install it."
                    )
                handle = tar.extractfile(member)
                if handle is None:  # pragma: no cover - isreg() members always have data
                    raise BundleError(f"{key} in the bundle cannot be read.", "Get an intact copy.")
                _copy_into(handle, staging / path, budget)
    except (tarfile.TarError, EOFError, OSError, UnicodeError) as exc:
        raise BundleError(
            f"The bundle is damaged or truncated ({exc}).", "Copy it again from its source and retry."
        ) from exc


def _members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    while (member := tar.next()) is not None:
        yield member


def _stage_folder(source: Path, staging: Path, budget: _Budget) -> None:
    for dirpath, dirnames, filenames in os.walk(source, followlinks=False):
        here = Path(dirpath)
        for name in [*dirnames, *filenames]:
            path = here / name
            rel = path.relative_to(source).as_posix()
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                raise BundleError(f"The bundle folder holds a symbolic link: {rel}.", "Only regular files are copied.")
            if stat.S_ISDIR(info.st_mode):
                if rel != PAYLOAD and not rel.startswith(PAYLOAD + "/"):
                    _allowed(rel)  # raises: a folder other than payload/
                continue
            if not stat.S_ISREG(info.st_mode):
                raise BundleError(f"The bundle folder holds a special file: {rel}.", "Only regular files are copied.")
            target = staging / _allowed(rel)
            with path.open("rb") as handle:
                _copy_into(handle, target, budget)
