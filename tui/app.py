"""Enclave's terminal UI: a chat that streams, a sidebar of conversations, an honest status bar.

The app talks only to :class:`assistant.app.turns.Assistant` and its conversations.
Decoding runs in a worker thread inside the assistant; events reach the UI via
``astream`` and are written to a ``MarkdownStream``, which batches fragments so
rendering never holds the engine back.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Input, ListView, Markdown

from assistant.app.documents import switch_documents
from assistant.app.notices import answer_footer
from assistant.app.personas import list_personas, load_persona
from assistant.app.turns import (
    Assistant,
    AttemptFailed,
    ConsentNeeded,
    Conversation,
    Decision,
    Notice,
    TurnFinished,
    astream,
)
from assistant.core.errors import EnclaveError, ModelNotInstalled
from assistant.core.events import Done, TextDelta, Usage
from assistant.core.records import TurnResult
from assistant.core.settings import Settings
from assistant.storage.database import Store
from tui.safety import displayable
from tui.screens.build import BuildScreen
from tui.screens.dialogs import CloudConsentScreen, ConfirmScreen, PickerScreen
from tui.screens.help import HelpScreen
from tui.widgets.messages import AnswerMessage, UserMessage
from tui.widgets.sidebar import Sidebar
from tui.widgets.sources import SourcesPanel
from tui.widgets.status import StatusBar

#: How a notice's level shows as a notification.
_SEVERITY = {"info": "information", "warning": "warning", "error": "error"}

#: Seconds between Markdown re-renders while an answer streams (10 per second).
RENDER_INTERVAL = 0.1


# --------------------------------------------------------------------------- app
class EnclaveApp(App[None]):
    """The Enclave chat application."""

    CSS_PATH = "app.tcss"
    TITLE = "Enclave"
    BINDINGS = [
        Binding("escape", "cancel", "Cancel", show=False),
        Binding("ctrl+n", "new", "New"),
        Binding("ctrl+b", "toggle_sidebar", "Chats"),
        Binding("ctrl+o", "pick_model", "Model"),
        Binding("ctrl+r", "pick_persona", "Persona"),
        Binding("ctrl+y", "copy_last", "Copy"),
        Binding("ctrl+k", "copy_code", "Copy code", show=False),
        Binding("ctrl+e", "export", "Export"),
        Binding("f2", "rename", "Rename", show=False),
        Binding("f3", "toggle_docs", "Docs"),
        Binding("f1", "help", "Help"),
        Binding("ctrl+q", "quit", "Quit"),
    ]

    def __init__(
        self,
        settings: Settings | None = None,
        assistant_factory: Callable[[Settings], Assistant] = Assistant,
        resume: int | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings or Settings.load()
        self.assistant = assistant_factory(self.settings)
        self.conv: Conversation | None = None
        self._resume = resume
        self._busy = False
        self._pending_text = ""
        self._last_answer = ""
        self.last_result: Any = None

    # -- layout
    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            yield Sidebar(id="sidebar")
            with Vertical(id="chat-pane"):
                yield VerticalScroll(id="chat-log")
                yield Input(placeholder="Ask anything — /help for commands", id="prompt")
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
        self.query_one("#prompt", Input).focus()
        self.start()

    @work(exclusive=True, group="load")
    async def start(self) -> None:
        try:
            self.assistant.catalog.find(self.settings.model)
        except ModelNotInstalled:
            if not await self.push_screen_wait(BuildScreen(self.settings, self.settings.model)):
                return
        except EnclaveError as exc:
            self.say(f"{exc.message} {exc.hint}", severity="error", timeout=15)
            return
        await self.open_conversation(self._resume)

    # -- conversations
    async def open_conversation(self, conversation_id: int | None = None, model: str | None = None) -> None:
        if self._busy:
            self.say("Wait for the answer to finish, or press Esc to cancel it.")
            return
        persona = self.conv.persona if self.conv and conversation_id is None else None
        try:
            conv = await self._load(conversation_id, model, persona)
        except EnclaveError as exc:
            self.say(f"{exc.message} {exc.hint}", severity="error", timeout=15)
            return
        if self.conv is not None:
            self.conv.close()  # release the old KV cache; its history stays in the store
        self.conv = conv
        self.query_one(SourcesPanel).display = False  # documents are chosen per conversation
        log = self.query_one("#chat-log", VerticalScroll)
        await log.remove_children()
        if conversation_id is not None:
            widgets: list[Any] = []
            for message in self.assistant.store.messages(conversation_id):
                if message.role == "user":
                    widgets.append(UserMessage(message.content))
                else:
                    footer = f"{message.model} · {message.engine} · {message.where_ran or 'local'}"
                    widgets.append(AnswerMessage(message.content, footer))
                    self._last_answer = message.content
            await log.mount_all(widgets)
            log.scroll_end(animate=False)
        if not conv.model.chat:
            self.say(
                f"{conv.model.name} is a base model: it continues text rather than answering questions.",
                severity="warning",
            )
        self.refresh_sidebar()
        self.query_one(StatusBar).show(conv)

    async def _load(self, conversation_id: int | None, model: str | None, persona: str | None) -> Conversation:
        return await asyncio.to_thread(
            self.assistant.conversation, model, None, persona, resume=conversation_id, save=True
        )

    @work(exclusive=True, group="sidebar")
    async def refresh_sidebar(self, query: str = "") -> None:
        store = self.assistant.store
        if query.strip():
            ids = []
            for hit in store.search(query, limit=50):
                if hit["conversation_id"] not in ids:
                    ids.append(hit["conversation_id"])
            rows = [r for r in store.list_conversations(200) if r["id"] in ids]
        else:
            rows = store.list_conversations(200)
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
        self.query_one("#prompt", Input).focus()

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
    @on(Input.Submitted, "#prompt")
    async def submitted(self, event: Input.Submitted) -> None:
        text = event.value
        if not text.strip():
            return
        if text.startswith("/"):
            event.input.value = ""
            await self.slash(text)
            return
        if self._busy or self.conv is None:
            self.say("Wait for the current answer (Esc cancels it)." if self._busy else "No model is loaded.")
            return
        event.input.value = ""
        self.run_turn(text)

    @work(exclusive=True, group="turn")
    async def run_turn(self, text: str) -> None:
        """One turn; where it runs, the consent and the fallback are decided by
        :meth:`Conversation.turn` — the app only shows, asks and forwards."""
        conv = self.conv
        assert conv is not None
        self._busy = True
        try:
            await self._show_turn(conv, text)
        finally:
            self._busy = False
            self.query_one(StatusBar).show_privacy(conv)

    async def _consent(self, ask: ConsentNeeded) -> Decision:
        """The consent dialog for one cloud request."""
        choice = await self.push_screen_wait(CloudConsentScreen(ask.request, ask.question))
        if choice == "toggle":
            return Decision("toggle-redaction", "TUI consent dialog (r)")
        if choice == "send":
            return Decision("send", "TUI consent dialog (y)")
        return Decision("refuse", "declined in the TUI consent dialog")

    async def _show_turn(self, conv: Conversation, text: str) -> None:
        """Stream one turn into the chat log."""
        self._pending_text = text
        log = self.query_one("#chat-log", VerticalScroll)
        follow = log.is_vertical_scroll_end
        user = UserMessage(text)
        answer = AnswerMessage(footer="…")
        await log.mount_all([user, answer])
        if follow:
            log.scroll_end(animate=False)
        stream = Markdown.get_stream(answer.body)
        status = self.query_one(StatusBar)
        pending: list[str] = []
        last_flush = 0.0
        result: TurnResult | None = None

        async def flush() -> None:
            nonlocal last_flush
            if pending:
                follow = log.is_vertical_scroll_end
                await stream.write(displayable("".join(pending)))
                pending.clear()
                if follow:
                    log.scroll_end(animate=False)
            last_flush = time.monotonic()

        async for event in astream(conv, lambda: conv.turn(text)):
            match event:
                case TextDelta(text=piece):
                    # Render at most every RENDER_INTERVAL: re-rendering Markdown per
                    # token took a third of the decode speed on 2 cores.
                    pending.append(piece)
                    if time.monotonic() - last_flush >= RENDER_INTERVAL:
                        await flush()
                case Usage():
                    await flush()
                    status.show(conv, event, used=event.prompt_tokens + event.completion_tokens)
                case Done():
                    await flush()
                case Notice(text=note, level=level):
                    self.say(note, severity=_SEVERITY[level])
                case AttemptFailed(error=exc):
                    # The local attempt is over; what it showed is not the answer.
                    pending.clear()
                    await stream.stop()
                    await answer.remove()
                    answer = AnswerMessage(footer="…")
                    await log.mount(answer)
                    stream = Markdown.get_stream(answer.body)
                    self.say(f"{exc.message} {exc.hint}", severity="error", timeout=15)
                case ConsentNeeded():
                    event.answer(await self._consent(event))
                case TurnFinished(result=finished):
                    result = finished
        await stream.stop()
        assert result is not None
        self.last_result = result
        if result.finish_reason == "cancelled":
            answer.set_footer(answer_footer(result))
            answer.add_class("cancelled")
            prompt = self.query_one("#prompt", Input)
            if not prompt.value:
                prompt.value = text
            return
        if result.error is not None:
            if not result.text:
                # Nothing was said: the message goes back to the input to edit or resend.
                await user.remove()
                await answer.remove()
                self.query_one("#prompt", Input).value = text
            else:
                answer.set_footer(f"error: {result.error.message}")
            self.say(f"{result.error.message} {result.error.hint}", severity="error", timeout=15)
            return
        self._last_answer = result.text
        if result.finish_reason == "no-evidence":
            self.query_one(SourcesPanel).show_citations([], note="Nothing relevant was found for the last question.")
        elif result.citations is not None:
            self.query_one(SourcesPanel).show_citations(result.citations)
        for notice in result.notices:
            self.say(notice, severity="warning")
        answer.set_footer(answer_footer(result))
        self.refresh_sidebar()

    def say(self, message: str, *, severity: Any = "information", timeout: float | None = None) -> None:
        """A notification whose text is shown as text: engine errors, paths and user
        input may contain Textual markup characters."""
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

    # -- slash commands and actions
    async def slash(self, line: str) -> None:
        command, _, arg = line[1:].partition(" ")
        arg = arg.strip()
        match command:
            case "new":
                await self.action_new()
            case "model":
                if arg:
                    await self.open_conversation(None, model=arg)
                else:
                    self.action_pick_model()
            case "persona":
                if arg:
                    await self.set_persona(arg)
                else:
                    self.action_pick_persona()
            case "export":
                self.export(Path(arg).expanduser() if arg else None)
            case "rename":
                self.rename(arg)
            case "docs":
                await self.set_documents(arg)
            case "clear":
                await self.query_one("#chat-log", VerticalScroll).remove_children()
            case "cloud":
                self.set_cloud(arg)
            case "help":
                self.action_help()
            case _:
                self.say(f"Unknown command /{command}. Type /help for the list.", severity="warning")

    async def set_documents(self, arg: str) -> None:
        """Documents on (all collections, or ``arg``) or ``off`` for this conversation."""
        conv = self.conv
        if conv is None:
            self.say("No model is loaded.")
            return
        try:
            message = await asyncio.to_thread(switch_documents, conv, arg, self.assistant.store)
        except EnclaveError as exc:
            self.say(f"{exc.message} {exc.hint}", severity="error", timeout=15)
            return
        self.query_one(SourcesPanel).display = conv.documents_on
        self.say(message)
        self.query_one(StatusBar).show(conv)

    async def action_toggle_docs(self) -> None:
        await self.set_documents("off" if self.conv is not None and self.conv.documents_on else "")

    def set_cloud(self, arg: str = "") -> None:
        """`/cloud on|off` (no argument toggles): cloud fallback for this conversation only."""
        conv = self.conv
        if conv is None:
            self.say("No conversation is open.")
            return
        on = {"on": True, "off": False, "": not conv.cloud_enabled}.get(arg)
        if on is None:
            self.say("Usage: /cloud on, /cloud off, or /cloud to toggle.", severity="warning")
            return
        try:
            if on:
                ep = conv.cloud.enable("TUI /cloud on", conv.id)
                self.say(f"Cloud is on for this conversation: {ep.label}. Each request is shown before it is sent.")
            else:
                conv.cloud.disable("TUI /cloud off", conv.id)
                self.say("Cloud is off: offline, answers run on this device.")
        except EnclaveError as exc:
            self.say(f"{exc.message} {exc.hint}", severity="error", timeout=15)
        self.query_one(StatusBar).show_privacy(conv)

    def action_toggle_cloud(self) -> None:
        self.set_cloud("")

    async def action_new(self) -> None:
        await self.open_conversation(None, model=self.conv.model.name if self.conv else None)

    def action_toggle_sidebar(self) -> None:
        sidebar = self.query_one(Sidebar)
        sidebar.display = not sidebar.display

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    @work(exclusive=True, group="dialog")
    async def action_pick_model(self) -> None:
        from assistant.core.format import human_size

        options = []
        for m in self.assistant.catalog.installed():
            if m.kind == "embedding":
                continue  # document search's encoder, not a model to chat with
            note = "" if m.chat else " — base model, not for chat"
            options.append(
                (m.name, f"{m.name} · {m.engine} · {human_size(m.size)} · {m.manifest.get('licence', '?')}{note}")
            )
        if not options:
            self.say("No models installed. Build one with `enclave models build`.", severity="warning")
            return
        choice = await self.push_screen_wait(PickerScreen("Choose a model", options))
        if choice:
            await self.open_conversation(None, model=choice)

    @work(exclusive=True, group="dialog")
    async def action_pick_persona(self) -> None:
        options = [(name, name) for name in list_personas(self.settings)]
        choice = await self.push_screen_wait(PickerScreen("Choose a persona", options))
        if choice:
            await self.set_persona(choice)

    async def set_persona(self, name: str) -> None:
        if self.conv is None:
            return
        try:
            load_persona(self.settings, name)
        except EnclaveError as exc:
            self.say(f"{exc.message} {exc.hint}", severity="error")
            return
        self.settings = replace(self.settings, persona=name)
        self.assistant.settings = self.settings
        self.conv.persona = name
        await self.open_conversation(None, model=self.conv.model.name)
        self.say(f"Persona: {name} (new conversation)")

    def action_copy_last(self) -> None:
        if not self._last_answer:
            self.say("No answer to copy yet.")
            return
        self.copy_to_clipboard(self._last_answer)
        self.say("Copied the last answer to the clipboard.")

    def action_copy_code(self) -> None:
        blocks = _code_blocks(self._last_answer)
        if not blocks:
            self.say("The last answer has no code block.")
            return
        self.copy_to_clipboard(blocks[-1])
        self.say("Copied the last code block.")

    def action_export(self) -> None:
        self.export(None)

    def export(self, path: Path | None) -> None:
        if self.conv is None or self.conv.id is None:
            self.say("Nothing to export yet.")
            return
        path = path or Path.cwd() / f"enclave-conversation-{self.conv.id}.md"
        try:
            self.assistant.history.export(self.conv.id, "md", path)
        except OSError as exc:
            self.say(f"Could not write {path}: {exc.strerror or exc}", severity="error")
            return
        except EnclaveError as exc:
            self.say(f"{exc.message} {exc.hint}", severity="error")
            return
        self.say(f"Exported to {path}")

    def action_rename(self) -> None:
        self.query_one("#prompt", Input).value = "/rename "
        self.query_one("#prompt", Input).focus()

    def rename(self, title: str) -> None:
        if not title or self.conv is None or self.conv.id is None:
            self.say("Usage: /rename TITLE (after the first answer).")
            return
        try:
            self.assistant.history.rename(self.conv.id, title)
        except EnclaveError as exc:
            self.say(f"{exc.message} {exc.hint}", severity="error")
            return
        self.refresh_sidebar()

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("New conversation", "Start a new conversation", self.action_new)
        yield SystemCommand("Choose model", "Pick an installed model", self.action_pick_model)
        yield SystemCommand("Choose persona", "Pick a system prompt", self.action_pick_persona)
        yield SystemCommand("Copy last answer", "Copy it to the clipboard", self.action_copy_last)
        yield SystemCommand("Copy last code block", "Copy the last code block", self.action_copy_code)
        yield SystemCommand("Export conversation", "Write it as Markdown", self.action_export)
        yield SystemCommand("Toggle sidebar", "Show or hide conversations", self.action_toggle_sidebar)
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


def run(settings: Settings, resume: int | None = None, store: Store | None = None) -> None:
    """Run the app; ``store`` is the database already opened (and unlocked) by the caller."""
    EnclaveApp(settings, assistant_factory=lambda s: Assistant(s, store), resume=resume).run()
