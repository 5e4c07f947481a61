"""Engine registry: each backend is imported only when a model needs it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from assistant.errors import EngineUnavailable

if TYPE_CHECKING:
    from assistant.catalog import InstalledModel
    from assistant.config import Settings
    from assistant.engines.base import Engine

ENGINE_NAMES = ("onnx",)


def load_engine(model: InstalledModel, settings: Settings) -> Engine:
    """Load ``model`` with the backend its manifest names."""
    if model.engine == "onnx":
        from assistant.engines.onnx_genai import OnnxGenaiEngine

        return OnnxGenaiEngine(model.path, model.name, threads=settings.threads or None)
    raise EngineUnavailable(
        f"The engine {model.engine!r} is not available.",
        f"Installed engines: {', '.join(ENGINE_NAMES)}.",
    )
