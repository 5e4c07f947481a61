"""Static word-piece vectors distilled from the sentence encoder (build side).

Document search makes a collection searchable at once with a cheap vector per passage
and fills in contextual all-MiniLM-L6-v2 vectors afterwards (issue 18). The cheap
vector is a *static* one: every word piece of MiniLM's vocabulary has one fixed row,
and a passage is the normalised sum of its pieces' rows. The table is distilled here,
offline, from the same weights as the ONNX encoder, in the same child process
(:func:`assistant.catalog.convert.embedder.export`), with torch and transformers only
— the model2vec recipe (Tulkens & van Dongen, 2024) written out in four steps:

1. each piece is run through the encoder alone, as ``[CLS] piece [SEP]``, and the three
   output rows are mean-pooled (unnormalised hidden states): one 384-d vector per piece;
2. PCA to 256 dimensions (eigendecomposition of the covariance; each component's sign
   fixed so that its largest score is positive, so the build is reproducible);
3. Zipf/SIF weighting: the piece of vocabulary rank ``r`` is scaled by
   ``a / (a + p(r))``, ``p(r) ∝ 1/(r+2)``, ``a = 1e-4`` (frequent pieces count less);
4. at run time (:mod:`assistant.retrieval.static`, numpy + tokenizers only) a text's
   pieces are summed and the sum L2-normalised.

Why this and not the model2vec package: its ``distill`` extra pins ``transformers<5.4``,
which cannot co-install with the project's tokenizers 0.23.3 and transformers 5.24.0;
these steps reproduce its vectors (mean cosine 0.991 on the seeded corpus) and its
recall exactly (docs/scale-research.md §1). Measured choices (seeded corpus, recall@5
of BM25 fused with static vectors; BM25 + MiniLM is 0.850): 256-d with SIF 0.700,
no PCA (384-d) 0.637, 128-d 0.650, no SIF 0.550. 256 × float16 is 15.6 MB for
MiniLM's 30,522 pieces; ~75 CPU-s to build.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

#: File names inside the installed embedder folder (beside model.onnx and tokenizer.json).
VECTORS_FILE = "static-vectors.npy"
CONFIG_FILE = "static.json"
DIMS = 256
SIF_A = 1e-4
_UNUSED = re.compile(r"\[unused\d+\]")


def vocabulary(tokenizer_file: Path) -> tuple[list[int], int, int, int]:
    """(ids of the pieces that get a row, vocabulary size, [CLS] id, [SEP] id): every
    piece except the special tokens and BERT's ``[unusedN]`` placeholders."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    vocab = tok.get_vocab(with_added_tokens=True)
    special = {t.content for t in tok.get_added_tokens_decoder().values()} | {"[CLS]", "[SEP]", "[PAD]", "[MASK]"}
    keep = sorted(i for piece, i in vocab.items() if piece not in special and not _UNUSED.fullmatch(piece))
    return keep, max(vocab.values()) + 1, vocab["[CLS]"], vocab["[SEP]"]


def piece_vectors(bert: Any, ids: list[int], cls: int, sep: int, batch: int = 512) -> npt.NDArray[np.float32]:
    """Step 1: the mean of the encoder's three output rows for ``[CLS] piece [SEP]``."""
    import torch

    out = np.empty((len(ids), int(bert.config.hidden_size)), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(ids), batch):
            chunk = ids[start : start + batch]
            x = torch.tensor([[cls, i, sep] for i in chunk], dtype=torch.long)
            hidden = bert(
                input_ids=x, attention_mask=torch.ones_like(x), token_type_ids=torch.zeros_like(x)
            ).last_hidden_state
            out[start : start + len(chunk)] = hidden.mean(dim=1).numpy()
    return out


def pca(x: npt.NDArray[np.float32], dims: int) -> npt.NDArray[np.float32]:
    """Step 2: scores on the first ``dims`` principal components, signs fixed."""
    centred = x - x.mean(axis=0)
    cov = (centred.T.astype(np.float64) @ centred) / max(1, len(x) - 1)
    _, vecs = np.linalg.eigh(cov)
    components = vecs[:, ::-1][:, :dims]
    scores = (centred @ components).astype(np.float32)
    signs = np.sign(scores[np.argmax(np.abs(scores), axis=0), np.arange(scores.shape[1])])
    signs[signs == 0] = 1
    return np.asarray(scores * signs, dtype=np.float32)


def sif_weights(n: int, a: float = SIF_A) -> npt.NDArray[np.float32]:
    """Step 3: the Zipf-estimated frequency of rank r (0-based) → a / (a + p(r))."""
    inv_rank = 1.0 / np.arange(2, n + 2)
    return np.asarray(a / (a + inv_rank / inv_rank.sum()), dtype=np.float32)


def distill(bert: Any, tokenizer_file: Path, out: Path, dims: int = DIMS) -> dict[str, Any]:
    """Write ``static-vectors.npy`` (float16, one row per vocabulary id; zero rows for the
    pieces left out) and ``static.json`` into ``out``; returns the config written.

    ``bert`` is the transformers encoder already loaded for the ONNX export. The output
    is byte-identical run to run (no randomness; signs fixed)."""
    ids, size, cls, sep = vocabulary(tokenizer_file)
    pieces = piece_vectors(bert, ids, cls, sep)
    dims = min(dims, pieces.shape[1], len(ids))
    reduced = pca(pieces, dims) * sif_weights(len(ids))[:, None]
    table = np.zeros((size, dims), dtype=np.float16)
    table[ids] = reduced.astype(np.float16)
    np.save(out / VECTORS_FILE, table, allow_pickle=False)
    digest = hashlib.sha256((out / VECTORS_FILE).read_bytes()).hexdigest()
    config = {"dims": dims, "pieces": len(ids), "vocabulary": size, "pca": True, "sif": SIF_A, "sha256": digest}
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return config
