"""Layering contracts, checked in a fresh interpreter so nothing else has imported them."""

from __future__ import annotations

import subprocess
import sys

from assistant.cli.root import BUILTIN_COMMANDS

RUNTIME_MODULES = [
    "assistant.cli.root",
    "assistant.app.turns",
    "assistant.catalog.manifests",
    "assistant.engines.onnx_genai",
    "assistant.engines.litert_lm",
    "assistant.catalog.convert.recipes",
    "assistant.app.bench",
    "assistant.retrieval.embed",
    "assistant.catalog.convert.embedder",
]
# The root group imports its commands on first use: every command module is checked too.
RUNTIME_MODULES += sorted({module for module, _ in BUILTIN_COMMANDS.values()})
BUILD_TOOLS = ["torch", "transformers", "gguf", "onnx", "onnx_ir", "accelerate", "safetensors", "litert_torch", "jax"]


def _loaded_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line.split(".")[0] for line in out.splitlines()}


def test_the_runtime_never_imports_the_build_tools() -> None:
    code = "\n".join(f"import {m}" for m in RUNTIME_MODULES)
    # Loading a model and generating must not pull them in either.
    code += (
        "\nfrom pathlib import Path"
        "\nfrom assistant.engines.onnx_genai import OnnxGenaiEngine"
        "\nfrom assistant.engines.base import GenerationOptions"
        "\ne = OnnxGenaiEngine(Path('tests/assets/tiny-llama'), 'tiny')"
        "\ns = e.open_session(128)"
        "\nlist(s.generate(e.tokenizer.encode('hi'), GenerationOptions(max_tokens=4)))"
        "\nimport tempfile"
        "\nfrom assistant.engines.litert_lm import LitertEngine"
        "\nl = LitertEngine(Path('tests/assets/tiny-gemma.litertlm'), 't', Path(tempfile.mkdtemp()), max_tokens=128)"
        "\nm = [{'role': 'user', 'content': 'hi'}]"
        "\nlist(l.open_session(128).generate(l.tokenizer.encode(l.tokenizer.render(m)), GenerationOptions(max_tokens=4), messages=m))"
        "\nfrom assistant.retrieval.embed import Embedder"
        "\nEmbedder(Path('tests/assets/tiny-embedder')).embed(['document search'])"
    )
    loaded = _loaded_after(code)
    assert not loaded & set(BUILD_TOOLS), sorted(loaded & set(BUILD_TOOLS))


def test_the_core_never_imports_textual() -> None:
    loaded = _loaded_after("\n".join(f"import {m}" for m in RUNTIME_MODULES))
    assert "textual" not in loaded


def test_the_app_layer_never_loads_textual() -> None:
    """The use cases are front-end neutral: a server or a script can drive them. (That no
    Enclave module below the front ends imports ``click`` either is the import-linter
    contract in pyproject.toml; sqlite-utils itself imports click, so a loaded-modules
    check cannot say it.)"""
    import pkgutil

    import assistant.app

    modules = [f"assistant.app.{m.name}" for m in pkgutil.iter_modules(assistant.app.__path__)]
    assert "assistant.app.turns" in modules
    loaded = _loaded_after("\n".join(f"import {m}" for m in modules))
    assert "textual" not in loaded
