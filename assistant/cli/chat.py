"""`enclave ask` and `enclave chat`: one turn or many, streamed, local or (with consent) in the cloud."""

from __future__ import annotations

import json
import signal
import sys
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import click

from assistant.cli.common import (
    F,
    _err,
    _latest,
    _settings,
    continue_option,
    docs_option,
    model_options,
)
from assistant.core.errors import EnclaveError
from assistant.core.text import displayable, inline

if TYPE_CHECKING:
    from assistant.app.structured import OutputFormat


class Chat:
    """The assistant and the conversation a command is in; `/new`, `/model` and
    `/persona` replace the conversation, and whichever is current is closed at the end."""

    def __init__(self, assistant: Any, conv: Any) -> None:
        self.assistant = assistant
        self.conv = conv

    def replace(self, conv: Any) -> None:
        self.conv.close()
        self.conv = conv

    def close(self) -> None:
        self.conv.close()


def _open_chat(ctx: click.Context, kw: dict[str, Any], resume: int | None = None, one_shot: bool = False) -> Chat:
    from assistant.app.turns import Assistant

    settings = _settings(
        ctx,
        model=kw.get("model"),
        persona=kw.get("persona"),
        max_tokens=kw.get("max_tokens"),
        temperature=kw.get("temperature"),
        seed=kw.get("seed"),
        context_window=kw.get("context_window"),
        threads=kw.get("threads"),
        context_policy=kw.get("context_policy"),
        device=kw.get("device"),
        power=kw.get("power"),
        repeat_penalty=kw.get("repeat_penalty"),
        docs_answer_mode=kw.get("answer_mode"),
    )
    if one_shot and settings.kv_cache == "auto":
        # One question, then the process ends: no later turn can reuse a preallocated
        # window, so the KV cache is sized to this one (docs/engine.md).
        settings = replace(settings, kv_cache="grow")
    assistant = Assistant(settings)
    # Engines are closed before the interpreter exits (LiteRT-LM must release its
    # conversations before its engine, or its native logger complains on stderr).
    ctx.call_on_close(assistant.close)
    if resume == 0:  # --continue without an id: the most recent conversation
        resume = _latest(assistant.store)
    system = kw.get("system")
    conv = assistant.conversation(
        kw.get("model"),
        kw.get("engine"),
        kw.get("persona"),
        resume=resume,
        save=not kw.get("no_save"),
        system=system if resume is None else None,
    )
    for notice in assistant.notices:  # a GPU that fell back to the CPU, a release reverted
        _err(click.style("note: ", fg="yellow") + notice)
    from assistant.app.privacy import startup_notice

    seal_notice = startup_notice(conv.engine)
    if seal_notice:  # one line: the system refused part of the seal (doctor --privacy says which)
        _err(click.style(seal_notice, fg="yellow"))
    from assistant.app.notices import window_note

    capped = window_note(settings, conv.window, conv.model.engine, asked=kw.get("context_window") is not None)
    if capped:  # --ctx above what the model or bundle holds: said, not silently lowered
        _err(click.style("note: ", fg="yellow") + capped)
    chat = Chat(assistant, conv)
    # Closed first (callbacks run last-in, first-out): a cloud switch left on is
    # turned off, and recorded, when the command ends.
    ctx.call_on_close(chat.close)
    if resume is not None:
        # What the command line names wins over what the conversation was left with.
        for note in conv.restore_notices:
            _err(click.style("note: ", fg="yellow") + note)
        if system:
            conv.set_system(system)
        conv.set_sampling(temperature=kw.get("temperature"), repetition_penalty=kw.get("repeat_penalty"))
    if kw.get("paths") and not kw.get("docs"):
        kw["docs"] = "all"  # --path alone means: documents on, these files
    if kw.get("docs"):
        from assistant.app.documents import switch_documents

        switch_documents(conv, kw["docs"], assistant.store, kw.get("paths") or ())
    return chat


def _print_sources(result: Any) -> None:
    """Where each quoted or checked sentence is, then the passages behind the answer:
    number, file, page, lines, and what each did."""
    if not result.citations:
        return
    from assistant.app.notices import sentence_lines, source_status

    lines = sentence_lines(result)
    if lines:
        click.echo(click.style("\nWhere it says so:", bold=True))
        for line in lines:
            click.echo(inline(line))
    click.echo(click.style("\nSources:", bold=True))
    for c in result.citations:
        status = source_status(c)
        mark = click.style(f"  ({status})", dim=True)
        click.echo(f"[{c['n']}] {inline(c['location'])}{mark}")


