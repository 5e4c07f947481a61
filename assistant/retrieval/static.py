"""Static passage vectors at run time: numpy + tokenizers, nothing else.

The table is distilled from all-MiniLM-L6-v2 at build time
(:mod:`assistant.catalog.convert.static`) and installed in the embedder's folder. A
passage's vector is the L2-normalised sum of its word pieces' rows, so it costs a
table lookup per piece: ~31,000 passages per CPU-second from token ids the chunker
already has, against 21–33 for MiniLM (docs/scale-research.md §1). That is what makes
a collection searchable at the speed of parsing; MiniLM vectors are filled in later
by background work (:mod:`assistant.retrieval.backfill`).

This module must never import torch, transformers, onnx or onnxruntime (a test runs it
in a fresh interpreter and checks ``sys.modules``): ``enclave docs search`` starts in
well under a second because it loads only this (~15 MB) table.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from assistant.core.errors import ModelCorrupt

if TYPE_CHECKING:
    from assistant.core.settings import Settings

log = logging.getLogger(__name__)

VECTORS_FILE = "static-vectors.npy"
CONFIG_FILE = "static.json"
TOKENIZER_FILE = "tokenizer.json"


class StaticEncoder:
    """Texts (or their word-piece ids) → unit-length float32 vectors from a static table.

    ``sha256`` names the vector space (the table's hash): vectors stored with it are
    comparable with this encoder's query vectors, and with nothing else. Raises
    :class:`ModelCorrupt` when a file is missing or malformed.
    """

    kind = "static"

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        fix = "Rebuild it with `enclave models build all-minilm-l6-v2 --force`."
        try:
            config = json.loads((self.folder / CONFIG_FILE).read_text(encoding="utf-8"))
            self.sha256 = str(config["sha256"])
            # Memory-mapped: a query touches a few dozen rows, so `docs search` does not pay
            # for reading and converting the whole 15 MB table (0.27 s).
            table = np.load(self.folder / VECTORS_FILE, allow_pickle=False, mmap_mode="r")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelCorrupt(f"The static vectors in {self.folder} cannot be read ({exc}).", fix) from exc
        if table.ndim != 2 or table.shape[1] != int(config.get("dims", table.shape[1])):
            raise ModelCorrupt(f"{self.folder / VECTORS_FILE} has shape {table.shape}, not (vocabulary, dims).", fix)
        self._half = table
        self._table: npt.NDArray[np.float32] | None = None
        self.dim = int(table.shape[1])
        self.name = "static"
        from tokenizers import Tokenizer

        try:
            self._tokenizer: Any = Tokenizer.from_file(str(self.folder / TOKENIZER_FILE))
        except Exception as exc:  # tokenizers raises a bare Exception on a bad file
            raise ModelCorrupt(f"The tokenizer in {self.folder} cannot be read ({exc}).", fix) from exc
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Word-piece ids of each text, without special tokens or truncation (one batch
        call: the Rust tokenizer spreads it over the cores)."""
        return [e.ids for e in self._tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)]

    def count_tokens(self, text: str) -> int:
        """Word pieces of ``text`` with [CLS] and [SEP], as MiniLM counts them."""
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids) + 2

    def embed(self, texts: Sequence[str], batch_size: int = 0) -> npt.NDArray[np.float32]:
        """One unit-length row per text (``batch_size`` is accepted for the Embedder interface)."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts; wrap a single text in a list")
        return self.embed_ids(self.token_ids(texts))

    def embed_ids(self, rows: Sequence[Sequence[int]]) -> npt.NDArray[np.float32]:
        """Unit-length rows from word-piece ids. A plain loop of ``table[ids].sum()`` per
        passage is the fastest numpy form measured (~31,700 passages/CPU-s; one large
        fancy-indexed ``add.reduceat`` was 1,400–5,200: its temporary spills the cache).
        A text with no known piece gets a zero row (it matches nothing)."""
        out = np.zeros((len(rows), self.dim), dtype=np.float32)
        if len(rows) <= 4:  # a query: a few rows of the memory-mapped float16 table
            for i, ids in enumerate(rows):
                if len(ids):
                    out[i] = self._half[sorted(set(ids))].astype(np.float32)[_counts(ids)].sum(axis=0)
        else:
            table = self.table
            for i, ids in enumerate(rows):
                if len(ids):
                    table[list(ids)].sum(axis=0, out=out[i])
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out

    @property
    def table(self) -> npt.NDArray[np.float32]:
        """The whole table as float32, loaded on first bulk use (31 MB for MiniLM's
        vocabulary): summing float16 rows was 2.4x slower."""
        if self._table is None:
            self._table = np.asarray(self._half, dtype=np.float32)
        return self._table

    def __repr__(self) -> str:
        return f"StaticEncoder(dim={self.dim}, sha256={self.sha256[:12]}…)"


def _counts(ids: Sequence[int]) -> list[int]:
    """Positions into ``sorted(set(ids))`` for every id, repeats included."""
    order = {piece: i for i, piece in enumerate(sorted(set(ids)))}
    return [order[piece] for piece in ids]


def has_static(folder: Path) -> bool:
    """Whether an embedder folder carries the static table (builds before issue 18 do not)."""
    return (folder / VECTORS_FILE).is_file() and (folder / CONFIG_FILE).is_file()


def load_static(settings: Settings) -> StaticEncoder | None:
    """The static encoder installed with the embedding model; ``None`` when it is not built.

    Checks the embedder folder against its manifest (size and mtime of every file, as
    the catalog does before any load), without loading onnxruntime."""
    from assistant.core.records import MANIFEST_NAME
    from assistant.retrieval.embed import EMBEDDER_NAME, embedder_folder

    folder = embedder_folder(settings)
    if not (folder / MANIFEST_NAME).is_file() or not has_static(folder):
        log.info("no static vectors at %s", folder)
        return None
    from assistant.catalog.manifests import Catalog

    catalog = Catalog(settings)
    catalog.check_before_load(catalog.find(EMBEDDER_NAME, "onnx"))
    return StaticEncoder(folder)
