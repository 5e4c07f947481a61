"""Converter output shown in the build progress is text, never Rich markup."""

from __future__ import annotations

import io

from rich.console import Console

from assistant.catalog.convert.recipes import Step
from assistant.catalog.manifests import Catalog
from assistant.cli.progress import BuildProgress


def test_markup_like_converter_output_does_not_break_the_progress_bar(settings) -> None:  # type: ignore[no-untyped-def]
    sink = io.StringIO()
    progress = BuildProgress(console=Console(file=sink, force_terminal=True, width=160))
    with progress:
        for detail in ("[INST] hi [/INST]", "[/]", "[bold]x[/bold] [link=http://x]y[/link]"):
            progress(Step(2, 4, "Converting", None, detail))
            progress._progress.refresh()
    assert "[INST] hi [/INST]" in sink.getvalue()


def test_repair_hint_names_the_engine(settings, tiny_installed) -> None:  # type: ignore[no-untyped-def]
    catalog = Catalog(settings)
    model = tiny_installed
    model.manifest.pop("path", None)
    model.name = "smollm2-135m-instruct"
    assert catalog.repair_hint(model) == "Rebuild it with `enclave models build smollm2-135m-instruct --force`."
    model.engine = "litert"
    assert "--engine litert --force" in catalog.repair_hint(model)


def test_a_second_build_of_the_same_model_is_refused(settings) -> None:  # type: ignore[no-untyped-def]
    import pytest

    from assistant.catalog.convert.recipes import _build_lock
    from assistant.core.errors import BuildError

    catalog = Catalog(settings)
    with _build_lock(catalog, "smollm2-135m-instruct", "litert"):
        with pytest.raises(BuildError, match="already running"):
            with _build_lock(catalog, "smollm2-135m-instruct", "litert"):
                pass
        with _build_lock(catalog, "smollm2-135m-instruct", "onnx"):
            pass  # another engine's build is independent
    with _build_lock(catalog, "smollm2-135m-instruct", "litert"):
        pass  # released
