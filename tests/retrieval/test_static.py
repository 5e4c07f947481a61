"""The cheap first vector of every passage: static word-piece vectors (numpy + tokenizers)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from assistant.core.errors import ModelCorrupt
from assistant.retrieval.static import StaticEncoder, has_static

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "tests" / "assets" / "tiny-embedder"


def test_the_tiny_embedder_carries_its_static_table() -> None:
    assert has_static(TINY)
    config = json.loads((TINY / "static.json").read_text())
    encoder = StaticEncoder(TINY)
    assert encoder.dim == config["dims"] and encoder.sha256 == config["sha256"]


def test_rows_are_unit_length_and_ids_give_the_same_vector_as_text() -> None:
    encoder = StaticEncoder(TINY)
    texts = ["the pump pressure", "reset the valve", "pump"]
    vectors = encoder.embed(texts)
    assert vectors.shape == (3, encoder.dim) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.allclose(encoder.embed_ids(encoder.token_ids(texts)), vectors)
    # The same pieces in another order: a bag of pieces has no order.
    assert np.allclose(encoder.embed(["pressure the pump"])[0], vectors[0], atol=1e-5)


def test_a_text_of_no_known_piece_is_a_zero_row_and_a_string_is_refused() -> None:
    encoder = StaticEncoder(TINY)
    assert not encoder.embed([""])[0].any()
    with pytest.raises(TypeError):
        encoder.embed("a string")


def test_a_damaged_table_is_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "emb"
    folder.mkdir()
    for name in ("static.json", "tokenizer.json"):
        (folder / name).write_bytes((TINY / name).read_bytes())
    (folder / "static-vectors.npy").write_bytes(b"not numpy")
    with pytest.raises(ModelCorrupt) as err:
        StaticEncoder(folder)
    assert "static vectors" in err.value.message and "--force" in (err.value.hint or "")


def test_the_runtime_encoder_loads_no_onnxruntime_or_torch() -> None:
    """What lets `docs search` start fast: the cheap vector needs numpy and tokenizers only."""
    code = (
        "import sys; from assistant.retrieval.static import StaticEncoder; "
        f"e = StaticEncoder({str(TINY)!r}); e.embed(['pump']); "
        "print(sorted(m for m in ('onnxruntime', 'torch', 'transformers', 'onnx') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_a_passages_ids_from_the_cache_equal_tokenizing_it_whole() -> None:
    """docs add tokenizes each file once: the static vector is summed from cached ids."""
    from assistant.retrieval.chunker import chunk_blocks
    from assistant.retrieval.ingest import TokenCounter
    from assistant.retrieval.parsers import Block

    encoder = StaticEncoder(TINY)
    blocks = [Block("Pump", 1, 1, None, 1), Block("the pump pressure", 3, 3), Block("reset the valve now", 5, 5)]
    count = TokenCounter(encoder)
    count.prepare([b.text for b in blocks if not b.level])
    chunks = chunk_blocks(blocks, count)
    assert count.passage_ids(chunks) == encoder.token_ids([c.indexed_text for c in chunks])
