#!/usr/bin/env python
"""`enclave serve` against the same turns in-process: decode tok/s and TTFT side by side,
and TTFT of turn 2 vs turn 10 of a chat whose client resends the whole history.

    python scripts/bench_serve.py [--home DIR] [--model NAME] [--runs 5] [--max-tokens 128] [--json]

``--home`` is an Enclave home with the model built (default: $ENCLAVE_HOME). The server runs
as a real `enclave serve` process on an ephemeral loopback port; the client here reads its
server-sent events with httpx (what the openai client does, without its parsing cost).
In-process means the same app-layer turn (:meth:`Conversation.stream`) in this process, no
HTTP. Both are timed the same way, by the caller: TTFT from the call (or the request) to
the first text; decode over the text that follows, with the engine's token count. Rounds
alternate server and in-process so drift from other jobs hits both; medians are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from assistant.app.bench import CHAT_SCRIPT
from assistant.app.turns import Assistant
from assistant.core.events import GenerationOptions, TextDelta, Usage
from assistant.core.settings import Settings
from assistant.privacy.guard import install_network_guard

PROMPT = "Write a detailed maintenance guide for a centrifugal water pump, step by step."


@dataclass
class Timing:
    ttft_ms: float
    decode_tok_s: float
    prompt_tokens: int
    cached_tokens: int


def _timing(started: float, first: float | None, last: float, completion: int, prompt: int, cached: int) -> Timing:
    first = first or last
    steps = completion - 1
    rate = steps / (last - first) if steps > 0 and last > first else 0.0
    return Timing((first - started) * 1000, rate, prompt, cached)


def in_process(assistant: Assistant, model: str, messages: list[dict[str, str]], max_tokens: int) -> Timing:
    conv = assistant.conversation(model, save=False)
    system = messages[0]["content"] if messages[0]["role"] == "system" else conv.system
    conv.system = system
    conv.messages = [m for m in messages[:-1] if m["role"] != "system"]
    options = GenerationOptions(max_tokens=max_tokens)
    started = time.perf_counter()
    first: float | None = None
    last = started
    usage: Usage | None = None
    for event in conv.stream(messages[-1]["content"], options):
        if isinstance(event, TextDelta):
            first = first or time.perf_counter()
            last = time.perf_counter()
        elif isinstance(event, Usage):
            usage = event
    conv.close()
    assert usage is not None
    return _timing(started, first, last, usage.completion_tokens, usage.prompt_tokens, 0)


def through_server(
    client: httpx.Client, base: str, model: str, messages: list[dict[str, str]], max_tokens: int
) -> tuple[Timing, str]:
    body = {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first: float | None = None
    last = started
    usage: dict[str, Any] = {}
    text: list[str] = []
    with client.stream("POST", f"{base}/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk.get("choices", []):
                piece = choice.get("delta", {}).get("content")
                if piece:
                    first = first or time.perf_counter()
                    last = time.perf_counter()
                    text.append(piece)
    cached = int(usage.get("prompt_tokens_details", {}).get("cached_tokens", 0))
    timing = _timing(started, first, last, int(usage["completion_tokens"]), int(usage["prompt_tokens"]), cached)
    return timing, "".join(text)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system
        shutil.copy2(src, dst)


def start_server(home: Path) -> tuple[subprocess.Popen[str], str, str]:
    env = dict(os.environ, ENCLAVE_HOME=str(home))
    proc = subprocess.Popen(
        [sys.executable, "-m", "assistant", "serve", "--port", "0"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    for _ in range(10):
        match = re.search(r"Enclave API on (\S+)", proc.stderr.readline())
        if match:
            break
    else:
        proc.kill()
        raise SystemExit("enclave serve did not start")
    token = subprocess.run(
        [sys.executable, "-m", "assistant", "serve", "token"], capture_output=True, text=True, env=env, check=True
    ).stdout.strip()
    return proc, match.group(1), token


def chat_turns(
    client: httpx.Client, base: str, model: str, turns: int, max_tokens: int
) -> tuple[list[Timing], list[dict[str, str]]]:
    """The scripted chat, each request carrying the whole history; the timings and the
    messages of the last turn."""
    messages: list[dict[str, str]] = []
    out: list[Timing] = []
    for text in CHAT_SCRIPT[:turns]:
        messages.append({"role": "user", "content": text})
        timing, answer = through_server(client, base, model, messages, max_tokens)
        out.append(timing)
        messages.append({"role": "assistant", "content": answer})
    return out, messages[:-1]


def cold_turn(client: httpx.Client, base: str, model: str, turns: list[dict[str, str]], max_tokens: int) -> Timing:
    """The same last turn with nothing reusable: a salted system prompt makes every token new."""
    salted = [{"role": "system", "content": f"[{time.time_ns()}] You are a helpful assistant."}, *turns]
    return through_server(client, base, model, salted, max_tokens)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=None, help="Enclave home with the model built")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    install_network_guard()
    source = args.home or Path(os.environ.get("ENCLAVE_HOME", Path.home() / ".cache" / "enclave-test-models"))
    # A private home whose models are the built ones: the benchmark's audit and token stay out of yours.
    home = Path(tempfile.mkdtemp(prefix="enclave-bench-serve-"))
    (home / "data").mkdir()
    # Linked file by file, not one symlink to the folder: the sealed engine worker sees only
    # paths inside its home, so a models folder that points outside it does not load.
    shutil.copytree((source / "data" / "models").resolve(), home / "data" / "models", copy_function=_link_or_copy)
    os.environ["ENCLAVE_HOME"] = str(home)
    settings = Settings.load(model=args.model)
    assistant = Assistant(settings)
    proc, base, token = start_server(home)
    messages = [{"role": "user", "content": PROMPT}]
    local: list[Timing] = []
    served: list[Timing] = []
    try:
        with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=600) as client:
            through_server(client, base, args.model, messages, 8)  # load the model in the server
            in_process(assistant, args.model, messages, 8)  # and here
            for _ in range(args.runs):
                # A fresh session each time on both sides: the whole prompt is prefilled.
                served.append(
                    through_server(
                        client,
                        base,
                        args.model,
                        [{"role": "system", "content": f"[{time.time_ns()}]"}, *messages],
                        args.max_tokens,
                    )[0]
                )
                local.append(
                    in_process(
                        assistant,
                        args.model,
                        [{"role": "system", "content": f"[{time.time_ns()}]"}, *messages],
                        args.max_tokens,
                    )
                )
            chat, last = chat_turns(client, base, args.model, args.turns, 48)
            cold = cold_turn(client, base, args.model, last, 48)
    except httpx.HTTPError:
        proc.terminate()
        proc.wait(timeout=30)
        assert proc.stderr is not None
        sys.stderr.write("enclave serve said:\n" + proc.stderr.read())
        raise
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        assistant.close()
        shutil.rmtree(home, ignore_errors=True)

    def med(rows: list[Timing], field: str) -> float:
        return float(statistics.median(getattr(r, field) for r in rows))

    report = {
        "model": args.model,
        "runs": args.runs,
        "max_tokens": args.max_tokens,
        "prompt_tokens": local[0].prompt_tokens,
        "in_process": {"ttft_ms": med(local, "ttft_ms"), "decode_tok_s": med(local, "decode_tok_s")},
        "server": {"ttft_ms": med(served, "ttft_ms"), "decode_tok_s": med(served, "decode_tok_s")},
        # Best of the runs: on a shared machine the least-disturbed run is the fairest pair.
        "best": {
            "in_process": {
                "ttft_ms": min(r.ttft_ms for r in local),
                "decode_tok_s": max(r.decode_tok_s for r in local),
            },
            "server": {"ttft_ms": min(r.ttft_ms for r in served), "decode_tok_s": max(r.decode_tok_s for r in served)},
        },
        "load_average": os.getloadavg()[0],
        "chat": [
            {"turn": i, "prompt_tokens": t.prompt_tokens, "cached_tokens": t.cached_tokens, "ttft_ms": t.ttft_ms}
            for i, t in enumerate(chat, start=1)
        ],
        "turn_cold": {"prompt_tokens": cold.prompt_tokens, "ttft_ms": cold.ttft_ms},
    }
    if args.json:
        print(json.dumps(report))
        return
    ip, sv = report["in_process"], report["server"]
    print(f"{args.model}, {report['prompt_tokens']}-token prompt, {args.max_tokens} tokens, median of {args.runs}")
    print("| | in-process | through the server | difference |")
    print("|---|---|---|---|")
    print(f"| TTFT | {ip['ttft_ms']:.1f} ms | {sv['ttft_ms']:.1f} ms | {sv['ttft_ms'] - ip['ttft_ms']:+.1f} ms |")
    loss = (1 - sv["decode_tok_s"] / ip["decode_tok_s"]) * 100 if ip["decode_tok_s"] else 0.0
    print(f"| decode | {ip['decode_tok_s']:.1f} tok/s | {sv['decode_tok_s']:.1f} tok/s | {-loss:+.1f} % |")
    bi, bs = report["best"]["in_process"], report["best"]["server"]
    best_loss = (1 - bs["decode_tok_s"] / bi["decode_tok_s"]) * 100 if bi["decode_tok_s"] else 0.0
    print(
        f"| TTFT, best run | {bi['ttft_ms']:.1f} ms | {bs['ttft_ms']:.1f} ms | {bs['ttft_ms'] - bi['ttft_ms']:+.1f} ms |"
    )
    print(
        f"| decode, best run | {bi['decode_tok_s']:.1f} tok/s | {bs['decode_tok_s']:.1f} tok/s | {-best_loss:+.1f} % |"
    )
    print(f"(1-minute load average at the end: {report['load_average']:.1f} on {os.cpu_count()} cores)")
    print()
    print("| chat turn (client resends the history) | prompt tokens | cached | TTFT |")
    print("|---|---|---|---|")
    for row in report["chat"]:
        if row["turn"] in (1, 2, args.turns):
            print(f"| {row['turn']} | {row['prompt_tokens']} | {row['cached_tokens']} | {row['ttft_ms']:.1f} ms |")
    c = report["turn_cold"]
    print(
        f"| {args.turns}, nothing reusable (salted system prompt) | {c['prompt_tokens']} | 0 | {c['ttft_ms']:.1f} ms |"
    )


if __name__ == "__main__":
    main()
