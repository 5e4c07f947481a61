#!/usr/bin/env python
"""Where the ONNX engine's memory goes, step by step, and what each lever changes.

Each configuration runs in a fresh child process that records its resident set
(``VmRSS``, and the peak ``VmHWM``, split into anonymous and file-backed pages)
after each step: bare python; ``import onnxruntime_genai``; ``og.Model`` loaded;
an ``og.Generator`` with ``max_length`` = the window; a ~950-token prompt (``--prompt-repeats``)
prefilled; 128 tokens decoded. The same child times the prefill and the decode (wall
clock, and CPU ms per token: with ``--threads 1`` the CPU time is a measure of work
that other processes sharing the cores barely change), so a lever's cost in speed
is measured with its saving in memory. Configurations
alternate over ``--rounds`` (the machine is shared; medians are reported).

    python scripts/probe_engine_memory.py MODEL_DIR [--variant NAME=MODEL_DIR[@OVERLAY_JSON]] …

A variant is a model folder (another build) and/or a genai_config overlay, e.g.
``noarena=@{"model":{"decoder":{"session_options":{"enable_cpu_mem_arena":false}}}}``
(the folder defaults to MODEL_DIR); the overlay key ``_prefill_chunk`` (not a genai
setting) makes the probe prefill in chunks of that many tokens, ``_malloc_trim``
calls glibc's ``malloc_trim(0)`` after loading, and ``_env`` sets environment
variables of the child (e.g. ``MALLOC_MMAP_THRESHOLD_``). The baseline is MODEL_DIR with no overlay.
With ``--agreement`` each variant's greedy next-token choices are compared with
the baseline's, teacher-forced over the same tokens (top-1 agreement).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

_FILLER = (
    "The maintenance log records each inspection of the cooling pump: the date, the technician, "
    "the pressure at the inlet and outlet, vibration readings, and any parts replaced. "
)
SYSTEM = "You are Enclave, a helpful AI assistant that runs entirely on this computer. Answer clearly and briefly."
LONG_REPEATS = 27  # ~934 tokens with SmolLM2's template and system prompt


def long_prompt(repeats: int = LONG_REPEATS) -> str:
    return _FILLER * repeats + "Summarise what the log records."


AGREEMENT_PROMPTS = [
    "What is the capital of France?",
    "Explain in two sentences what a heat exchanger does.",
    "List three safety checks before servicing an electrical panel.",
    "Why is the sky blue?",
    "What should I do if a pump is making a grinding noise?",
    "Describe how a refrigerator works.",
]
CHILD_ENV = {"ORT_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1"}


def status() -> dict[str, float]:
    out: dict[str, float] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            out[key] = round(int(value.split()[0]) / 1024.0, 1)
    return out


def cpu_s() -> float:
    """CPU seconds this process has used (all threads): with one thread, a measure of
    work that other processes on the cores do not change, unlike wall time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(spec: dict[str, Any]) -> dict[str, Any]:
    steps: list[tuple[str, dict[str, float]]] = [("bare python", status())]
    import numpy as np

    steps.append(("+ numpy", status()))
    import onnxruntime_genai as og

    steps.append(("+ import onnxruntime_genai", status()))
    model_dir = spec["model_dir"]
    overlay: dict[str, Any] = {"model": {"decoder": {"session_options": {"intra_op_num_threads": spec["threads"]}}}}
    extra = dict(spec.get("overlay") or {})
    # Not genai settings: how this probe drives the generator.
    chunk = int(extra.pop("_prefill_chunk", 0))
    trim = bool(extra.pop("_malloc_trim", False))
    extra.pop("_env", None)  # applied by spawn()
    _merge(overlay, extra)
    t0 = time.perf_counter()
    config = og.Config(model_dir)
    config.overlay(json.dumps(overlay))
    model = og.Model(config)
    load_s = time.perf_counter() - t0
    steps.append(("+ og.Model", status()))
    tok = og.Tokenizer(model)
    steps.append(("+ og.Tokenizer", status()))
    if trim:
        # Hand the heap pages freed while loading (raw weights replaced by their
        # prepacked copies) back to the system.
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
        steps.append(("+ malloc_trim(0)", status()))
    jinja = Path(model_dir) / "chat_template.jinja"
    template = jinja.read_text() if jinja.is_file() else None

    def encode(user: str) -> np.ndarray:
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
        text = tok.apply_chat_template(json.dumps(messages), template_str=template, add_generation_prompt=True)
        return np.asarray(tok.encode(text), dtype=np.int32)

    if spec.get("task") == "reference":
        return {"answers": reference_answers(og, model, encode, int(spec["tokens"]))}
    ids = encode(long_prompt(int(spec.get("repeats") or LONG_REPEATS)))
    n_tokens = int(spec["tokens"])
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=int(spec["window"]), do_sample=False, min_length=len(ids) + n_tokens)
    gen = og.Generator(model, params)
    steps.append((f"+ Generator (max_length {spec['window']})", status()))
    c1, t1 = cpu_s(), time.perf_counter()
    step = chunk or len(ids)
    for start in range(0, len(ids), step):
        gen.append_tokens(ids[start : start + step])
    c2, t2 = cpu_s(), time.perf_counter()
    steps.append((f"after prefill ({len(ids)} tokens)", status()))
    gen.generate_next_token()
    c3, t3 = cpu_s(), time.perf_counter()
    for _ in range(n_tokens - 1):
        gen.generate_next_token()
    c4, t4 = cpu_s(), time.perf_counter()
    steps.append((f"after decode ({n_tokens} tokens)", status()))
    out: dict[str, Any] = {
        "steps": steps,
        "load_s": load_s,
        "prompt_tokens": len(ids),
        "prefill_tok_s": len(ids) / (t2 - t1),
        "decode_tok_s": (n_tokens - 1) / (t4 - t3),
        "prefill_cpu_ms_per_token": (c2 - c1) * 1000 / len(ids),
        "decode_cpu_ms_per_token": (c4 - c3) * 1000 / (n_tokens - 1),
        "output": [int(t) for t in gen.get_sequence(0)[len(ids) :]],
    }
    del gen
    if spec.get("short"):
        # Short-prompt decode in the same process (memory already recorded).
        sids = encode("What is the capital of France?")
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=int(spec["window"]), do_sample=False, min_length=len(sids) + n_tokens)
        gen = og.Generator(model, params)
        gen.append_tokens(sids)
        gen.generate_next_token()
        c5, t5 = cpu_s(), time.perf_counter()
        for _ in range(n_tokens - 1):
            gen.generate_next_token()
        out["decode_short_tok_s"] = (n_tokens - 1) / (time.perf_counter() - t5)
        out["decode_short_cpu_ms_per_token"] = (cpu_s() - c5) * 1000 / (n_tokens - 1)
        del gen
    if spec.get("forced"):
        eos = json.loads((Path(model_dir) / "genai_config.json").read_text())["model"]["eos_token_id"]
        out["choices"] = forced_choices(og, model, encode, spec["forced"], eos if isinstance(eos, list) else [eos])
    return out


