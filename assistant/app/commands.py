"""The slash commands of a chat, written once for `enclave chat` and the terminal UI.

A line that starts with ``/`` is a command and is never sent to the model (as in
Ollama's REPL); ``//`` at the start sends the rest as a message that begins with
``/``. This module parses lines, holds the one table of commands (the help of both
front ends is made from it) and applies the commands that only change the
conversation (``/set``, ``/show``); front ends act on the others with their own
means (a picker, a dialog, a prompt), always through :mod:`assistant.app`.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from assistant.core.errors import EnclaveError

if TYPE_CHECKING:
    from assistant.app.turns import Conversation

Frontend = Literal["chat", "tui"]
BOTH: tuple[Frontend, ...] = ("chat", "tui")


@dataclass(frozen=True)
class CommandSpec:
    """One command: its name, other names it answers to, usage and what it does."""

    name: str
    usage: str
    help: str
    aliases: tuple[str, ...] = ()
    frontends: tuple[Frontend, ...] = BOTH


#: Every command, in the order the help lists them.
COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec("help", "/help", "this list of commands", aliases=("?",)),
    CommandSpec("new", "/new", "a new conversation with the same model, settings and documents"),
    CommandSpec("clear", "/clear", "forget the context and start over (same as /new; this one stays in the history)"),
    CommandSpec("model", "/model [NAME [ENGINE]]", "choose a model (and engine: onnx or litert)"),
    CommandSpec("retry", "/retry", "answer the last message again (replaces the last answer)", aliases=("regenerate",)),
    CommandSpec(
        "edit",
        "/edit [TEXT]",
        "change your last message and answer it again (alone: edit it where you type)",
    ),
    CommandSpec(
        "set",
        "/set temperature T · /set repeat-penalty P · /set system TEXT",
        "sampling (0 = greedy), repetition penalty (1 = off), or this conversation's system prompt",
    ),
    CommandSpec("show", "/show", "model, engine, window, sampling, system prompt and documents of this conversation"),
    CommandSpec(
        "docs",
        "/docs [NAME…|all|off] [--path GLOB] · /docs add PATH [-c NAME] · /docs sync [NAME]",
        "answer from your documents (with sources), or stop; index a folder or bring collections up to date",
    ),
    CommandSpec("persona", "/persona [NAME]", "choose a persona (a new conversation)"),
    CommandSpec("rename", "/rename TITLE", "rename this conversation"),
    CommandSpec(
        "export",
        "/export [PATH] [--force]",
        "write this conversation as Markdown (--force: replace a link or special file)",
    ),
    CommandSpec("cloud", "/cloud [on|off]", "cloud fallback for this conversation (each request is shown first)"),
    CommandSpec("bye", "/bye", "leave (also /exit, /quit, Ctrl-D)", aliases=("exit", "quit"), frontends=("chat",)),
    CommandSpec("bye", "/bye", "leave (also /exit, /quit, Ctrl+Q)", aliases=("exit", "quit"), frontends=("tui",)),
)

_BY_NAME: dict[str, str] = {}
for _spec in COMMANDS:
    for _word in (_spec.name, *_spec.aliases):
        _BY_NAME[_word] = _spec.name


@dataclass(frozen=True)
class Command:
    """A parsed command line: the command's canonical ``name`` and the rest of the line."""

    name: str
    arg: str = ""


def parse_line(line: str) -> Command | str:
    """A :class:`Command`, or the text to send to the model.

    Raises :class:`EnclaveError` for a line that looks like a command but is not one
    (it is not sent either: ``/hlep`` is a typo, not a question).
    """
    text = line.strip()
    if not text.startswith("/"):
        return line
    if text.startswith("//"):
        return text[1:]
    word, _, rest = text[1:].partition(" ")
    name = _BY_NAME.get(word.lower())
    if name is None:
        raise EnclaveError(
            f"Unknown command /{word}. Type /help for the list.",
            "To send a message that begins with '/', start it with '//'.",
        )
    return Command(name, rest.strip())


def help_rows(frontend: Frontend) -> list[tuple[str, str]]:
    """(usage, what it does) for each command ``frontend`` offers, in order."""
    return [(spec.usage, spec.help) for spec in COMMANDS if frontend in spec.frontends]


def help_text(frontend: Frontend) -> str:
    """The commands as plain text, one per line (the line chat's /help)."""
    rows = help_rows(frontend)
    width = min(34, max(len(usage) for usage, _ in rows))
    lines = []
    for usage, what in rows:
        if len(usage) > width:
            lines.append(usage)
            lines.append(" " * (width + 2) + what)
        else:
            lines.append(f"{usage:<{width}}  {what}")
    lines.append("")
    lines.append("Start a line with // to send a message that begins with /.")
    return "\n".join(lines)


# --------------------------------------------------------------------------- /model
def parse_model(arg: str, engines: tuple[str, ...]) -> tuple[str | None, str | None]:
    """``/model NAME [ENGINE]`` (or ``NAME@ENGINE``): the name and engine, each None
    when not given."""
    words = arg.replace("@", " ").split()
    if not words:
        return None, None
    if len(words) > 2 or (len(words) == 2 and words[1] not in engines):
        raise EnclaveError(
            f"Usage: /model NAME [ENGINE] (engines: {', '.join(engines)}).",
            "`/model` alone lists the installed models.",
        )
    return words[0], words[1] if len(words) == 2 else None


