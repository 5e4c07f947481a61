"""Shared fixtures: every test gets its own Enclave home, and no test can reach the network."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from assistant.privacy.guard import install_network_guard

ROOT = Path(__file__).resolve().parent.parent
TINY_MODEL = ROOT / "tests" / "assets" / "tiny-llama"
TINY_EMBEDDER = ROOT / "tests" / "assets" / "tiny-embedder"

# The whole suite runs with outbound sockets blocked; loopback stays open for the
# tests' own servers. tests/unit/test_privacy.py proves the block works.
install_network_guard()


@pytest.fixture(autouse=True)
def enclave_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "enclave-home"
    monkeypatch.setenv("ENCLAVE_HOME", str(home))
    for var in ("ENCLAVE_MODEL", "ENCLAVE_CONFIG", "ENCLAVE_CONTEXT_WINDOW", "ENCLAVE_DEBUG"):
        monkeypatch.delenv(var, raising=False)
    # `docs add` would build the real embedding model (30 s) in every fresh home; tests
    # install the tiny one where they need vectors, and the slow tests the real one.
    monkeypatch.setenv("ENCLAVE_DOCS_BUILD_EMBEDDER", "false")
    return home


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    """A private copy of the committed tiny model (tests may damage it)."""
    target = tmp_path / "tiny-llama"
    shutil.copytree(TINY_MODEL, target)
    return target


@pytest.fixture
def settings(enclave_home: Path):  # type: ignore[no-untyped-def]
    from assistant.core.settings import Settings

    return Settings.load(model="tiny", max_tokens=32, context_window=512)


@pytest.fixture
def tiny_installed(settings, tiny_dir: Path):  # type: ignore[no-untyped-def]
    """The tiny model registered with the catalog, as `enclave models add` does."""
    from assistant.catalog.manifests import Catalog

    return Catalog(settings).add(tiny_dir, name="tiny")


@pytest.fixture
def slow_decoding(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Slow the real ONNX engine down to ``delay`` seconds per token (a slow machine),
    so that a test can act while an answer is still being decoded."""
    from assistant.engines.onnx_genai import GenaiSession

    original = GenaiSession._decode_step

    def slow_down(delay: float) -> None:
        def step(self, options):  # type: ignore[no-untyped-def]
            time.sleep(delay)
            return original(self, options)

        monkeypatch.setattr(GenaiSession, "_decode_step", step)

    return slow_down


@pytest.fixture
def tiny_embedder(tmp_path: Path) -> Path:
    """A private copy of the committed tiny sentence encoder (32-dim vectors; tests may damage it)."""
    target = tmp_path / "tiny-embedder"
    shutil.copytree(TINY_EMBEDDER, target)
    return target


@pytest.fixture
def tiny_embedder_installed(settings, tiny_embedder: Path) -> Path:  # type: ignore[no-untyped-def]
    """The tiny encoder installed where `enclave models build all-minilm-l6-v2` puts the real one."""
    import json

    from assistant.catalog.manifests import MANIFEST_NAME, Catalog
    from assistant.retrieval.embed import EMBEDDER_NAME, embedder_folder

    folder = embedder_folder(settings)
    shutil.copytree(tiny_embedder, folder)
    info = json.loads((folder / MANIFEST_NAME).read_text())
    for key in ("name", "engine", "files", "sha256"):
        info.pop(key)
    Catalog(settings).write_manifest(EMBEDDER_NAME, "onnx", folder, info)
    return folder


@pytest.fixture
def tiny_engine(tiny_dir: Path) -> Iterator[object]:
    from assistant.engines.onnx_genai import OnnxGenaiEngine

    engine = OnnxGenaiEngine(tiny_dir, "tiny")
    yield engine
    engine.close()


# ---------------------------------------------------------------- real models (slow)
def _real_models_home() -> Path:
    """Where the slow tests keep real converted models between runs (built once)."""
    return Path(os.environ.get("ENCLAVE_TEST_MODELS", Path.home() / ".cache" / "enclave-test-models"))


def _built(name: str, engine: str) -> Path:
    """An Enclave home holding ``name`` built for ``engine`` by Enclave's own recipe (once)."""
    from assistant.catalog.convert.recipes import build
    from assistant.catalog.manifests import Catalog
    from assistant.core.settings import Settings

    home = _real_models_home()
    old = os.environ.get("ENCLAVE_HOME")
    os.environ["ENCLAVE_HOME"] = str(home)
    try:
        build(Catalog(Settings.load()), name, engine)
    finally:
        if old is None:
            os.environ.pop("ENCLAVE_HOME", None)
        else:
            os.environ["ENCLAVE_HOME"] = old
    return home


@pytest.fixture(scope="session")
def smollm2_home() -> Path:
    """SmolLM2-135M-Instruct for onnxruntime-genai, built from PyPI by the recipe."""
    return _built("smollm2-135m-instruct", "onnx")


@pytest.fixture(scope="session")
def embedder_home() -> Path:
    """all-MiniLM-L6-v2 as an ONNX sentence encoder, built from PyPI by the recipe (~30 s once);
    the folder is ``embedder_folder(settings)`` with ``ENCLAVE_HOME`` set to this home."""
    return _built("all-minilm-l6-v2", "onnx")


@pytest.fixture(scope="session")
def smollm2_litert_home() -> Path:
    """SmolLM2-135M-Instruct as a .litertlm, built from PyPI by the recipe (~5 min once)."""
    return _built("smollm2-135m-instruct", "litert")


@pytest.fixture(scope="session")
def gemma_litert_home() -> Path:
    """Gemma 3 270M (base) as a .litertlm, built from PyPI by the recipe (~7 min once)."""
    return _built("gemma3-270m", "litert")
