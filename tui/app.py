"""Enclave's terminal UI: a chat that streams, a sidebar of conversations, an honest status bar.

The app talks only to :mod:`assistant.app` (the :class:`Assistant` and its
conversations, the shared commands, documents and models). Decoding runs in a worker
thread inside the assistant; events reach the UI via ``astream`` and are written to a
``MarkdownStream``, which batches fragments so rendering never holds the engine back.

The layout adapts to the terminal: from 110 columns the sidebar and the sources panel
sit beside the chat; below that the sidebar is hidden (Ctrl+B shows it over the chat)
and the sources panel narrows, so the chat keeps at least 50 columns at 80×24.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Input, ListView, Static

from assistant.app.commands import Command, parse_line
from assistant.app.documents import vectors_badge
from assistant.app.models import model_installed
from assistant.app.notices import base_model_note
from assistant.app.privacy import startup_notice
from assistant.app.turns import (
    Assistant,
    Conversation,
)
from assistant.core.errors import EnclaveError
from assistant.core.records import TurnResult
from assistant.core.settings import Settings
from tui import slash
from tui.screens.build import BuildScreen
from tui.screens.dialogs import CloudConsentScreen, ConfirmScreen, PickerScreen
from tui.screens.help import HelpScreen
from tui.turn import show_turn
from tui.widgets.messages import AnswerMessage, UserMessage
from tui.widgets.prompt import PromptArea
from tui.widgets.sidebar import Sidebar
from tui.widgets.sources import SourcesPanel
from tui.widgets.status import StatusBar
from tui.widgets.welcome import Welcome

__all__ = [
    "AnswerMessage",
    "BuildScreen",
    "CloudConsentScreen",
    "EnclaveApp",
    "PickerScreen",
    "SourcesPanel",
    "UserMessage",
    "run",
]

#: Below this width the sidebar leaves the row (Ctrl+B shows it over the chat) and the
#: sources panel narrows: 26 + 34 + 50 columns of chat need 110.
WIDE = 110


# --------------------------------------------------------------------------- app
class EnclaveApp(App[None]):
    """The Enclave chat application."""

    CSS_PATH = "app.tcss"
    TITLE = "Enclave"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (WIDE, "-wide")]
    # The footer shows these in this order; F1 comes first so that no width hides it.
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f1", "help", "Help"),
        Binding("escape", "cancel", "Cancel", show=False),
        Binding("ctrl+n", "new", "New"),
        Binding("ctrl+o", "pick_model", "Model"),
        Binding("f3", "toggle_docs", "Docs"),
        Binding("f4", "toggle_sources", "Sources"),
        Binding("ctrl+r", "retry", "Retry"),
        Binding("ctrl+b", "toggle_sidebar", "Chats"),
        # Priority: the input (a TextArea) would take them for redo and kill-line.
        Binding("ctrl+y", "copy_last", "Copy", show=False, priority=True),
        Binding("ctrl+k", "copy_code", "Copy code", show=False, priority=True),
        Binding("ctrl+e", "export", "Export", show=False),
        Binding("ctrl+end", "follow", "Newest", show=False),
        Binding("pageup", "scroll_log(-1)", "Scroll up", show=False),
        Binding("pagedown", "scroll_log(1)", "Scroll down", show=False),
        Binding("f2", "rename", "Rename", show=False),
        Binding("ctrl+q", "quit", "Quit"),
    ]

    def __init__(
        self,
        settings: Settings | None = None,
        assistant_factory: Callable[[Settings], Assistant] = Assistant,
        resume: int | None = None,
        engine: str | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings or Settings.load()
        self.assistant = assistant_factory(self.settings)
        self.engine = engine
        self.conv: Conversation | None = None
        self._resume = resume
        self._busy = False
        self._opening = False
        self._editing = False
        self._sources_hidden = False
        self.last_answer = ""
        self._notices: list[str] = []
        self.last_result: TurnResult | None = None

    # -- what tests and the palette may observe (read-only)
    @property
    def busy(self) -> bool:
        """An answer is being written."""
        return self._busy

    @property
    def opening(self) -> bool:
        """A conversation is being loaded and drawn."""
        return self._opening

    @property
    def editing(self) -> bool:
        """The input holds the last message, to answer it again when sent."""
        return self._editing

    @property
    def notices(self) -> tuple[str, ...]:
        """Every notification shown so far, oldest first."""
        return tuple(self._notices)

    # -- layout
    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            yield Sidebar(id="sidebar")
            with Vertical(id="chat-pane"):
                yield VerticalScroll(id="chat-log")
                yield Static(id="edit-banner")
                yield PromptArea(id="prompt")
            yield SourcesPanel(id="sources")
        yield StatusBar(id="status")
        yield Footer()

    def on_mount(self) -> None:
        # The decode thread needs the GIL briefly several times per token; with
        # Python's default 5 ms switch interval it queued behind the UI thread and
        # decoding ran 14 % slower under the TUI than without it (scripts/bench_tui.py).
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(0.0005)
        if self.settings.theme in self.available_themes:
            self.theme = self.settings.theme
        else:
            self.say(f"Unknown theme {self.settings.theme!r}; Ctrl+P → Change theme lists them.", severity="warning")
        # Anchored: the log follows new text until the reader scrolls up (PgUp), and again
        # from the next question or Ctrl+End.
        self.query_one("#chat-log", VerticalScroll).anchor()
        self.query_one(PromptArea).focus()
        self.start()

    @work(exclusive=True, group="load")
    async def start(self) -> None:
        model = self.settings.model
        if self._resume is None:
            try:
                installed = model_installed(self.settings, model, self.engine)
            except EnclaveError as exc:
                self.say(f"{exc.message} {exc.hint}", severity="error", timeout=15)
                return
            if not installed:
                others = len(slash.model_choices(self))
                outcome = await self.push_screen_wait(BuildScreen(self.settings, model, self.engine or "onnx", others))
                if outcome == "quit":
                    self.exit()
                    return
                if outcome == "pick":
                    await slash.pick_model(self)
                    return
        await self.open_conversation(self._resume, engine=self.engine)

    # -- conversations
    async def open_conversation(
        self,
        conversation_id: int | None = None,
        model: str | None = None,
        engine: str | None = None,
        persona: str | None = None,
    ) -> None:
        """Open a stored conversation, or a new one: set up like the current one, with
        another ``model`` (and ``engine``) or ``persona`` when given."""
        if self._busy:
            self.say("Wait for the answer to finish, or press Esc to cancel it.")
            return
        self._opening = True
        try:
            await self._open(conversation_id, model, engine, persona)
        finally:
            self._opening = False

    async def _open(
        self, conversation_id: int | None, model: str | None, engine: str | None, persona: str | None
    ) -> None:
        try:
            conv = await asyncio.to_thread(self._load, conversation_id, model, engine, persona)
        except EnclaveError as exc:
            self.say(f"{exc.message} {exc.hint}", severity="error", timeout=15)
            return
        if self.conv is not None:
            self.conv.close()  # release the old KV cache; its history stays in the store
        notice = startup_notice(conv.engine)
        if notice and (self.conv is None or self.conv.engine is not conv.engine):
            self.say(notice, severity="warning", timeout=15)
        self.conv = conv
        self.query_one(StatusBar).show(conv)
        self._stop_editing()
        log = self.query_one("#chat-log", VerticalScroll)
        await log.remove_children()
        widgets: list[Any] = []
        if conversation_id is not None:
            for message in self.assistant.history.messages(conversation_id):
                if message.role == "user":
                    widgets.append(UserMessage(message.content))
                else:
                    footer = f"{message.model} · {message.engine} · {message.where_ran or 'local'}"
                    widgets.append(AnswerMessage(message.content, footer))
                    self.last_answer = message.content
        await log.mount_all(widgets or [Welcome(f"{conv.model.name} · {conv.engine.name}")])
        log.scroll_end(animate=False)
        for note in conv.restore_notices:
            self.say(note, severity="warning")
        sources = self.query_one(SourcesPanel)
        if conv.documents_on and conv.last_citations:
            sources.show_citations(conv.last_citations)
        elif conv.documents_on:
            sources.show_citations([], note="Ask a question: the passages it is answered from appear here.")
        self.show_sources()
        if not conv.model.chat:
            self.say(base_model_note(conv.model.name), severity="warning")
        self.refresh_sidebar()
        self.query_one(StatusBar).show(conv)

    def _load(
        self, conversation_id: int | None, model: str | None, engine: str | None, persona: str | None
    ) -> Conversation:
        if conversation_id is None and self.conv is not None:
            return self.assistant.follow_on(self.conv, model, engine, persona)
        return self.assistant.conversation(model, engine, persona, resume=conversation_id, save=True)

    @work(exclusive=True, group="sidebar")
    async def refresh_sidebar(self, query: str = "") -> None:
        history = self.assistant.history
        if query.strip():
            ids: list[int] = []
            for hit in history.search(query, limit=50):
                if hit["conversation_id"] not in ids:
                    ids.append(hit["conversation_id"])
            rows = [r for r in history.recent(200) if r["id"] in ids]
        else:
            rows = history.recent(200)
        await self.query_one(Sidebar).fill(rows, self.conv.id if self.conv else None)

    @on(Input.Changed, "#sidebar-search")
    def search_changed(self, event: Input.Changed) -> None:
        self.refresh_sidebar(event.value)

    @on(ListView.Selected, "#conversation-list")
    async def conversation_selected(self, event: ListView.Selected) -> None:
        if event.item.id and event.item.id.startswith("conv-"):
            conversation_id = int(event.item.id.removeprefix("conv-"))
            if self.conv is None or conversation_id != self.conv.id:
                await self.open_conversation(conversation_id)
        if self.screen.has_class("-narrow"):
            self.query_one(Sidebar).remove_class("-shown")  # the overlay goes once a chat is chosen
        self.query_one(PromptArea).focus()

    def on_key(self, event: Any) -> None:
        if event.key == "delete" and self.focused is self.query_one("#conversation-list"):
            self.delete_selected()

    @work(exclusive=True, group="dialog")
    async def delete_selected(self) -> None:
        if self._busy:
            self.say("Wait for the answer to finish (Esc cancels it) before deleting a conversation.")
            return
        view = self.query_one("#conversation-list", ListView)
        item = view.highlighted_child
        if item is None or not item.id:
            return
        conversation_id = int(item.id.removeprefix("conv-"))
        history = self.assistant.history
        title = history.title(conversation_id)
        if await self.push_screen_wait(ConfirmScreen(f"Delete conversation {conversation_id} ({title!r}) for good?")):
            history.delete(conversation_id, how="TUI confirmation dialog (y)")
            if self.conv and self.conv.id == conversation_id:
                await self.open_conversation(None)
            self.refresh_sidebar()
            self.say(f"Deleted conversation {conversation_id}.")

    # -- turns
    @on(PromptArea.Submitted)
    async def submitted(self, event: PromptArea.Submitted) -> None:
        text = event.text
        if not text.strip():
            return
        try:
            parsed = parse_line(text)
        except EnclaveError as exc:
            self.say(f"{exc.message} {exc.hint}", severity="warning")
            return
        if not isinstance(parsed, str):
            event.prompt.value = ""
            self.run_command(parsed)
            return
        if self._busy or self.conv is None:
            self.say("Wait for the current answer (Esc cancels it)." if self._busy else "No model is loaded.")
            return
        event.prompt.value = ""
        replace = self._editing
        self._stop_editing()
        self.run_turn(parsed, replace_last=replace)

    @work(exclusive=True, group="command")
    async def run_command(self, command: Command) -> None:
        """A slash command, in a worker: it may open a dialog and wait for it."""
        await slash.run(self, command)

    @on(PromptArea.EditLast)
    def edit_last(self) -> None:
        self.start_editing()

    def start_editing(self) -> None:
        """Put the last message in the input; sending it answers it again, replacing the last exchange."""
        conv = self.conv
        if conv is None or self._busy or not conv.can_replace_last:
            if conv is not None and not self._busy:
                self.say("There is no message to edit yet.")
            return
        self._editing = True
        prompt = self.query_one(PromptArea)
        prompt.value = conv.last_user_text or ""
        banner = self.query_one("#edit-banner", Static)
        banner.update("Editing your last message: Enter answers it again (replacing the answer) · Esc stops editing")
        banner.display = True
        prompt.focus()

    def _stop_editing(self) -> None:
        if self._editing:
            self._editing = False
            self.query_one(PromptArea).value = ""
        self.query_one("#edit-banner", Static).display = False

    def action_retry(self) -> None:
        """Ctrl+R, /retry: answer the last message again."""
        conv = self.conv
        if conv is None or self._busy:
            return
        target = conv.retry_target()
        if target is None:
            self.say("There is no answer to retry yet.")
            return
        self._stop_editing()
        text, replacing = target
        self.run_turn(text, replace_last=replacing)

    @work(exclusive=True, group="turn")
    async def run_turn(self, text: str, replace_last: bool = False) -> None:
        """One turn; where it runs, the consent and the fallback are decided by
        :meth:`Conversation.turn` — the app only shows, asks and forwards."""
        conv = self.conv
        assert conv is not None
        self._busy = True
        try:
            await show_turn(self, conv, text, replace_last)
        finally:
            self._busy = False
            self.query_one(StatusBar).show_privacy(conv)

    def say(self, message: str, *, severity: Any = "information", timeout: float | None = None) -> None:
        """A notification whose text is shown as text: engine errors, paths and user
        input may contain Textual markup characters."""
        self._notices.append(message)
        self.notify(message, severity=severity, timeout=timeout, markup=False)

    async def action_quit(self) -> None:
        # Stop a running answer first: the engine must not be closed under its decode thread.
        if self._busy and self.conv is not None:
            self.conv.cancel()
            for _ in range(100):
                if not self._busy:
                    break
                await asyncio.sleep(0.02)
        self.exit()

    def action_cancel(self) -> None:
        if self._busy and self.conv is not None:
            self.conv.cancel()
        elif self._editing:
            self._stop_editing()

    # -- layout actions
    def action_scroll_log(self, pages: int) -> None:
        log = self.query_one("#chat-log", VerticalScroll)
        if pages < 0:
            log.scroll_page_up()
        else:
            log.scroll_page_down()

    def action_follow(self) -> None:
        self.query_one("#chat-log", VerticalScroll).scroll_end(animate=False)

    _vectors_timer: Timer | None = None

    async def refresh_vectors(self) -> None:
        """Show the background embedder's progress while documents are on; every 3 s until done."""
        conv = self.conv
        library = conv.library if conv is not None and conv.documents_on else None
        text = await asyncio.to_thread(vectors_badge, library) if library is not None else ""
        self.query_one(StatusBar).show_vectors(text)
        if text and self._vectors_timer is None:
            self._vectors_timer = self.set_interval(3.0, self.refresh_vectors)
        elif not text and self._vectors_timer is not None:
            self._vectors_timer.stop()
            self._vectors_timer = None

    def action_toggle_sidebar(self) -> None:
        sidebar = self.query_one(Sidebar)
        shown = sidebar.display
        sidebar.set_class(not shown, "-shown")
        sidebar.set_class(shown, "-hidden")
        if not shown:
            self.query_one("#conversation-list", ListView).focus()
        elif self.focused is not None and sidebar in self.focused.ancestors_with_self:
            self.query_one(PromptArea).focus()

    def show_sources(self) -> None:
        """The sources panel is on while documents are, unless the user hid it (F4)."""
        on = self.conv is not None and self.conv.documents_on and not self._sources_hidden
        self.query_one(SourcesPanel).set_class(on, "-on")

    def action_toggle_sources(self) -> None:
        if self.conv is None or not self.conv.documents_on:
            self.say("Documents are off: there are no sources to show (F3 turns documents on).")
            return
        self._sources_hidden = not self._sources_hidden
        self.show_sources()

    async def action_toggle_docs(self) -> None:
        await slash.set_documents(self, "off" if self.conv is not None and self.conv.documents_on else "")

    def action_toggle_cloud(self) -> None:
        slash.set_cloud(self, "")

    async def action_new(self) -> None:
        await self.open_conversation(None)

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    @work(exclusive=True, group="dialog")
    async def action_pick_model(self) -> None:
        await slash.pick_model(self)

    @work(exclusive=True, group="dialog")
    async def action_pick_persona(self) -> None:
        await slash.pick_persona(self)

    @work(exclusive=True, group="dialog")
    async def action_add_documents(self) -> None:
        await slash.ask_documents(self)

    def action_copy_last(self) -> None:
        if not self.last_answer:
            self.say("No answer to copy yet.")
            return
        self.copy_to_clipboard(self.last_answer)
        self.say("Copied the last answer to the clipboard.")

    def action_copy_code(self) -> None:
        blocks = _code_blocks(self.last_answer)
        if not blocks:
            self.say("The last answer has no code block.")
            return
        self.copy_to_clipboard(blocks[-1])
        self.say("Copied the last code block.")

    def action_export(self) -> None:
        slash.export(self, None)

    def action_rename(self) -> None:
        prompt = self.query_one(PromptArea)
        prompt.value = "/rename "
        prompt.focus()

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("New conversation", "Same model, settings and documents", self.action_new)
        yield SystemCommand("Choose model", "Pick an installed model and engine", self.action_pick_model)
        yield SystemCommand("Choose persona", "Pick a system prompt", self.action_pick_persona)
        yield SystemCommand("Retry", "Answer the last message again", self.action_retry)
        yield SystemCommand("Edit last message", "Change it and answer it again", self.start_editing)
        yield SystemCommand("Add documents…", "Index a folder or file, with progress", self.action_add_documents)
        yield SystemCommand("Copy last answer", "Copy it to the clipboard", self.action_copy_last)
        yield SystemCommand("Copy last code block", "Copy the last code block", self.action_copy_code)
        yield SystemCommand("Export conversation", "Write it as Markdown", self.action_export)
        yield SystemCommand("Toggle sidebar", "Show or hide conversations", self.action_toggle_sidebar)
        yield SystemCommand("Toggle sources", "Show or hide the sources panel", self.action_toggle_sources)
        yield SystemCommand(
            "Documents on/off", "Answer from your indexed documents, with sources", self.action_toggle_docs
        )
        yield SystemCommand(
            "Cloud fallback on/off",
            "This conversation only; every request is previewed and needs your consent",
            self.action_toggle_cloud,
        )
        yield SystemCommand("Help", "Keys and commands", self.action_help)

    def on_unmount(self) -> None:
        sys.setswitchinterval(getattr(self, "_switch_interval", 0.005))
        if self.conv is not None:
            self.conv.close()  # withdraws a cloud consent still on, with an audit entry
        self.assistant.close()


def _code_blocks(markdown: str) -> list[str]:
    blocks: list[str] = []
    inside = False
    current: list[str] = []
    for line in markdown.splitlines():
        if line.strip().startswith("```"):
            if inside:
                blocks.append("\n".join(current))
                current = []
            inside = not inside
            continue
        if inside:
            current.append(line)
    return blocks


def run(settings: Settings, resume: int | None = None, store: Any = None, engine: str | None = None) -> None:
    """Run the app; ``store`` is the database already opened (and unlocked) by the caller."""
    EnclaveApp(settings, assistant_factory=lambda s: Assistant(s, store), resume=resume, engine=engine).run()