# --------------------------------------------------------------------------- /docs
@dataclass(frozen=True)
class DocsAdd:
    """``/docs add PATH… [-c NAME]``: index paths into a collection (default: the folder's name)."""

    paths: tuple[str, ...]
    collection: str | None = None


@dataclass(frozen=True)
class DocsSync:
    """``/docs sync [NAME]``: bring one collection (or every one) up to date."""

    collection: str | None = None


def parse_docs(arg: str) -> DocsAdd | DocsSync | str:
    """``/docs add …`` and ``/docs sync …``; anything else is the documents switch,
    returned as it is for :func:`assistant.app.documents.parse_switch`."""
    word, _, rest = arg.strip().partition(" ")
    if word == "sync":
        names = rest.split()
        if len(names) > 1:
            raise EnclaveError("Usage: /docs sync [NAME].", "Without a name every collection is synced.")
        return DocsSync(names[0] if names else None)
    if word != "add":
        return arg
    try:
        words = shlex.split(rest)
    except ValueError as exc:
        raise EnclaveError(
            f"Cannot read the path: {exc}.", 'Quote a path with spaces: /docs add "My Manuals".'
        ) from exc
    collection = None
    paths: list[str] = []
    i = 0
    while i < len(words):
        if words[i] in ("-c", "--collection") and i + 1 < len(words):
            collection = words[i + 1]
            i += 2
            continue
        paths.append(words[i])
        i += 1
    if not paths:
        raise EnclaveError(
            "Usage: /docs add PATH [-c NAME].", "Name a file or folder to index, e.g. /docs add ~/manuals."
        )
    return DocsAdd(tuple(paths), collection)


# --------------------------------------------------------------------------- /export
@dataclass(frozen=True)
class Export:
    """``/export [PATH] [--force]``: where to write (None: a default name) and whether
    a path that is not a regular file may be replaced."""

    path: str | None
    force: bool = False


def parse_export(arg: str) -> Export:
    """``/export [PATH] [--force]``. The path is the rest of the line, so it may hold
    spaces; ``--force`` (or ``-f``) is taken as a word before or after it, never as part
    of the file name, and quotes around the path are dropped."""
    words = arg.strip()
    force = False
    for flag in ("--force", "-f"):
        if words == flag:
            words, force = "", True
        elif words.startswith(flag + " "):
            words, force = words[len(flag) :].strip(), True
        elif words.endswith(" " + flag):
            words, force = words[: -len(flag)].strip(), True
    path = _unquote(words)
    if path.startswith("-"):
        raise EnclaveError(
            f"Unknown option for /export: {path.split()[0]}.",
            "Usage: /export [PATH] [--force]; write ./-name for a file whose name starts with -.",
        )
    return Export(path or None, force)


# --------------------------------------------------------------------------- /set
#: What ``/set`` changes, under every name people type for it (Ollama's included).
SET_NAMES = {
    "temperature": "temperature",
    "temp": "temperature",
    "repeat-penalty": "repetition_penalty",
    "repeat_penalty": "repetition_penalty",
    "repetition-penalty": "repetition_penalty",
    "repetition_penalty": "repetition_penalty",
    "system": "system",
}
SET_USAGE = "/set temperature T (0–2), /set repeat-penalty P (1 = off), /set system TEXT"


def apply_set(conv: Conversation, arg: str) -> str:
    """Apply ``/set NAME VALUE`` to ``conv`` (saved with the conversation); the sentence to show."""
    words = arg.split(None, 1)
    if words and words[0] == "parameter":  # Ollama's spelling: /set parameter temperature 0.7
        words = words[1].split(None, 1) if len(words) > 1 else []
    if len(words) < 2 or words[0].lower() not in SET_NAMES:
        raise EnclaveError(f"Usage: {SET_USAGE}.", "/show lists the current values.")
    name, value = SET_NAMES[words[0].lower()], words[1].strip()
    if name == "system":
        conv.set_system(_unquote(value))
        return "System prompt set for this conversation (the next answer uses it)."
    try:
        number = float(value)
    except ValueError:
        raise EnclaveError(f"{words[0]} takes a number, not {value!r}.", f"Usage: {SET_USAGE}.") from None
    if name == "temperature":
        conv.set_sampling(temperature=number)
        return f"temperature = {number:g}" + (
            " (greedy: the same question gives the same answer)" if number == 0 else ""
        )
    conv.set_sampling(repetition_penalty=number)
    return f"repeat penalty = {number:g}" + (" (off)" if number == 1 else "")


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def describe(conv: Conversation) -> str:
    """``/show``: what this conversation runs with, one fact per line."""
    from assistant.app.documents import documents_state

    system = " ".join(conv.system.split())
    lines = [
        f"model: {conv.model.name} · {conv.engine.name} · window {conv.window:,} tokens"
        + ("" if conv.model.chat else " (base model: continues text)"),
        "conversation: "
        + (
            str(conv.id)
            if conv.id is not None
            else "new (saved with the first answer)"
            if conv.store is not None
            else "not saved (--no-save)"
        )
        + f" · persona {conv.persona}",
        f"temperature {conv.temperature:g} · repeat penalty {conv.repetition_penalty:g}"
        f" · answers up to {conv.settings.max_tokens} tokens",
        f"system prompt: {system[:100] + ' …' if len(system) > 100 else system or '(none)'}",
        documents_state(conv),
        "cloud: " + (f"on ({conv.cloud.endpoint.label})" if conv.cloud_enabled else "off — answers run on this device"),
    ]
    return "\n".join(lines)