def _ask_consent(event: Any, kw: dict[str, Any], interactive: bool) -> Any:
    """Show exactly what would be sent and ask; the front end's :class:`Decision`."""
    from assistant.app.turns import Decision

    request = event.request
    _err(click.style("── cloud request preview " + "─" * 30, fg="yellow"))
    _err(displayable(request.preview()))
    _err(click.style("─" * 55, fg="yellow"))
    if kw.get("yes_cloud"):
        _err(f"{event.question} yes (--yes-cloud)")
        return Decision("send", "--yes-cloud flag")
    if not interactive:
        _err(event.question)
        _err(
            click.style("not sent: ", fg="yellow")
            + f"nothing goes to {request.endpoint.label} without consent, and there is no terminal to ask on. "
            "Pass --yes-cloud to consent in advance."
        )
        return Decision("refuse", "stdin is not a terminal and --yes-cloud was not given")
    toggle = "off" if request.redacted else "on"
    # The prompt waits for a person: Ctrl-C here means "no", as Esc does in the TUI.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        answer = click.prompt(
            f"{event.question} [y]es / [N]o / [r] redaction {toggle}", default="n", show_default=False, err=True
        )
    except (KeyboardInterrupt, click.Abort):
        answer = "interrupted"
    finally:
        signal.signal(signal.SIGINT, previous)
    match answer.strip().lower():
        case "r":
            return Decision("toggle-redaction", "interactive prompt (r)")
        case "y" | "yes":
            return Decision("send", "interactive prompt (y)")
        case "interrupted":
            _err(click.style("not sent.", fg="yellow"))
            return Decision("refuse", "interrupted at the prompt (Ctrl-C)")
        case _:
            _err(click.style("not sent.", fg="yellow"))
            return Decision("refuse", "declined at the prompt")


class _TurnPrinter:
    """One turn's events on the terminal: the answer streams to stdout (model text is
    data: no escape sequence), notes and errors to stderr."""

    def __init__(self, conv: Any, as_json: bool, kw: dict[str, Any], interactive: bool) -> None:
        self.conv = conv
        self.as_json = as_json
        self.kw = kw
        self.interactive = interactive
        self.result: Any = None
        self.shown = False  # text of the current attempt written to stdout
        self.noted: set[str] = set()  # notices already shown while the turn ran
        self.closed: BrokenPipeError | None = None

    def write(self, piece: str) -> None:
        try:
            sys.stdout.write(displayable(piece))
            sys.stdout.flush()
        except BrokenPipeError as exc:
            # No one reads the answer any more: stop it (the engine must not be
            # closed under its decode thread), then end quietly.
            self.closed = exc
            self.conv.cancel()
        self.shown = True

    def show(self, event: Any) -> None:
        from assistant.app.turns import AttemptFailed, ConsentNeeded, TurnFinished
        from assistant.core.events import Notice, TextDelta

        match event:
            case TextDelta(text=piece) if not self.as_json and self.closed is None:
                self.write(piece)
            case Notice(text=note, level=level):
                colour = {"info": "green", "warning": "yellow", "error": "red"}[level]
                _err(click.style("note: ", fg=colour) + displayable(note))
                self.noted.add(note)
            case AttemptFailed(error=exc):
                if self.shown:
                    sys.stdout.write("\n")
                    self.shown = False
                _err(click.style("error: ", fg="red", bold=True) + displayable(exc.message))
            case ConsentNeeded():
                event.answer(_ask_consent(event, self.kw, self.interactive))
            case TurnFinished(result=finished):
                self.result = finished

    def finish(self) -> None:
        """After the turn: the JSON object, or the end of the answer, its sources, notes and footer."""
        from assistant.app.notices import answer_footer

        result = self.result
        if self.as_json:
            click.echo(json.dumps(result.as_dict(), ensure_ascii=False))
            return
        if self.shown and not result.text.endswith("\n"):
            sys.stdout.write("\n")
        sys.stdout.flush()
        if result.finish_reason == "cancelled":
            _err(click.style("[cancelled]", fg="yellow"))
        _print_sources(result)
        for notice in result.notices:
            if notice not in self.noted:
                _err(click.style("note: ", fg="yellow") + displayable(notice))
        if result.usage is not None:
            _err(click.style(answer_footer(result, detail=True), dim=True))


