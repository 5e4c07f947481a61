"""`enclave bench`: speed and memory of a model on this machine."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from assistant.cli.common import (
    _err,
    _settings,
)
from assistant.core.errors import EnclaveError


@click.command()
@click.option("-m", "--model", help="Model to measure (default: the default model).")
@click.option("-e", "--engine", type=click.Choice(["onnx", "litert"]), help="Engine to run it with.")
@click.option(
    "--models",
    "specs",
    metavar="A,B[@ENGINE]",
    help="Several models side by side, each NAME or NAME@ENGINE (e.g. smollm2-135m-instruct@onnx,gemma3-270m@litert); "
    "adds the quality figures.",
)
@click.option("--compare", is_flag=True, help="Every installed engine of the model, side by side.")
@click.option(
    "--quality",
    is_flag=True,
    help="Also measure quality: perplexity on the first 4,000 characters of the GPL-3 and the document answer check.",
)
@click.option(
    "--max-tokens", type=click.IntRange(min=2), default=64, show_default=True, help="Longest answer per prompt, in tokens."
)
@click.option(
    "--runs",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Repeat each prompt this many times (medians, with the lowest and highest).",
)
@click.option("--turns", type=click.IntRange(min=0), default=10, show_default=True, help="Turns of the scripted chat.")
@click.option(
    "--background-load",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="CPU-bound processes to run meanwhile (not counted; such a run is not kept for doctor --hardware).",
)
@click.option("--ctx", "context_window", type=int, help="Context window in tokens (default 2048).")
@click.option("--threads", type=int, help="Inference threads (default: one per physical core; 1 in the saver power profile).")
@click.option(
    "--device",
    type=click.Choice(["cpu", "gpu"]),
    help="Run on the CPU (default) or a GPU; a GPU that cannot be used falls back to the CPU, said so.",
)
@click.option(
    "--power",
    type=click.Choice(["auto", "saver", "performance"]),
    help="Power profile: saver (1 thread), performance, or auto (saver on battery).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (a list when several are measured).")
@click.pass_context
def bench(ctx: click.Context, /, specs: str | None, compare: bool, **kw: Any) -> None:
    """Measure TTFT, prefill and decode speed, peak memory, and multi-turn TTFT.

    With --models or --compare, each model (or engine build) is measured in its own
    process, so that peak memory is its own, and shown side by side with its quality:
    perplexity and bits per byte on a fixed text (engines that report token
    probabilities), and how many answers of a fixed document check are supported by
    their source (every engine).
    """
    from assistant.app.bench import run_bench

    settings = _settings(
        ctx,
        context_window=kw.get("context_window"),
        threads=kw.get("threads"),
        device=kw.get("device"),
        power=kw.get("power"),
    )
    model = kw.get("model") or settings.model
    if specs is not None or compare:
        targets = _targets(settings, specs) if specs is not None else _engines_of(settings, model)
        reports = [_measure_apart(name, engine, kw, quality=True) for name, engine in targets]
        if compare and len(targets) == 1:
            _err(
                click.style("note: ", fg="yellow")
                + f"only the {targets[0][1]} build of {model} is installed, so there is nothing to compare it with; "
                + _other_engine_hint(settings, model, str(targets[0][1]))
            )
        if not kw["as_json"]:
            for notice in dict.fromkeys(n for r in reports for n in r.get("notices", [])):
                _err(click.style("note: ", fg="yellow") + notice)
        click.echo(json.dumps(reports) if kw["as_json"] else compare_text(reports))
        return
    report = run_bench(
        settings,
        model,
        kw.get("engine"),
        runs=kw["runs"],
        turns=kw["turns"],
        max_tokens=kw["max_tokens"],
        background=kw["background_load"],
        quality=kw["quality"],
    )
    if not kw["as_json"]:
        for notice in report.get("notices", []):
            _err(click.style("note: ", fg="yellow") + notice)
    click.echo(json.dumps(report) if kw["as_json"] else report_text(report))


def _targets(settings: Any, specs: str) -> list[tuple[str, str | None]]:
    """``A,B@litert`` → [(A, None), (B, "litert")]; each must be installed."""
    from assistant.app.models import ENGINE_NAMES, model_installed, require_model

    targets: list[tuple[str, str | None]] = []
    for spec in (s.strip() for s in specs.split(",")):
        if not spec:
            continue
        name, _, engine = spec.partition("@")
        if engine and engine not in ENGINE_NAMES:
            raise EnclaveError(f"Unknown engine {engine!r} in {spec!r}.", f"Engines: {', '.join(ENGINE_NAMES)}.")
        if not model_installed(settings, name, engine or None):
            require_model(settings, name, engine or None)  # raises with the right fix
        targets.append((name, engine or None))
    if len(targets) < 1:
        raise EnclaveError("--models needs at least one model.", "e.g. --models smollm2-135m-instruct,gemma3-270m")
    return targets


def _other_engine_hint(settings: Any, model: str, engine: str) -> str:
    """How to get the other engine's build of ``model``, or why there is none."""
    from assistant.app.models import has_recipe

    other = "litert" if engine == "onnx" else "onnx"
    if not has_recipe(settings, model):
        return f"Enclave has no recipe to build {model} for {other} (a model you added is built for one engine)."
    return f"build the other with `enclave models build {model} --engine {other}`."


