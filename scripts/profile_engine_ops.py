#!/usr/bin/env python
"""Where an onnxruntime-genai model spends its decode time, operator by operator.

Runs one model folder in a fresh child process with onnxruntime's profiler on
(``session_options.enable_profiling`` through a genai_config overlay), prefills a
prompt of about ``--prompt-tokens`` tokens, decodes ``--tokens`` tokens, and sums
the profiler's ``Node`` events of the decode steps by group:

* ``MatMulNBits`` (the quantised projections and the lm_head),
* ``transcode`` (the nodes the GGUF transcoder adds: block sums, offset MatMuls,
  their Adds; see ``assistant/catalog/convert/transcode.py``),
* ``GroupQueryAttention``, the norms, and everything else by op type.

Several folders can be given; they run alternately over ``--rounds`` and the
medians are printed side by side, with the count of nodes in each graph::

    python scripts/profile_engine_ops.py DIR_A [DIR_B …] [--threads 1] [--prompt-tokens 950]

The profiler adds its own overhead to every node (a few microseconds), so the
shares matter more than the absolute times; ``--threads 1`` keeps other processes
on the cores from changing the split much.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

_FILLER = (
    "The maintenance log records each inspection of the cooling pump: the date, the technician, "
    "the pressure at the inlet and outlet, vibration readings, and any parts replaced. "
)
CHILD_ENV = {"ORT_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1"}


def group_of(name: str, op: str) -> str:
    if "transcode" in name:
        return "transcode (block sums, offsets, adds)"
    return op


def child(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import onnxruntime_genai as og

    prefix = os.path.join(spec["tmp"], "prof")
    overlay = {
        "model": {
            "decoder": {
                "session_options": {
                    "intra_op_num_threads": spec["threads"],
                    "enable_profiling": prefix,
                }
            }
        }
    }
    config = og.Config(spec["model_dir"])
    config.overlay(json.dumps(overlay))
    model = og.Model(config)
    tok = og.Tokenizer(model)
    repeats = max(1, int(spec["prompt_tokens"]) // 35)
    ids = np.asarray(tok.encode(_FILLER * repeats + "Summarise."), dtype=np.int32)
    params = og.GeneratorParams(model)
    n = int(spec["tokens"])
    params.set_search_options(max_length=len(ids) + n + 8, do_sample=False, min_length=len(ids) + n)
    gen = og.Generator(model, params)
    gen.append_tokens(ids)
    for _ in range(n):
        gen.generate_next_token()
    return {"prompt_tokens": len(ids)}


def summarise(profile: Path, prompt_tokens: int) -> dict[str, Any]:
    """Decode-step time by group, from the profile a child left (written as it exits)."""
    events = json.loads(profile.read_text())
    # One "model_run" per decoder call: the first is the prefill, the rest decode steps.
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])  # fmt: skip
    decode = runs[1:]
    start = decode[0]["ts"] if decode else 0
    by_group: dict[str, float] = collections.defaultdict(float)
    nodes: set[str] = set()
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        name = e["name"][: -len("_kernel_time")]
        nodes.add(name)
        if e["ts"] < start:
            continue
        by_group[group_of(name, e.get("args", {}).get("op_name", "?"))] += e["dur"]
    run_us = sum(e["dur"] for e in decode)
    steps = max(len(decode), 1)
    return {
        "prompt_tokens": prompt_tokens,
        "decode_steps": len(decode),
        "run_ms_per_token": run_us / steps / 1000,
        "groups_ms_per_token": {k: v / steps / 1000 for k, v in by_group.items()},
        "nodes": len(nodes),
    }


def spawn(spec: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="enclave-prof-") as tmp:
        spec = {**spec, "tmp": tmp}
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
            capture_output=True,
            text=True,
            env={**os.environ, **CHILD_ENV},
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if proc.returncode != 0:
            raise SystemExit(f"{spec['model_dir']}: {proc.stderr.strip()[-600:]}")
        child_out = json.loads(proc.stdout.strip().splitlines()[-1])
        profile = sorted(Path(tmp).glob("prof*.json"))[-1]
        return summarise(profile, int(child_out["prompt_tokens"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("model_dirs", nargs="*")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--prompt-tokens", type=int, default=950)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if not args.model_dirs:
        parser.error("give at least one model folder")
    runs: dict[str, list[dict[str, Any]]] = {d: [] for d in args.model_dirs}
    loads: list[float] = []
    for rnd in range(args.rounds):
        order = args.model_dirs if rnd % 2 == 0 else args.model_dirs[::-1]
        for folder in order:
            loads.append(float(Path("/proc/loadavg").read_text().split()[0]))
            spec = {"model_dir": folder, "threads": args.threads, "prompt_tokens": args.prompt_tokens}
            runs[folder].append(spawn({**spec, "tokens": args.tokens}))
            print(f"round {rnd + 1} {folder}: {runs[folder][-1]['run_ms_per_token']:.2f} ms/token "
                  f"(load {loads[-1]:.1f})", file=sys.stderr, flush=True)  # fmt: skip
    report: dict[str, Any] = {"loads": loads, "threads": args.threads, "models": {}}
    for folder, rows in runs.items():
        groups = sorted({g for r in rows for g in r["groups_ms_per_token"]})
        report["models"][folder] = {
            "prompt_tokens": rows[0]["prompt_tokens"],
            "nodes": rows[0]["nodes"],
            "run_ms_per_token": statistics.median(r["run_ms_per_token"] for r in rows),
            "groups": {g: statistics.median(r["groups_ms_per_token"].get(g, 0.0) for r in rows) for g in groups},
        }
    if args.json:
        print(json.dumps(report))
        return
    models = report["models"]
    groups = sorted({g for m in models.values() for g in m["groups"]}, key=lambda g: -max(
        m["groups"].get(g, 0.0) for m in models.values()))  # fmt: skip
    names = [Path(f).name or f for f in models]
    print(f"{'ms per decoded token':40}" + "".join(f"{n[:16]:>18}" for n in names))
    print(f"{'whole decoder run':40}" + "".join(f"{m['run_ms_per_token']:18.3f}" for m in models.values()))
    for g in groups:
        cells = []
        for m in models.values():
            v = m["groups"].get(g, 0.0)
            cells.append(f"{v:9.3f} ({v / m['run_ms_per_token']:4.0%})")
        print(f"{g[:40]:40}" + "".join(f"{c:>18}" for c in cells))
    print(f"{'nodes in the graph':40}" + "".join(f"{m['nodes']:18d}" for m in models.values()))
    print(f"threads {args.threads}, prompt {next(iter(models.values()))['prompt_tokens']} tokens, "
          f"{args.tokens} decoded; load average before each run: " + ", ".join(f"{x:.1f}" for x in loads))  # fmt: skip


if __name__ == "__main__":
    main()
