"""Engine benchmark: load time, TTFT, prefill and decode speed, peak RSS, multi-turn TTFT.

Used by ``enclave bench`` and ``scripts/bench_engine.py``. Figures are for
reports and comparisons in one run, never for assertions in tests.
"""

from __future__ import annotations

import math
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from assistant.app import power
from assistant.app.turns import Assistant
from assistant.core.cpus import inference_threads
from assistant.core.errors import EnclaveError
from assistant.core.events import Done, GenerationOptions, TextDelta, Usage
from assistant.core.settings import Settings
from assistant.storage.releases import Releases

_FILLER = (
    "The maintenance log records each inspection of the cooling pump: the date, the technician, "
    "the pressure at the inlet and outlet, vibration readings, and any parts replaced. "
)

PROMPTS: list[tuple[str, str]] = [
    ("short question", "What is the capital of France?"),
    ("medium prompt", _FILLER * 5 + "Summarise what the log records."),
    ("long prompt", _FILLER * 28 + "Summarise what the log records."),
]

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


#: The fixed text for perplexity: the first QUALITY_CHARS characters of the GPL-3 (on
#: every Debian/Ubuntu machine; llama.cpp's 19.87 on SmolLM2 is measured on the same text).
QUALITY_TEXT = Path("/usr/share/common-licenses/GPL-3")
QUALITY_CHARS = 4000

#: The answer check: a question, and the one passage that answers it. An answer is
#: "supported" when one of its sentences matches the passage in words and figures
#: (assistant.retrieval.answer.supporting, the check every documents answer gets).
ANSWER_CHECK: tuple[tuple[str, str, str], ...] = (
    ("How long do I hold the RESET button?", "p200-pump.md",
     "Hold the red RESET button for five seconds to reset the pressure of the P-200 pump."),
    ("What pressure should the pump reach after a reset?", "p200-pump.md",
     "After a reset, the pressure of the P-200 pump rises to 4.2 bar within one minute."),
    ("What does fault code E14 mean?", "p200-pump.md",
     "Fault code E14 means that the pressure sensor is faulty and must be replaced before the next run."),
    ("How much notice must the tenant give to end the lease?", "lease.md",
     "The tenant may end the lease by giving the landlord 30 days of written notice."),
    ("What torque do the flange bolts need?", "flange.md",
     "Tighten the flange bolts to 45 Nm in a cross pattern, then check them again after one hour."),
)  # fmt: skip


def peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class BackgroundLoad:
    """``n`` CPU-bound child processes for the duration of a measurement: a laptop is
    rarely idle, and Enclave itself may be indexing while it answers."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> BackgroundLoad:
        for _ in range(self.n):
            self.procs.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()

    @property
    def pids(self) -> frozenset[int]:
        """Not counted as Enclave's CPU time (they are the load, not the work)."""
        return frozenset(p.pid for p in self.procs)


#: A 1-minute load average above this share of the cores before a bench starts, and the
#: figures are said to be from a busy machine (this one scattered 31.7-80.9 tok/s so).
BUSY_SHARE = 0.5