def _run_turn(
    conv: Any,
    text: str,
    as_json: bool,
    kw: dict[str, Any] | None = None,
    interactive: bool = False,
    replace_last: bool = False,
    output: OutputFormat | None = None,
) -> Any:
    """Run one turn (routing, consent, saving: :meth:`Conversation.turn`) and show it:
    the answer streams to stdout (or one JSON object), notes go to stderr; Ctrl-C
    cancels the answer, wherever the main thread happens to be. When stdout is closed
    (``| head``) the answer is cancelled and :class:`BrokenPipeError` raised after it
    stopped, for the error boundary to end quietly. With ``output`` (a structured answer)
    an answer that does not match its format ends the command with exit status 4."""
    from assistant.app.turns import stream_in_thread

    printer = _TurnPrinter(conv, as_json, kw or {}, interactive)
    previous = signal.signal(signal.SIGINT, lambda *_: conv.cancel())
    try:
        for event in stream_in_thread(conv, lambda: conv.turn(text, replace_last=replace_last, output=output)):
            printer.show(event)
    finally:
        signal.signal(signal.SIGINT, previous)
        conv.session.reset_cancel()
    if printer.closed is not None:
        raise printer.closed
    printer.finish()
    result = printer.result
    if result.error:
        raise result.error
    if output is not None and result.output is not None and not result.output.valid:
        from assistant.app.structured import invalid

        raise invalid(output, result.output)
    return result


# --------------------------------------------------------------------------- cloud switch
def cloud_options(func: F) -> F:
    """Cloud fallback switches for `ask` and `chat` (off unless given)."""
    func = click.option(
        "--yes-cloud",
        is_flag=True,
        help="Consent in advance to each cloud request (for scripts); the preview is still printed.",
    )(func)
    return click.option(
        "--cloud", is_flag=True, help="Send to the configured cloud endpoint (preview and consent first)."
    )(func)


def _cloud_line(settings: Any) -> str:
    from assistant.app.cloud import cloud_line

    return cloud_line(settings)


def _cloud_switch(conv: Any, on: bool, how: str) -> None:
    if on:
        ep = conv.cloud.enable(how, conv.id)
        _err(click.style(f"cloud: ON for this conversation — {ep.label} (each request is shown first)", fg="yellow"))
    else:
        conv.cloud.disable(how, conv.id)
        _err(click.style("cloud: off — offline, answers run on this device", fg="green"))


def _cloud_command(conv: Any, arg: str) -> None:
    """`/cloud on`, `/cloud off`, `/cloud` (which is it now) in `enclave chat`."""
    if arg == "on":
        _cloud_switch(conv, True, "chat /cloud on")
    elif arg == "off":
        _cloud_switch(conv, False, "chat /cloud off")
    elif arg == "":
        state = f"ON ({conv.cloud.endpoint.label})" if conv.cloud_enabled else "off"
        _err(f"cloud: {state} — {_cloud_line(conv.settings)}")
    else:
        raise EnclaveError(f"Unknown cloud command {arg!r}.", "Use /cloud on, /cloud off or /cloud.")


def _open_chat_or_cloud(
    ctx: click.Context, kw: dict[str, Any], resume: int | None = None, one_shot: bool = False
) -> Chat:
    """The conversation; when the local model cannot load and cloud fallback is
    configured, one whose local turns fail with that error, so each turn offers the
    cloud (with preview and consent) instead of the command ending."""
    from assistant.app.turns import Assistant
    from assistant.core.errors import EngineError, EngineUnavailable, ModelCorrupt, ModelNotInstalled

    try:
        return _open_chat(ctx, kw, resume, one_shot)
    except (ModelNotInstalled, ModelCorrupt, EngineError, EngineUnavailable) as exc:
        settings = _settings(ctx, model=kw.get("model"), persona=kw.get("persona"), max_tokens=kw.get("max_tokens"))
        from assistant.app.cloud import configured

        if resume is not None or not configured(settings):
            raise
        _err(click.style("error: ", fg="red", bold=True) + exc.message)
        _err("  The local model cannot run; cloud fallback is configured, so each turn can be offered to it.")
        assistant = Assistant(settings)
        ctx.call_on_close(assistant.close)
        chat = Chat(assistant, assistant.conversation_without_model(exc, kw.get("persona")))
        ctx.call_on_close(chat.close)
        return chat


def turn_options(func: F) -> F:
    """What `ask` and `chat` set for the conversation beyond the model options."""
    return click.option("-s", "--system", help="System prompt for this conversation (instead of the persona's).")(func)


