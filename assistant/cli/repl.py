"""The line chat of `enclave chat`: read a line, run a command or a turn, repeat.

Commands are parsed by :mod:`assistant.app.commands` (the same table as the TUI's);
this module only reads lines, prints and forwards. What a command prints goes to
stderr, so that stdout carries only answers (and, with ``--json``, one JSON object
per turn).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from assistant.cli.common import _err
from assistant.core.errors import EnclaveError

if TYPE_CHECKING:
    from assistant.cli.chat import Chat

#: Opens and closes a block of several lines in an interactive chat (as in Ollama).
MULTILINE = '"""'


class Leave(Exception):
    """/bye: end the chat."""


def run_chat(ctx: click.Context, chat: Chat, kw: dict[str, Any]) -> None:
    """The loop: one turn per line (or per \"\"\"-block on a terminal) until EOF or /bye."""
    from assistant.cli.chat import _cloud_switch

    interactive = sys.stdin.isatty()
    conv = chat.conv
    if interactive:
        _err(
            click.style(f"Enclave · {conv.model.name} · {conv.engine.name} · offline", bold=True)
            + click.style("  (/help for commands, Ctrl-C cancels an answer, Ctrl-D or /bye quits)", dim=True)
        )
        if conv.messages:
            _err(click.style(f"Continuing conversation {conv.id} ({len(conv.messages)} messages).", dim=True))
    if not conv.model.chat:  # on stderr, piped or not, as `ask` says it
        from assistant.app.notices import base_model_note

        _err(click.style(f"note: {base_model_note(conv.model.name)}", fg="yellow"))
    if kw.get("cloud"):
        _cloud_switch(conv, True, "chat --cloud")
    while True:
        line = _read(interactive)
        if line is None:
            break
        if not line.strip():
            continue
        try:
            _handle(chat, line, kw, interactive)
        except Leave:
            break
        except EnclaveError as exc:
            if not interactive:
                raise  # a script stops at its first failing line (exit 1, message on stderr)
            _err(click.style("error: ", fg="red", bold=True) + exc.message)
            if exc.hint:
                _err("  " + exc.hint)


def _read(interactive: bool, prompt: str = ">>> ") -> str | None:
    """The next line (or \"\"\"-block); None at the end of input."""
    try:
        line = _input(prompt) if interactive else sys.stdin.readline()
    except EOFError:
        return None
    except KeyboardInterrupt:
        _err("")
        return ""
    if not interactive:
        return None if line == "" else line.rstrip("\n")
    if not line.lstrip().startswith(MULTILINE):
        return line
    # A block: everything up to a line ending with """ is one message.
    parts = [line.lstrip()[len(MULTILINE) :]]
    while not parts[-1].rstrip().endswith(MULTILINE) or len(parts) == 1 and parts[0].strip() == "":
        try:
            parts.append(_input("... "))
        except (EOFError, KeyboardInterrupt):
            _err("")
            return ""
    parts[-1] = parts[-1].rstrip()[: -len(MULTILINE)]
    return "\n".join(parts).strip("\n")


def _input(prompt: str) -> str:
    """A line typed at the terminal. The prompt goes where the person sees it: to stdout
    when that is the terminal too (readline's line editing knows it), else to stderr, so
    that `enclave chat --json > turns.jsonl` keeps stdout to the answers."""
    if sys.stdout.isatty():
        return input(prompt)
    sys.stderr.write(prompt)
    sys.stderr.flush()
    return input()


def _handle(chat: Chat, line: str, kw: dict[str, Any], interactive: bool) -> None:
    from assistant.app.commands import parse_line
    from assistant.cli.chat import _run_turn

    parsed = parse_line(line)
    if isinstance(parsed, str):
        _run_turn(chat.conv, parsed, kw["as_json"], kw, interactive)
        return
    HANDLERS[parsed.name](chat, parsed.arg, kw, interactive)


def _help(chat: Chat, arg: str, kw: dict[str, Any], interactive: bool) -> None:
    from assistant.app.commands import help_text

    _err(help_text("chat"))


def _bye(chat: Chat, arg: str, kw: dict[str, Any], interactive: bool) -> None:
    raise Leave()


def _new(chat: Chat, arg: str, kw: dict[str, Any], interactive: bool) -> None:
    saved = chat.conv.id is not None
    chat.replace(chat.assistant.follow_on(chat.conv))
    _err("New conversation (the previous one stays in the history)." if saved else "Context cleared.")


def _retry(chat: Chat, arg: str, kw: dict[str, Any], interactive: bool) -> None:
    from assistant.cli.chat import _run_turn

    conv = chat.conv
    target = conv.retry_target()
    if target is None:
        _require_last(conv)  # raises: nothing to retry
        return
    text, replacing = target
    _run_turn(conv, text, kw["as_json"], kw, interactive, replace_last=replacing)


def _edit(chat: Chat, arg: str, kw: dict[str, Any], interactive: bool) -> None:
    from assistant.cli.chat import _run_turn

    conv = chat.conv
    _require_last(conv)
    text = arg or (_edit_line(conv.last_user_text) if interactive else "")
    if not text.strip():
        raise EnclaveError("Usage: /edit NEW TEXT.", "It replaces your last message and answers it again.")
    _run_turn(conv, text, kw["as_json"], kw, interactive, replace_last=True)


