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
    return assistant.conversation(
        kw.get("model"), kw.get("engine"), kw.get("persona"), resume=resume, save=not kw.get("no_save")
    )


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


def _run_turn(conv: Any, text: str, as_json: bool) -> Any:
    """Stream one turn to stdout (or collect it for JSON); Ctrl-C cancels it."""
    from assistant.chat import collect, stream_in_thread

    printer = None if as_json else (lambda piece: (sys.stdout.write(piece), sys.stdout.flush()))
    # Ctrl-C during the answer cancels the turn (the worker stops within a token and
    # the stream ends with "cancelled"), wherever the main thread happens to be.
    previous = signal.signal(signal.SIGINT, lambda *_: conv.cancel())
    try:
        result = collect(conv, stream_in_thread(conv, text), printer)
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
        _report_drops(result)
        _err(click.style(_summary(result), dim=True))
    if result.error:
        raise result.error
    return result


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
    from tui.app import run

    settings = _settings(ctx, model=model, persona=persona, context_window=context_window)
    if resume == 0:
        from assistant.store import Store

        resume = _latest(Store(settings.locations.database))
    run(settings, resume)


@main.command()
@model_options
@click.argument("prompt", nargs=-1, required=True)
@click.pass_context
def ask(ctx: click.Context, prompt: tuple[str, ...], **kw: Any) -> None:
    """Ask one question and stream the answer.

    The answer goes to stdout; a summary line (model, engine, prompt tokens, TTFT,
    decode speed) goes to stderr. Use "-" to read the question from stdin.
    """
    text = " ".join(prompt)
    if text == "-":
        text = sys.stdin.read()
    if not text.strip():
        raise EnclaveError("The question is empty.", 'Ask something, e.g. enclave ask "What is RAID 5?"')
    conv = _open_conversation(ctx, kw)
    _run_turn(conv, text, kw["as_json"])


@main.command()
@model_options
@continue_option
@click.pass_context
def chat(ctx: click.Context, resume: int | None, **kw: Any) -> None:
    """Multi-turn chat in the terminal (Ctrl-C cancels an answer, Ctrl-D quits).

    When stdin is not a terminal, each line is one user turn. The KV cache is
    kept between turns, so each turn prefills only its new tokens. Conversations
    are saved; `--continue` resumes the latest one (or `--continue ID`).
    """
    kw.setdefault("as_json", False)
    conv = _open_conversation(ctx, kw, resume)
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
            _run_turn(conv, line, kw["as_json"])
        except EnclaveError as exc:
            _err(click.style("error: ", fg="red", bold=True) + exc.message)
            if exc.hint:
                _err("  " + exc.hint)
            if not interactive:
                raise


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

    return Store(_settings(ctx).locations.database)


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


# --------------------------------------------------------------------------- doctor
@main.command()
@click.option("--privacy", is_flag=True, help="Only the privacy checks.")
@click.pass_context
def doctor(ctx: click.Context, privacy: bool) -> None:
    """Check the installation: models, database, and that nothing can leave the machine."""
    from assistant import privacy as guard

    ok = True
    click.echo("Privacy")
    click.echo("  allowed: loopback only (127.0.0.0/8, ::1); cloud fallback: off")
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
