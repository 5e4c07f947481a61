"""Model manifests, installed models, verification, add and remove.

Two kinds of manifest:

* a **recipe** (``models/<name>.toml`` in the repository): what Enclave knows how
  to build, from which PyPI package, with which settings;
* an **installed manifest** (``<data>/models/<name>/<engine>/enclave-manifest.json``):
  what is on disk, with the size, mtime and sha256 of every file and one combined
  sha256 that names the model in every message Enclave records.

A model folder a user brings is untrusted input, checked before it can hurt: only
regular files are read or hashed (a FIFO would block a reader forever, a device such
as ``/dev/zero`` never ends; both are refused by name, opened with ``O_NONBLOCK`` and
checked with ``fstat``, so a swap after the check is caught too); JSON files are
bounded and their fields typed; the weights and the chat template are tried in a
child process (:mod:`assistant.catalog.probe`) — and only then is the manifest
written, so a failed ``add`` leaves nothing registered. A manifest that is damaged
later is reported for that model alone (:meth:`Catalog.broken`); every other model
keeps working.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import time
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import IO, Any

from assistant.core import resources
from assistant.core.errors import EnclaveError, ModelCorrupt, ModelNotInstalled, ModelUnknown, NotALanguageModel
from assistant.core.files import private_dir
from assistant.core.records import MANIFEST_NAME as MANIFEST_NAME  # re-exported: the catalog owns its use
from assistant.core.settings import Settings
from assistant.core.text import displayable, inline
from assistant.engines import ENGINE_NAMES

#: Model names are folder names under the data directory: no separators, no "..".
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
#: Largest JSON file of a model folder read whole: Phi-3's tokenizer.json is 3.6 MB and
#: Gemma 3's 33 MB; genai_config.json and manifests are a few KB.
MAX_JSON_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Recipe:
    """A model Enclave can build: one ``models/*.toml`` file."""

    name: str
    title: str
    chat: bool
    licence: str
    context_length: int
    description: str
    source: dict[str, str]
    build: dict[str, dict[str, Any]]
    #: ``chat`` for language models; ``embedding`` for sentence encoders (document search).
    kind: str = "chat"
    #: How this model answers from documents, as measured (``[answers]``: ``docs_mode``
    #: and the figures behind it); see :mod:`assistant.app.answers`.
    answers: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_text(cls, text: str) -> Recipe:
        data = tomllib.loads(text)
        return cls(
            name=data["name"],
            title=data.get("title", data["name"]),
            chat=bool(data.get("chat", True)),
            licence=data.get("licence", "unknown"),
            context_length=int(data.get("context_length", 2048)),
            description=data.get("description", ""),
            source=dict(data.get("source", {})),
            build={k: dict(v) for k, v in data.get("build", {}).items()},
            kind=str(data.get("kind", "chat")),
            answers=dict(data.get("answers", {})),
        )


def recipes(directory: Traversable | None = None) -> dict[str, Recipe]:
    """Every recipe shipped with Enclave (``models/*.toml``), by name."""
    root = directory or resources.manifests()
    found: dict[str, Recipe] = {}
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml") and entry.is_file():
            recipe = Recipe.from_text(entry.read_text(encoding="utf-8"))
            found[recipe.name] = recipe
    return found


@dataclass
class InstalledModel:
    """A model on disk with its manifest."""

    name: str
    engine: str
    path: Path  # the folder (or file) the engine loads
    manifest_path: Path
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        return str(self.manifest.get("sha256", ""))

    @property
    def size(self) -> int:
        return sum(int(f["size"]) for f in self.manifest.get("files", {}).values())

    @property
    def chat(self) -> bool:
        return bool(self.manifest.get("chat", True))

    @property
    def kind(self) -> str:
        """``chat`` (a language model, instruction-tuned or base) or ``embedding`` (document search)."""
        return str(self.manifest.get("kind", "chat"))

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "engine": self.engine,
            "path": str(self.path),
            "size_bytes": self.size,
            "sha256": self.sha256,
            "chat": self.chat,
            # "chat", "base" (a language model without chat tuning: continues text) or "embedding"
            "kind": "base" if self.kind == "chat" and not self.chat else self.kind,
            "licence": self.manifest.get("licence", "unknown"),
            "context_length": self.manifest.get("context_length"),
            "source": self.manifest.get("source", {}).get("package", "user"),
            "built_at": self.manifest.get("built_at"),
        }


# --------------------------------------------------------------------------- reading files safely
def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a regular file"


def open_regular(path: Path) -> IO[bytes]:
    """Open ``path`` for reading only if it is (or links to) a regular file.

    ``O_NONBLOCK`` makes opening a FIFO return at once instead of waiting for a writer;
    ``fstat`` on the open descriptor then refuses it (and devices, sockets, folders)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise ModelCorrupt(
            f"{inline(str(path))} cannot be read ({exc.strerror}).", "Check the file and its permissions."
        ) from exc
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ModelCorrupt(
                f"{inline(str(path))} is {_kind(mode)}, not a regular file, so it is not read.",
                "A model folder holds ordinary files only; replace it with the real file.",
            )
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def read_json_file(path: Path, limit: int = MAX_JSON_BYTES) -> Any:
    """A JSON file of a model folder: a regular file, at most ``limit`` bytes, valid UTF-8 JSON."""
    with open_regular(path) as handle:
        raw = handle.read(limit + 1)
    if len(raw) > limit:
        raise ModelCorrupt(
            f"{inline(str(path))} is larger than {limit // 2**20} MB, too large for its kind of file.",
            "The model folder is damaged or not a model; fetch it again.",
        )
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise ModelCorrupt(
            f"{inline(str(path))} is not valid JSON ({displayable(str(exc))[:200]}).",
            "The model folder is damaged; fetch it again.",
        ) from exc


def scan_model(root: Path) -> tuple[list[Path], list[str]]:
    """Every regular file of a model (folder or single file), and the entries that are not.

    Symlinks to regular files are followed (Hugging Face cache folders are made of them);
    links to anything else, broken links, link loops, linked folders, FIFOs, sockets and
    devices are problems, named by path."""
    try:
        info = os.lstat(root)
    except OSError as exc:
        return [], [f"{root.name}: cannot be read ({exc.strerror})"]
    if not stat.S_ISDIR(info.st_mode) and not _follows_to_dir(root):
        problem = _entry_problem(root)
        return ([root], []) if problem is None else ([], [f"{root.name}: {problem}"])
    files: list[Path] = []
    problems: list[str] = []

    def failed(exc: OSError) -> None:
        problems.append(f"{inline(str(exc.filename))}: cannot be read ({exc.strerror})")

    for folder, dirs, names in os.walk(root, followlinks=False, onerror=failed):
        base = Path(folder)
        for name in sorted(dirs):
            if (base / name).is_symlink():
                problems.append(f"{inline((base / name).relative_to(root).as_posix())}: a linked folder (not followed)")
        for name in sorted(names):
            path = base / name
            if name == MANIFEST_NAME and base == root:
                continue
            problem = _entry_problem(path)
            if problem is None:
                files.append(path)
            else:
                problems.append(f"{inline(path.relative_to(root).as_posix())}: {problem}")
    return sorted(files), problems


def _follows_to_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:
        return False


def _entry_problem(path: Path) -> str | None:
    try:
        info = os.lstat(path)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if stat.S_ISLNK(info.st_mode):
        try:
            target = os.stat(path)
        except OSError as exc:
            return (
                "a broken or looping symlink"
                if exc.errno in (2, 40)
                else f"a symlink that cannot be read ({exc.strerror})"
            )
        if not stat.S_ISREG(target.st_mode):
            return f"a symlink to {_kind(target.st_mode)}"
        return None
    if not stat.S_ISREG(info.st_mode):
        return _kind(info.st_mode)
    return None


# --------------------------------------------------------------------------- hashing
def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open_regular(path) as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _model_files(root: Path) -> list[Path]:
    files, problems = scan_model(root)
    if problems:
        raise ModelCorrupt(
            f"The model at {inline(str(root))} holds entries that are not regular files: {'; '.join(problems[:3])}"
            + ("…" if len(problems) > 3 else "")
            + ".",
            "A model folder holds ordinary files only: remove those entries, or fetch the model again.",
        )
    return files


def hash_model(root: Path, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Size, mtime and sha256 of every file, and one combined sha256 (regular files only)."""
    files = _model_files(root)
    single = not root.is_dir()
    total = sum(p.stat().st_size for p in files)
    done = 0
    entries: dict[str, dict[str, Any]] = {}
    for path in files:
        rel = path.name if single else path.relative_to(root).as_posix()
        stat_ = path.stat()
        entries[rel] = {"size": stat_.st_size, "mtime_ns": stat_.st_mtime_ns, "sha256": sha256_file(path)}
        done += stat_.st_size
        if progress:
            progress(done, total)
    return {"files": entries, "sha256": combined_sha256(entries)}


def combined_sha256(entries: dict[str, dict[str, Any]]) -> str:
    digest = hashlib.sha256()
    for rel in sorted(entries):
        digest.update(f"{rel}\0{entries[rel]['sha256']}\n".encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------- catalog
class Catalog:
    """Installed models under the data directory, and the recipes to build more."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.locations.models
        self.recipes = recipes()

    def _manifest_path(self, name: str, engine: str) -> Path:
        return self.root / name / engine / MANIFEST_NAME

    def _manifests(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(self.root.glob(f"*/*/{MANIFEST_NAME}"))

    def installed(self) -> list[InstalledModel]:
        """Every installed model whose manifest reads; damaged ones are in :meth:`broken`."""
        models: list[InstalledModel] = []
        for manifest_path in self._manifests():
            try:
                models.append(self._read(manifest_path))
            except EnclaveError:
                continue  # reported by broken(): `models list`, `verify` and `doctor` name it
        return models

    def broken(self) -> list[BrokenModel]:
        """Registrations whose manifest cannot be used, each with the reason."""
        found: list[BrokenModel] = []
        for manifest_path in self._manifests():
            try:
                self._read(manifest_path)
            except EnclaveError as exc:
                found.append(
                    BrokenModel(manifest_path.parent.parent.name, manifest_path.parent.name, manifest_path, exc.message)
                )
        return found

    def read_manifest(self, manifest_path: Path, name: str, engine: str) -> InstalledModel:
        """The model whose manifest is at ``manifest_path`` outside the registry (a kept
        release), checked as if registered as ``name`` for ``engine``."""
        return self._read(manifest_path, (name, engine))

    def _read(self, manifest_path: Path, registered: tuple[str, str] | None = None) -> InstalledModel:
        hint = (
            f"Remove it with `enclave models remove {inline(manifest_path.parent.parent.name)}` "
            "and build or add the model again."
        )
        try:
            manifest = read_json_file(manifest_path, 16 * 2**20)
        except ModelCorrupt as exc:
            raise ModelCorrupt(f"The manifest {inline(str(manifest_path))} is unreadable: {exc.message}", hint) from exc
        problem = manifest_problem(manifest, manifest_path, registered)
        if problem:
            raise ModelCorrupt(f"The manifest {inline(str(manifest_path))} is damaged: {problem}.", hint)
        engine_dir = manifest_path.parent
        external = manifest.get("path")
        return InstalledModel(
            name=manifest["name"],
            engine=manifest["engine"],
            path=Path(external) if external else engine_dir,
            manifest_path=manifest_path,
            manifest=manifest,
        )

    def find(self, name: str, engine: str | None = None) -> InstalledModel:
        """The installed model ``name`` (for ``engine``, or any engine)."""
        engines = [engine] if engine else list(ENGINE_NAMES)
        for eng in engines:
            path = self._manifest_path(name, eng)
            if path.is_file():
                return self._read(path)
        recipe = self.recipes.get(name)
        # Installed for other engines only: say which, not that the model does not exist.
        others = [e for e in ENGINE_NAMES if e != engine and self._manifest_path(name, e).is_file()]
        use = " or ".join(f"`--engine {e}`" for e in others)
        if recipe is not None and (engine is None or engine in recipe.build):
            engine_flag = f" --engine {engine}" if engine and engine != "onnx" else ""
            installed = f"; it is installed for {', '.join(others)}" if others else ""
            raise ModelNotInstalled(
                f"The model {name!r} is not built yet{f' for the {engine} engine' if engine else ''}{installed}.",
                f"Build it with `enclave models build {name}{engine_flag}` (a few minutes; it shows its progress)"
                + (f", or use {use}." if others else "."),
            )
        if engine is not None and others:
            if recipe is not None:
                why = f"Enclave's recipe builds it for {', '.join(sorted(recipe.build))} only"
                more = ""
            else:
                why = "a model you added runs on the engine its files are for"
                files = "a LiteRT-LM .litertlm bundle" if engine == "litert" else "an onnxruntime-genai folder"
                more = f", or register {files} of it with `enclave models add PATH --name {name}`"
            raise ModelNotInstalled(
                f"{name!r} has no {engine} build: it is installed for {', '.join(others)} only ({why}).",
                f"Use {use}{more}.",
            )
        if engine is not None and recipe is not None and recipe.build:
            builds = sorted(recipe.build)
            flag = "" if builds[0] == "onnx" else f" --engine {builds[0]}"
            raise ModelNotInstalled(
                f"{name!r} has no {engine} build: Enclave's recipe builds it for {', '.join(builds)} only.",
                f"Build it with `enclave models build {name}{flag}` and use `--engine {builds[0]}`.",
            )
        present = sorted({m.name for m in self.installed()})
        buildable = sorted(set(self.recipes) - set(present))
        can_build = f" Enclave can build {', '.join(buildable)} (`enclave models build NAME`)." if buildable else ""
        raise ModelUnknown(
            f"No model is called {name!r}.",
            f"Installed: {', '.join(present) or 'none'}.{can_build} Add your own with `enclave models add PATH`.",
        )

    def find_language_model(self, name: str, engine: str | None = None) -> InstalledModel:
        """Like :meth:`find`, but refuses embedding models by name, built or not."""
        recipe = self.recipes.get(name)
        if recipe is not None and recipe.kind == "embedding":
            raise NotALanguageModel(name)
        model = self.find(name, engine)
        if model.kind == "embedding":
            raise NotALanguageModel(name)
        return model

    # -- verification
    def verify(self, model: InstalledModel, full: bool = True) -> list[str]:
        """Problems with ``model``'s files, empty when it matches its manifest.

        ``full=False`` is the cheap check done before every load: sizes always,
        and a re-hash only of files whose mtime changed since they were hashed.
        """
        problems: list[str] = []
        files: dict[str, dict[str, Any]] = model.manifest.get("files", {})
        root = model.path
        found, problems = scan_model(root) if os.path.lexists(root) else ([], [])
        single = os.path.lexists(root) and not root.is_dir()
        on_disk = {(p.name if single else p.relative_to(root).as_posix()): p for p in found}
        for rel, entry in files.items():
            path = on_disk.get(rel)
            if path is None:
                problems.append(f"{rel}: missing")
                continue
            stat = path.stat()
            if stat.st_size != entry["size"]:
                problems.append(f"{rel}: size {stat.st_size} bytes, manifest says {entry['size']}")
                continue
            if full or stat.st_mtime_ns != entry.get("mtime_ns"):
                try:
                    same = sha256_file(path) == entry["sha256"]
                except ModelCorrupt as exc:
                    problems.append(f"{rel}: {exc.message}")
                    continue
                if not same:
                    problems.append(f"{rel}: sha256 differs from the manifest")
        for rel in sorted(set(on_disk) - set(files)):
            problems.append(f"{rel}: not in the manifest")
        return [inline(p) for p in problems]

    def check_before_load(self, model: InstalledModel) -> None:
        """Files as the manifest recorded them, and a chat template already tried in a
        child process with this renderer (tried now, once, if not: see catalog/probe.py)."""
        problems = self.verify(model, full=False)
        if problems:
            raise ModelCorrupt(
                f"The model {model.name!r} ({model.engine}) does not match its manifest: "
                + "; ".join(problems[:3])
                + ("…" if len(problems) > 3 else "")
                + ".",
                self.repair_hint(model),
            )
        self.check_template(model)

    def check_template(self, model: InstalledModel) -> None:
        """Render the model's chat template in a child process unless the manifest says this
        template (by sha256) was rendered safely with this renderer; records the verdict."""
        if model.kind == "embedding" or model.engine not in ENGINE_NAMES:
            return
        from assistant.catalog import probe

        engine: probe.ProbeEngine = "onnx" if model.engine == "onnx" else "litert"
        target = model_file(model)
        current = probe.template_sha256(_template_of(engine, target))
        if current == "none":
            return  # no template of its own: Enclave's plain transcript template is used
        check = model.manifest.get("template_check")
        if (
            isinstance(check, dict)
            and check.get("sha256") == current
            and check.get("renderer") == probe.renderer(engine)
        ):
            return
        result = probe.probe(engine, target, load=False)
        model.manifest["template_check"] = {"sha256": result.template_sha256, "renderer": result.renderer}
        try:  # best effort: a read-only data directory just checks again next time
            _write_json(model.manifest_path, model.manifest)
        except OSError:
            pass

    def repair_hint(self, model: InstalledModel) -> str:
        if model.name in self.recipes and not model.manifest.get("path"):
            engine = f" --engine {model.engine}" if model.engine != "onnx" else ""
            return f"Rebuild it with `enclave models build {model.name}{engine} --force`."
        source = model.manifest.get("source", {})
        if isinstance(source, dict) and str(source.get("path", "")).endswith(".gguf"):
            return (
                f"Convert it again with `enclave models remove {model.name}` then "
                f"`enclave models add {inline(str(source['path']))} --name {model.name}`."
            )
        return f"Re-register it with `enclave models remove {model.name}` then `enclave models add PATH`."

    # -- writing
    def install_dir(self, name: str, engine: str) -> Path:
        return self.root / name / engine

    def write_manifest(
        self,
        name: str,
        engine: str,
        folder: Path,
        info: dict[str, Any],
        external: Path | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> InstalledModel:
        """Hash ``folder`` (or the external path) and write its installed manifest atomically."""
        target = external or folder
        manifest = {
            "name": name,
            "engine": engine,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **info,
            **hash_model(target, progress),
        }
        if external:
            manifest["path"] = str(external)
        private_dir(folder)  # the data directory above it too, when this creates it
        path = folder / MANIFEST_NAME
        _write_json(path, manifest)
        return self._read(path, (name, engine))

    def remove(self, name: str, engine: str | None = None) -> list[InstalledModel]:
        """Delete installed builds of ``name`` (user-added models: only the registration).

        A registration whose manifest is damaged is removed too (only its own folder
        under the data directory: a damaged manifest's ``path`` is never trusted)."""
        removed = []
        for model in self.installed():
            if model.name == name and (engine is None or model.engine == engine):
                folder = model.manifest_path.parent
                if folder.is_symlink():
                    # An installed release: the link and every version kept for rollback go.
                    folder.unlink()
                    shutil.rmtree(self.settings.locations.releases / model.name / model.engine, ignore_errors=True)
                else:
                    shutil.rmtree(folder)
                removed.append(model)
        for bad in self.broken():
            if bad.name == name and (engine is None or bad.engine == engine):
                shutil.rmtree(bad.manifest_path.parent)
                removed.append(InstalledModel(bad.name, bad.engine, bad.manifest_path.parent, bad.manifest_path))
        if not removed:
            raise ModelNotInstalled(f"No installed model is called {name!r}.", "See `enclave models list`.")
        parent = self.root / name
        if parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
        return removed

    def add(
        self, path: Path, name: str | None = None, progress: Callable[[int, int], None] | None = None
    ) -> InstalledModel:
        """Register a user-provided model folder (or bundle) in place, after checking it.

        In order, and nothing is written before the last step: every entry is a regular
        file (or a link to one); the configuration is valid JSON with sane fields; the
        model loads, renders its chat template and generates a token in a child process
        (:func:`~assistant.catalog.probe.probe`: a native crash or a looping template ends
        the child, not Enclave); the files are hashed; the manifest is written.
        """
        given = path.expanduser()
        if not os.path.lexists(given):
            raise EnclaveError(f"{inline(str(given))} does not exist.", "Give the path of a model folder.")
        path = given.resolve()
        files, problems = scan_model(path)
        if problems:
            raise ModelCorrupt(
                f"{inline(str(path))} was refused: "
                + "; ".join(problems[:3])
                + ("…" if len(problems) > 3 else "")
                + ".",
                "A model folder holds ordinary files only (links to files are fine); nothing was registered.",
            )
        if path.is_dir() and (path / "genai_config.json").exists():
            engine = "onnx"
            context = _genai_context(path / "genai_config.json")
        elif path.is_file() and path.suffix == ".litertlm":
            engine = "litert"
            context = self.settings.context_window
        else:
            raise EnclaveError(
                f"{inline(str(path))} is not a model Enclave can run.",
                "Give a .gguf file (llama.cpp's format; Enclave converts it), an onnxruntime-genai model folder "
                "(it holds genai_config.json and the .onnx files, such as Microsoft's published Phi-3/Phi-4-mini "
                "ONNX folders) or a LiteRT-LM .litertlm bundle (such as Google's Gemma bundles). "
                "Nothing was registered.",
            )
        name = name if name is not None else slug(path.stem if path.is_file() else path.name)
        if not NAME_PATTERN.fullmatch(name):
            raise EnclaveError(
                f"{inline(name)!r} cannot be a model name.",
                "Use letters, digits, '.', '_' and '-' (at most 100), starting with a letter or digit.",
            )
        if self._manifest_path(name, engine).exists():
            raise EnclaveError(
                f"A model called {name!r} is already installed.",
                "Choose another with --name, or remove the old one first.",
            )
        from assistant.catalog import probe

        kind: probe.ProbeEngine = "onnx" if engine == "onnx" else "litert"
        result = probe.probe(kind, path, load=True, size=sum(f.stat().st_size for f in files))
        info = {
            "chat": result.template_sha256 != "none",
            "licence": _guess_licence(path),
            "context_length": context,
            "source": {"package": "user", "path": str(path)},
            "template_check": {"sha256": result.template_sha256, "renderer": result.renderer},
        }
        return self.write_manifest(name, engine, self.install_dir(name, engine), info, external=path, progress=progress)


@dataclass(frozen=True)
class BrokenModel:
    """A registration whose manifest cannot be used (reported, skipped, removable)."""

    name: str
    engine: str
    manifest_path: Path
    problem: str


def manifest_problem(manifest: Any, manifest_path: Path, registered: tuple[str, str] | None = None) -> str:
    """What is wrong with an installed manifest's fields ("" when nothing is). The name
    and engine must be those it is registered under: its folders (``NAME/ENGINE/``), or
    ``registered`` for a manifest kept elsewhere (a release)."""
    if not isinstance(manifest, dict):
        return "it is not a JSON object"
    name, engine = manifest.get("name"), manifest.get("engine")
    as_name, as_engine = registered or (manifest_path.parent.parent.name, manifest_path.parent.name)
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        return "it has no valid 'name'"
    if name != as_name:
        return f"it names {inline(name)!r} but is registered as {inline(as_name)!r}"
    if engine not in ENGINE_NAMES or engine != as_engine:
        return "its 'engine' is missing or does not match its folder"
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(rel, str)
        and isinstance(entry, dict)
        and isinstance(entry.get("size"), int)
        and isinstance(entry.get("sha256"), str)
        for rel, entry in files.items()
    ):
        return "its 'files' are not a list of sizes and hashes"
    if not isinstance(manifest.get("sha256"), str):
        return "it has no 'sha256'"
    if "path" in manifest and not (isinstance(manifest["path"], str) and manifest["path"]):
        return "its 'path' is not a path"
    return ""