def _engines_of(settings: Any, model: str) -> list[tuple[str, str | None]]:
    from assistant.app.models import chat_models, model_installed

    engines = sorted(c.engine for c in chat_models(settings) if c.name == model)
    if not engines:
        model_installed(settings, model)  # raises the right error for an unknown model
        raise EnclaveError(f"{model} is not installed.", f"Build it with `enclave models build {model}`.")
    return [(model, engine) for engine in engines]


def _measure_apart(model: str, engine: str | None, kw: dict[str, Any], quality: bool) -> dict[str, Any]:
    """One benchmark in its own process (its own peak memory); progress on stderr."""
    import subprocess

    _err(f"measuring {model}{'@' + engine if engine else ''}…")
    cmd = [sys.executable, "-m", "assistant", "bench", "--json", "-m", model]
    cmd += ["-e", engine] if engine else []
    cmd += ["--runs", str(kw["runs"]), "--turns", str(kw["turns"]), "--background-load", str(kw["background_load"])]
    cmd += ["--max-tokens", str(kw["max_tokens"])]
    cmd += ["--quality"] if quality else []
    if kw.get("threads"):
        cmd += ["--threads", str(kw["threads"])]
    if kw.get("context_window"):
        cmd += ["--ctx", str(kw["context_window"])]
    for option in ("device", "power"):
        if kw.get(option):
            cmd += [f"--{option}", str(kw[option])]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise EnclaveError(f"The benchmark of {model} ({engine or 'any engine'}) failed: {proc.stderr.strip()[-300:]}")
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


def compare_text(reports: list[dict[str, Any]]) -> str:
    """One table, models (or engines) side by side, each measured in its own process."""
    width = max(16, *(len(r["model"]) + 2 for r in reports))
    first = reports[0]
    lines = [f"threads {first['threads']} · {first['background_processes']} background CPU processes"]

    def row(label: str, cells: list[str]) -> None:
        lines.append(f"{label[:40]:40}" + "".join(f"{c:>{width}}" for c in cells))

    row("", [r["model"] for r in reports])
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
    qualities = [r.get("quality") for r in reports]
    if any(qualities):
        row("perplexity on GPL-3 (lower is better)", [_figure(q, "perplexity", "{:.2f}") for q in qualities])
        row("bits per byte (compares tokenizers)", [_figure(q, "bits_per_byte", "{:.3f}") for q in qualities])
        row(
            "answers supported by their source",
            [f"{q['answers_supported']}/{q['answers']}" if q else "-" for q in qualities],
        )
        row("answers citing [1]", [f"{q['answers_citing']}/{q['answers']}" if q else "-" for q in qualities])
        notes = {q["perplexity_note"] for q in qualities if q and q.get("perplexity_note")}
        lines += [f"n/a: {note}" for note in sorted(notes)]
    return "\n".join(lines)


def _figure(quality: dict[str, Any] | None, key: str, fmt: str) -> str:
    value = (quality or {}).get(key)
    return "n/a" if value is None else fmt.format(value)


def report_text(report: dict[str, Any]) -> str:
    lines = [
        f"{report['model']} · {report['engine']} · threads {report['threads']} · "
        f"{report['background_processes']} background CPU processes · load {report['load_s']:.2f} s · "
        f"peak RSS {report['peak_rss_mib']:.0f} MiB"
    ]
    runs = report.get("runs", 1)
    spread = f" (median of {runs} runs; lowest-highest)" if runs > 1 else ""
    lines.append(f"{'prompt':40} {'tokens':>6} {'TTFT ms':>8} {'prefill t/s':>11} {'decode t/s':>10}{spread}")
    for row in report["prompts"]:
        low, high = row.get("decode_tokens_per_s_range") or (None, None)
        ranged = f"  {low:.1f}-{high:.1f}" if runs > 1 and low is not None else ""
        lines.append(
            f"{row['name'][:40]:40} {row['prompt_tokens']:6d} {row['ttft_ms']:8.0f} "
            f"{row['prefill_tokens_per_s']:11.0f} {row['decode_tokens_per_s']:10.1f}{ranged}"
        )
    cpu = report.get("cpu_s_per_1k_tokens")
    joules = report.get("joules_per_1k_tokens")
    if cpu is not None:
        energy = f"{joules:.0f} J (prefill included)" if joules is not None else "energy not readable here (RAPL counters)"
        prefill = report.get("cpu_s_per_1k_prompt_tokens")
        lines.append(
            f"per 1,000 generated tokens: {cpu:.1f} CPU-s decoding"
            + (f" (prefill: {prefill:.1f} CPU-s per 1,000 prompt tokens)" if prefill is not None else "")
            + f", {energy} · power {report.get('power', '?')} · device {report.get('device', 'cpu')}"
        )
    quality = report.get("quality")
    if quality:
        ppl = _figure(quality, "perplexity", "{:.2f}")
        bpb = _figure(quality, "bits_per_byte", "{:.3f}")
        note = f" ({quality['perplexity_note']})" if quality.get("perplexity_note") else ""
        lines.append(
            f"quality: perplexity {ppl}, {bpb} bits/byte on {quality['text']}{note}; "
            f"{quality['answers_supported']}/{quality['answers']} answers supported by their source"
        )
    lines.append(
        "multi-turn chat: "
        + ", ".join(
            f"turn {t['turn']}: TTFT {t['ttft_ms']:.0f} ms ({t['prefilled_tokens']} prefilled of {t['prompt_tokens']})"
            for t in report["turns"]
        )
    )
    return "\n".join(lines)
