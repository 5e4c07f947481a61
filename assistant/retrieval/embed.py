"""Dense sentence vectors for document search: an ONNX sentence encoder, run on the CPU.

The model folder is built by :mod:`assistant.catalog.convert.embedder` (``enclave models build
all-minilm-l6-v2``); its graph already mean-pools and L2-normalises, so this module
needs only onnxruntime, tokenizers and numpy. Vectors are float32 rows of unit
length, so a dot product is the cosine similarity.

:class:`Embedder` runs the model in the process that creates it. The front end uses
:class:`SealedEmbedder` (what :func:`load_embedder` returns): the same methods, with the
model in a sealed worker process (``seal.py embed``; :mod:`assistant.privacy.seal`), so
that onnxruntime, which carries telemetry, never loads in the front end. Vectors come
back as raw float32 bytes beside the reply (a batch of 32 x 384 is 49 KB).
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from assistant.core.errors import EnclaveError, ModelCorrupt
from assistant.core.records import MANIFEST_NAME
from assistant.privacy.wire import Codec
from assistant.privacy.worker import COMMON, Reply, SealedProcess, Server, Stopped

if TYPE_CHECKING:
    from assistant.catalog.convert.recipes import Progress
    from assistant.core.settings import Settings

log = logging.getLogger(__name__)

#: The recipe (``models/all-minilm-l6-v2.toml``) of the embedder document search uses.
EMBEDDER_NAME = "all-minilm-l6-v2"
CONFIG_NAME = "embedder.json"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"


class Embedder:
    """An installed sentence encoder: texts in, unit-length float32 vectors out.

    ``sha256`` is the model's identity (its manifest's combined hash): vectors stored
    with one sha256 must be recomputed when the installed model has another.

    Raises :class:`~assistant.core.errors.ModelCorrupt` (naming the file and the rebuild
    command) when a file is missing or onnxruntime cannot load the graph.
    """

    def __init__(self, folder: Path, threads: int = 0) -> None:
        self.folder = Path(folder)
        config = _read_json(self.folder / CONFIG_NAME, self._fix)
        try:
            self.dim = int(config["dim"])
            self.max_seq_length = int(config["max_seq_length"])
            self._output = str(config.get("output", "sentence_embedding"))
            self._pad_id = int(config.get("pad_id", 0))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelCorrupt(f"{self.folder / CONFIG_NAME} lacks {exc}.", self._fix) from exc
        self.name = str(config.get("name") or self.folder.parent.name)
        self.sha256 = self._identity()
        self._tokenizer = self._load_tokenizer()
        self._session: Any = self._load_session(threads)

    @property
    def _fix(self) -> str:
        return f"Rebuild it with `enclave models build {EMBEDDER_NAME} --force`."

    def _identity(self) -> str:
        manifest = self.folder / MANIFEST_NAME
        if manifest.is_file():
            return str(_read_json(manifest, self._fix).get("sha256", ""))
        # A folder that was never installed (a build in progress, a test asset without
        # a manifest) is named by the hash of its files, as the catalog would name it.
        from assistant.catalog.manifests import hash_model

        return str(hash_model(self.folder)["sha256"])

    def _load_tokenizer(self) -> Any:
        from tokenizers import Tokenizer

        path = self.folder / TOKENIZER_FILE
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception on a bad file
            raise ModelCorrupt(f"The tokenizer {path} cannot be read ({_first_line(exc)}).", self._fix) from exc
        # Padding is done per batch here (to the batch's longest text), not by the tokenizer.
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=self.max_seq_length)
        return tokenizer

    def _load_session(self, threads: int) -> Any:
        import onnxruntime as ort

        path = self.folder / MODEL_FILE
        if not path.is_file():
            raise ModelCorrupt(f"The embedding model file {path} is missing.", self._fix)
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(0, threads)  # 0: onnxruntime's choice (all cores)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only; load problems become ModelCorrupt below
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
            raise ModelCorrupt(f"The embedding model {path} cannot be loaded ({_first_line(exc)}).", self._fix) from exc
        inputs = {i.name for i in session.get_inputs()}
        outputs = {o.name for o in session.get_outputs()}
        if not {"input_ids", "attention_mask"} <= inputs or self._output not in outputs:
            raise ModelCorrupt(
                f"The embedding model {path} has inputs {sorted(inputs)} and outputs {sorted(outputs)}, "
                f"not input_ids, attention_mask -> {self._output}.",
                self._fix,
            )
        self._token_types = "token_type_ids" in inputs
        return session

    def count_tokens(self, text: str) -> int:
        """Word pieces ``text`` takes, special tokens included (what truncation counts);
        the chunker sizes passages with it, so each vector sees its whole passage."""
        return len(self._tokenizer.encode(text).ids)

    def embed(self, texts: Sequence[str], batch_size: int = 32) -> npt.NDArray[np.float32]:
        """One unit-length row per text, in the order given; ``(0, dim)`` for no texts.

        Texts longer than ``max_seq_length`` tokens are truncated (the caller chunks
        documents). Batches are formed from texts of similar length, so little
        compute goes to padding; a text's vector does not depend on its batch.
        """
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts; wrap a single text in a list")
        if self._session is None:
            raise EnclaveError("The embedding model was closed.", "Load it again with load_embedder(settings).")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        encodings = self._tokenizer.encode_batch(list(texts))
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        step = max(1, batch_size)
        for start in range(0, len(order), step):
            chunk = order[start : start + step]
            out[chunk] = self._run([encodings[i].ids for i in chunk])
        return out

    def _run(self, rows: list[list[int]]) -> npt.NDArray[np.float32]:
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        feed = {"input_ids": ids, "attention_mask": mask}
        if self._token_types:
            feed["token_type_ids"] = np.zeros_like(ids)
        try:
            result = self._session.run([self._output], feed)[0]
        except Exception as exc:  # an onnxruntime failure mid-run: a damaged graph
            raise ModelCorrupt(
                f"The embedding model {self.folder / MODEL_FILE} failed ({_first_line(exc)}).", self._fix
            ) from exc
        return np.asarray(result, dtype=np.float32)

    def close(self) -> None:
        """Release the onnxruntime session (its memory goes back at once)."""
        self._session = None

    def __enter__(self) -> Embedder:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Embedder({self.name!r}, dim={self.dim}, sha256={self.sha256[:12]}…)"


# --------------------------------------------------------------------------- sealed
@dataclass(frozen=True)
class LoadEmbedder:
    folder: str
    threads: int = 0


@dataclass(frozen=True)
class EmbedderInfo:
    name: str
    dim: int
    max_seq_length: int
    sha256: str


@dataclass(frozen=True)
class CountTokens:
    texts: list[str]


@dataclass(frozen=True)
class Counts:
    n: list[int]


@dataclass(frozen=True)
class Embed:
    texts: list[str]
    batch_size: int = 32


@dataclass(frozen=True)
class Vectors:
    """``rows`` x ``dim`` little-endian float32, in the frame's blob."""

    rows: int
    dim: int


