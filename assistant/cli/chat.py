"""`enclave ask` and `enclave chat`: one turn or many, streamed, local or (with consent) in the cloud."""

from __future__ import annotations

import json
import signal
import sys
from typing import Any

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


def _open_conversation(ctx: click.Context, kw: dict[str, Any], resume: int | None = None) -> Any:
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
    )
    assistant = Assistant(settings)
    # Engines are closed before the interpreter exits (LiteRT-LM must release its
    # conversations before its engine, or its native logger complains on stderr).
    ctx.call_on_close(assistant.close)
    if resume == 0:  # --continue without an id: the most recent conversation
        resume = _latest(assistant.store)
    conv = assistant.conversation(
        kw.get("model"), kw.get("engine"), kw.get("persona"), resume=resume, save=not kw.get("no_save")
    )
    for notice in assistant.notices:  # a GPU that fell back to the CPU, a release reverted
        _err(click.style("note: ", fg="yellow") + notice)
    # Closed first (callbacks run last-in, first-out): a cloud switch left on is
    # turned off, and recorded, when the command ends.
    ctx.call_on_close(conv.close)
    if kw.get("docs"):
        from assistant.app.documents import switch_documents

        switch_documents(conv, kw["docs"], assistant.store)
    return conv


def _print_sources(result: Any) -> None:
    """The passages behind an answer: number, file, page, lines, and what each did."""
    if not result.citations:
        return
    click.echo(click.style("\nSources:", bold=True))
    from assistant.app.notices import source_status
    from assistant.retrieval.location import describe

    for c in result.citations:
        where = describe(c["path"], c["page"], c["line_start"], c["line_end"], c["unit"])
        status = source_status(c)
        mark = "" if status == "cited" else click.style(f"  ({status})", dim=True)
        click.echo(f"[{c['n']}] {where}{mark}")


def _ask_consent(event: Any, kw: dict[str, Any], interactive: bool) -> Any:
    """Show exactly what would be sent and ask; the front end's :class:`Decision`."""
    from assistant.app.turns import Decision

    request = event.request
    _err(click.style("── cloud request preview " + "─" * 30, fg="yellow"))
    _err(request.preview())
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


def _run_turn(conv: Any, text: str, as_json: bool, kw: dict[str, Any] | None = None, interactive: bool = False) -> Any:
    """Run one turn (routing, consent, saving: :meth:`Conversation.turn`) and show it:
    the answer streams to stdout (or one JSON object), notes go to stderr; Ctrl-C
    cancels the answer, wherever the main thread happens to be."""
    from assistant.app.notices import answer_footer
    from assistant.app.turns import AttemptFailed, ConsentNeeded, Notice, TurnFinished, stream_in_thread
    from assistant.core.events import TextDelta

    kw = kw or {}
    result: Any = None
    shown = False  # text of the current attempt written to stdout
    previous = signal.signal(signal.SIGINT, lambda *_: conv.cancel())
    try:
        for event in stream_in_thread(conv, lambda: conv.turn(text)):
            match event:
                case TextDelta(text=piece) if not as_json:
                    sys.stdout.write(piece)
                    sys.stdout.flush()
                    shown = True
                case Notice(text=note, level=level):
                    colour = {"info": "green", "warning": "yellow", "error": "red"}[level]
                    _err(click.style("note: ", fg=colour) + note)
                case AttemptFailed(error=exc):
                    if shown:
                        sys.stdout.write("\n")
                        shown = False
                    _err(click.style("error: ", fg="red", bold=True) + exc.message)
                case ConsentNeeded():
                    event.answer(_ask_consent(event, kw, interactive))
                case TurnFinished(result=finished):
                    result = finished
    finally:
        signal.signal(signal.SIGINT, previous)
        conv.session.reset_cancel()
    if as_json:
        click.echo(json.dumps(result.as_dict(), ensure_ascii=False))
    else:
        if shown and not result.text.endswith("\n"):
            sys.stdout.write("\n")
        sys.stdout.flush()
        if result.finish_reason == "cancelled":
            _err(click.style("[cancelled]", fg="yellow"))
        _print_sources(result)
        for notice in result.notices:
            _err(click.style("note: ", fg="yellow") + notice)
        if result.usage is not None:
            _err(click.style(answer_footer(result, detail=True), dim=True))
    if result.error:
        raise result.error
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
    from assistant.cloud.policy import configured, endpoint

    if not configured(settings):
        return "off (not configured)"
    return f"off until enabled per conversation (configured: {endpoint(settings).label})"


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


