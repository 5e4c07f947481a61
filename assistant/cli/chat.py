"""`enclave ask` and `enclave chat`: one turn or many, streamed, local or (with consent) in the cloud."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable
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
        _use_documents(conv, assistant, kw["docs"])
    return conv


def _use_documents(conv: Any, assistant: Any, docs: str) -> None:
    """Turn documents on for ``conv``: ``docs`` is a collection name or "all"."""
    from assistant.retrieval import open_library

    library = open_library(assistant.settings, assistant.store)
    names = None if docs in ("all", "on") else [docs]
    conv.use_documents(library, names)
    if not library.collections():
        raise EnclaveError("There are no indexed documents yet.", "Add some with `enclave docs add PATH`.")


def _print_sources(result: Any) -> None:
    """The passages behind an answer: number, file, page, lines; cited ones marked."""
    if not result.citations:
        return
    click.echo(click.style("\nSources:", bold=True))
    from assistant.retrieval.location import describe

    for c in result.citations:
        where = describe(c["path"], c["page"], c["line_start"], c["line_end"], c["unit"])
        if c["cited"]:
            mark = ""
        elif c.get("supports"):
            mark = click.style("  (not cited, but the answer matches it)", dim=True)
        else:
            mark = click.style("  (given, not used)", dim=True)
        click.echo(f"[{c['n']}] {where}{mark}")


def _summary(result: Any) -> str:
    u = result.usage
    if u is None:
        return f"{result.model} · {result.engine}"
    parts = [
        result.model,
        result.engine,
        f"{u.prompt_tokens} prompt tokens ({u.prefilled_tokens} prefilled)",
        f"TTFT {u.ttft_ms:.0f} ms",
        f"{u.decode_tokens_per_s:.1f} tok/s",
        f"{u.completion_tokens} tokens",
    ]
    if result.finish_reason not in ("stop",):
        parts.append(
            {"length": "stopped at --max-tokens", "context": "context window full", "cancelled": "cancelled"}.get(
                result.finish_reason, result.finish_reason
            )
        )
    return " · ".join(parts)


def _report_drops(result: Any) -> None:
    plan = result.context
    if plan is None or not plan.drops:
        return
    turns = plan.dropped_turns
    cut = [d for d in plan.drops if d.kind == "truncated"]
    saved = sum(d.tokens for d in plan.drops)
    what = []
    if turns:
        what.append(f"{turns} older turn{'s' if turns > 1 else ''} left out")
    if cut:
        what.append(f"{len(cut)} message{'s' if len(cut) > 1 else ''} shortened")
    _err(
        click.style("note: ", fg="yellow")
        + f"{' and '.join(what)} to fit the {plan.window}-token window ({saved} tokens); "
        "the full conversation stays in the history."
    )


def _run_turn(conv: Any, text: str, as_json: bool, make: Callable[[], Any] | None = None) -> Any:
    """Stream one turn to stdout (or collect it for JSON); Ctrl-C cancels it.

    ``make`` streams the turn from elsewhere (a consented cloud request)."""
    from assistant.app.turns import collect, stream_in_thread

    printer = None if as_json else (lambda piece: (sys.stdout.write(piece), sys.stdout.flush()))
    # Ctrl-C during the answer cancels the turn (the worker stops within a token and
    # the stream ends with "cancelled"), wherever the main thread happens to be.
    previous = signal.signal(signal.SIGINT, lambda *_: conv.cancel())
    try:
        result = collect(conv, stream_in_thread(conv, text, make), printer)
    finally:
        signal.signal(signal.SIGINT, previous)
        conv.session.reset_cancel()
    conv.save_turn(result, text)
    if as_json:
        click.echo(json.dumps(result.as_dict(), ensure_ascii=False))
    else:
        if result.text and not result.text.endswith("\n"):
            sys.stdout.write("\n")
        sys.stdout.flush()
        if result.finish_reason == "cancelled":
            _err(click.style("[cancelled]", fg="yellow"))
        _print_sources(result)
        for notice in result.notices:
            _err(click.style("note: ", fg="yellow") + notice)
        _report_drops(result)
        _err(click.style(_summary(result), dim=True))
    if result.error:
        raise result.error
    return result


# --------------------------------------------------------------------------- cloud turns
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


def _consent(conv: Any, text: str, kw: dict[str, Any], interactive: bool, question: str) -> Any:
    """Show exactly what would be sent and ask; the request to send, or None (refused, recorded)."""
    request = conv.cloud_request(text)
    while True:
        _err(click.style("── cloud request preview " + "─" * 30, fg="yellow"))
        _err(request.preview())
        _err(click.style("─" * 55, fg="yellow"))
        if kw.get("yes_cloud"):
            _err(f"{question} yes (--yes-cloud)")
            return request, "--yes-cloud flag"
        if not interactive:
            _err(question)
            conv.refuse_cloud(request, "stdin is not a terminal and --yes-cloud was not given")
            _err(
                click.style("not sent: ", fg="yellow")
                + f"nothing goes to {request.endpoint.label} without consent, and there is no terminal to ask on. "
                "Pass --yes-cloud to consent in advance."
            )
            return None
        toggle = "off" if request.redacted else "on"
        answer = click.prompt(
            f"{question} [y]es / [N]o / [r] redaction {toggle}", default="n", show_default=False, err=True
        )
        match answer.strip().lower():
            case "r":
                request = conv.cloud_request(text, redact=not request.redacted)
            case "y" | "yes":
                return request, "interactive prompt (y)"
            case _:
                conv.refuse_cloud(request, "declined at the prompt")
                _err(click.style("not sent.", fg="yellow"))
                return None


def _run_cloud(conv: Any, text: str, kw: dict[str, Any], consent: tuple[Any, str]) -> Any:
    request, how = consent
    try:
        return _run_turn(conv, text, kw["as_json"], lambda: conv.stream_cloud(request, text, how))
    finally:
        if not conv.cloud_enabled and kw.get("_cloud_was_on"):
            _err(click.style("cloud is now off for this conversation; the next turn runs locally.", fg="yellow"))


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


def _turn(conv: Any, text: str, kw: dict[str, Any], interactive: bool) -> Any:
    """One turn: in the cloud when enabled and consented, else locally; a local
    failure offers the cloud when one is configured (never silently)."""
    from assistant.app.context import ContextOverflow
    from assistant.core.errors import ContextExhausted, EngineError

    if conv.cloud_enabled:
        host = conv.cloud.endpoint.label
        consent = _consent(conv, text, kw, interactive, f"Send this turn to {host}?")
        if consent is not None:
            return _run_cloud(conv, text, {**kw, "_cloud_was_on": True}, consent)
        _err("Answering on this device instead.")
        return _run_turn(conv, text, kw["as_json"])
    try:
        return _run_turn(conv, text, kw["as_json"])
    except (ContextOverflow, ContextExhausted, EngineError) as exc:
        if not conv.cloud_configured:
            raise
        _err(click.style("error: ", fg="red", bold=True) + exc.message)
        host = conv.cloud.endpoint.label
        consent = _consent(
            conv, text, kw, interactive, f"The local model could not answer. Send this turn to {host} instead?"
        )
        if consent is None:
            raise
        return _run_cloud(conv, text, kw, consent)


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
    _turn(conv, text, kw, interactive=sys.stdin.isatty())


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
            _turn(conv, line, kw, interactive)
        except EnclaveError as exc:
            _err(click.style("error: ", fg="red", bold=True) + exc.message)
            if exc.hint:
                _err("  " + exc.hint)
            if not interactive:
                raise


def _docs_command(conv: Any, line: str) -> None:
    """`/docs [COLLECTION|all|off]` in `enclave chat`: documents on or off for this conversation."""
    from assistant.retrieval import open_library
    from assistant.storage.database import Store

    arg = line[len("/docs") :].strip()
    if arg == "off":
        conv.use_documents(None)
        _err("Documents off: answers come from the model alone.")
        return
    if not arg and conv.documents_on:
        _err(f"Documents on: {', '.join(conv.collections or []) or 'all collections'}. `/docs off` turns them off.")
        return
    store = conv.store or Store.open(conv.settings)
    library = open_library(conv.settings, store)
    conv.use_documents(library, None if arg in ("", "all", "on") else [arg])
    _err(f"Documents on: answers cite {', '.join(conv.collections or []) or 'all collections'}.")
