#!/usr/bin/env python
"""What the sealed worker costs, measured side by side with the engine in this process.

The same model, the same prompts, alternated round by round (so that drift in machine
load hits both alike), medians over the rounds. Everything is timed where a front end
sees it, in this process: for the sealed engine that includes the pipe, the JSON of every
event and the tokenizer round trips, which the engine's own ``Usage`` figures (taken in
the worker) do not.

    .venv/bin/python scripts/bench_seal.py                    # SmolLM2 from the test cache
    .venv/bin/python scripts/bench_seal.py --model DIR --rounds 7 --tokens 128 --json

Reports:

- **raw turn** (``session.generate`` on a ~180-token prompt, a fresh session each time):
  TTFT (call to first text) and decode tok/s (tokens after the first / time from the first
  text to ``Done``);
- **chat turn** (``Conversation.stream``, turns 2..N of a conversation, each prefilling only
  the new message): TTFT from the call, which includes planning the turn (tokenizer calls:
  round trips to the worker when sealed);
- **start-up**: a bare sealed worker (interpreter + seal, to its report), and model load,
  in-process vs sealed (worker start + load);
- **memory**: resident memory after loading and one turn, measured in fresh child
  processes: the in-process engine's process vs the front end + its worker.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = Path.home() / ".cache" / "enclave-test-models" / "data" / "models" / "smollm2-135m-instruct" / "onnx"
FILLER = (
    "The maintenance log records each inspection of the cooling pump: the date, the technician, "
    "the pressure at the inlet and outlet, vibration readings, and any parts replaced. "
)
PROMPT = FILLER * 5 + "Summarise what the log records."
CHAT = ["Hello! I am servicing a pump.", "What should I check first?", "It makes a grinding noise.",
        "Could it be the bearings?", "How do I check them?", "What tools do I need?", "Thanks."]  # fmt: skip


def _engines(model: Path, threads: int) -> tuple[Any, Any]:
    from assistant.engines.onnx_genai import OnnxGenaiEngine
    from assistant.engines.protocol import LoadOnnx
    from assistant.engines.sealed import SealedEngine

    return OnnxGenaiEngine(model, "m", threads=threads or None), SealedEngine(LoadOnnx(str(model), "m", threads))


def _cpu(engine: Any) -> float:
    """CPU seconds used so far by this process and, for the sealed engine, its worker."""
    from assistant.privacy.worker import Stats, WorkerStats

    worker = engine.call(Stats(), WorkerStats).cpu_s if engine.isolation is not None else 0.0
    return time.process_time() + worker


def raw_turn(engine: Any, tokens: int) -> dict[str, float]:
    from assistant.core.events import Done, GenerationOptions, TextDelta, Usage

    tok = engine.tokenizer
    messages = [{"role": "user", "content": PROMPT}]
    ids = tok.encode(tok.render(messages, add_generation_prompt=True))
    session = engine.open_session(2048)
    cpu_before = _cpu(engine)
    start = time.perf_counter()
    first = end = 0.0
    usage: Any = None
    for event in session.generate(ids, GenerationOptions(max_tokens=tokens), messages=messages):
        if isinstance(event, TextDelta) and not first:
            first = time.perf_counter()
        elif isinstance(event, Usage):
            usage = event
        elif isinstance(event, Done):
            end = time.perf_counter()
    cpu = _cpu(engine) - cpu_before
    session.close()
    steps = usage.completion_tokens - 1
    decode_s = end - first
    return {
        # CPU time of the whole turn (every thread, both processes when sealed), per token
        # generated: what the pipe adds in work, which machine load moves far less than time.
        "cpu_ms_per_token": cpu * 1000 / usage.completion_tokens,
        "prompt_tokens": len(ids),
        "ttft_ms": (first - start) * 1000,
        "decode_tok_s": steps / decode_s,
        "engine_ttft_ms": usage.ttft_ms,
        "engine_decode_tok_s": usage.decode_tokens_per_s,
        # Paired, within one turn: what the front end saw beyond what the engine measured
        # itself. Machine load moves both together, so this isolates the pipe's cost.
        "ttft_over_engine_ms": (first - start) * 1000 - usage.ttft_ms,
        "decode_over_engine_percent": (decode_s * 1000 / usage.decode_ms - 1) * 100 if usage.decode_ms else 0.0,
    }


def chat_turns(settings: Any, model: Any, engine: Any, tokens: int) -> list[tuple[float, float]]:
    """Turns 2..N of a conversation: (TTFT from the call to the first text, the same
    minus the engine's own TTFT), in ms. The call plans the turn first (tokenizer calls)."""
    from assistant.app.turns import Conversation
    from assistant.core.events import TextDelta, Usage

    conv = Conversation(replace(settings, max_tokens=tokens), model, engine, "You are a helpful technician.")
    out = []
    for i, text in enumerate(CHAT):
        start = time.perf_counter()
        first = 0.0
        engine_ttft = 0.0
        for event in conv.stream(text):
            if isinstance(event, TextDelta) and not first:
                first = time.perf_counter()
            elif isinstance(event, Usage):
                engine_ttft = event.ttft_ms
        if i > 0 and first:
            ttft = (first - start) * 1000
            out.append((ttft, ttft - engine_ttft))
    conv.close()
    return out


def startup(rounds: int, model: Path, threads: int) -> dict[str, Any]:
    from assistant.engines.onnx_genai import OnnxGenaiEngine
    from assistant.engines.protocol import LoadOnnx
    from assistant.engines.sealed import SealedEngine
    from assistant.privacy.wire import Codec
    from assistant.privacy.worker import COMMON, SealedProcess

    bare, seal_ms, inproc, sealed = [], [], [], []
    for _ in range(rounds):
        process = SealedProcess("probe", Codec(COMMON))
        bare.append(process.ready_ms)
        seal_ms.append(process.isolation.seal_ms)
        process.close()
        t = time.perf_counter()
        OnnxGenaiEngine(model, "m", threads=threads or None).close()
        inproc.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        SealedEngine(LoadOnnx(str(model), "m", threads)).close()
        sealed.append((time.perf_counter() - t) * 1000)
    return {
        "bare_worker_ready_ms": _stats(bare),
        "seal_itself_ms": _stats(seal_ms),
        "load_in_process_ms": _stats(inproc),
        "load_sealed_ms": _stats(sealed),
    }


def wait_for_quiet(most: float, limit_s: float = 180.0) -> float:
    """Wait (up to ``limit_s``) until the machine is quiet: at most ``most`` runnable tasks
    besides this one, averaged over 2 s (``/proc/loadavg``'s running count). Returns the
    average seen. On a shared 2-core machine, one other busy process halves a turn's speed."""
    started = time.monotonic()
    while True:
        samples = []
        for _ in range(8):
            running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0]) - 1
            samples.append(running)
            time.sleep(0.25)
        seen = statistics.mean(samples)
        if seen <= most or time.monotonic() - started > limit_s:
            return seen


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2), "max": round(max(values), 2)}


