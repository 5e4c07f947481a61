"""Engine registry: each backend is imported only when a model needs it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from assistant.core.errors import EngineUnavailable

if TYPE_CHECKING:
    from assistant.catalog.manifests import InstalledModel
    from assistant.core.settings import Settings
    from assistant.engines.base import Engine

#: The only list of engine names (the CLI, the catalog and the app read it from here).
ENGINE_NAMES = ("onnx", "litert")
#: The Python distributions each engine runs on: their versions name an engine build
#: (drift references are kept per build).
ENGINE_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "onnx": ("onnxruntime-genai", "onnxruntime"),
    "litert": ("litert-lm-api",),
}


def load_engine(model: InstalledModel, settings: Settings, device: str = "cpu") -> Engine:
    """Load ``model`` with the backend its manifest names, on ``device`` (``cpu`` or ``gpu``;
    a GPU that cannot be used raises :class:`~assistant.core.errors.EngineUnavailable`)."""
    if model.engine == "onnx":
        from assistant.engines.onnx_genai import OnnxGenaiEngine

        return OnnxGenaiEngine(model.path, model.name, threads=settings.threads or None, device=device)
    if model.engine == "litert":
        from assistant.engines.litert_lm import LitertEngine

        window = int(model.manifest.get("context_length") or settings.context_window)
        # Built bundles live in their install folder; user bundles are registered in place.
        path = model.path / str(model.manifest["file"]) if model.path.is_dir() else model.path
        return LitertEngine(
            path,
            model.name,
            cache_dir=settings.locations.cache / "litert",
            threads=settings.threads or None,
            max_tokens=min(settings.context_window, window),
            verified=True,  # the catalog checked it against its manifest before this load
            device=device,
        )
    raise EngineUnavailable(
        f"The engine {model.engine!r} is not available.",
        f"Installed engines: {', '.join(ENGINE_NAMES)}.",
    )