def reference_answers(og: Any, model: Any, encode: Any, n: int) -> list[list[int]]:
    """The greedy answers (``n`` tokens, EOS suppressed) to AGREEMENT_PROMPTS."""
    answers = []
    for prompt in AGREEMENT_PROMPTS:
        ids = encode(prompt)
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(ids) + n, do_sample=False, min_length=len(ids) + n)
        gen = og.Generator(model, params)
        gen.append_tokens(ids)
        for _ in range(n):
            gen.generate_next_token()
        answers.append([int(t) for t in gen.get_sequence(0)[len(ids) :]])
    return answers


def forced_choices(og: Any, model: Any, encode: Any, forced: list[list[int]], eos: list[int]) -> list[list[int]]:
    """Greedy choice at each position while reading the given answers (teacher forcing)."""
    import numpy as np

    choices = []
    for prompt, answer in zip(AGREEMENT_PROMPTS, forced, strict=True):
        ids = encode(prompt)
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(ids) + len(answer) + 2, do_sample=False)
        gen = og.Generator(model, params)
        gen.append_tokens(ids)
        row = []
        for token in answer:
            logits = np.asarray(gen.get_logits(), dtype=np.float32).reshape(-1)
            logits[eos] = -np.inf  # the reference was generated with EOS suppressed
            row.append(int(logits.argmax()))
            gen.append_tokens(np.asarray([token], dtype=np.int32))
        choices.append(row)
    return choices


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def spawn(spec: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, **CHILD_ENV, **dict((spec.get("overlay") or {}).get("_env", {}))}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1][:400]}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def parse_variant(text: str, default_dir: str) -> tuple[str, str, dict[str, Any]]:
    name, _, rest = text.partition("=")
    folder, _, overlay = rest.partition("@")
    return name, folder or default_dir, json.loads(overlay) if overlay else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("model_dir", nargs="?")
    parser.add_argument("--variant", action="append", default=[], help="NAME=[MODEL_DIR][@OVERLAY_JSON]")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--window", type=int, default=2048)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument(
        "--prompt-repeats",
        type=int,
        default=LONG_REPEATS,
        help=f"repeats of the filler sentence in the long prompt ({LONG_REPEATS}: ~934 tokens; 56: ~1,900)",
    )
    parser.add_argument("--short", action="store_true", help="also short-prompt decode")
    parser.add_argument("--agreement", action="store_true", help="top-1 agreement with the baseline")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if not args.model_dir:
        parser.error("MODEL_DIR is required")

    variants = [("baseline", args.model_dir, {})] + [parse_variant(v, args.model_dir) for v in args.variant]
    forced = _reference_answers(args) if args.agreement else None
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in variants}
    for rnd in range(args.rounds):
        order = variants if rnd % 2 == 0 else variants[::-1]
        for name, folder, overlay in order:
            runs[name].append(_run_once(args, rnd, name, folder, overlay, forced))
    report = {name: _summarize(runs[name], runs["baseline"], forced, args.short) for name, _, _ in variants}
    if args.json:
        print(json.dumps(report))
        return
    _print_report(report)


