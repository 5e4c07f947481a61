"""Shared fixtures: every test gets its own Enclave home, and no test can reach the network."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from assistant.catalog.manifests import InstalledModel
from assistant.core.settings import Settings
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
    # No detached background embedder outliving a test: tests fill MiniLM vectors with
    # `docs add --wait` or Library.fill_vectors(); tests of the background process turn it on.
    monkeypatch.setenv("ENCLAVE_DOCS_BACKGROUND", "0")
    return home


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    """A private copy of the committed tiny model (tests may damage it)."""
    target = tmp_path / "tiny-llama"
    shutil.copytree(TINY_MODEL, target)
    return target


@pytest.fixture
def settings(enclave_home: Path) -> Settings:
    from assistant.core.settings import Settings

    return Settings.load(model="tiny", max_tokens=32, context_window=512)


@pytest.fixture
def tiny_installed(settings: Settings, tiny_dir: Path) -> InstalledModel:
    """The tiny model registered with the catalog, as `enclave models add` does."""
    from assistant.catalog.manifests import Catalog

    return Catalog(settings).add(tiny_dir, name="tiny")


@pytest.fixture
def slow_decoding(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    """Slow the real ONNX engine down to ``delay`` seconds per token (a slow machine),
    so that a test can act while an answer is still being decoded.

    Models load in a sealed worker process, which reads ``ENCLAVE_TEST_DECODE_DELAY_S``
    when it starts (assistant/engines/worker.py): call this *before* the model is loaded.
    Engines a test builds in-process (``tiny_engine``) are not slowed."""
    from assistant.engines.worker import DECODE_DELAY_ENV

    def slow_down(delay: float) -> None:
        monkeypatch.setenv(DECODE_DELAY_ENV, str(delay))

    return slow_down


@pytest.fixture
def tiny_embedder(tmp_path: Path) -> Path:
    """A private copy of the committed tiny sentence encoder (32-dim vectors; tests may damage it)."""
    target = tmp_path / "tiny-embedder"
    shutil.copytree(TINY_EMBEDDER, target)
    return target


@pytest.fixture
def tiny_embedder_installed(settings: Settings, tiny_embedder: Path) -> Path:
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


def build_in_cache(name: str, engine: str, *, force: bool = False) -> Path:
    """Build ``name`` for ``engine`` into the shared cache by Enclave's own recipe (once); its folder."""
    from assistant.catalog.convert.recipes import build
    from assistant.catalog.manifests import Catalog
    from assistant.core.settings import Settings

    old = os.environ.get("ENCLAVE_HOME")
    os.environ["ENCLAVE_HOME"] = str(_real_models_home())
    try:
        catalog = Catalog(Settings.load())
        build(catalog, name, engine, force=force)
        return catalog.install_dir(name, engine)
    finally:
        if old is None:
            os.environ.pop("ENCLAVE_HOME", None)
        else:
            os.environ["ENCLAVE_HOME"] = old


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system
        shutil.copy2(src, dst)


def borrow(home: Path, name: str, engine: str, *, force: bool = False) -> Path:
    """``home`` with the cache's build of ``name`` for ``engine`` in it, linked file by file.

    The cache holds models only. The tests' conversations, audit trail and database live
    in ``home``, a fresh folder of this run: a database another run left damaged in the
    cache (a killed run, or older Enclaves sharing it) can fail no test. Files, not one
    symlink to the folder: the sealed engine worker sees only paths inside its home.
    """
    source = build_in_cache(name, engine, force=force)
    target = home / "data" / "models" / name / engine
    if force and target.exists():
        shutil.rmtree(target)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(source, target, copy_function=_link_or_copy)
    return home


@pytest.fixture(scope="session")
def models_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This run's home for the real models (see :func:`borrow`)."""
    return tmp_path_factory.mktemp("models-home")


@pytest.fixture(scope="session")
def smollm2_home(models_home: Path) -> Path:
    """SmolLM2-135M-Instruct for onnxruntime-genai, built from PyPI by the recipe."""
    return borrow(models_home, "smollm2-135m-instruct", "onnx")


@pytest.fixture(scope="session")
def embedder_home(models_home: Path) -> Path:
    """all-MiniLM-L6-v2 as an ONNX sentence encoder, built from PyPI by the recipe (~30 s once);
    the folder is ``embedder_folder(settings)`` with ``ENCLAVE_HOME`` set to this home."""
    return borrow(models_home, "all-minilm-l6-v2", "onnx")


@pytest.fixture(scope="session")
def smollm2_litert_home(models_home: Path) -> Path:
    """SmolLM2-135M-Instruct as a .litertlm, built from PyPI by the recipe (~5 min once)."""
    return borrow(models_home, "smollm2-135m-instruct", "litert")


@pytest.fixture(scope="session")
def gemma_litert_home(models_home: Path) -> Path:
    """Gemma 3 270M (base) as a .litertlm, built from PyPI by the recipe (~7 min once)."""
    return borrow(models_home, "gemma3-270m", "litert")


# ---------------------------------------------------------------- tiny GGUFs
@pytest.fixture(scope="session")
def tiny_ggufs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny GGUFs of scripts/build_tiny_gguf.py, written once per run (a few seconds):
    ``chat`` (with a chat template), ``base`` (none) and ``qwen2`` (another architecture)."""
    import importlib.util

    pytest.importorskip("gguf")
    pytest.importorskip("tokenizers")
    spec = importlib.util.spec_from_file_location("build_tiny_gguf", ROOT / "scripts" / "build_tiny_gguf.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    folder = tmp_path_factory.mktemp("tiny-gguf")
    return {
        "chat": script.build(folder / "tiny-chat.gguf"),
        "base": script.build(folder / "tiny-base.gguf", base=True),
        "qwen2": script.build(folder / "tiny-qwen2.gguf", arch="qwen2"),
    }
