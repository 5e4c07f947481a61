#!/usr/bin/env python
"""Document index at scale: ingest throughput, peak memory while indexing, query latency.

For each size (in chunks) it generates a bulk corpus of about that many chunks
(paragraphs of the retrieval corpus, renumbered; see retrieval_corpus.write_bulk),
indexes it into a Library in a throwaway Enclave home inside a child process (so that
its peak RSS is its own), then times 200 distinct questions in each mode.

    PYTHONPATH=$PWD python scripts/bench_retrieval.py [--chunks 10000 100000] [--queries 200]
        [--real-max 10000] [--synthetic-vectors] [--embedder HOME] [--json]
    PYTHONPATH=$PWD python scripts/bench_retrieval.py --scale 100000 1000000 [--queries 200] [--json]

``--scale N ...`` (issue 18) measures search at sizes no file-based run reaches on two
cores: N passages of corpus text (~600 bytes each: paragraphs renumbered as write_bulk
does) are written straight into the database through its real schema (the FTS5 triggers
index them; 10 collections, one of them 10 %), each with a vector in the static space
(the real static encoder on the passage text) and in the MiniLM space (that vector
through a fixed random 256 -> 384 projection: MiniLM's width, the text's neighbourhood
structure, without 9 CPU-hours of MiniLM at 1M). Then the ANN index files are built as
the background process builds them, and 200 queries are timed per mode, unfiltered and
filtered to the 10 % collection, with the query embedded by the static encoder and
projected the same way. RSS after the queries, disk, and the build times are reported.

Vectors: the real all-MiniLM-L6-v2 embedder (built by `enclave models build
all-minilm-l6-v2`) embeds sizes up to --real-max chunks; its rate is measured first on a
sample, with the time a size would take. Larger sizes run bm25 only, or, with
--synthetic-vectors, store random unit vectors in place of the embedder's output
through the Library's own add path (queries are still embedded for real): then only
query latency is meaningful for those sizes, and the table says "synthetic".
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import psutil

SCRIPTS = Path(__file__).resolve().parent
sys.path[:0] = [str(SCRIPTS), str(SCRIPTS.parent)]  # the other scripts; the checkout (the corpus is tests/data)

from retrieval_harness import MODES, corpus_files, find_embedder, open_library, percentile, say, timed  # noqa: E402

from assistant.privacy.guard import install_network_guard  # noqa: E402
from tests.data.retrieval_corpus import DEFAULT_SEED, question_pool, write_bulk  # noqa: E402

COLLECTION = "bench"


class RssSampler:
    """Peak resident memory of this process, sampled every 20 ms in a thread while running."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def synthetic(real: Any, seed: int = 0) -> tuple[Any, dict[str, bool]]:
    """The real embedder, except that while ``switch["on"]`` every method which turns text
    into a float vector (found by calling it once on one text) returns random unit vectors
    of the same width. The worker turns it off after indexing, so queries are embedded for
    real and query latency includes the model.

    The Library stores and searches these exactly as real ones: the index, its storage and
    the search path are all real; only the meaning of the vectors is lost. A copy of the
    real object keeps its attributes (name, dimension, hashes) for the Library to record."""
    rng = np.random.default_rng(seed)
    switch = {"on": True}
    learned: dict[str, tuple[int, np.dtype[Any], bool] | None] = {}

    def texts_of(args: tuple[Any, ...]) -> list[str] | None:
        if not args:
            return None
        first = args[0]
        if isinstance(first, str):
            return [first]
        if isinstance(first, list | tuple) and first and all(isinstance(t, str) for t in first):
            return list(first)
        return None

    def unit(n: int, dim: int, dtype: np.dtype[Any]) -> np.ndarray:
        v = rng.standard_normal((n, dim))
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(dtype)

    base = type(real)

    class SyntheticEmbedder(base):  # type: ignore[misc, valid-type]
        def __getattribute__(self, name: str) -> Any:
            attr = object.__getattribute__(self, name)
            if name.startswith("__") or not callable(attr) or isinstance(attr, type):
                return attr

            def call(*args: Any, **kwargs: Any) -> Any:
                texts = texts_of(args)
                if texts is None or not switch["on"]:
                    return attr(*args, **kwargs)
                if name not in learned:
                    probe = attr(texts[:1] if not isinstance(args[0], str) else texts[0], *args[1:], **kwargs)
                    arr = np.asarray(probe) if isinstance(probe, np.ndarray) else None
                    learned[name] = (
                        (arr.shape[-1], arr.dtype, arr.ndim == 1)
                        if arr is not None and arr.dtype.kind == "f" and arr.ndim in (1, 2)
                        else None
                    )
                shape = learned[name]
                if shape is None:
                    return attr(*args, **kwargs)
                dim, dtype, single = shape
                out = unit(len(texts), dim, dtype)
                return out[0] if single and isinstance(args[0], str) else out

            return call

    fake = copy.copy(real)
    fake.__class__ = SyntheticEmbedder
    return fake, switch


