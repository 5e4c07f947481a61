"""The status bar: model, engine, context meter, speed (and a missed latency budget),
documents and the privacy badge."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Static

from assistant.app.hardware import missed_budgets
from assistant.app.notices import speculation_note
from assistant.app.turns import Conversation
from assistant.core.events import Usage


class StatusBar(Horizontal):
    """Model, engine, context meter, last answer's speed, and the privacy badge."""

    def compose(self) -> ComposeResult:
        yield Static(id="status-model")
        yield Static(id="status-context")
        yield Static(id="status-speed")
        budget = Static(id="status-budget")
        budget.display = False
        yield budget
        yield Static(id="status-docs")
        vectors = Static(id="status-vectors")
        vectors.display = False
        yield vectors
        yield Static("offline", id="privacy-badge")

    def show(self, conv: Conversation | None, usage: Usage | None = None, used: int | None = None) -> None:
        if conv is None:
            self.query_one("#status-model", Static).update("no model")
            return
        docs = ""
        if conv.documents_on:
            docs = "docs: " + (", ".join(conv.collections or []) or "all")
        badge = self.query_one("#status-docs", Static)
        badge.update(Text(docs))
        badge.display = bool(docs)
        kind = "" if conv.model.chat else " (base model)"
        self.query_one("#status-model", Static).update(Text(f"{conv.model.name}{kind} · {conv.engine.name}"))
        used = used if used is not None else conv.context_used
        meter = _meter(used, conv.reserve, conv.window)
        self.query_one("#status-context", Static).update(Text(f"ctx {meter} {used}/{conv.window} +{conv.reserve}"))
        if usage is not None:
            speed = f"{usage.decode_tokens_per_s:.0f} tok/s · TTFT {usage.ttft_ms:.0f} ms"
            if usage.drafted_tokens:
                speed += " · " + speculation_note(usage)
            self.query_one("#status-speed", Static).update(Text(speed))
            self.show_budget(missed_budgets(usage, conv.settings))
        self.show_privacy(conv)

    def show_budget(self, missed: list[str]) -> None:
        """A warning while the last answer missed a latency budget (settings
        ``budget_ttft_ms``, ``budget_decode_tokens_per_s``); hidden when it met them."""
        widget = self.query_one("#status-budget", Static)
        widget.update(Text("over budget: " + "; ".join(missed)) if missed else "")
        widget.display = bool(missed)

    def show_vectors(self, text: str) -> None:
        """The background embedder's progress (``vectors 45 %``), hidden when there is none."""
        widget = self.query_one("#status-vectors", Static)
        widget.update(Text(text))
        widget.display = bool(text)

    def show_privacy(self, conv: Conversation | None) -> None:
        """The badge: "offline", or the cloud host in a warning colour while cloud is on."""
        badge = self.query_one("#privacy-badge", Static)
        if conv is not None and conv.cloud_enabled:
            badge.update(Text(f"cloud: {conv.cloud.endpoint.label}"))
            badge.add_class("cloud")
        else:
            badge.update("offline")
            badge.remove_class("cloud")


def _meter(used: int, reserve: int, window: int, width: int = 10) -> str:
    filled = min(width, round(width * used / max(window, 1)))
    reserved = min(width - filled, round(width * reserve / max(window, 1)))
    return "█" * filled + "▒" * reserved + "░" * (width - filled - reserved)