def model_file(model: InstalledModel) -> Path:
    """What the engine opens: the folder (onnx), or the bundle file (litert)."""
    if model.engine == "litert" and model.path.is_dir():
        return model.path / str(model.manifest.get("file", ""))
    return model.path


def _template_of(engine: str, target: Path) -> str | None:
    try:
        if engine == "onnx":
            from assistant.engines.onnx_genai import read_chat_template

            return read_chat_template(target)
        from assistant.engines.litert_lm import read_bundle_template

        return read_bundle_template(target)
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelCorrupt(
            f"The chat template of {inline(str(target))} cannot be read ({exc}).", "Fetch the model again."
        ) from exc


def _genai_context(config_path: Path) -> int:
    """The context length from genai_config.json, checked (a crafted file says anything)."""
    config = read_json_file(config_path, 1 << 20)
    model = config.get("model") if isinstance(config, dict) else None
    if not isinstance(model, dict):
        raise ModelCorrupt(
            f"{inline(str(config_path))} has no 'model' section, so it is not an onnxruntime-genai configuration.",
            "The model folder is damaged; fetch it again.",
        )
    context = model.get("context_length", 2048)
    if isinstance(context, bool) or not isinstance(context, int) or not 1 <= context <= 10_000_000:
        raise ModelCorrupt(
            f"{inline(str(config_path))} gives context_length = {displayable(repr(context))[:40]}, "
            "which is not a number of tokens.",
            "The model folder is damaged; fetch it again.",
        )
    return context


