"""One turn on screen: the question, the answer streaming into a ``MarkdownStream``,
the consent dialog when the turn may go to the cloud, and what is left when it is
cancelled, fails, or replaces the last exchange (retry, edit)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from textual.containers import VerticalScroll
from textual.widgets import Markdown
from textual.widgets.markdown import MarkdownStream

from assistant.app.notices import answer_footer
from assistant.app.turns import AttemptFailed, ConsentNeeded, Conversation, Decision, TurnFinished, astream
from assistant.core.events import Done, Notice, TextDelta, Usage
from assistant.core.records import TurnResult
from tui.safety import displayable
from tui.screens.dialogs import CloudConsentScreen
from tui.widgets.messages import AnswerMessage, UserMessage
from tui.widgets.prompt import PromptArea
from tui.widgets.sources import SourcesPanel
from tui.widgets.status import StatusBar
from tui.widgets.welcome import Welcome

if TYPE_CHECKING:
    from tui.app import EnclaveApp

#: How a notice's level shows as a notification.
SEVERITY = {"info": "information", "warning": "warning", "error": "error"}

#: Seconds between Markdown re-renders while an answer streams (10 per second).
RENDER_INTERVAL = 0.1


async def consent(app: EnclaveApp, ask: ConsentNeeded) -> Decision:
    """The consent dialog for one cloud request."""
    choice = await app.push_screen_wait(CloudConsentScreen(ask.request, ask.question))
    if choice == "toggle":
        return Decision("toggle-redaction", "TUI consent dialog (r)")
    if choice == "send":
        return Decision("send", "TUI consent dialog (y)")
    return Decision("refuse", "declined in the TUI consent dialog")


async def _take_off_screen(app: EnclaveApp, log: VerticalScroll, replace_last: bool) -> list[Any]:
    """Take the exchange being replaced off the screen; returned to put back if the new one fails."""
    for welcome in app.query(Welcome):
        await welcome.remove()
    if not replace_last:
        return []
    old = [w for w in log.children if isinstance(w, UserMessage | AnswerMessage)][-2:]
    kept = [(type(w), w.text, w.footer) for w in old]
    for widget in old:
        await widget.remove()
    return kept


class _AnswerView:
    """The answer of one turn as it streams: Markdown re-rendered at most every
    RENDER_INTERVAL, restarted when a local attempt fails, and the notices shown."""

    #: The answer's stream, opened once the answer is on screen (:meth:`open_stream`).
    stream: MarkdownStream

    def __init__(self, app: EnclaveApp, conv: Conversation, log: VerticalScroll, answer: AnswerMessage) -> None:
        self.app = app
        self.conv = conv
        self.log = log
        self.answer = answer
        self.status = app.query_one(StatusBar)
        self.pending: list[str] = []
        self.last_flush = 0.0
        self.result: TurnResult | None = None
        self.noted: set[str] = set()  # notices already shown while the turn ran

    def open_stream(self) -> None:
        """Start streaming into the answer (mounted by then)."""
        self.stream = Markdown.get_stream(self.answer.body)

    async def flush(self) -> None:
        if self.pending:
            await self.stream.write(displayable("".join(self.pending)))
            self.pending.clear()
        self.last_flush = time.monotonic()

    async def restart(self) -> None:
        """The local attempt is over; what it showed is not the answer."""
        self.pending.clear()
        await self.stream.stop()
        await self.answer.remove()
        self.answer = AnswerMessage(footer="…")
        await self.log.mount(self.answer)
        self.open_stream()

    async def show(self, event: object) -> None:
        """One event of the turn on screen."""
        match event:
            case TextDelta(text=piece):
                # Render at most every RENDER_INTERVAL: re-rendering Markdown per
                # token took a third of the decode speed on 2 cores.
                self.pending.append(piece)
                if time.monotonic() - self.last_flush >= RENDER_INTERVAL:
                    await self.flush()
            case Usage():
                await self.flush()
                # An answer quoted from documents runs no model: the conversation knows its size.
                used = event.prompt_tokens + event.completion_tokens or self.conv.context_used
                self.status.show(self.conv, event, used=used)
            case Done():
                await self.flush()
            case Notice(text=note, level=level):
                self.app.say(note, severity=SEVERITY[level])
                self.noted.add(note)
            case AttemptFailed(error=exc):
                await self.restart()
                self.app.say(f"{exc.message} {exc.hint}", severity="error", timeout=15)
            case ConsentNeeded():
                event.answer(await consent(self.app, event))
            case TurnFinished(result=finished):
                self.result = finished


async def show_turn(app: EnclaveApp, conv: Conversation, text: str, replace_last: bool = False) -> None:
    """Stream one turn into the chat log."""
    log = app.query_one("#chat-log", VerticalScroll)
    replaced = await _take_off_screen(app, log, replace_last)
    user = UserMessage(text)
    view = _AnswerView(app, conv, log, AnswerMessage(footer="…"))
    await log.mount_all([user, view.answer])
    log.scroll_end(animate=False)  # a new question: follow the answer again
    view.open_stream()
    async for event in astream(conv, lambda: conv.turn(text, replace_last=replace_last)):
        await view.show(event)
    await view.stream.stop()
    result = view.result
    assert result is not None
    app.last_result = result
    if result.finish_reason == "cancelled" or (result.error is not None and not result.text):
        await _not_answered(app, log, user, view.answer, result, text, replaced)
        return
    if result.error is not None:
        view.answer.set_footer(f"error: {result.error.message}")
        app.say(f"{result.error.message} {result.error.hint}", severity="error", timeout=15)
        return
    _answered(app, view.answer, result, view.noted)


def _answered(app: EnclaveApp, answer: AnswerMessage, result: TurnResult, noted: set[str]) -> None:
    """An answer: its sources in the panel, the notices not shown yet, its footer."""
    app.last_answer = result.text
    if result.finish_reason == "no-evidence":
        app.query_one(SourcesPanel).show_citations([], note="Nothing relevant was found for the last question.")
    elif result.citations is not None:
        app.query_one(SourcesPanel).show_citations(result.citations)
    for notice in result.notices:
        if notice not in noted:
            app.say(notice, severity="warning")
    answer.set_footer(answer_footer(result))
    app.refresh_sidebar()


async def _not_answered(
    app: EnclaveApp,
    log: VerticalScroll,
    user: UserMessage,
    answer: AnswerMessage,
    result: TurnResult,
    text: str,
    replaced: list[Any],
) -> None:
    """Cancelled, or failed before saying anything: the message goes back to the input
    and an exchange it was replacing comes back on screen."""
    prompt = app.query_one(PromptArea)
    if result.finish_reason == "cancelled" and not replaced:
        answer.set_footer(answer_footer(result))
        answer.add_class("cancelled")
    else:
        await user.remove()
        await answer.remove()
        await log.mount_all([kind(body, footer) for kind, body, footer in replaced])
    if not prompt.value:
        prompt.value = text
    if result.error is not None:
        app.say(f"{result.error.message} {result.error.hint}", severity="error", timeout=15)