def _set(chat: Chat, arg: str, kw: dict[str, Any], interactive: bool) -> None:
    from assistant.app.commands import apply_set

    _err(apply_set(chat.conv, arg))


def _show(chat: Chat, arg: str, kw: dict[str, Any], interactive: bool) -> None:
    from assistant.app.commands import describe

    _err(describe(chat.conv))


def _rename(chat: Chat, arg: str, kw: dict[str, Any], interactive: bool) -> None:
    conv = chat.conv
    _require_saved(conv)
    chat.assistant.history.rename(conv.id, arg)
    _err(f"Renamed conversation {conv.id}.")


def _export(chat: Chat, arg: str, kw: dict[str, Any], interactive: bool) -> None:
    conv = chat.conv
    _require_saved(conv)
    from assistant.app.commands import parse_export

    target = parse_export(arg)
    path = Path(target.path).expanduser() if target.path else Path.cwd() / f"enclave-conversation-{conv.id}.md"
    chat.assistant.history.export(conv.id, "md", path, force=target.force)
    _err(f"Wrote {path}")


def _cloud(chat: Chat, arg: str, kw: dict[str, Any], interactive: bool) -> None:
    from assistant.cli.chat import _cloud_command

    _cloud_command(chat.conv, arg)


def _require_last(conv: Any) -> None:
    if not conv.can_replace_last:
        raise EnclaveError("There is no answer to replace yet.", "Ask something first.")


def _require_saved(conv: Any) -> None:
    if conv.id is None:
        raise EnclaveError("This conversation is not saved yet.", "It is saved with its first answer.")


def _edit_line(text: str | None) -> str:
    """Read a line that starts out as ``text`` (readline's pre-filled input)."""
    try:
        import readline
    except ImportError:  # pragma: no cover - no readline on this platform
        return _input("edit> ")
    readline.set_startup_hook(lambda: readline.insert_text(text or ""))
    try:
        return _input("edit> ")
    except (EOFError, KeyboardInterrupt):
        _err("")
        return ""
    finally:
        readline.set_startup_hook()


def _model(chat: Chat, arg: str, kw: dict[str, Any], interactive: bool) -> None:
    from assistant.app.commands import parse_model
    from assistant.app.models import ENGINE_NAMES, chat_models

    name, engine = parse_model(arg, ENGINE_NAMES)
    if name is None:
        conv = chat.conv
        for choice in chat_models(chat.assistant.settings):
            mark = "*" if (choice.name, choice.engine) == (conv.model.name, conv.engine.name) else " "
            _err(f"{mark} {choice.label}")
        _err("Switch with /model NAME [ENGINE] (a new conversation; this one stays in the history).")
        return
    new = chat.assistant.follow_on(chat.conv, name, engine)
    chat.replace(new)
    _err(f"Now chatting with {new.model.name} · {new.engine.name} (a new conversation).")


def _persona(chat: Chat, arg: str, kw: dict[str, Any], interactive: bool) -> None:
    from assistant.app.personas import list_personas, load_persona

    settings = chat.assistant.settings
    if not chat.conv.model.chat:
        from assistant.app.notices import base_model_persona_note

        _err(base_model_persona_note(chat.conv.model.name))
        return
    if not arg:
        _err(f"Personas: {', '.join(list_personas(settings))} (now: {chat.conv.persona}). Switch with /persona NAME.")
        return
    load_persona(settings, arg)  # an unknown persona fails here, before anything changes
    chat.replace(chat.assistant.follow_on(chat.conv, persona=arg))
    _err(f"Persona: {arg} (a new conversation).")


def _docs(chat: Chat, arg: str, kw: dict[str, Any], interactive: bool) -> None:
    """`/docs …`: the switch (shared parser), or add / sync with progress on stderr."""
    from assistant.app.commands import DocsAdd, DocsSync, parse_docs
    from assistant.app.documents import (
        Documents,
        collection_for,
        documents_state,
        report_line,
        switch_documents,
        use_collection,
    )
    from assistant.cli.docs import IndexProgress

    conv = chat.conv
    parsed = parse_docs(arg)
    if isinstance(parsed, DocsAdd | DocsSync):
        documents = Documents.of(conv)
        names = [parsed.collection] if parsed.collection else documents.names()
        if isinstance(parsed, DocsAdd):
            paths = [Path(p).expanduser() for p in parsed.paths]
            collection = parsed.collection or collection_for(paths)
            with IndexProgress() as progress:
                report = documents.add(paths, collection, progress)
            _err(report_line(report))
            _err(use_collection(conv, documents, collection))
            return
        if not names:
            raise EnclaveError("There are no document collections yet.", "Add some with /docs add PATH.")
        for name in names:
            with IndexProgress() as progress:
                _err(report_line(documents.sync(name, progress)))
        return
    if not parsed.strip() and conv.documents_on:
        _err(documents_state(conv))
        return
    _err(switch_documents(conv, parsed))


Handler = Callable[["Chat", str, dict[str, Any], bool], None]

#: What each command of :data:`assistant.app.commands.COMMANDS` does in the line chat.
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
    "docs": _docs,
    "rename": _rename,
    "export": _export,
    "cloud": _cloud,
}
