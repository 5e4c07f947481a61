"""Local telemetry: how each model and engine has been doing on this machine.

Computed from what the database already keeps — each answer's ``usage`` (TTFT,
decode tok/s), ``finish_reason`` and ``context`` (turns dropped to fit) — plus the
``engine_events`` table (failed turns, failed loads, crashes). Nothing is sent
anywhere; there is no code path that could.

Percentiles use the nearest-rank method over all answers in the window: p50, p90, p99.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

from assistant.storage.database import Store

PERCENTILES = (50, 90, 99)
#: Answers Enclave gave instead of the model because the documents held no evidence.
REFUSAL_REASONS = ("no-evidence",)


def percentile(values: list[float], p: int) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Figures:
    """One group of answers (a model × engine, optionally one day)."""

    model: str
    engine: str
    day: str | None
    answers: int
    ttft_ms_p50: float | None
    ttft_ms_p90: float | None
    ttft_ms_p99: float | None
    tokens_per_s_p50: float | None
    tokens_per_s_p10: float | None  # the slow end of decode speed
    context_drops: int
    refusals: int
    errors: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Stats:
    """Per model and engine, and per day (over time)."""

    since: str | None
    totals: tuple[Figures, ...]
    days: tuple[Figures, ...]
    events: dict[str, int]  # engine event kind -> count

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "models": [f.as_dict() for f in self.totals],
            "days": [f.as_dict() for f in self.days],
            "engine_events": self.events,
        }


@dataclass
class _Group:
    ttft: list[float]
    tps: list[float]
    drops: int = 0
    refusals: int = 0
    errors: int = 0
    answers: int = 0


def _figures(model: str, engine: str, day: str | None, g: _Group) -> Figures:
    return Figures(
        model=model,
        engine=engine,
        day=day,
        answers=g.answers,
        ttft_ms_p50=percentile(g.ttft, 50),
        ttft_ms_p90=percentile(g.ttft, 90),
        ttft_ms_p99=percentile(g.ttft, 99),
        tokens_per_s_p50=percentile(g.tps, 50),
        tokens_per_s_p10=percentile(g.tps, 10),
        context_drops=g.drops,
        refusals=g.refusals,
        errors=g.errors,
    )


def compute(store: Store, since: str | None = None) -> Stats:
    """The statistics of every answer since ``since`` (an ISO date or time; None: all)."""
    cutoff = since or ""
    with store._lock:
        rows = list(
            store.db.query(
                "select model, engine, created_at, finish_reason, usage, context from messages "
                "where role = 'assistant' and created_at >= ? order by created_at",
                [cutoff],
            )
        )
        events = list(
            store.db.query("select at, model, engine, kind from engine_events where at >= ? order by at", [cutoff])
        )
    totals: dict[tuple[str, str], _Group] = defaultdict(lambda: _Group([], []))
    days: dict[tuple[str, str, str], _Group] = defaultdict(lambda: _Group([], []))
    for row in rows:
        key = (str(row["model"] or "?"), str(row["engine"] or "?"))
        day = str(row["created_at"])[:10]
        usage = json.loads(row["usage"]) if row["usage"] else {}
        context = json.loads(row["context"]) if row["context"] else {}
        for group in (totals[key], days[(*key, day)]):
            group.answers += 1
            if usage.get("ttft_ms") is not None:
                group.ttft.append(float(usage["ttft_ms"]))
            if usage.get("decode_tokens_per_s"):
                group.tps.append(float(usage["decode_tokens_per_s"]))
            group.drops += len(context.get("drops") or [])
            group.refusals += row["finish_reason"] in REFUSAL_REASONS
    kinds: dict[str, int] = defaultdict(int)
    for event in events:
        kinds[str(event["kind"])] += 1
        key = (str(event["model"]), str(event["engine"]))
        totals[key].errors += 1
        days[(*key, str(event["at"])[:10])].errors += 1
    return Stats(
        since=since,
        totals=tuple(_figures(m, e, None, g) for (m, e), g in sorted(totals.items())),
        days=tuple(_figures(m, e, d, g) for (m, e, d), g in sorted(days.items(), key=lambda kv: (kv[0][2], kv[0][:2]))),
        events=dict(sorted(kinds.items())),
    )


CSV_COLUMNS = (
    "day", "model", "engine", "answers", "ttft_ms_p50", "ttft_ms_p90", "ttft_ms_p99",
    "tokens_per_s_p50", "tokens_per_s_p10", "context_drops", "refusals", "errors",
)  # fmt: skip


def csv_text(stats: Stats) -> str:
    """One row per model × engine × day."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for f in stats.days:
        data = f.as_dict()
        writer.writerow(["" if data[c] is None else (round(data[c], 1) if isinstance(data[c], float) else data[c])
                         for c in CSV_COLUMNS])  # fmt: skip
    return out.getvalue()


def chart(stats: Stats, width: int = 72, height: int = 14) -> str:
    """Decode speed (p50 tok/s) per day for each model × engine, as terminal text (plotext)."""
    import plotext as plt

    series: dict[tuple[str, str], list[tuple[str, float]]] = defaultdict(list)
    for f in stats.days:
        if f.tokens_per_s_p50 is not None and f.day is not None:
            series[(f.model, f.engine)].append((f.day, f.tokens_per_s_p50))
    if not series:
        return ""
    days = sorted({d for points in series.values() for d, _ in points})
    figure = plt.figure
    figure.clear.all()
    figure.plot_size(width, height)
    figure.theme("colorless")  # plain text: it reads the same in a log file or a report
    for (model, engine), points in sorted(series.items()):
        signal = figure.signal([days.index(d) + 1 for d, _ in points], [v for _, v in points])
        signal.label(f"{model} ({engine})")
        signal.lines()
        figure.draw(signal)
    figure.ruler("x").ticks(list(range(1, len(days) + 1)), [d[5:] for d in days])
    figure.title("decode tok/s, p50 per day")
    return str(plt.uncolorize(str(figure.build())))