def _open_conversation_or_cloud(ctx: click.Context, kw: dict[str, Any], resume: int | None = None) -> Any:
    """The conversation; when the local model cannot load and cloud fallback is
    configured, one whose local turns fail with that error, so each turn offers the
    cloud (with preview and consent) instead of the command ending."""
    from assistant.app.turns import Assistant
    from assistant.core.errors import EngineError, EngineUnavailable, ModelCorrupt, ModelNotInstalled

    try:
        return _open_conversation(ctx, kw, resume)
    except (ModelNotInstalled, ModelCorrupt, EngineError, EngineUnavailable) as exc:
        settings = _settings(ctx, model=kw.get("model"), persona=kw.get("persona"), max_tokens=kw.get("max_tokens"))
        from assistant.cloud.policy import configured

        if resume is not None or not configured(settings):
            raise
        _err(click.style("error: ", fg="red", bold=True) + exc.message)
        _err("  The local model cannot run; cloud fallback is configured, so each turn can be offered to it.")
        assistant = Assistant(settings)
        ctx.call_on_close(assistant.close)
        conv = assistant.conversation_without_model(exc, kw.get("persona"))
        ctx.call_on_close(conv.close)
        return conv


@click.command()
@model_options
@docs_option
@cloud_options
@click.argument("prompt", nargs=-1)
@click.pass_context
def ask(ctx: click.Context, prompt: tuple[str, ...], **kw: Any) -> None:
    """Ask one question and stream the answer.

    The answer goes to stdout; a summary line (model, engine, prompt tokens, TTFT,
    decode speed) goes to stderr. Use "-" to read the question from stdin.
    With --docs the answer comes from your indexed documents and cites them.
    """
    if not prompt and kw.get("docs") not in (None, "all"):
        # `ask --docs "question"`: the option took the question as its value.
        prompt, kw["docs"] = (kw["docs"],), "all"
    text = " ".join(prompt)
    if text == "-":
        text = sys.stdin.read()
    if not text.strip():
        raise EnclaveError("The question is empty.", 'Ask something, e.g. enclave ask "What is RAID 5?"')
    conv = _open_conversation_or_cloud(ctx, kw)
    if kw.get("cloud"):
        _cloud_switch(conv, True, "ask --cloud")
    _run_turn(conv, text, kw["as_json"], kw, interactive=sys.stdin.isatty())


@click.command()
@model_options
@docs_option
@cloud_options
@continue_option
@click.pass_context
def chat(ctx: click.Context, resume: int | None, **kw: Any) -> None:
    """Multi-turn chat in the terminal (Ctrl-C cancels an answer, Ctrl-D quits).

    When stdin is not a terminal, each line is one user turn. The KV cache is
    kept between turns, so each turn prefills only its new tokens. Conversations
    are saved; `--continue` resumes the latest one (or `--continue ID`).
    A line `/cloud on` or `/cloud off` switches cloud fallback for this chat.
    """
    kw.setdefault("as_json", False)
    conv = _open_conversation_or_cloud(ctx, kw, resume)
    interactive = sys.stdin.isatty()
    if interactive:
        _err(
            click.style(f"Enclave · {conv.model.name} · {conv.engine.name} · offline", bold=True)
            + click.style("  (Ctrl-C cancels an answer, Ctrl-D quits)", dim=True)
        )
        if conv.messages:
            _err(click.style(f"Continuing conversation {conv.id} ({len(conv.messages)} messages).", dim=True))
        if not conv.model.chat:
            _err(click.style("note: this is a base model; it continues text rather than answering.", fg="yellow"))
    if kw.get("cloud"):
        _cloud_switch(conv, True, "chat --cloud")
    while True:
        try:
            line = input(">>> ") if interactive else sys.stdin.readline()
        except EOFError:
            break
        except KeyboardInterrupt:
            _err("")
            continue
        if not interactive and line == "":
            break
        line = line.rstrip("\n")
        if not line.strip():
            continue
        try:
            if line.startswith("/docs"):
                _docs_command(conv, line)
                continue
            if line.strip().split(" ")[0] == "/cloud":
                _cloud_command(conv, line.strip().removeprefix("/cloud").strip())
                continue
            _run_turn(conv, line, kw["as_json"], kw, interactive)
        except EnclaveError as exc:
            _err(click.style("error: ", fg="red", bold=True) + exc.message)
            if exc.hint:
                _err("  " + exc.hint)
            if not interactive:
                raise


def _docs_command(conv: Any, line: str) -> None:
    """`/docs [COLLECTION|all|off]` in `enclave chat`; `/docs` alone says which are on."""
    from assistant.app.documents import documents_state, switch_documents

    arg = line[len("/docs") :].strip()
    if not arg and conv.documents_on:
        _err(documents_state(conv))
        return
    _err(switch_documents(conv, arg))