def _reference_answers(args: argparse.Namespace) -> list[list[int]]:
    """The baseline's greedy answers, which every variant is then teacher-forced over."""
    ref = spawn({"task": "reference", "model_dir": args.model_dir, "threads": args.threads, "tokens": 48})
    if "error" in ref:
        raise SystemExit(f"reference answers failed: {ref['error']}")
    answers: list[list[int]] = ref["answers"]
    return answers


def _run_once(
    args: argparse.Namespace,
    rnd: int,
    name: str,
    folder: str,
    overlay: dict[str, Any],
    forced: list[list[int]] | None,
) -> dict[str, Any]:
    """One configuration in a fresh child (the agreement is measured in the first round
    only), with the load average it started under; reported on stderr as it ends."""
    load = float(Path("/proc/loadavg").read_text().split()[0])
    spec = {
        "model_dir": folder,
        "overlay": overlay,
        "threads": args.threads,
        "window": args.window,
        "tokens": args.tokens,
        "repeats": args.prompt_repeats,
        "short": args.short,
        "forced": forced if (forced and rnd == 0) else None,
    }
    result = spawn(spec)
    result["load_average"] = load
    if "error" in result:
        print(f"round {rnd + 1} {name}: FAILED {result['error']}", file=sys.stderr, flush=True)
    else:
        print(
            f"round {rnd + 1} {name}: peak {result['steps'][-1][1]['VmHWM']:.0f} MiB, "
            f"prefill {result['prefill_tok_s']:.0f} tok/s, decode {result['decode_tok_s']:.1f} tok/s "
            f"(load {load:.1f})",
            file=sys.stderr,
            flush=True,
        )
    return result


def _summarize(
    runs: list[dict[str, Any]], baseline: list[dict[str, Any]], forced: list[list[int]] | None, short: bool
) -> dict[str, Any]:
    """The medians of one variant's rounds (or the first error, when none succeeded)."""
    base_out = next((r["output"] for r in baseline if "output" in r), None)
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"error": runs[0]["error"]}
    row: dict[str, Any] = {
        "peak_rss_mib": statistics.median(r["steps"][-1][1]["VmHWM"] for r in ok),
        "prefill_tok_s": statistics.median(r["prefill_tok_s"] for r in ok),
        "decode_tok_s": statistics.median(r["decode_tok_s"] for r in ok),
        "load_s": statistics.median(r["load_s"] for r in ok),
        "steps": ok[0]["steps"],
        "same_long_output_as_baseline": ok[0]["output"] == base_out,
    }
    for key in ("prefill_cpu_ms_per_token", "decode_cpu_ms_per_token"):
        row[key] = statistics.median(r[key] for r in ok)
    if short:
        row["decode_short_tok_s"] = statistics.median(r["decode_short_tok_s"] for r in ok)
        row["decode_short_cpu_ms_per_token"] = statistics.median(r["decode_short_cpu_ms_per_token"] for r in ok)
    choices = next((r["choices"] for r in ok if r.get("choices")), None)
    if forced and choices:
        pairs = [(a, b) for ref, got in zip(forced, choices, strict=True) for a, b in zip(ref, got, strict=True)]
        row["top1_agreement"] = sum(a == b for a, b in pairs) / len(pairs)
    return row


def _print_report(report: dict[str, Any]) -> None:
    """The table of variants against the baseline, then the baseline's memory step by step."""
    base = report["baseline"]
    print(
        f"{'variant':24} {'peak MiB':>9} {'Δ MiB':>7} {'prefill':>8} {'Δ':>6} {'decode':>7} {'Δ':>6} "
        f"{'pre cpu':>8} {'Δ':>6} {'dec cpu':>8} {'Δ':>6} {'agree':>6}"
    )
    for name, row in report.items():
        if "error" in row:
            print(f"{name:24} FAILED: {row['error']}")
            continue
        agree = f"{row['top1_agreement']:.1%}" if "top1_agreement" in row else ""
        print(
            f"{name:24} {row['peak_rss_mib']:9.0f} {row['peak_rss_mib'] - base['peak_rss_mib']:+7.0f} "
            f"{row['prefill_tok_s']:8.0f} {row['prefill_tok_s'] / base['prefill_tok_s'] - 1:+6.0%} "
            f"{row['decode_tok_s']:7.1f} {row['decode_tok_s'] / base['decode_tok_s'] - 1:+6.0%} "
            f"{row['prefill_cpu_ms_per_token']:8.2f} "
            f"{row['prefill_cpu_ms_per_token'] / base['prefill_cpu_ms_per_token'] - 1:+6.0%} "
            f"{row['decode_cpu_ms_per_token']:8.2f} "
            f"{row['decode_cpu_ms_per_token'] / base['decode_cpu_ms_per_token'] - 1:+6.0%} {agree:>6}"
        )
    print("\nsteps (baseline): VmRSS / VmHWM / anon / file MiB")
    for label, mem in base["steps"]:
        print(f"  {label:34} {mem['VmRSS']:7.1f} {mem['VmHWM']:7.1f} {mem['RssAnon']:7.1f} {mem['RssFile']:7.1f}")


if __name__ == "__main__":
    main()