def format_options(func: F) -> F:
    """``--schema``, ``--regex`` and ``--grammar``: the format of a structured answer."""
    func = click.option(
        "--grammar",
        metavar="FILE.lark",
        help="Constrain the answer to a Lark grammar (llguidance's dialect; onnx engine only).",
    )(func)
    func = click.option(
        "--regex", metavar="PATTERN", help="Constrain the answer to match a regular expression (all of it)."
    )(func)
    return click.option(
        "--schema",
        metavar="FILE.json",
        help="Constrain the answer to JSON matching this JSON Schema (- reads it from stdin); --json adds the parsed object.",
    )(func)


def _output_format(ctx: click.Context, kw: dict[str, Any], question: str) -> OutputFormat | None:
    """The structured format asked for (None for free text), checked before any model loads."""
    flags = [f"--{name}" for name in ("schema", "regex", "grammar") if kw.get(name) is not None]
    if not flags:
        return None
    clash = [name for name, on in (("--docs", kw.get("docs") or kw.get("paths")), ("--cloud", kw.get("cloud"))) if on]
    if clash:
        raise UsageProblem(
            f"{flags[0]} cannot be used with {' or '.join(clash)}: a structured answer is made by the local "
            "model from your question alone.",
            f"Drop {' and '.join(clash)}, or ask without {flags[0]}.",
        )
    if kw.get("schema") == "-" and question == "-":
        raise UsageProblem("The question and the schema cannot both come from stdin.", "Give one of them as a file.")
    from assistant.app.structured import output_format

    settings = _settings(ctx, max_tokens=kw.get("max_tokens"))
    fmt = output_format(schema=kw.get("schema"), regex=kw.get("regex"), grammar=kw.get("grammar"),
                        max_tokens=settings.max_tokens)  # fmt: skip
    for notice in fmt.notices if fmt is not None else ():
        _err(click.style("note: ", fg="yellow") + displayable(notice))
    return fmt


class UsageProblem(EnclaveError):
    """Options that cannot be used together (exit 2, as click's usage errors)."""

    exit_code = 2


@click.command()
@model_options
@turn_options
@docs_option
@cloud_options
@format_options
@click.argument("prompt", nargs=-1)
@click.pass_context
def ask(ctx: click.Context, /, prompt: tuple[str, ...], **kw: Any) -> None:
    """Ask one question and stream the answer.

    The answer goes to stdout; a summary line (model, engine, prompt tokens, TTFT,
    decode speed) goes to stderr. Use "-" to read the question from stdin.
    With --docs the answer comes from your indexed documents and cites them.
    --schema, --regex or --grammar constrain the answer to a format and check it
    again when it ends (exit status 4 when it does not match, e.g. cut at --max-tokens).
    """
    if not prompt and kw.get("docs") not in (None, "all"):
        # `ask --docs "question"`: the option took the question as its value.
        prompt, kw["docs"] = (kw["docs"],), "all"
    text = " ".join(prompt)
    output = _output_format(ctx, kw, text)
    if text == "-":
        text = sys.stdin.read()
    if not text.strip():
        raise EnclaveError("The question is empty.", 'Ask something, e.g. enclave ask "What is RAID 5?"')
    opener = _open_chat if output is not None else _open_chat_or_cloud
    conv = opener(ctx, kw, one_shot=True).conv
    if not conv.model.chat:
        from assistant.app.notices import base_model_note

        _err(click.style(f"note: {base_model_note(conv.model.name)}", fg="yellow"))
    if kw.get("cloud"):
        _cloud_switch(conv, True, "ask --cloud")
    result = _run_turn(conv, text, kw["as_json"], kw, interactive=sys.stdin.isatty(), output=output)
    if result.finish_reason == "cancelled":
        # A script can tell a cancelled answer from a whole one: 128 + SIGINT, as shells do.
        raise SystemExit(130)


@click.command()
@model_options
@turn_options
@docs_option
@cloud_options
@continue_option
@click.pass_context
def chat(ctx: click.Context, /, resume: int | None, **kw: Any) -> None:
    """Multi-turn chat in the terminal (Ctrl-C cancels an answer, Ctrl-D or /bye quits).

    When stdin is not a terminal, each line is one user turn. The KV cache is
    kept between turns, so each turn prefills only its new tokens. Conversations
    are saved; `--continue` resumes the latest one (or `--continue ID`) with its
    documents and settings. Lines starting with / are commands, never sent to the
    model: /help lists them (/set, /retry, /edit, /model, /docs, /cloud, /bye …).
    """
    from assistant.cli.repl import run_chat

    kw.setdefault("as_json", False)
    run_chat(ctx, _open_chat_or_cloud(ctx, kw, resume), kw)
