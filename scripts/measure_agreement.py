#!/usr/bin/env python
"""How faithful is a quantised onnxruntime-genai build to its reference build?

Teacher-forced comparison: the reference model answers a fixed set of chat
prompts greedily; each candidate then reads exactly the same tokens, and at every
answer position we compare the candidate's next-token choice (top-1 agreement)
and its whole distribution (KL(reference || candidate)). Speed and size are
measured in the same run so that the choice of build settings is one table.

    python scripts/measure_agreement.py --reference BUILD_FP32 CANDIDATE [CANDIDATE …]

Candidates and reference are model folders (genai_config.json inside).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnxruntime_genai as og

PROMPTS = [
    "What is the capital of France?",
    "Explain in two sentences what a heat exchanger does.",
    "List three safety checks before servicing an electrical panel.",
    "Write a short, polite e-mail asking a colleague for the quarterly report.",
    "What does 'force majeure' mean in a contract?",
    "How do I reset a tripped circuit breaker?",
    "Summarise the plot of Romeo and Juliet in one paragraph.",
    "What is 17 multiplied by 23?",
    "Give me a Python function that reverses a string.",
    "Why is the sky blue?",
    "What should I do if a pump is making a grinding noise?",
    "Translate 'good morning' into Spanish and German.",
    "What are the main differences between a lease and a licence?",
    "Describe how a refrigerator works.",
    "Name the planets of the solar system in order.",
    "What is the boiling point of water at sea level in Fahrenheit?",
]


#: The smallest KV cache a generator gets (``--window``): Gemma 3's sliding-window
#: attention refuses a cache shorter than its 512-token window.
WINDOW = [0]


def chat_ids(tok: og.Tokenizer, template: str | None, prompt: str) -> np.ndarray:
    messages = json.dumps([{"role": "user", "content": prompt}])
    text = tok.apply_chat_template(messages, template_str=template, add_generation_prompt=True)
    return np.asarray(tok.encode(text), dtype=np.int32)


def load(path: Path) -> tuple[og.Model, og.Tokenizer, str | None]:
    model = og.Model(str(path))
    jinja = path / "chat_template.jinja"
    return model, og.Tokenizer(model), jinja.read_text() if jinja.exists() else None


def reference_answers(path: Path, n_tokens: int) -> list[tuple[np.ndarray, list[int], list[np.ndarray]]]:
    model, tok, template = load(path)
    out = []
    for prompt in PROMPTS:
        ids = chat_ids(tok, template, prompt)
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=max(len(ids) + n_tokens + 1, WINDOW[0]), do_sample=False)
        gen = og.Generator(model, params)
        gen.append_tokens(ids)
        answer: list[int] = []
        logits: list[np.ndarray] = []
        while len(answer) < n_tokens and not gen.is_done():
            logits.append(np.array(gen.get_logits(), dtype=np.float32).reshape(-1))
            gen.generate_next_token()
            answer.append(int(gen.get_next_tokens()[0]))
        out.append((ids, answer, logits))
    return out


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max()
    return x - np.log(np.exp(x).sum())


def compare(path: Path, refs: list[tuple[np.ndarray, list[int], list[np.ndarray]]]) -> dict[str, float]:
    model, _tok, _template = load(path)
    agree = total = 0
    kls: list[float] = []
    for ids, answer, ref_logits in refs:
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=max(len(ids) + len(answer) + 2, WINDOW[0]), do_sample=False)
        gen = og.Generator(model, params)
        gen.append_tokens(ids)
        for token, ref in zip(answer, ref_logits, strict=True):
            cand = np.array(gen.get_logits(), dtype=np.float32).reshape(-1)
            agree += int(int(cand.argmax()) == int(ref.argmax()))
            total += 1
            p = log_softmax(ref)
            q = log_softmax(cand)
            kls.append(float((np.exp(p) * (p - q)).sum()))
            gen.append_tokens(np.asarray([token], dtype=np.int32))
    return {"agreement": agree / max(total, 1), "kl": float(np.mean(kls)), "positions": total}


def speed(path: Path, n_tokens: int = 96) -> dict[str, float]:
    model, tok, template = load(path)
    ids = chat_ids(tok, template, "Describe the water cycle in detail, step by step.")
    params = og.GeneratorParams(model)
    params.set_search_options(
        max_length=max(len(ids) + n_tokens + 1, WINDOW[0]), do_sample=False, min_length=len(ids) + n_tokens
    )
    gen = og.Generator(model, params)
    t0 = time.perf_counter()
    gen.append_tokens(ids)
    gen.generate_next_token()
    t1 = time.perf_counter()
    steps = 0
    while steps < n_tokens - 1 and not gen.is_done():
        gen.generate_next_token()
        steps += 1
    t2 = time.perf_counter()
    return {"ttft_ms": (t1 - t0) * 1000, "decode_tok_s": steps / (t2 - t1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=Path, required=True, help="reference model folder (fp32 build)")
    parser.add_argument("--tokens", type=int, default=48, help="answer tokens per prompt (default 48)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per candidate")
    parser.add_argument("--window", type=int, default=0, help="smallest max_length (Gemma 3: 1024)")
    parser.add_argument("candidates", type=Path, nargs="+")
    args = parser.parse_args()
    WINDOW[0] = args.window

    refs = reference_answers(args.reference, args.tokens)
    if not args.json:
        print(f"{'build':32} {'agree':>7} {'KL':>7} {'MiB':>6} {'TTFT ms':>8} {'tok/s':>6}")
    for cand in args.candidates:
        size = sum(f.stat().st_size for f in cand.iterdir() if f.is_file()) / 2**20
        row = {"build": cand.name, **compare(cand, refs), "mib": size, **speed(cand)}
        if args.json:
            print(json.dumps(row))
        else:
            print(
                f"{row['build']:32} {row['agreement']:7.1%} {row['kl']:7.3f} {size:6.0f} "
                f"{row['ttft_ms']:8.0f} {row['decode_tok_s']:6.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
