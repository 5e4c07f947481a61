"""The TUI's side of the slash commands (parsed once, in :mod:`assistant.app.commands`)
and of the pickers and dialogs behind them: each function asks, shows and forwards."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from assistant.app import commands
from assistant.app.documents import Documents, collection_for, report_line, switch_documents, use_collection
from assistant.app.models import ENGINE_NAMES, ModelChoice, chat_models
from assistant.app.personas import list_personas, load_persona
from assistant.core.errors import EnclaveError
from tui.screens.dialogs import AskScreen, PickerScreen
from tui.screens.index import IndexScreen
from tui.widgets.sources import SourcesPanel
from tui.widgets.status import StatusBar

if TYPE_CHECKING:
    from tui.app import EnclaveApp

__all__ = ["HANDLERS", "ask_documents", "export", "model_choices", "pick_model", "pick_persona", "run", "set_cloud"]


async def run(app: EnclaveApp, command: commands.Command) -> None:
    """Do what ``command`` asks; problems are shown as notifications."""
    try:
        if app.conv is None and command.name in NEEDS_CONVERSATION:
            app.say("No model is loaded.")
            return
        await HANDLERS[command.name](app, command.arg)
    except EnclaveError as exc:
        app.say(f"{exc.message} {exc.hint}", severity="warning")


async def _help(app: EnclaveApp, arg: str) -> None:
    app.action_help()


async def _bye(app: EnclaveApp, arg: str) -> None:
    await app.action_quit()


async def _new(app: EnclaveApp, arg: str) -> None:
    await app.action_new()


async def _model(app: EnclaveApp, arg: str) -> None:
    name, engine = commands.parse_model(arg, ENGINE_NAMES)
    if name is None:
        app.action_pick_model()
    else:
        await app.open_conversation(None, model=name, engine=engine)


async def _persona(app: EnclaveApp, arg: str) -> None:
    if arg:
        await set_persona(app, arg)
    else:
        app.action_pick_persona()


async def _retry(app: EnclaveApp, arg: str) -> None:
    app.action_retry()


async def _edit(app: EnclaveApp, arg: str) -> None:
    conv = app.conv
    if arg and conv is not None and conv.can_replace_last and not app.busy:
        app.run_turn(arg, replace_last=True)
    else:
        app.start_editing()


async def _set(app: EnclaveApp, arg: str) -> None:
    assert app.conv is not None
    app.say(commands.apply_set(app.conv, arg))


async def _show(app: EnclaveApp, arg: str) -> None:
    assert app.conv is not None
    app.say(commands.describe(app.conv), timeout=20)


async def _rename(app: EnclaveApp, arg: str) -> None:
    rename(app, arg)


async def _export(app: EnclaveApp, arg: str) -> None:
    target = commands.parse_export(arg)
    export(app, Path(target.path).expanduser() if target.path else None, force=target.force)


async def _cloud(app: EnclaveApp, arg: str) -> None:
    set_cloud(app, arg)


# --------------------------------------------------------------------------- models and personas
def model_choices(app: EnclaveApp) -> list[ModelChoice]:
    return chat_models(app.settings)


async def pick_model(app: EnclaveApp) -> None:
    """The model picker: every installed model *and engine* (one model may be built for both)."""
    choices = model_choices(app)
    if not choices:
        app.say("No models installed. Build one with `enclave models build`.", severity="warning")
        return
    conv = app.conv
    current = (conv.model.name, conv.engine.name) if conv is not None else None
    options = [((c.name, c.engine), c.label) for c in choices]
    choice = await app.push_screen_wait(PickerScreen("Choose a model and engine", options, current))
    if choice is not None and choice != current:
        await app.open_conversation(None, model=choice[0], engine=choice[1])


def _takes_no_persona(app: EnclaveApp) -> bool:
    """A base model: say why /persona changes nothing (True)."""
    if app.conv is None or app.conv.model.chat:
        return False
    from assistant.app.notices import base_model_persona_note

    app.say(base_model_persona_note(app.conv.model.name), severity="warning", timeout=12)
    return True


async def pick_persona(app: EnclaveApp) -> None:
    if _takes_no_persona(app):
        return
    options = [(name, name) for name in list_personas(app.settings)]
    current = app.conv.persona if app.conv is not None else None
    choice = await app.push_screen_wait(PickerScreen("Choose a persona", options, current))
    if choice:
        await set_persona(app, choice)


async def set_persona(app: EnclaveApp, name: str) -> None:
    """A new conversation with persona ``name`` (and the current model, settings and documents)."""
    if app.conv is None or _takes_no_persona(app):
        return
    try:
        load_persona(app.settings, name)
    except EnclaveError as exc:
        app.say(f"{exc.message} {exc.hint}", severity="error")
        return
    app.settings = replace(app.settings, persona=name)
    app.assistant.settings = app.settings
    await app.open_conversation(None, persona=name)
    app.say(f"Persona: {name} (new conversation)")


# --------------------------------------------------------------------------- documents
async def set_documents(app: EnclaveApp, arg: str) -> None:
    """Documents on (all collections, or ``arg``) or ``off`` for this conversation."""
    conv = app.conv
    if conv is None:
        app.say("No model is loaded.")
        return
    try:
        message = await asyncio.to_thread(switch_documents, conv, arg, app.assistant.store)
    except EnclaveError as exc:
        app.say(f"{exc.message} {exc.hint}", severity="error", timeout=15)
        return
    if conv.documents_on:
        app.query_one(SourcesPanel).show_citations(
            [], note="Ask a question: the passages it is answered from appear here."
        )
    app.show_sources()
    app.say(message)
    app.query_one(StatusBar).show(conv)
    await app.refresh_vectors()


async def documents(app: EnclaveApp, arg: str) -> None:
    """`/docs …`: the switch, or `add PATH [-c NAME]` / `sync [NAME]` with a progress dialog."""
    parsed = commands.parse_docs(arg)
    if isinstance(parsed, str):
        await set_documents(app, parsed)
        return
    if isinstance(parsed, commands.DocsAdd):
        await index(app, [Path(p).expanduser() for p in parsed.paths], parsed.collection)
    else:
        await index(app, None, parsed.collection)


async def ask_documents(app: EnclaveApp) -> None:
    """The palette's "Add documents…": ask for a path, then index it."""
    path = await app.push_screen_wait(
        AskScreen("Index which folder or file? (.txt .md .rst .html .pdf .docx)", placeholder="~/manuals")
    )
    if path:
        await index(app, [Path(path).expanduser()], None)


