"""`enclave stats`: local telemetry, computed from this machine's database; nothing leaves it."""

from __future__ import annotations

import json

import click

from assistant.cli.common import _store


def _num(value: float | None, fmt: str = "{:.0f}") -> str:
    return "-" if value is None else fmt.format(value)


@click.command()
@click.option("--since", help="Only answers from this date on (YYYY-MM-DD).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV, one row per model, engine and day.")
@click.pass_context
def stats(ctx: click.Context, since: str | None, as_json: bool, as_csv: bool) -> None:
    """Per model and engine: TTFT and tok/s percentiles, context drops, refusals, errors, over time."""
    from assistant.app import stats as app_stats

    result = app_stats.compute(_store(ctx), since)
    if as_json:
        click.echo(json.dumps(result.as_dict()))
        return
    if as_csv:
        click.echo(app_stats.csv_text(result), nl=False)
        return
    if not result.totals:
        click.echo("No answers recorded yet.")
        return
    click.echo(
        f"{'MODEL':24} {'ENGINE':7} {'ANSWERS':>7} {'TTFT p50/p90/p99 ms':>21} {'TOK/S p50/p10':>14} "
        f"{'DROPS':>5} {'REFUSED':>7} {'ERRORS':>6}"
    )
    for f in result.totals:
        ttft = f"{_num(f.ttft_ms_p50)}/{_num(f.ttft_ms_p90)}/{_num(f.ttft_ms_p99)}"
        tps = f"{_num(f.tokens_per_s_p50, '{:.1f}')}/{_num(f.tokens_per_s_p10, '{:.1f}')}"
        click.echo(
            f"{f.model[:24]:24} {f.engine:7} {f.answers:7d} {ttft:>21} {tps:>14} "
            f"{f.context_drops:5d} {f.refusals:7d} {f.errors:6d}"
        )
    if result.events:
        click.echo("engine events: " + ", ".join(f"{k} {v}" for k, v in result.events.items()))
    text = app_stats.chart(result)
    if text:
        click.echo()
        click.echo(text)
    click.echo("Computed on this machine from its own database; nothing is sent anywhere.")