# ------------------------------------------------------------------ the child process


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Index one corpus and time the queries; runs in its own process for a clean peak RSS."""
    install_network_guard()
    choice = find_embedder(Path(spec["embedder_home"]) if spec["embedder_home"] else None)
    embedder, switch = None, {"on": False}
    if spec["vectors"] in ("real", "synthetic"):
        if choice.embedder is None:
            raise SystemExit(f"error: {choice.why_not}")
        embedder = choice.embedder
        if spec["vectors"] == "synthetic":
            embedder, switch = synthetic(choice.embedder)
    home = Path(spec["home"])
    lib, store = open_library(home, embedder)
    files = corpus_files(Path(spec["corpus"]))
    before = psutil.Process().memory_info().rss
    with RssSampler() as rss, timed() as elapsed:
        added = lib.add(files, collection=COLLECTION, progress=None)
    switch["on"] = False  # queries are embedded by the real model
    seconds = elapsed[0]
    result: dict[str, Any] = {
        "files": added.files_indexed,
        "chunks": added.chunks,
        "bytes": added.bytes,
        "skipped": len(added.skipped),
        "ingest_s": seconds,
        "mb_per_s": added.bytes / 1e6 / seconds,
        "files_per_s": added.files_indexed / seconds,
        "rss_before_mb": before / 2**20,
        "rss_peak_mb": rss.peak / 2**20,
        "database_mb": sum(p.stat().st_size for p in home.rglob("*") if p.is_file()) / 2**20,
        "modes": {},
    }
    modes = MODES if embedder is not None else ("bm25",)
    for mode in modes:
        queries = spec["queries"]
        for q in queries[:3]:
            lib.search(q, k=5, collections=[COLLECTION], mode=mode)  # warm caches and the model
        millis = []
        for q in queries:
            with timed() as t:
                lib.search(q, k=5, collections=[COLLECTION], mode=mode)
            millis.append(t[0] * 1000)
        result["modes"][mode] = {"p50_ms": percentile(millis, 50), "p95_ms": percentile(millis, 95)}
    store.close()
    return result


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"error: the indexing process failed (exit {proc.returncode}); its messages are above.")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


# ------------------------------------------------------------------ the parent


def calibrate(
    tmp: Path, embedder_home: str | None, has_embedder: bool, queries: list[str], sample_bytes: int
) -> dict[str, Any]:
    """Bytes per chunk (to size the corpora) and, with an embedder, the embedding rate:
    the same sample indexed with and without vectors; the difference is embedding."""
    sample = tmp / "sample"
    write_bulk(sample, sample_bytes, seed=DEFAULT_SEED + 1)
    spec = {"corpus": str(sample), "embedder_home": embedder_home, "queries": queries[:10]}
    say(f"calibrating on a {sample_bytes // 1000} kB sample (bm25 only) ...")
    plain = run_worker({**spec, "home": str(tmp / "cal-plain"), "vectors": "none"})
    out = {"bytes_per_chunk": plain["bytes"] / max(1, plain["chunks"]), "sample_chunks": plain["chunks"]}
    if has_embedder:
        say("... and with the real embedder")
        real = run_worker({**spec, "home": str(tmp / "cal-real"), "vectors": "real"})
        extra = max(1e-9, real["ingest_s"] - plain["ingest_s"])
        out["embed_chunks_per_s"] = real["chunks"] / extra
    return out


def _latency(row: dict[str, Any], mode: str) -> str:
    if mode not in row["modes"]:
        return "skipped"
    return f"{row['modes'][mode]['p50_ms']:.1f} / {row['modes'][mode]['p95_ms']:.1f}"


def render(report: dict[str, Any]) -> str:
    cal = report["calibration"]
    lines = [f"Bulk corpus: {cal['bytes_per_chunk']:.0f} bytes per chunk (from a {cal['sample_chunks']}-chunk sample)"]
    if "embed_chunks_per_s" in cal:
        rate = cal["embed_chunks_per_s"]
        lines.append(
            f"Embedding rate (real all-MiniLM-L6-v2): {rate:.1f} chunks/s; 100,000 chunks would take {100_000 / rate / 60:.0f} min"
        )
    else:
        lines.append(f"No embedder: {report['embedder_why_not']}")
    sizes = report["sizes"]
    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("target chunks", lambda r: f"{r['target']:,}"),
        ("chunks indexed", lambda r: f"{r['chunks']:,}"),
        ("files", lambda r: f"{r['files']:,}"),
        ("MB", lambda r: f"{r['bytes'] / 1e6:.1f}"),
        ("vectors", lambda r: r["vectors"]),
        ("ingest s", lambda r: f"{r['ingest_s']:.1f}"),
        ("ingest MB/s", lambda r: f"{r['mb_per_s']:.2f}"),
        ("ingest files/s", lambda r: f"{r['files_per_s']:.1f}"),
        ("peak RSS MB", lambda r: f"{r['rss_peak_mb']:.0f} (+{r['rss_peak_mb'] - r['rss_before_mb']:.0f})"),
        ("database MB", lambda r: f"{r['database_mb']:.0f}"),
    ]
    for mode in MODES:
        rows.append((f"{mode} p50/p95 ms", partial(_latency, mode=mode)))
    width = max(len(name) for name, _ in rows)
    cells = [[fmt(r) for r in sizes] for _, fmt in rows]
    col = max([len(c) for row in cells for c in row] + [10])
    for (name, _), row in zip(rows, cells, strict=True):
        lines.append(f"{name:<{width}}  " + "  ".join(c.rjust(col) for c in row))
    if any(r["vectors"] == "synthetic" for r in sizes):
        lines.append(
            "synthetic: random unit vectors stored in place of real chunk embeddings (queries are embedded for real); "
            "query latencies are meaningful, ingest figures exclude embedding (see the embedding rate above)."
        )
    lines.append(f"Queries: {report['queries']} distinct questions per mode, k=5, after 3 warm-up queries.")
    return "\n".join(lines)


# ------------------------------------------------------------------ --scale (issue 18)


def scale_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Load ``spec["n"]`` passages straight into a new database and time search (see the docstring)."""
    import random
    import time

    from assistant.retrieval import ann, textindex
    from assistant.retrieval.static import StaticEncoder
    from assistant.retrieval.vectors import space_id, vector_blob
    from assistant.storage.database import Store
    from tests.data.retrieval_corpus import _NUMBER, _passages

    install_network_guard()
    n = int(spec["n"])
    home = Path(spec["home"])
    static = StaticEncoder(Path(spec["static"]))
    rng = random.Random(DEFAULT_SEED)
    paragraphs, titles = _passages(DEFAULT_SEED)
    projection = np.random.default_rng(7).standard_normal((static.dim, 384)).astype(np.float32)

    def minilm_like(v: np.ndarray) -> np.ndarray:
        out = v @ projection
        return out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-9)

    def renumber(text: str) -> str:
        return _NUMBER.sub(lambda m: str(rng.randint(1, 10 ** len(m.group()) - 1)), text)

    store = Store(home / "data" / "enclave.db")
    per_doc = 30
    started = time.monotonic()
    text_bytes = 0
    with store.transaction() as tx:
        cids = [
            int(tx.execute("insert into collections (name, created_at) values (?, 'now')", [f"c{i}"]).lastrowid)
            for i in range(10)
        ]
        # --steady: only MiniLM vectors, as after the background embedder has finished
        # (the static ranking is then skipped); half the vectors and ANN build of the default.
        sspace = None if spec.get("steady") else space_id(tx, static.sha256, "static", static.dim)
        mspace = space_id(tx, "bench-minilm-projection", "minilm", 384)
    next_id = 1
    block = per_doc * 700  # whole documents per transaction
    for start in range(0, n, block):
        rows, svecs, texts = [], [], []
        docs: list[tuple[int, int]] = []
        with store.transaction() as tx:
            for d in range(start // per_doc, (min(n, start + block) + per_doc - 1) // per_doc):
                # collection 0 holds 10 % of the passages, the other nine 10 % each as well
                cid = cids[d % 10]
                first = d * per_doc
                count = min(per_doc, n - first)
                if count <= 0:
                    break
                doc = int(
                    tx.execute(
                        "insert into documents (collection_id, path, sha256, size, mtime_ns, kind, chunks, indexed_at) "
                        "values (?, ?, 'x', 0, 0, 'text', ?, 'now')",
                        [cid, f"/bench/{d:07d}.txt", count],
                    ).lastrowid
                )
                docs.append((doc, count))
            for doc, count in docs:
                heading = renumber(rng.choice(titles))
                for seq in range(count):
                    text = renumber(rng.choice(paragraphs))
                    if len(text) < 400:
                        text += "\n\n" + renumber(rng.choice(paragraphs))
                    text_bytes += len(text)
                    rows.append((next_id, doc, seq, seq + 1, seq + 3, heading, text, 150))
                    texts.append(f"{heading}\n{text}")
                    next_id += 1
            svecs = static.embed(texts)
            tx.conn.executemany(
                "insert into chunks (id, document_id, seq, line_start, line_end, heading, text, tokens) "
                "values (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            mvecs = minilm_like(svecs)
            if sspace is not None:
                tx.conn.executemany(
                    "insert into passage_vectors (space, chunk_id, vector) values (?, ?, ?)",
                    [(sspace, r[0], vector_blob(v)) for r, v in zip(rows, svecs, strict=True)],
                )
            tx.conn.executemany(
                "insert into passage_vectors (space, chunk_id, vector) values (?, ?, ?)",
                [(mspace, r[0], vector_blob(v)) for r, v in zip(rows, mvecs, strict=True)],
            )
        say(f"  {min(n, start + block):,} passages loaded ({time.monotonic() - started:.0f} s)")
    load_s = time.monotonic() - started
    with store.transaction() as tx:  # the background embedder has passed every passage
        tx.execute("insert or replace into counters (name, value) values (?, ?)", [f"backfill:{mspace}", next_id - 1])
    folder = home / "data" / "index"
    started = time.monotonic()
    for line in ann.maintain(store, folder):
        say("  " + line)
    ann_s = time.monotonic() - started
    started = time.monotonic()
    for line in textindex.maintain(store, folder):
        say("  " + line)
    bm25_s = time.monotonic() - started

    store.close()
    return {"n": n, "text_mb": text_bytes / 1e6, "load_s": load_s, "ann_build_s": ann_s, "bm25_build_s": bm25_s}


def scale_search(spec: dict[str, Any]) -> dict[str, Any]:
    """Time the queries in a fresh process over the database ``scale_worker`` loaded, so
    its memory is what search needs (not what loading left behind)."""
    from assistant.retrieval.index import Library
    from assistant.retrieval.static import StaticEncoder
    from assistant.storage.database import Store

    install_network_guard()
    home = Path(spec["home"])
    static = StaticEncoder(Path(spec["static"]))
    projection = np.random.default_rng(7).standard_normal((static.dim, 384)).astype(np.float32)

    def minilm_like(v: np.ndarray) -> np.ndarray:
        out = v @ projection
        return out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-9)

    store = Store(home / "data" / "enclave.db")
    folder = home / "data" / "index"

    class Projected:
        """The query side of the MiniLM-like space: the static query vector, projected."""

        sha256 = "bench-minilm-projection"
        dim = 384

        def embed(self, texts: Any, batch_size: int = 32) -> np.ndarray:
            return minilm_like(static.embed(list(texts)))

    lib = Library(store, Projected(), static=static, index_dir=folder)  # type: ignore[arg-type]
    result: dict[str, Any] = {"modes": {}}
    queries = spec["queries"]
    if os.environ.get("ENCLAVE_BENCH_PROFILE"):  # where a query's milliseconds go
        import cProfile

        for mode in ("vector", "fused"):
            with cProfile.Profile() as prof:
                for q in queries[:50]:
                    lib.search(q, k=5, mode=mode)
            prof.dump_stats(f"{os.environ['ENCLAVE_BENCH_PROFILE']}.{mode}")
    for mode in ("bm25", "vector", "fused"):
        for label, collections in (("all", None), ("10 %", ["c0"])):
            for q in queries[:3]:
                lib.search(q, k=5, collections=collections, mode=mode)
            millis = []
            for q in queries:
                with timed() as t:
                    lib.search(q, k=5, collections=collections, mode=mode)
                millis.append(t[0] * 1000)
            result["modes"][f"{mode} {label}"] = {"p50_ms": percentile(millis, 50), "p95_ms": percentile(millis, 95)}
            say(f"  {mode} {label}: p50 {percentile(millis, 50):.1f} ms, p95 {percentile(millis, 95):.1f} ms")
    mem = psutil.Process().memory_full_info()
    result["rss_mb"] = mem.rss / 2**20
    result["uss_mb"] = mem.uss / 2**20
    result["anon_mb"] = (mem.rss - mem.shared) / 2**20
    result["database_mb"] = (home / "data" / "enclave.db").stat().st_size / 2**20
    result["index_mb"] = (
        sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20 if folder.exists() else 0.0
    )
    store.close()
    return result


def render_scale(rows: list[dict[str, Any]]) -> str:
    lines = ["Search at scale (passages written straight into the database; see --scale in the docstring)"]
    keys = [
        ("passages", lambda r: f"{r['n']:,}"),
        ("text MB", lambda r: f"{r['text_mb']:.0f}"),
        ("load s (rows+FTS+vectors)", lambda r: f"{r['load_s']:.0f}"),
        ("ANN build s (both spaces)", lambda r: f"{r['ann_build_s']:.0f}"),
        ("BM25 tantivy build s", lambda r: f"{r.get('bm25_build_s', float('nan')):.0f}"),
        ("database MB", lambda r: f"{r['database_mb']:.0f}"),
        ("ANN files MB", lambda r: f"{r['index_mb']:.0f}"),
        ("RSS MB after queries", lambda r: f"{r['rss_mb']:.0f}"),
        ("  of it anonymous MB", lambda r: f"{r['anon_mb']:.0f}"),
    ]
    for mode in rows[0]["modes"]:
        keys.append(
            (f"{mode} p50/p95 ms", lambda r, m=mode: f"{r['modes'][m]['p50_ms']:.1f} / {r['modes'][m]['p95_ms']:.1f}")
        )
    width = max(len(k) for k, _ in keys)
    for name, fmt in keys:
        lines.append(f"{name:<{width}}  " + "  ".join(fmt(r).rjust(14) for r in rows))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, nargs="+", default=[10_000, 100_000], help="corpus sizes in chunks")
    parser.add_argument("--queries", type=int, default=200, help="queries timed per mode (default 200)")
    parser.add_argument("--real-max", type=int, default=10_000, help="largest size embedded for real (default 10000)")
    parser.add_argument("--synthetic-vectors", action="store_true", help="random vectors above --real-max")
    parser.add_argument("--embedder", type=Path, help="Enclave home holding the built embedder (default: yours)")
    parser.add_argument("--sample-kb", type=int, default=400, help="calibration sample size (default 400 kB)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--scale", type=int, nargs="+", help="passages written straight into the database (issue 18)")
    parser.add_argument("--steady", action="store_true", help="--scale: MiniLM vectors only (background finished)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--scale-worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    if args.scale_worker:
        spec = json.loads(args.scale_worker)
        print(json.dumps(scale_search(spec) if spec.get("search") else scale_worker(spec)))
        return 0
    if args.scale:
        return scale_main(args)
    install_network_guard()
    embedder_home = str(args.embedder) if args.embedder else None
    choice = find_embedder(args.embedder)
    has_embedder, why_not = choice.embedder is not None, choice.why_not
    del choice  # each child process loads its own
    pool = question_pool()
    queries = [pool[i] for i in np.random.default_rng(DEFAULT_SEED).permutation(len(pool))[: args.queries]]
    report: dict[str, Any] = {"queries": len(queries), "sizes": []}
    with tempfile.TemporaryDirectory(prefix="enclave-bench-") as tmp_name:
        tmp = Path(tmp_name)
        report["calibration"] = calibrate(tmp, embedder_home, has_embedder, queries, args.sample_kb * 1000)
        report["embedder_why_not"] = why_not
        per_chunk = report["calibration"]["bytes_per_chunk"]
        for target in args.chunks:
            if has_embedder and target <= args.real_max:
                vectors = "real"
                rate = report["calibration"]["embed_chunks_per_s"]
                say(
                    f"{target:,} chunks with real vectors: embedding alone should take about {target / rate / 60:.0f} min"
                )
            elif has_embedder and args.synthetic_vectors:
                vectors = "synthetic"
            else:
                vectors = "none"
            corpus = tmp / f"corpus-{target}"
            with timed() as t:
                files, size = write_bulk(corpus, int(target * per_chunk))
            say(f"generated {files:,} files ({size / 1e6:.1f} MB) in {t[0]:.1f} s; indexing ({vectors} vectors) ...")
            spec = {"corpus": str(corpus), "home": str(tmp / f"home-{target}"), "embedder_home": embedder_home}
            result = run_worker({**spec, "vectors": vectors, "queries": queries})
            report["sizes"].append({"target": target, "vectors": vectors, **result})
            say(f"indexed {result['chunks']:,} chunks in {result['ingest_s']:.1f} s")
            shutil.rmtree(corpus)  # 100k chunks is ~100 MB of text
    print(json.dumps(report, indent=1) if args.json else render(report))
    return 0


def scale_main(args: argparse.Namespace) -> int:
    install_network_guard()
    choice = find_embedder(args.embedder)
    if choice.embedder is None:
        raise SystemExit(f"error: --scale needs the built embedder's static table: {choice.why_not}")
    folder = str(choice.embedder.folder)
    del choice
    pool = question_pool()
    queries = [pool[i] for i in np.random.default_rng(DEFAULT_SEED).permutation(len(pool))[: args.queries]]
    rows = []
    with tempfile.TemporaryDirectory(prefix="enclave-scale-") as tmp:
        for n in args.scale:
            say(f"{n:,} passages ...")
            spec = {
                "n": n,
                "home": str(Path(tmp) / f"home-{n}"),
                "static": folder,
                "queries": queries,
                "steady": args.steady,
            }
            row: dict[str, Any] = {}
            for phase in ("load", "search"):
                proc = subprocess.run(
                    [sys.executable, __file__, "--scale-worker", json.dumps({**spec, "search": phase == "search"})],
                    stdout=subprocess.PIPE,
                    text=True,
                    check=False,
                )
                if proc.returncode != 0:
                    raise SystemExit(
                        f"error: the --scale worker failed (exit {proc.returncode}); its messages are above."
                    )
                row.update(json.loads(proc.stdout.strip().splitlines()[-1]))
            rows.append(row)
            shutil.rmtree(Path(tmp) / f"home-{n}", ignore_errors=True)
    print(json.dumps(rows, indent=1) if args.json else render_scale(rows))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