def machine_load() -> float | None:
    """The 1-minute load average, None where the system has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def run_bench(
    settings: Settings,
    model: str,
    engine: str | None = None,
    runs: int = 1,
    turns: int = 10,
    max_tokens: int = 64,
    background: int = 0,
    quality: bool = False,
) -> dict[str, Any]:
    """Speed and memory of ``model``; with ``quality`` also its perplexity on a fixed
    text and the document answer check (:func:`measure_quality`)."""
    if runs < 1 or max_tokens < 2 or turns < 0 or background < 0:
        raise EnclaveError(
            f"--runs {runs}, --max-tokens {max_tokens}, --turns {turns}, --background-load {background}: "
            "a benchmark needs at least one run of answers at least two tokens long.",
            "Use --runs 1 or more, --max-tokens 2 or more (decode speed is measured after the first token), "
            "--turns 0 or more and --background-load 0 or more.",
        )
    load = machine_load()
    with BackgroundLoad(background) as extra:
        report = _run_bench(settings, model, engine, runs, turns, max_tokens, extra.pids, save=background == 0)
        if quality:
            report["quality"] = measure_quality(settings, model, engine)
    cores = os.cpu_count() or 1
    report["load_average_before"] = load
    if load is not None and load > BUSY_SHARE * cores:
        report["notices"].append(
            f"The machine was busy before this bench began (load average {load:.1f} on {cores} cores), so these "
            "figures are lower and more scattered than on a quiet machine; close other work, or compare "
            "models in one run (--models A,B) so that both see the same load."
        )
    if background:
        report["notices"].append(
            f"Measured under {background} background CPU process{'es' if background != 1 else ''} "
            "(their CPU time is not counted); not kept as this machine's figures for `enclave doctor --hardware`."
        )
    report["background_processes"] = background
    chosen = power.profile(settings)
    report["threads"] = chosen.threads or inference_threads()
    report["power"] = chosen.effective
    report["device"] = settings.device
    return report


def measure_quality(settings: Settings, model: str, engine: str | None = None) -> dict[str, Any]:
    """Two quality figures to put beside the speed: perplexity (and bits per byte, which
    compares models with different tokenizers) on the first :data:`QUALITY_CHARS`
    characters of :data:`QUALITY_TEXT`, for engines that report token probabilities;
    and how many of the :data:`ANSWER_CHECK` answers are supported by their source
    (greedy, 64 tokens), for every engine."""
    from assistant.retrieval.answer import Passage, Retrieval, render
    from assistant.retrieval.index import Hit

    assistant = Assistant(replace(settings, temperature=0.0))
    try:
        installed, loaded = assistant.load(model, engine)
        out: dict[str, Any] = {"text": f"{QUALITY_TEXT} (first {QUALITY_CHARS:,} characters)"}
        started = time.perf_counter()
        if not loaded.capabilities.logprobs:
            out["perplexity"] = None
            out["perplexity_note"] = f"the {loaded.name} engine reports no token probabilities"
        elif not QUALITY_TEXT.is_file():
            out["perplexity"] = None
            out["perplexity_note"] = f"{QUALITY_TEXT} is not on this machine"
        else:
            text = QUALITY_TEXT.read_text(encoding="utf-8")[:QUALITY_CHARS]
            tokens = loaded.tokenizer.encode(text)[: loaded.info.context_length - 1]
            scorer = loaded.open_session(len(tokens) + 1)
            try:
                logprobs = scorer.score(tokens)
            finally:
                scorer.close()
            nll = -sum(logprobs)
            scored_bytes = len(loaded.tokenizer.decode(tokens[1:]).encode("utf-8"))
            out["perplexity"] = math.exp(nll / max(len(logprobs), 1))
            out["bits_per_byte"] = nll / math.log(2) / max(scored_bytes, 1)
            out["tokens"] = len(tokens)
        out["perplexity_s"] = time.perf_counter() - started
        window = min(settings.context_window, loaded.info.context_length)
        supported = cited = 0
        started = time.perf_counter()
        for i, (question, path, source) in enumerate(ANSWER_CHECK):
            hit = Hit(chunk_id=i, path=path, page=None, line_start=1, line_end=1, heading="", text=source, score=1.0)
            passages = [Passage(1, hit, source)]
            messages = [{"role": "user", "content": render(question, passages)}]
            ids = loaded.tokenizer.encode(loaded.tokenizer.render(messages, add_generation_prompt=True))
            session = loaded.open_session(window)
            answer = ""
            for event in session.generate(ids, GenerationOptions(max_tokens=64), messages=messages):
                if isinstance(event, Done):
                    answer = event.text
            session.close()
            citations = Retrieval([], [hit], passages, True).citations(answer)
            supported += int(any(c["supports"] for c in citations))
            cited += int(any(c["cited"] for c in citations))
        out.update(
            answers=len(ANSWER_CHECK),
            answers_supported=supported,
            answers_citing=cited,
            answer_check_s=time.perf_counter() - started,
            model=installed.name,
            engine=installed.engine,
        )
        return out
    finally:
        assistant.close()


def _run_bench(
    settings: Settings,
    model: str,
    engine: str | None,
    runs: int,
    turns: int,
    max_tokens: int,
    skip: frozenset[int] = frozenset(),
    save: bool = True,
) -> dict[str, Any]:
    settings = replace(settings, max_tokens=max_tokens, temperature=0.0)
    assistant = Assistant(settings)
    started = time.perf_counter()
    installed, loaded = assistant.load(model, engine)
    load_s = time.perf_counter() - started
    window = min(settings.context_window, loaded.info.context_length)

    # Package energy (where RAPL is readable) of the prompt runs only: model load and the
    # scripted chat are outside the meter. CPU time is taken per phase (_run_prompts).
    with power.measure() as meter:
        rows, completion_tokens, phases, left_out = _run_prompts(loaded, window, runs, max_tokens, skip)
    conv = assistant.conversation(model, engine, save=False)  # a benchmark is not a conversation to keep
    chat_rows = []
    for i, text in enumerate(CHAT_SCRIPT[:turns], start=1):
        result = conv.ask(text)
        if result.usage is None:
            break
        chat_rows.append(
            {
                "turn": i,
                "prompt_tokens": result.usage.prompt_tokens,
                "prefilled_tokens": result.usage.prefilled_tokens,
                "ttft_ms": result.usage.ttft_ms,
                "decode_tokens_per_s": result.usage.decode_tokens_per_s,
            }
        )
    shown = [r for r in chat_rows if r["turn"] in (1, 2, 10, 20) or r["turn"] == len(chat_rows)]
    # The model runs in a sealed worker process: its memory counts with this one's.
    peak = peak_rss_mib() + loaded.process_peak_rss_mib()
    report = {
        "model": installed.name,
        "model_sha256": installed.sha256,
        "engine": installed.engine,
        "window": window,
        "runs": runs,
        "max_tokens": max_tokens,
        "load_s": load_s,
        "peak_rss_mib": peak,
        "prompts": rows,
        "turns": shown,
        "all_turns": chat_rows,
        "generated_tokens": completion_tokens,
        # Decode alone (from each answer's first token to its last) per 1,000 tokens it
        # made, and prefill per 1,000 prompt tokens: the two differ ~5x, so one figure over
        # both would move with the prompt/answer mix (and --max-tokens).
        "cpu_s_per_1k_tokens": power.per_thousand(phases.decode_cpu_s, phases.decoded_tokens),
        "cpu_s_per_1k_prompt_tokens": power.per_thousand(phases.prefill_cpu_s, phases.prompt_tokens),
        # Energy is read for the whole prompt runs (RAPL counters are coarse): prefill included.
        "joules_per_1k_tokens": power.per_thousand(meter.joules, completion_tokens),
        "notices": list(assistant.notices) + left_out,
    }
    if save:  # kept for `enclave doctor --hardware` (the last bench of each model × engine)
        Releases(assistant.store).save_bench(report)
    assistant.close()
    return report


@dataclass
class Phases:
    """CPU seconds (this process and the model's worker) of prefill and of decode."""

    prefill_cpu_s: float = 0.0
    prompt_tokens: int = 0
    decode_cpu_s: float = 0.0
    decoded_tokens: int = 0  # tokens after each answer's first (which the prefill pass makes)


def _cpu_now(skip: frozenset[int] = frozenset()) -> float:
    """CPU seconds of this process and its live children (the model's sealed worker),
    read from the kernel: asking the worker would wait for the answer it is decoding.
    ``skip``: children that are not Enclave's work (the --background-load processes)."""
    import psutil

    own = resource.getrusage(resource.RUSAGE_SELF)
    total = own.ru_utime + own.ru_stime
    for child in psutil.Process().children(recursive=True):
        if child.pid in skip:
            continue
        try:
            times = child.cpu_times()
        except psutil.Error:  # ended meanwhile
            continue
        total += times.user + times.system
    return total


def _run_prompts(
    loaded: Any, window: int, runs: int, max_tokens: int, skip: frozenset[int] = frozenset()
) -> tuple[list[dict[str, Any]], int, Phases, list[str]]:
    """Each benchmark prompt ``runs`` times in a fresh session; the medians with the
    lowest and highest of the runs, the tokens made, the CPU time of prefill and decode
    apart, and a notice per prompt that does not fit the window."""
    tok = loaded.tokenizer
    rows = []
    left_out: list[str] = []
    completion_tokens = 0
    phases = Phases()
    for name, text in PROMPTS:
        messages = [{"role": "user", "content": text}]
        ids = tok.encode(tok.render(messages, add_generation_prompt=True))
        if len(ids) + max_tokens >= window:
            left_out.append(
                f"The prompt '{name}' ({len(ids):,} tokens + {max_tokens} to answer) does not fit the "
                f"{window:,}-token window, so it was left out; raise --ctx or lower --max-tokens to measure it."
            )
            continue
        samples: list[Usage] = []
        for _ in range(runs):
            session = loaded.open_session(window)
            started = _cpu_now(skip)
            first: float | None = None
            for event in session.generate(ids, GenerationOptions(max_tokens=max_tokens), messages=messages):
                if first is None and isinstance(event, TextDelta):
                    first = _cpu_now(skip)
                if isinstance(event, Usage):
                    samples.append(event)
                    completion_tokens += event.completion_tokens
            ended = _cpu_now(skip)
            session.close()
            if first is not None and samples:
                phases.prefill_cpu_s += first - started
                phases.prompt_tokens += len(ids)
                phases.decode_cpu_s += ended - first
                phases.decoded_tokens += max(0, samples[-1].completion_tokens - 1)
        if not samples:
            left_out.append(f"The prompt '{name}' gave no answer to measure in {runs} run(s).")
            continue
        rows.append(
            {
                "name": name,
                "prompt_tokens": len(ids),
                "ttft_ms": statistics.median(u.ttft_ms for u in samples),
                "prefill_tokens_per_s": statistics.median(u.prefill_tokens_per_s for u in samples),
                "decode_tokens_per_s": statistics.median(u.decode_tokens_per_s for u in samples),
                # The spread of the runs, so that a difference can be read against it.
                "ttft_ms_range": _range(u.ttft_ms for u in samples),
                "decode_tokens_per_s_range": _range(u.decode_tokens_per_s for u in samples),
                "runs": len(samples),
                "completion_tokens": samples[-1].completion_tokens,
            }
        )
    return rows, completion_tokens, phases, left_out


def _range(values: Any) -> list[float]:
    seen = list(values)
    return [min(seen), max(seen)]