async def index(app: EnclaveApp, paths: list[Path] | None, collection: str | None) -> None:
    """Index ``paths`` (or sync ``collection``, or every one) in a dialog with progress; then
    answer from what was indexed in this conversation."""
    conv = app.conv
    if conv is None:
        app.say("No model is loaded.")
        return
    if app.busy:
        app.say("Wait for the answer to finish (Esc cancels it) before indexing.")
        return
    docs = await asyncio.to_thread(Documents.of, conv)
    if paths is not None:
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            app.say(f"Not found: {', '.join(missing)}.", severity="error")
            return
        name = collection or collection_for(paths)
        screen = IndexScreen(docs, name, paths=paths)
    else:
        names = [collection] if collection else docs.names()
        if not names:
            app.say("There are no document collections yet. Add some with /docs add PATH.", severity="warning")
            return
        name = names[0]
        screen = IndexScreen(docs, name, sync=names)
    reports = await app.push_screen_wait(screen)
    if not reports:
        return
    app.say("\n".join(report_line(r) for r in reports))
    if paths is not None:
        app.say(use_collection(conv, docs, name))
        app.show_sources()
        app.query_one(StatusBar).show(conv)


# --------------------------------------------------------------------------- the rest
def set_cloud(app: EnclaveApp, arg: str = "") -> None:
    """`/cloud on|off` (no argument toggles): cloud fallback for this conversation only."""
    conv = app.conv
    if conv is None:
        app.say("No conversation is open.")
        return
    on = {"on": True, "off": False, "": not conv.cloud_enabled}.get(arg)
    if on is None:
        app.say("Usage: /cloud on, /cloud off, or /cloud to toggle.", severity="warning")
        return
    try:
        if on:
            ep = conv.cloud.enable("TUI /cloud on", conv.id)
            app.say(f"Cloud is on for this conversation: {ep.label}. Each request is shown before it is sent.")
        else:
            conv.cloud.disable("TUI /cloud off", conv.id)
            app.say("Cloud is off: offline, answers run on this device.")
    except EnclaveError as exc:
        app.say(f"{exc.message} {exc.hint}", severity="error", timeout=15)
    app.query_one(StatusBar).show_privacy(conv)


def export(app: EnclaveApp, path: Path | None, *, force: bool = False) -> None:
    conv = app.conv
    if conv is None or conv.id is None:
        app.say("Nothing to export yet.")
        return
    path = path or Path.cwd() / f"enclave-conversation-{conv.id}.md"
    try:
        app.assistant.history.export(conv.id, "md", path, force=force)
    except OSError as exc:
        app.say(f"Could not write {path}: {exc.strerror or exc}", severity="error")
        return
    app.say(f"Exported to {path}")


def rename(app: EnclaveApp, title: str) -> None:
    conv = app.conv
    if not title or conv is None or conv.id is None:
        app.say("Usage: /rename TITLE (after the first answer).")
        return
    app.assistant.history.rename(conv.id, title)
    app.refresh_sidebar()


Handler = Callable[["EnclaveApp", str], Awaitable[None]]

#: What each command of :data:`assistant.app.commands.COMMANDS` does in the TUI.
HANDLERS: dict[str, Handler] = {
    "help": _help,
    "bye": _bye,
    "new": _new,
    "clear": _new,
    "model": _model,
    "persona": _persona,
    "retry": _retry,
    "edit": _edit,
    "set": _set,
    "show": _show,
    "docs": documents,
    "rename": _rename,
    "export": _export,
    "cloud": _cloud,
}
NEEDS_CONVERSATION = {"set", "show", "rename", "export", "cloud", "retry", "edit", "docs"}
