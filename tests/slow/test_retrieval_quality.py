"""Document search quality with the real embedding model on the seeded corpus.

A regression floor, not a benchmark: the figures for the notes come from
scripts/measure_retrieval.py (fused recall@5 was 0.85 when this was written).
"""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.mark.slow
def test_fused_search_finds_the_answer_passage(embedder_home: Path, tmp_path: Path) -> None:
    import measure_retrieval  # scripts/ is on the path (pytest's pythonpath)

    from tests.data import retrieval_corpus
    root = tmp_path / "corpus"
    with redirect_stdout(io.StringIO()):
        retrieval_corpus.main([str(root)])
    report = measure_retrieval.measure(root, tmp_path / "home", embedder_home, k=5)
    modes = {m["mode"]: m for m in report["modes"]}
    assert report["index"]["skipped"] == []
    assert modes["fused"]["right_file"] >= 0.95
    assert modes["fused"]["recall"] >= 0.75
    assert modes["vector"]["recall"] >= 0.7
    # Fusion keeps what keyword search is best at.
    assert modes["fused"]["by_style"]["keyword"] >= modes["bm25"]["by_style"]["keyword"] - 0.05
