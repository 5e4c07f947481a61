"""`enclave bench`: speed and memory of a model on this machine."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from assistant.cli.common import (
    _err,
    _settings,
    model_options,
)
from assistant.core.errors import EnclaveError


@click.command()
@model_options
@click.option("--runs", type=int, default=1, show_default=True, help="Repeat each prompt this many times.")
@click.option("--turns", type=int, default=10, show_default=True, help="Turns of the scripted chat.")
@click.option("--background-load", type=int, default=0, show_default=True, help="CPU-bound processes to run meanwhile.")
@click.option("--compare", is_flag=True, help="Every installed engine for the model, side by side.")
@click.pass_context
def bench(ctx: click.Context, runs: int, turns: int, background_load: int, compare: bool, **kw: Any) -> None:
    """Measure TTFT, prefill and decode speed, peak memory, and multi-turn TTFT.

    With --compare, every installed engine build of the model is measured, each in
    its own process (so peak memory is its own), and shown side by side.
    """
    from assistant.app.bench import run_bench

    settings = _settings(
        ctx,
        context_window=kw.get("context_window"),
        threads=kw.get("threads"),
        device=kw.get("device"),
        power=kw.get("power"),
    )
    if compare:
        _bench_compare(settings, kw.get("model") or settings.model, runs, turns, background_load, kw)
        return
    report = run_bench(
        settings,
        kw.get("model") or settings.model,
        kw.get("engine"),
        runs=runs,
        turns=turns,
        background=background_load,
    )
    if not kw["as_json"]:
        for notice in report.get("notices", []):
            _err(click.style("note: ", fg="yellow") + notice)
    click.echo(json.dumps(report) if kw["as_json"] else report_text(report))


def _bench_compare(settings: Any, model: str, runs: int, turns: int, background: int, kw: dict[str, Any]) -> None:
    import subprocess

    from assistant.catalog.manifests import Catalog

    engines = sorted(m.engine for m in Catalog(settings).installed() if m.name == model)
    if not engines:
        Catalog(settings).find(model)  # raises the right error
    reports = []
    for engine in engines:
        _err(f"measuring {model} on {engine}…")
        cmd = [sys.executable, "-m", "assistant", "bench", "--json", "-m", model, "-e", engine]
        cmd += ["--runs", str(runs), "--turns", str(turns), "--background-load", str(background)]
        if kw.get("threads"):
            cmd += ["--threads", str(kw["threads"])]
        if kw.get("context_window"):
            cmd += ["--ctx", str(kw["context_window"])]
        for option in ("device", "power"):
            if kw.get(option):
                cmd += [f"--{option}", str(kw[option])]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise EnclaveError(f"The benchmark on {engine} failed: {proc.stderr.strip()[-300:]}")
        reports.append(json.loads(proc.stdout))
    click.echo(json.dumps(reports) if kw["as_json"] else compare_text(reports))


def compare_text(reports: list[dict[str, Any]]) -> str:
    """One table, engines side by side (each measured in its own process)."""
    width = 14
    first = reports[0]
    lines = [
        f"{first['model']} · threads {first['threads']} · {first['background_processes']} background CPU processes"
    ]

    def row(label: str, cells: list[str]) -> None:
        lines.append(f"{label:40}" + "".join(f"{c:>{width}}" for c in cells))

    row("", [r["engine"] for r in reports])
    row("load s", [f"{r['load_s']:.2f}" for r in reports])
    row("peak RSS MiB", [f"{r['peak_rss_mib']:.0f}" for r in reports])
    for i, prompt in enumerate(first["prompts"]):
        label = f"{prompt['name'][:18]} ({prompt['prompt_tokens']} tok)"
        for key, title, fmt in (
            ("ttft_ms", "TTFT ms", "{:.0f}"),
            ("prefill_tokens_per_s", "prefill t/s", "{:.0f}"),
            ("decode_tokens_per_s", "decode t/s", "{:.1f}"),
        ):
            row(
                f"{label} {title}",
                [fmt.format(r["prompts"][i][key]) if i < len(r["prompts"]) else "-" for r in reports],
            )
    for turn in first["turns"]:
        cells = []
        for r in reports:
            match = next((t for t in r["turns"] if t["turn"] == turn["turn"]), None)
            cells.append(
                f"{match['ttft_ms']:.0f} ({match['prefilled_tokens']}/{match['prompt_tokens']})" if match else "-"
            )
        row(f"chat turn {turn['turn']} TTFT ms (prefilled/prompt)", cells)
    return "\n".join(lines)


def report_text(report: dict[str, Any]) -> str:
    lines = [
        f"{report['model']} · {report['engine']} · threads {report['threads']} · "
        f"{report['background_processes']} background CPU processes · load {report['load_s']:.2f} s · "
        f"peak RSS {report['peak_rss_mib']:.0f} MiB"
    ]
    lines.append(f"{'prompt':40} {'tokens':>6} {'TTFT ms':>8} {'prefill t/s':>11} {'decode t/s':>10}")
    for row in report["prompts"]:
        lines.append(
            f"{row['name'][:40]:40} {row['prompt_tokens']:6d} {row['ttft_ms']:8.0f} "
            f"{row['prefill_tokens_per_s']:11.0f} {row['decode_tokens_per_s']:10.1f}"
        )
    cpu = report.get("cpu_s_per_1k_tokens")
    joules = report.get("joules_per_1k_tokens")
    if cpu is not None:
        energy = f"{joules:.0f} J" if joules is not None else "energy not readable here (RAPL counters)"
        lines.append(
            f"per 1,000 generated tokens: {cpu:.1f} CPU-s, {energy} · power {report.get('power', '?')}"
            f" · device {report.get('device', 'cpu')}"
        )
    lines.append(
        "multi-turn chat: "
        + ", ".join(
            f"turn {t['turn']}: TTFT {t['ttft_ms']:.0f} ms ({t['prefilled_tokens']} prefilled of {t['prompt_tokens']})"
            for t in report["turns"]
        )
    )
    return "\n".join(lines)
