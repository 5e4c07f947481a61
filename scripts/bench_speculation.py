#!/usr/bin/env python
"""N-gram (prompt-lookup) speculation in onnxruntime-genai 0.18: where it wins, where it loses.

Each configuration runs in a fresh child process (``onnxruntime_genai`` on a built
folder, ``intra_op_num_threads`` = ``--threads``, prompts prefilled in chunks of 128
as the engine does) over three workloads, with SmolLM2's chat template:

* ``quote``: document answers: a manual passage in the system prompt, a question
  that asks for its steps (answers copy the passage; greedy);
* ``free``: free text, no document, greedy;
* ``sampled``: the same free text at temperature 0.7 (seeded).

Speculation is ``set_speculative_options(ngram_size=N, max_draft_tokens=K)``; the
child reports decode tok/s, CPU seconds per 1,000 decoded tokens, the drafted and
accepted tokens (``get_speculative_stats``) and, for greedy workloads, whether the
tokens equal the run without speculation. With ``--ttft`` each model folder also gets
the TTFT of a ~1,200-token prompt (no speculation): ``prune_lm_head`` builds compute
the lm_head for the last position only, builds that keep it (which speculation
needs) compute all of them::

    python scripts/bench_speculation.py --model-dir NOPRUNE_DIR [--pruned-dir PRUNED_DIR] \\
        [--threads 2] [--rounds 3] [--tokens 96] [--ttft] [--json]

Progress goes to stderr; the table (or JSON) to stdout. Configurations alternate
over the rounds; medians are reported with the load average before each child.
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

MANUAL = (
    "Section 4.2 Replacing the filter. Switch off the pump at the isolator. Close the inlet valve and the "
    "outlet valve. Unscrew the filter housing anticlockwise and remove the old cartridge. Insert the new "
    "cartridge with the arrow pointing towards the pump. Refit the housing hand-tight, open both valves, and "
    "switch the pump back on. Check the housing for leaks after five minutes.\n"
    "Section 5.1 Bleeding the system. Open the bleed screw on the top of the pump housing by half a turn. "
    "Run the pump at low speed until water without bubbles comes out of the screw. Close the bleed screw and "
    "wipe the housing dry. Record the date of bleeding in the maintenance log."
)
QUOTE = [
    "How do I replace the filter? Quote the steps from the manual.",
    "How do I bleed the system? Give the manual's steps word for word.",
    "What does section 4.2 say? Repeat it.",
]
FREE = [
    "Write a short story about a lighthouse keeper.",
    "Explain why the sky is blue.",
    "Give me three ideas for a birthday party.",
]
_FILLER = (
    "The maintenance log records each inspection of the cooling pump: the date, the technician, "
    "the pressure at the inlet and outlet, vibration readings, and any parts replaced. "
)
LONG = _FILLER * 34 + "Summarise what the log records."  # ~1,200 tokens with the template
CHILD_ENV = {"ORT_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1"}
CHUNK = 128


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Bench:
    """One model folder loaded in the child, with the engine's template and chunked prefill."""

    def __init__(self, spec: dict[str, Any]) -> None:
        import numpy as np
        import onnxruntime_genai as og

        self.np = np
        self.og = og
        self.spec = spec
        folder = Path(spec["model_dir"])
        config = og.Config(str(folder))
        threads = spec["threads"]
        config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}))
        self.model = og.Model(config)
        self.tok = og.Tokenizer(self.model)
        self.template = (folder / "chat_template.jinja").read_text()
        eos = json.loads((folder / "genai_config.json").read_text())["model"]["eos_token_id"]
        self.eos = set(eos if isinstance(eos, list) else [eos])

    def encode(self, messages: list[dict[str, str]]) -> list[int]:
        text = self.tok.apply_chat_template(
            json.dumps(messages), template_str=self.template, add_generation_prompt=True
        )
        return [int(t) for t in self.tok.encode(text)]

    def generator(self, temperature: float, speculate: bool) -> Any:
        params = self.og.GeneratorParams(self.model)
        search: dict[str, Any] = {"max_length": 2048, "do_sample": temperature > 0}
        if temperature > 0:
            search.update(temperature=temperature, top_p=0.9, top_k=40, random_seed=7)
        params.set_search_options(**search)
        if speculate:
            params.set_speculative_options(ngram_size=self.spec["ngram"], max_draft_tokens=self.spec["draft"])
        return self.og.Generator(self.model, params)

    def prefill(self, gen: Any, ids: list[int]) -> None:
        for start in range(0, len(ids), CHUNK):
            gen.append_tokens(self.np.asarray(ids[start : start + CHUNK], dtype=self.np.int32))

    def ttft(self) -> dict[str, Any]:
        """The median of three TTFTs of the long prompt, without speculation."""
        ids = self.encode([{"role": "user", "content": LONG}])
        rows = []
        for _ in range(3):
            gen = self.generator(0.0, False)
            t0 = time.perf_counter()
            self.prefill(gen, ids)
            gen.generate_next_token()
            gen.get_next_tokens()
            rows.append((time.perf_counter() - t0) * 1000)
        return {"prompt_tokens": len(ids), "ttft_ms": statistics.median(rows)}

    def workload(self, name: str, prompts: list[str], temperature: float, speculate: bool) -> dict[str, Any]:
        """Answer every prompt; the decode speed and CPU time after the first token, and the
        tokens drafted and accepted."""
        decoded = 0
        decode_s = 0.0
        cpu = 0.0
        drafted = accepted = 0
        answers = []
        for prompt in prompts:
            system = "Answer from the manual below. Quote it where you can.\n\n" + MANUAL if name == "quote" else ""
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": prompt}
            ]
            gen = self.generator(temperature, speculate)
            self.prefill(gen, self.encode(messages))
            tokens, seconds, cpu_seconds = self.decode(gen)
            decode_s += seconds
            cpu += cpu_seconds
            decoded += len(tokens) - 1
            answers.append(tokens)
            if speculate:
                stats = gen.get_speculative_stats()
                drafted += int(stats.get("draft_tokens_evaluated", 0))
                accepted += int(stats.get("draft_tokens_accepted", 0))
        return {
            "decoded": decoded,
            "decode_tok_s": decoded / decode_s if decode_s else 0.0,
            "cpu_s_per_1k": 1000 * cpu / decoded if decoded else 0.0,
            "drafted": drafted,
            "accepted": accepted,
            "answers": answers,
        }

    def decode(self, gen: Any) -> tuple[list[int], float, float]:
        """The answer's tokens, and the wall and CPU seconds of those after the first."""
        gen.generate_next_token()
        tokens = [int(gen.get_next_tokens()[0])]
        t0, c0 = time.perf_counter(), cpu_s()
        while len(tokens) < self.spec["tokens"] and tokens[-1] not in self.eos:
            gen.generate_next_token()
            tokens.append(int(gen.get_next_tokens()[0]))
        return tokens, time.perf_counter() - t0, cpu_s() - c0