CODEC = Codec([*COMMON, LoadEmbedder, EmbedderInfo, CountTokens, Counts, Embed, Vectors])
#: Token counts kept per embedder: the chunker counts each block, then each piece of
#: it, mostly the same texts, one round trip (~0.1 ms) each without the cache.
_COUNTS_KEPT = 4096


class SealedEmbedder:
    """:class:`Embedder`'s methods, with the model in a sealed worker process.

    A worker that stops (a crash, the OOM killer) ends the call in progress with an
    :class:`~assistant.core.errors.EnclaveError`; the next call starts a fresh one.
    """

    def __init__(self, folder: Path, threads: int = 0, home: Path | None = None) -> None:
        self.folder = Path(folder)
        self._threads = threads
        self._home = home
        self._lock = threading.Lock()
        self._process: SealedProcess | None = None
        self._closed = False
        self._counts: OrderedDict[str, int] = OrderedDict()
        info = self._start()
        self.name, self.dim, self.max_seq_length, self.sha256 = info.name, info.dim, info.max_seq_length, info.sha256

    def _start(self) -> EmbedderInfo:
        process = SealedProcess("embed", CODEC, home=self._home)
        try:
            reply, _ = process.call(LoadEmbedder(str(self.folder), self._threads))
        except BaseException:
            process.close()
            raise
        if not isinstance(reply, EmbedderInfo):
            process.close()
            raise ModelCorrupt(
                f"The embedding process stopped while loading {self.folder} ({_describe(reply)}).",
                f"Rebuild it with `enclave models build {EMBEDDER_NAME} --force`.",
            )
        self._process = process
        self.isolation = process.isolation
        return reply

    def _call(self, record: Any) -> tuple[Any, bytes]:
        with self._lock:
            if self._closed:
                raise EnclaveError("The embedding model was closed.", "Load it again with load_embedder(settings).")
            if self._process is None or not self._process.alive:
                self._start()
            process = self._process
        assert process is not None
        reply, blob = process.call(record)
        if isinstance(reply, Stopped):
            raise EnclaveError(
                f"The embedding process stopped ({reply.describe()}); nothing saved was lost.",
                "Run the command again: a fresh embedding process starts.",
            )
        return reply, blob

    def count_tokens(self, text: str) -> int:
        """Word pieces ``text`` takes, special tokens included (see :meth:`Embedder.count_tokens`)."""
        hit = self._counts.get(text)
        if hit is not None:
            return hit
        reply, _ = self._call(CountTokens([text]))
        n = int(reply.n[0])
        self._counts[text] = n
        while len(self._counts) > _COUNTS_KEPT:
            self._counts.popitem(last=False)
        return n

    def embed(self, texts: Sequence[str], batch_size: int = 32) -> npt.NDArray[np.float32]:
        """One unit-length row per text (see :meth:`Embedder.embed`)."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts; wrap a single text in a list")
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        reply, blob = self._call(Embed(list(texts), batch_size))
        if not isinstance(reply, Vectors) or reply.rows != len(texts) or reply.dim != self.dim:
            raise ModelCorrupt(f"The embedding process answered {reply!r} for {len(texts)} texts.")
        if len(blob) != reply.rows * reply.dim * 4:
            raise ModelCorrupt(f"The embedding process sent {len(blob)} bytes for {reply.rows} x {reply.dim} floats.")
        return np.frombuffer(blob, dtype="<f4").reshape(reply.rows, reply.dim).astype(np.float32)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            process, self._process = self._process, None
        if process is not None:
            process.close()

    def __enter__(self) -> SealedEmbedder:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SealedEmbedder({self.name!r}, dim={self.dim}, sha256={self.sha256[:12]}…)"


def _describe(reply: Any) -> str:
    return reply.describe() if isinstance(reply, Stopped) else type(reply).__name__


def serve(server: Server) -> None:
    """The ``embed`` service of a sealed worker."""
    from assistant.privacy import offline

    loaded: list[Embedder] = []

    def handle(request: Any, reply: Reply) -> None:
        match request:
            case LoadEmbedder(folder=folder, threads=threads):
                embedder = Embedder(Path(folder), threads=threads)
                offline.opt_out()
                loaded[:] = [embedder]
                reply(EmbedderInfo(embedder.name, embedder.dim, embedder.max_seq_length, embedder.sha256), end=True)
            case CountTokens(texts=texts):
                reply(Counts([loaded[0].count_tokens(t) for t in texts]), end=True)
            case Embed(texts=texts, batch_size=batch_size):
                vectors = loaded[0].embed(texts, batch_size)
                reply(Vectors(*vectors.shape), vectors.astype("<f4").tobytes(), end=True)
            case _:
                raise ValueError(f"the embedder does not handle {type(request).__name__}")

    server.run(CODEC, handle)


def embedder_folder(settings: Settings) -> Path:
    """Where ``enclave models build all-minilm-l6-v2`` installs the embedder."""
    return settings.locations.models / EMBEDDER_NAME / "onnx"


def load_embedder(settings: Settings) -> SealedEmbedder | None:
    """The installed embedder, checked against its manifest, running in a sealed worker;
    ``None`` when it is not built.

    ``None`` lets document search fall back to BM25 alone (and say so) instead of failing.
    """
    from assistant.catalog.manifests import Catalog

    folder = embedder_folder(settings)
    if not (folder / MANIFEST_NAME).is_file():
        log.info("no embedding model at %s; document search uses keywords only", folder)
        return None
    catalog = Catalog(settings)
    catalog.check_before_load(catalog.find(EMBEDDER_NAME, "onnx"))
    return SealedEmbedder(folder, threads=settings.threads, home=settings.locations.cache / "worker")


def build_embedder(settings: Settings, progress: Progress | None = None, force: bool = False) -> Path:
    """Build and install the embedder (needs the ``build`` extra); returns its folder."""
    from assistant.catalog.convert.recipes import build
    from assistant.catalog.manifests import Catalog

    if progress is None:
        return build(Catalog(settings), EMBEDDER_NAME, "onnx", force=force).path
    return build(Catalog(settings), EMBEDDER_NAME, "onnx", progress, force).path


def _read_json(path: Path, fix: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelCorrupt(f"The embedding model file {path} is missing.", fix) from exc
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelCorrupt(f"{path} is not valid JSON ({exc}).", fix) from exc
    if not isinstance(data, dict):
        raise ModelCorrupt(f"{path} is not a JSON object.", fix)
    return data


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
