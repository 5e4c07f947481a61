"""Model manifests, installed models, verification, add and remove.

Two kinds of manifest:

* a **recipe** (``models/<name>.toml`` in the repository): what Enclave knows how
  to build, from which PyPI package, with which settings;
* an **installed manifest** (``<data>/models/<name>/<engine>/enclave-manifest.json``):
  what is on disk, with the size, mtime and sha256 of every file and one combined
  sha256 that names the model in every message Enclave records.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from assistant.core import resources
from assistant.core.errors import EnclaveError, ModelCorrupt, ModelNotInstalled, ModelUnknown, NotALanguageModel
from assistant.core.settings import Settings
from assistant.engines import ENGINE_NAMES

MANIFEST_NAME = "enclave-manifest.json"


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
            "kind": self.kind,
            "licence": self.manifest.get("licence", "unknown"),
            "context_length": self.manifest.get("context_length"),
            "source": self.manifest.get("source", {}).get("package", "user"),
            "built_at": self.manifest.get("built_at"),
        }


# --------------------------------------------------------------------------- hashing
def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _model_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)


def hash_model(root: Path, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Size, mtime and sha256 of every file, and one combined sha256."""
    files = _model_files(root)
    total = sum(p.stat().st_size for p in files)
    done = 0
    entries: dict[str, dict[str, Any]] = {}
    for path in files:
        rel = path.name if root.is_file() else path.relative_to(root).as_posix()
        stat = path.stat()
        entries[rel] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256_file(path)}
        done += stat.st_size
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

    def installed(self) -> list[InstalledModel]:
        models: list[InstalledModel] = []
        if not self.root.is_dir():
            return models
        for manifest_path in sorted(self.root.glob(f"*/*/{MANIFEST_NAME}")):
            try:
                models.append(self._read(manifest_path))
            except EnclaveError:
                continue  # listed by `models verify`, skipped here
        return models

    def _read(self, manifest_path: Path) -> InstalledModel:
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelCorrupt(
                f"The manifest {manifest_path} is unreadable ({exc}).",
                "Remove the model with `enclave models remove NAME` and build or add it again.",
            ) from exc
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
        if name in self.recipes:
            engine_flag = f" --engine {engine}" if engine and engine != "onnx" else ""
            raise ModelNotInstalled(
                f"The model {name!r} is not built yet{f' for the {engine} engine' if engine else ''}.",
                f"Build it with `enclave models build {name}{engine_flag}` (about a minute on this machine).",
            )
        known = sorted(set(self.recipes) | {m.name for m in self.installed()})
        raise ModelUnknown(
            f"No model is called {name!r}.",
            f"Known models: {', '.join(known) or 'none'}. Add your own with `enclave models add PATH`.",
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
        on_disk = (
            {(p.name if root.is_file() else p.relative_to(root).as_posix()): p for p in _model_files(root)}
            if root.exists()
            else {}
        )
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
                if sha256_file(path) != entry["sha256"]:
                    problems.append(f"{rel}: sha256 differs from the manifest")
        for rel in sorted(set(on_disk) - set(files)):
            problems.append(f"{rel}: not in the manifest")
        return problems

    def check_before_load(self, model: InstalledModel) -> None:
        problems = self.verify(model, full=False)
        if problems:
            raise ModelCorrupt(
                f"The model {model.name!r} ({model.engine}) does not match its manifest: "
                + "; ".join(problems[:3])
                + ("…" if len(problems) > 3 else "")
                + ".",
                self.repair_hint(model),
            )

    def repair_hint(self, model: InstalledModel) -> str:
        if model.name in self.recipes and not model.manifest.get("path"):
            engine = f" --engine {model.engine}" if model.engine != "onnx" else ""
            return f"Rebuild it with `enclave models build {model.name}{engine} --force`."
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
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / MANIFEST_NAME
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        os.replace(tmp, path)
        return self._read(path)

    def remove(self, name: str, engine: str | None = None) -> list[InstalledModel]:
        """Delete installed builds of ``name`` (user-added models: only the registration)."""
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
        if not removed:
            raise ModelNotInstalled(f"No installed model is called {name!r}.", "See `enclave models list`.")
        parent = self.root / name
        if parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
        return removed

    def add(
        self, path: Path, name: str | None = None, progress: Callable[[int, int], None] | None = None
    ) -> InstalledModel:
        """Register a user-provided model folder in place, hashing every file."""
        path = path.expanduser().resolve()
        if not path.exists():
            raise EnclaveError(f"{path} does not exist.", "Give the path of a model folder.")
        chat: bool | None = None
        if path.is_dir() and (path / "genai_config.json").is_file():
            engine = "onnx"
            config = _read_json(path / "genai_config.json")
            context = int(config.get("model", {}).get("context_length", 2048))
        elif path.is_file() and path.suffix == ".litertlm":
            from assistant.engines.litert_lm import probe_bundle, read_bundle_template

            engine = "litert"
            # Not yet verified: a crafted file could abort the native loader, so load it
            # once in a child process before anything else touches it.
            probe_bundle(path)
            chat = read_bundle_template(path) is not None
            context = self.settings.context_window
        else:
            raise EnclaveError(
                f"{path} is not a model Enclave can run.",
                "Give an onnxruntime-genai model folder (it holds genai_config.json and the .onnx files, "
                "such as Microsoft's published Phi-3/Phi-4-mini ONNX folders) or a LiteRT-LM .litertlm bundle "
                "(such as Google's Gemma bundles).",
            )
        name = name or _slug(path.stem if path.is_file() else path.name)
        if self._manifest_path(name, engine).exists():
            raise EnclaveError(
                f"A model called {name!r} is already installed.",
                "Choose another with --name, or remove the old one first.",
            )
        if chat is None:
            from assistant.engines.onnx_genai import read_chat_template

            chat = read_chat_template(path) is not None
        info = {
            "chat": chat,
            "licence": _guess_licence(path),
            "context_length": context,
            "source": {"package": "user", "path": str(path)},
        }
        return self.write_manifest(name, engine, self.install_dir(name, engine), info, external=path, progress=progress)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelCorrupt(
            f"{path} is not valid JSON ({exc}).", "The model folder is damaged; fetch it again."
        ) from exc
    return data if isinstance(data, dict) else {}


def _slug(text: str) -> str:
    slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in text.lower()).strip("-")
    return slug or "model"


def _guess_licence(path: Path) -> str:
    for candidate in ("LICENSE", "LICENSE.txt", "LICENSE.md", "LICENCE"):
        file = path / candidate
        if file.is_file():
            head = file.read_text(encoding="utf-8", errors="replace")[:400].lower()
            for key, label in (("mit license", "MIT"), ("apache license", "Apache-2.0"), ("gemma", "Gemma")):
                if key in head:
                    return label
            return "see LICENSE"
    return "unknown"


def iter_names(models: Iterable[InstalledModel]) -> list[str]:
    return sorted({m.name for m in models})