def child(spec: dict[str, Any]) -> dict[str, Any]:
    bench = _Bench(spec)
    if spec["task"] == "ttft":
        return {"workloads": {}, "ttft": bench.ttft()}
    speculate = bool(spec["speculate"])
    workloads = (("quote", QUOTE, 0.0), ("free", FREE, 0.0), ("sampled", FREE, 0.7))
    return {"workloads": {name: bench.workload(name, prompts, t, speculate) for name, prompts, t in workloads}}


def spawn(spec: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        env={**os.environ, **CHILD_ENV},
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{spec['model_dir']}: {proc.stderr.strip()[-800:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help="a build that keeps the full lm_head (prune_lm_head off)")
    parser.add_argument("--pruned-dir", type=Path, help="the prune_lm_head build, for --ttft")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--ngram", type=int, default=3)
    parser.add_argument("--draft", type=int, default=4)
    parser.add_argument("--ttft", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if not args.model_dir:
        parser.error("--model-dir is required")
    base = {"threads": args.threads, "tokens": args.tokens, "ngram": args.ngram, "draft": args.draft}
    configs = {"off": False, "on": True}
    runs, ttft, loads = _measure(args, base, configs)
    report: dict[str, Any] = {**base, "rounds": args.rounds, "loads": loads, "workloads": {}}
    for workload in ("quote", "free", "sampled"):
        report["workloads"][workload] = _workload_row(runs, configs, workload)
    if ttft:
        report["ttft"] = {k: {"prompt_tokens": v[0]["prompt_tokens"], "ttft_ms": statistics.median(
            r["ttft_ms"] for r in v)} for k, v in ttft.items()}  # fmt: skip
    if args.json:
        print(json.dumps(report))
        return
    _print_report(args, report, loads)


def _measure(
    args: argparse.Namespace, base: dict[str, Any], configs: dict[str, bool]
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]], list[float]]:
    """Every round's children, the configurations alternating: the bench results by
    configuration, the TTFTs by build (with ``--ttft``) and the load average before each bench."""
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in configs}
    ttft: dict[str, list[dict[str, Any]]] = {}
    loads: list[float] = []
    for rnd in range(args.rounds):
        order = list(configs) if rnd % 2 == 0 else list(configs)[::-1]
        for name in order:
            loads.append(float(Path("/proc/loadavg").read_text().split()[0]))
            spec = {**base, "task": "bench", "model_dir": str(args.model_dir), "speculate": configs[name]}
            runs[name].append(spawn(spec))
            quote = runs[name][-1]["workloads"]["quote"]
            print(f"round {rnd + 1} speculation {name}: quote {quote['decode_tok_s']:.1f} tok/s "
                  f"(load {loads[-1]:.1f})", file=sys.stderr, flush=True)  # fmt: skip
        if args.ttft:
            for label, folder in (("keeps lm_head", args.model_dir), ("prune_lm_head", args.pruned_dir)):
                if folder:
                    row = spawn({**base, "task": "ttft", "model_dir": str(folder), "speculate": False})["ttft"]
                    ttft.setdefault(label, []).append(row)
    return runs, ttft, loads