def _write_json(path: Path, data: dict[str, Any]) -> None:
    from assistant.core.files import replace_atomically

    replace_atomically(path, json.dumps(data, indent=2).encode("utf-8"), 0o644)


def slug(text: str) -> str:
    """A model name made from a file or folder name: lower case, separators as '-'."""
    slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in text.lower()).strip("-")
    return slug or "model"


def _guess_licence(path: Path) -> str:
    """The licence a model folder states: its model card's ``license:`` field (Hugging Face
    and Microsoft's ONNX folders), else a recognised LICENSE file; "unknown" when neither."""
    if path.is_dir():
        stated = _model_card_licence(path / "README.md")
        if stated:
            return stated
    for candidate in ("LICENSE", "LICENSE.txt", "LICENSE.md", "LICENCE"):
        file = path / candidate
        if file.is_file():
            try:
                with open_regular(file) as handle:
                    head = handle.read(4000).decode("utf-8", errors="replace")[:400].lower()
            except ModelCorrupt:
                return "unknown"
            for key, label in (("mit license", "MIT"), ("apache license", "Apache-2.0"), ("gemma", "Gemma")):
                if key in head:
                    return label
            return "see LICENSE"
    return "unknown"


def iter_names(models: Iterable[InstalledModel]) -> list[str]:
    return sorted({m.name for m in models})


_CARD_LICENCE = re.compile(r"^licen[cs]e:\s*['\"]?([^'\"\n]+?)['\"]?\s*$", re.MULTILINE)


def _model_card_licence(card: Path) -> str | None:
    """``license:`` from a model card's YAML front matter (``---`` … ``---`` at the top)."""
    if not card.is_file():
        return None
    try:
        with open_regular(card) as handle:
            head = handle.read(16_000).decode("utf-8", errors="replace")
    except ModelCorrupt:
        return None
    if not head.startswith("---"):
        return None
    end = head.find("\n---", 3)
    match = _CARD_LICENCE.search(head[3 : end if end > 0 else len(head)])
    return inline(displayable(match.group(1).strip()))[:60] if match else None
