"""Engine registry: the one list of engine names, and the one way to load a model.

Every model is loaded in a sealed worker process (:mod:`assistant.engines.sealed`): the
front end gets a proxy engine and never imports a runtime. The backends themselves
(:mod:`assistant.engines.onnx_genai`, :mod:`assistant.engines.litert_lm`) run inside that
worker; tests and benchmarks may also construct them directly, in-process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, get_args

from assistant.core.errors import EnclaveError, EngineUnavailable
from assistant.core.settings import SealPolicy

if TYPE_CHECKING:
    from assistant.catalog.manifests import InstalledModel
    from assistant.core.settings import Settings
    from assistant.engines.base import Engine
    from assistant.engines.protocol import LoadLitert, LoadOnnx

#: The only list of engine names (the CLI, the catalog and the app read it from here).
ENGINE_NAMES = ("onnx", "litert")
#: The Python distributions each engine runs on: their versions name an engine build
#: (drift references are kept per build).
ENGINE_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "onnx": ("onnxruntime-genai", "onnxruntime"),
    "litert": ("litert-lm-api",),
}


#: Values of the ``privacy_seal`` setting.
SEAL_POLICIES = get_args(SealPolicy)


def _kv_cache(settings: Settings) -> str:
    """``grow`` or ``window``: ``auto`` preallocates, for conversations that keep their
    cache turn after turn (one-shot ``ask`` sets ``grow`` before loading)."""
    return "window" if settings.kv_cache == "auto" else settings.kv_cache


def load_spec(model: InstalledModel, settings: Settings, device: str = "cpu") -> LoadOnnx | LoadLitert:
    """What the worker must load for ``model``, on ``device`` (``cpu`` or ``gpu``)."""
    from assistant.engines.protocol import LoadLitert, LoadOnnx

    if model.engine == "onnx":
        return LoadOnnx(
            str(model.path), model.name, threads=settings.threads or 0, device=device, kv_cache=_kv_cache(settings)
        )
    if model.engine == "litert":
        window = int(model.manifest.get("context_length") or settings.context_window)
        # Built bundles live in their install folder; user bundles are registered in place.
        path = model.path / str(model.manifest["file"]) if model.path.is_dir() else model.path
        return LoadLitert(
            str(path),
            model.name,
            cache_dir=str(settings.locations.cache / "litert"),
            threads=settings.threads or 0,
            max_tokens=min(settings.context_window, window),
            verified=True,  # the catalog checked it against its manifest before this load
            device=device,
            completion=not model.chat,
        )
    raise EngineUnavailable(
        f"The engine {model.engine!r} is not available.",
        f"Installed engines: {', '.join(ENGINE_NAMES)}.",
    )


def seal_required(settings: Settings) -> bool:
    """Whether the ``privacy_seal`` setting refuses a worker that is not fully sealed."""
    if settings.privacy_seal not in SEAL_POLICIES:
        raise EnclaveError(
            f"The setting privacy_seal is {settings.privacy_seal!r}.",
            f"Use one of: {', '.join(SEAL_POLICIES)} (warn is the default).",
        )
    return settings.privacy_seal == "require"


def load_engine(model: InstalledModel, settings: Settings, device: str = "cpu") -> Engine:
    """Load ``model`` with the backend its manifest names, in a sealed worker process, on
    ``device`` (``cpu`` or ``gpu``; a GPU that cannot be used raises
    :class:`~assistant.core.errors.EngineUnavailable`)."""
    from assistant.engines.sealed import SealedEngine

    spec = load_spec(model, settings, device)
    return SealedEngine(spec, home=settings.locations.cache / "worker", require=seal_required(settings))