def _workload_row(runs: dict[str, list[dict[str, Any]]], configs: dict[str, bool], workload: str) -> dict[str, Any]:
    """One workload, off against on: median speed and CPU, drafts, acceptance, identical answers."""
    row: dict[str, Any] = {}
    for name in configs:
        cells = [r["workloads"][workload] for r in runs[name]]
        row[name] = {
            "decode_tok_s": statistics.median(c["decode_tok_s"] for c in cells),
            "cpu_s_per_1k": statistics.median(c["cpu_s_per_1k"] for c in cells),
        }
    on = [r["workloads"][workload] for r in runs["on"]]
    drafted = sum(c["drafted"] for c in on)
    row["drafted"] = drafted // len(on)
    row["accepted"] = sum(c["accepted"] for c in on) // len(on)
    row["acceptance"] = sum(c["accepted"] for c in on) / drafted if drafted else 0.0
    row["speedup"] = row["on"]["decode_tok_s"] / row["off"]["decode_tok_s"]
    off_answers = runs["off"][0]["workloads"][workload]["answers"]
    on_answers = runs["on"][0]["workloads"][workload]["answers"]
    row["identical"] = sum(a == b for a, b in zip(off_answers, on_answers, strict=True))
    row["answers"] = len(off_answers)
    return row


def _print_report(args: argparse.Namespace, report: dict[str, Any], loads: list[float]) -> None:
    print(f"{'workload':10} {'off tok/s':>10} {'on tok/s':>10} {'speedup':>8} {'CPU s/1k off':>13} "
          f"{'on':>6} {'drafted':>8} {'accepted':>9} {'identical':>10}")  # fmt: skip
    for workload, row in report["workloads"].items():
        print(f"{workload:10} {row['off']['decode_tok_s']:10.1f} {row['on']['decode_tok_s']:10.1f} "
              f"{row['speedup']:7.2f}× {row['off']['cpu_s_per_1k']:13.1f} {row['on']['cpu_s_per_1k']:6.1f} "
              f"{row['drafted']:8d} {row['accepted']:5d} ({row['acceptance']:.0%}) "
              f"{row['identical']:>5}/{row['answers']}")  # fmt: skip
    for label, row in report.get("ttft", {}).items():
        print(f"TTFT, {row['prompt_tokens']}-token prompt, {label}: {row['ttft_ms']:.0f} ms")
    print(f"threads {args.threads}, ngram {args.ngram}, draft {args.draft}, {args.tokens} tokens per answer, "
          f"rounds {args.rounds}; load average before each child: " + ", ".join(f"{x:.1f}" for x in loads))  # fmt: skip


if __name__ == "__main__":
    main()
