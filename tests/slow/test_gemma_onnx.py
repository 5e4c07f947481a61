"""Gemma 3 270M for onnxruntime-genai, built by its recipe from the Q4_K_M GGUF with every
weight matrix carried over block for block (Q4_K as 4-bit blocks; Q5_0, Q6_K, Q8_0 as
8-bit blocks): the build checks each against the dequantised GGUF, and the model runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.cli.test_cli import enclave

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gemma_onnx_home(models_home: Path) -> Path:
    """The test models home with gemma3-270m built for onnx by the current recipe (a build
    left in the cache by an older recipe is rebuilt: ~7 minutes on 2 cores)."""
    from assistant.catalog.manifests import Catalog
    from assistant.core.settings import Settings
    from tests.conftest import _real_models_home, borrow

    old = os.environ.get("ENCLAVE_HOME")
    os.environ["ENCLAVE_HOME"] = str(_real_models_home())
    try:
        catalog = Catalog(Settings.load())
        wanted = catalog.recipes["gemma3-270m"].build["onnx"].get("transcode")
        manifest = catalog.install_dir("gemma3-270m", "onnx") / "enclave-manifest.json"
        stale = manifest.is_file() and json.loads(manifest.read_text())["build"].get("transcode") != wanted
    finally:
        if old is None:
            os.environ.pop("ENCLAVE_HOME", None)
        else:
            os.environ["ENCLAVE_HOME"] = old
    return borrow(models_home, "gemma3-270m", "onnx", force=stale)


def test_every_matrix_is_the_ggufs_own_and_it_runs(gemma_onnx_home: Path) -> None:
    import onnx

    folder = gemma_onnx_home / "data" / "models" / "gemma3-270m" / "onnx"
    manifest = json.loads((folder / "enclave-manifest.json").read_text())
    assert manifest["build"]["transcode"] == "split" and manifest["chat"] is False
    graph = onnx.load(str(folder / "model.onnx"), load_external_data=False).graph
    bits = {}
    for node in graph.node:
        if node.op_type == "MatMulNBits":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            bits[node.name] = (attrs["bits"], attrs["block_size"])
    offsets = {n.name.removesuffix("/transcode_offset") for n in graph.node if n.name.endswith("/transcode_offset")}
    assert len(bits) == 91
    assert len(offsets) == 27  # the Q4_K matrices: 4-bit blocks + their exact minimums
    assert sum(1 for b in bits.values() if b == (8, 16)) == 9  # Q6_K: 8-bit blocks of 16
    assert bits["/lm_head/MatMul_Q8"] == (8, 32)
    # No matrix is left with the builder's round-to-nearest 4-bit weights.
    assert [n for n, b in bits.items() if b[0] == 4 and n not in offsets] == []

    proc = enclave(
        "ask", "-m", "gemma3-270m", "--json", "--max-tokens", "12", "The capital of France is",
        home=gemma_onnx_home, timeout=300,
    )  # fmt: skip
    answer = json.loads(proc.stdout)
    assert answer["usage"]["completion_tokens"] > 0 and answer["text"].strip()
    # A base model continues the text itself: <bos> and the 5 tokens of the sentence, no
    # persona and no turn markers around it (those made it continue "You are Enclave, …").
    assert answer["usage"]["prompt_tokens"] == 6 and "You are" not in answer["text"]
    # Scoring a short text (the drift check's perplexity) needs a cache at least as long
    # as Gemma's 512-token sliding window.
    checked = json.loads(enclave("models", "check", "gemma3-270m", "--json", home=gemma_onnx_home, timeout=300).stdout)
    assert 1.0 < checked["perplexity"] < 10_000


def test_a_users_gemma_gguf_is_added_block_for_block_and_continues_text(gemma_onnx_home: Path, tmp_path: Path) -> None:
    """`enclave models add` of the same Q4_K_M GGUF, as a user who has the file would run
    it: registered as base (the file has no chat template), the same weights as the
    recipe's build, and a prompt that starts with Gemma's <bos> (without it the model
    answers "France. France. France.")."""
    from assistant.catalog.convert.recipes import local_source
    from assistant.catalog.manifests import Catalog
    from assistant.core.settings import Settings
    from tests.conftest import _real_models_home

    old = os.environ.get("ENCLAVE_HOME")
    # The GGUF is assembled in the build cache's own cache folder (this run's home only borrows its models).
    os.environ["ENCLAVE_HOME"] = str(_real_models_home())
    try:
        settings = Settings.load()
        gguf = local_source(Catalog(settings).recipes["gemma3-270m"], settings.locations.cache)
    finally:
        if old is None:
            os.environ.pop("ENCLAVE_HOME", None)
        else:
            os.environ["ENCLAVE_HOME"] = old
    assert gguf is not None and gguf.is_file()
    home = tmp_path / "home"
    added = enclave("models", "add", str(gguf), "--name", "my-gemma", home=home, timeout=3600)
    assert "base (no chat template)" in added.stdout + added.stderr
    assert "127 weight matrices" in added.stdout + added.stderr  # carried over exactly
    mine = home / "data" / "models" / "my-gemma" / "onnx"
    recipe = gemma_onnx_home / "data" / "models" / "gemma3-270m" / "onnx"
    assert (mine / "model.onnx.data").read_bytes() == (recipe / "model.onnx.data").read_bytes()
    assert (mine / "chat_template.jinja").read_text().startswith("{{ bos_token }}")
    listed = json.loads(enclave("models", "list", "--json", home=home).stdout)
    assert any(m["name"] == "my-gemma" and m["chat"] is False for m in listed["installed"])
    # A base model continues the text itself (no chat frame, no persona), after <bos>.
    text = "The capital of France is Paris. The capital of Germany is"
    proc = enclave("ask", "-m", "my-gemma", "--json", "--max-tokens", "8", text, home=home, timeout=300)
    answer = json.loads(proc.stdout)
    assert "Berlin" in answer["text"], answer["text"]
    assert answer["usage"]["prompt_tokens"] <= len(text.split()) + 4  # the sentence's tokens and <bos>