def memory_child(kind: str, model: Path, threads: int) -> None:
    """Runs in a fresh process: load, one turn, then print the resident memory (MiB)."""
    import psutil

    from assistant.engines.onnx_genai import OnnxGenaiEngine
    from assistant.engines.protocol import LoadOnnx
    from assistant.engines.sealed import SealedEngine

    engine: Any = (
        OnnxGenaiEngine(model, "m", threads=threads or None)
        if kind == "in-process"
        else SealedEngine(LoadOnnx(str(model), "m", threads))
    )
    raw_turn(engine, 32)
    me = psutil.Process()
    front = me.memory_info().rss / 2**20
    worker = sum(child.memory_info().rss for child in me.children(recursive=True)) / 2**20
    print(json.dumps({"front_end_mib": round(front, 1), "worker_mib": round(worker, 1)}))
    engine.close()


def memory(model: Path, threads: int) -> dict[str, Any]:
    out = {}
    for kind in ("in-process", "sealed"):
        proc = subprocess.run(
            [sys.executable, __file__, "--memory-child", kind, "--model", str(model), "--threads", str(threads)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        out[kind] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="an onnxruntime-genai model folder")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128, help="tokens decoded per raw turn")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--quiet", type=float, help="before each round, wait until at most this many other tasks run")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.model, args.threads)
        return 0
    from assistant.catalog.manifests import Catalog
    from assistant.core.settings import Settings

    os.environ["ENCLAVE_HOME"] = tempfile.mkdtemp(prefix="enclave-bench-seal-")
    settings = Settings.load(max_tokens=args.tokens, context_window=2048, threads=args.threads)
    installed = Catalog(settings).add(args.model, name="m")
    inproc, sealed = _engines(args.model, args.threads)
    raw: dict[str, list[dict[str, float]]] = {"in-process": [], "sealed": []}
    chat: dict[str, list[tuple[float, float]]] = {"in-process": [], "sealed": []}
    for engine in (inproc, sealed):  # warm-up: first-run allocations
        raw_turn(engine, 16)
    others: list[float] = []
    for i in range(args.rounds):
        if args.quiet is not None:
            others.append(wait_for_quiet(args.quiet))
        order = [("in-process", inproc), ("sealed", sealed)]
        for name, engine in order if i % 2 == 0 else order[::-1]:
            raw[name].append(raw_turn(engine, args.tokens))
            chat[name] += chat_turns(settings, installed, engine, 24)
        print(f"[bench_seal] round {i + 1}/{args.rounds}", file=sys.stderr)
    inproc.close()
    sealed.close()
    report: dict[str, Any] = {"model": str(args.model), "rounds": args.rounds, "tokens": args.tokens}
    keys = ("prompt_tokens", "ttft_ms", "decode_tok_s", "engine_ttft_ms", "engine_decode_tok_s")
    for name in raw:
        report[name] = {key: round(statistics.median(r[key] for r in raw[name]), 2) for key in keys}
        report[name]["best_decode_tok_s"] = round(max(r["decode_tok_s"] for r in raw[name]), 2)
        report[name]["best_ttft_ms"] = round(min(r["ttft_ms"] for r in raw[name]), 2)
        for key in ("ttft_over_engine_ms", "decode_over_engine_percent", "cpu_ms_per_token"):
            report[name][key] = round(statistics.median(r[key] for r in raw[name]), 3)
        report[name]["chat_ttft_ms"] = round(statistics.median(t for t, _ in chat[name]), 2)
        report[name]["chat_ttft_over_engine_ms"] = round(statistics.median(o for _, o in chat[name]), 3)
    a, b = report["in-process"], report["sealed"]
    # Side by side (medians of alternated rounds: as noisy as the machine).
    report["decode_cost_percent"] = round((a["decode_tok_s"] - b["decode_tok_s"]) / a["decode_tok_s"] * 100, 2)
    report["ttft_cost_ms"] = round(b["ttft_ms"] - a["ttft_ms"], 2)
    report["chat_ttft_cost_ms"] = round(b["chat_ttft_ms"] - a["chat_ttft_ms"], 2)
    # Paired (what each path adds on top of its own engine's figures, turn by turn).
    report["paired_decode_cost_percent"] = round(b["decode_over_engine_percent"] - a["decode_over_engine_percent"], 3)
    report["paired_ttft_cost_ms"] = round(b["ttft_over_engine_ms"] - a["ttft_over_engine_ms"], 3)
    report["paired_chat_ttft_cost_ms"] = round(b["chat_ttft_over_engine_ms"] - a["chat_ttft_over_engine_ms"], 3)
    report["cpu_cost_percent"] = round((b["cpu_ms_per_token"] / a["cpu_ms_per_token"] - 1) * 100, 2)
    # Side by side, round by round: the two runs of a round are back to back, so their
    # ratio cancels the slow drift of machine load that separate medians keep.
    ratios = [s["decode_tok_s"] / i["decode_tok_s"] for i, s in zip(raw["in-process"], raw["sealed"], strict=True)]
    ttft_diffs = [s["ttft_ms"] - i["ttft_ms"] for i, s in zip(raw["in-process"], raw["sealed"], strict=True)]
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    report["round_decode_cost_percent"] = round((1 - statistics.median(ratios)) * 100, 2)
    report["round_decode_cost_iqr_percent"] = [round((1 - q) * 100, 2) for q in (quartiles[2], quartiles[0])]
    report["round_ttft_cost_ms"] = round(statistics.median(ttft_diffs), 2)
    report["load_average"] = os.getloadavg()
    report["other_runnable_tasks_before_rounds"] = round(statistics.mean(others), 2) if others else None
    print("[bench_seal] start-up", file=sys.stderr)
    report["startup"] = startup(max(3, args.rounds), args.model, args.threads)
    print("[bench_seal] memory", file=sys.stderr)
    report["memory_mib"] = memory(args.model, args.threads)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        _table(report)
    return 0


