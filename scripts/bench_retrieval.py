#!/usr/bin/env python
"""Document index at scale: ingest throughput, peak memory while indexing, query latency.

For each size (in chunks) it generates a bulk corpus of about that many chunks
(paragraphs of the retrieval corpus, renumbered; see retrieval_corpus.write_bulk),
indexes it into a Library in a throwaway Enclave home inside a child process (so that
its peak RSS is its own), then times 200 distinct questions in each mode.

    PYTHONPATH=$PWD python scripts/bench_retrieval.py [--chunks 10000 100000] [--queries 200]
        [--real-max 10000] [--synthetic-vectors] [--embedder HOME] [--json]

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
sys.path.insert(0, str(SCRIPTS))

from retrieval_corpus import DEFAULT_SEED, question_pool, write_bulk  # noqa: E402
from retrieval_harness import MODES, corpus_files, find_embedder, open_library, percentile, say, timed  # noqa: E402

from assistant.privacy.guard import install_network_guard  # noqa: E402

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, nargs="+", default=[10_000, 100_000], help="corpus sizes in chunks")
    parser.add_argument("--queries", type=int, default=200, help="queries timed per mode (default 200)")
    parser.add_argument("--real-max", type=int, default=10_000, help="largest size embedded for real (default 10000)")
    parser.add_argument("--synthetic-vectors", action="store_true", help="random vectors above --real-max")
    parser.add_argument("--embedder", type=Path, help="Enclave home holding the built embedder (default: yours)")
    parser.add_argument("--sample-kb", type=int, default=400, help="calibration sample size (default 400 kB)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
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


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
