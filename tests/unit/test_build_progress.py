"""Converter output shown in the build progress is text, never Rich markup."""

from __future__ import annotations

import io

from rich.console import Console

from assistant.catalog.convert.recipes import Step
from assistant.catalog.manifests import Catalog, InstalledModel
from assistant.cli.progress import BuildProgress
from assistant.core.settings import Settings


def test_markup_like_converter_output_does_not_break_the_progress_bar(settings: Settings) -> None:
    for detail in ("[INST] hi [/INST]", "[/]", "[bold]x[/bold] [link=http://x]y[/link]"):
        sink = io.StringIO()
        with BuildProgress(console=Console(file=sink, force_terminal=True, width=160)) as progress:
            progress(Step(2, 4, "Converting", None, detail))
        assert detail in sink.getvalue()  # the bar's last frame, drawn as it closes


def test_repair_hint_names_the_engine(settings: Settings, tiny_installed: InstalledModel) -> None:
    catalog = Catalog(settings)
    model = tiny_installed
    model.manifest.pop("path", None)
    model.name = "smollm2-135m-instruct"
    assert catalog.repair_hint(model) == "Rebuild it with `enclave models build smollm2-135m-instruct --force`."
    model.engine = "litert"
    assert "--engine litert --force" in catalog.repair_hint(model)


def test_a_second_build_of_the_same_model_is_refused(settings: Settings) -> None:
    import pytest

    from assistant.catalog.convert.recipes import build_lock
    from assistant.core.errors import BuildError

    catalog = Catalog(settings)
    with build_lock(catalog, "smollm2-135m-instruct", "litert"):
        with pytest.raises(BuildError, match="already running"):
            with build_lock(catalog, "smollm2-135m-instruct", "litert"):
                pass
        with build_lock(catalog, "smollm2-135m-instruct", "onnx"):
            pass  # another engine's build is independent
    with build_lock(catalog, "smollm2-135m-instruct", "litert"):
        pass  # released


def test_a_childs_library_logs_stay_in_the_build_log_not_the_progress_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import sys

    from assistant.catalog.convert.recipes import _run

    script = (
        "import sys\n"
        "print('/usr/lib/python3/site-packages/torchao/_C_cutlass.so: cannot open shared object', flush=True)\n"
        "print('FutureWarning: this class is deprecated and will be an error in a future release', flush=True)\n"
        "print('matmul_nbits_quantizer [INFO] - start to quantize /lm_head/MatMul ...', flush=True)\n"
        "print('Transcoding 30 layers from the GGUF blocks', flush=True)\n"
    )
    seen: list[str] = []
    log = tmp_path / "child.log"
    _run([sys.executable, "-c", script], Step(2, 4, "Converting"), lambda s: seen.append(s.detail or ""), log)
    assert [d for d in seen if d] == ["Transcoding 30 layers from the GGUF blocks"]
    assert "site-packages" in log.read_text() and "[INFO]" in log.read_text()  # all of it kept in the log