def _table(r: dict[str, Any]) -> None:
    a, b = r["in-process"], r["sealed"]
    print(f"model {r['model']}, {r['rounds']} rounds alternated, {r['tokens']} tokens per raw turn, medians")
    print(
        f"load average during the run: {', '.join(f'{x:.1f}' for x in r['load_average'])} (this machine has {os.cpu_count()} cores)"
    )
    print(f"{'':38}{'in-process':>12}{'sealed':>12}{'cost':>12}")
    rows = [
        ("raw turn TTFT (ms, ~200-tok prompt)", "ttft_ms", f"{r['ttft_cost_ms']:+}"),
        ("  best of the rounds (ms)", "best_ttft_ms", ""),
        ("raw decode (tok/s)", "decode_tok_s", f"{-r['decode_cost_percent']:+}%"),
        ("  best of the rounds (tok/s)", "best_decode_tok_s", ""),
        ("chat TTFT, turns 2+ (ms)", "chat_ttft_ms", f"{r['chat_ttft_cost_ms']:+}"),
        ("engine's own decode figure (tok/s)", "engine_decode_tok_s", ""),
        ("paired: TTFT over the engine's (ms)", "ttft_over_engine_ms", f"{r['paired_ttft_cost_ms']:+}"),
        ("paired: decode over the engine's (%)", "decode_over_engine_percent", f"{r['paired_decode_cost_percent']:+}%"),
        ("paired: chat TTFT over engine's (ms)", "chat_ttft_over_engine_ms", f"{r['paired_chat_ttft_cost_ms']:+}"),
        ("CPU per token, all threads (ms)", "cpu_ms_per_token", f"{r['cpu_cost_percent']:+}%"),
    ]
    for label, key, cost in rows:
        print(f"{label:38}{a[key]:>12}{b[key]:>12}{cost:>12}")
    low, high = r["round_decode_cost_iqr_percent"]
    print(
        f"round by round (back-to-back pairs): decode cost {r['round_decode_cost_percent']}% "
        f"(interquartile {low}% .. {high}%), TTFT cost {r['round_ttft_cost_ms']:+} ms"
    )
    s = r["startup"]
    print(f"start-up: bare sealed worker {s['bare_worker_ready_ms']} ms (seal itself {s['seal_itself_ms']} ms)")
    print(f"load: in-process {s['load_in_process_ms']} ms, sealed (worker + load) {s['load_sealed_ms']} ms")
    m = r["memory_mib"]
    print(
        f"memory after load + one turn: in-process {m['in-process']['front_end_mib']} MiB; sealed front end "
        f"{m['sealed']['front_end_mib']} + worker {m['sealed']['worker_mib']} MiB"
    )


if __name__ == "__main__":
    sys.exit(main())
