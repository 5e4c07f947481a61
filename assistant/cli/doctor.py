"""`enclave doctor`: check the installation, the database and that nothing can leave the machine."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from assistant.cli.chat import _cloud_line
from assistant.cli.common import (
    _settings,
)
from assistant.core.cpus import inference_threads
from assistant.core.text import inline


def _doctor_database(settings: Any) -> bool:
    """The database section of `enclave doctor`: encrypted or not, and where the key comes from."""
    from assistant.app.setup import check_database

    report = check_database(settings, terminal=sys.stdin.isatty())
    click.echo("Database")
    for line in report.lines:
        click.echo(line)
    return report.ok


def _doctor_repair(settings: Any, as_json: bool) -> None:
    """`enclave doctor --repair`: check every page; rebuild the database only if it is damaged."""
    from assistant.app.setup import repair_database

    if not as_json:
        click.echo(f"Checking {inline(str(settings.locations.database))} ...", err=True)
    result = repair_database(settings)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=1, ensure_ascii=False))
        return
    if not result.kept:
        click.echo("ok   the database is intact (SQLite integrity_check); nothing was changed")
        return
    click.echo(f"repaired {inline(str(settings.locations.database))}: {sum(result.copied.values())} rows copied")
    for table, count in sorted(result.copied.items()):
        if count or table in result.unreadable or table in result.lost_rows:
            skipped = result.unreadable.get(table)
            lost = result.lost_rows.get(table)
            notes = [f"{skipped} unreadable stretch(es) stepped over"] if skipped else []
            notes += [f"{lost} row(s) could not be read: lost"] if lost else []
            click.echo(f"  {table:22} {count:>8}" + (f"  ({'; '.join(notes)})" if notes else ""))
    if result.unreadable_file:
        click.echo(f"  nothing could be read ({inline(result.unreadable_file)}): the new database is empty")
    for table in result.lost_tables:
        click.echo(f"  {table:22}  unreadable: nothing could be copied")
    if result.unreadable_file or result.lost_tables or result.lost_rows:
        # Not a success a script should take for one: what is missing is only in the copy.
        click.echo(
            f"the damaged file is kept at {inline(result.kept)}: keep it. What could not be read "
            "(conversations, documents, audit entries) is only there; `sqlite3 FILE .recover` "
            "may salvage more of it. `enclave audit verify` notes where the audit chain restarts.",
            err=True,
        )
        raise SystemExit(1)
    click.echo(f"the damaged file is kept at {inline(result.kept)} (delete it once you are satisfied)")


def _doctor_files(settings: Any) -> bool:
    """Files: every folder and file that holds conversations, keys or the audit trail is private."""
    from assistant.app.files import exposed_files

    click.echo("Files")
    found = exposed_files(settings)
    if not found:
        click.echo("  ok   private: folders 0700, database, WAL, lock, head, keys and settings 0600")
        return True
    for item in found:
        click.echo(f"  WARN {inline(str(item.path))} is {item.mode:04o}: other local accounts can read it")
        click.echo(f"       fix: {inline(item.fix)}")
    return False


# --------------------------------------------------------------------------- privacy
def _mark(report: Any, item: Any) -> str:
    good = item.state == "active" if hasattr(item, "state") else item.ok
    if good:
        return "ok  "
    return "FAIL" if report.failed(item) else "warn"


def _doctor_privacy(settings: Any) -> Any:
    """The privacy section: each layer and whether it holds, then the self-test."""
    from assistant.app.privacy import blocked_attempts, privacy_report

    report = privacy_report(settings)
    click.echo("Privacy")
    click.echo(f"  allowed: loopback only (127.0.0.0/8, ::1); cloud fallback: {_cloud_line(settings)}")
    click.echo(f"  seal: privacy_seal = {settings.privacy_seal}")
    if report.warning:
        click.echo(click.style(f"  {report.warning}", fg="yellow"))
    for where in ("front end", "worker"):
        title = "Layers in this process (the front end)" if where == "front end" else "Layers of the sealed worker"
        if where == "worker":
            title += f" (started in {report.worker_ms:.0f} ms)"
        click.echo(f"  {title}")
        for layer in (x for x in report.layers if x.where == where):
            click.echo(f"    {_mark(report, layer)} {layer.name} — {layer.detail}")
    for where, title in (("worker", "inside a sealed worker"), ("front end", "in this process")):
        click.echo(f"  Self-test {title} (sends no packet anywhere)")
        for item in (x for x in report.checks if x.where == where):
            click.echo(f"    {_mark(report, item)} {item.name} — {item.detail}")
    attempts = blocked_attempts()
    click.echo(f"  blocked egress attempts in this process: {len(attempts)}")
    for attempt in attempts:
        click.echo(f"    {attempt}")
    return report


# --------------------------------------------------------------------------- doctor
def _open_store(settings: Any) -> Any:
    """The database for read-only sections, or None when it does not exist yet (a doctor
    never creates it) or cannot be opened without asking."""
    from assistant.app.setup import open_existing_store

    return open_existing_store(settings)


def _doctor_hardware(settings: Any, as_json: bool) -> bool:
    """`doctor --hardware`: the machine, and each installed model × engine against it and the budgets."""
    from assistant.app import hardware, power
    from assistant.core.format import human_size

    report = hardware.matrix(settings, _open_store(settings))
    if as_json:
        click.echo(json.dumps(report))
        return True
    cpu = report["cpu"]
    click.echo("Hardware")
    click.echo(f"  cpu    {cpu['model']} · {cpu['cores']} cores · {' '.join(cpu['features']) or 'no SIMD flags found'}")
    click.echo(f"  ram    {human_size(report['ram_bytes'])} ({human_size(report['ram_available_bytes'])} available)")
    gpu = report["gpu"]
    nvidia = ", ".join(gpu["nvidia_smi"] or gpu["nvidia_devices"]) or "no NVIDIA device"
    click.echo(f"  gpu    {nvidia}; Vulkan drivers: {', '.join(gpu['vulkan_icds']) or 'none'}")
    profile = power.profile(settings)
    batteries = ", ".join(f"{b.name} {b.capacity_percent}% {b.status}" for b in profile.state.batteries)
    click.echo(f"  power  {profile.state.source}{' · ' + batteries if batteries else ''} · profile "
               f"{profile.effective} ({profile.reason}), threads {profile.threads or inference_threads()}")  # fmt: skip
    budgets = report["budgets"]
    click.echo(f"Models (budgets: TTFT ≤ {budgets['ttft_ms_for_500_tokens']:.0f} ms for 500 tokens, "
               f"decode ≥ {budgets['decode_tokens_per_s']:.1f} tok/s)")  # fmt: skip
    ok = True
    for m in report["models"]:
        fits = "fits" if m["fits_in_ram"] else "DOES NOT FIT"
        measured = (
            f"TTFT(500) ~{m['ttft_500_ms']:.0f} ms, decode {m['decode_tokens_per_s']:.1f} tok/s (bench {m['bench_at']})"
            if m["ttft_500_ms"] is not None and m["decode_tokens_per_s"] is not None
            else "not benchmarked"
        )
        label = {"ok": "ok  ", "slow": "SLOW", "does-not-fit": "FAIL", "not-measured": "--  "}[m["verdict"]]
        ok &= m["verdict"] != "does-not-fit"
        click.echo(f"  {label} {m['name']} ({m['engine']}) {human_size(m['size_bytes'])}, {fits} · {measured}")
        for flag in m["flags"]:
            click.echo(f"       over budget: {flag}")
        click.echo(f"       → {m['recommendation']}")
    if not report["models"]:
        click.echo("  none installed")
    return ok


def _doctor_models(settings: Any) -> bool:
    """Models: each installed one against its manifest, broken registrations, budgets from the last bench."""
    from assistant.app.hardware import budget_flags
    from assistant.app.models import verify_models

    ok = True
    click.echo("Models")
    result = verify_models(settings, full=False)
    installed = [check.model for check in result.checked]
    for check in result.checked:
        model, problems = check.model, check.problems
        ok &= not problems
        click.echo(f"  {'ok  ' if not problems else 'FAIL'} {model.name} ({model.engine}) {'; '.join(problems)}")
    for bad in result.broken:
        ok = False
        click.echo(f"  FAIL {inline(bad.name)} ({inline(bad.engine)}) {inline(bad.problem)}")
    if not installed:
        click.echo(f"  none installed — run `enclave models build {settings.model}`")
    store = _open_store(settings)
    if store is not None:
        for model in installed:
            for flag in budget_flags(settings, store, model.name, model.engine):
                click.echo(f"  SLOW {model.name} ({model.engine}) over budget: {flag} (last `enclave bench`)")
        store.close()
    return ok


def _doctor_locations(settings: Any) -> None:
    click.echo("Locations")
    for label, path in (("config", settings.locations.config), ("data", settings.locations.data),
                        ("cache", settings.locations.cache)):  # fmt: skip
        click.echo(f"  {label:6} {path}")


@click.command()
@click.option(
    "--privacy", is_flag=True, help="Only the privacy checks: each layer, and a self-test that sends nothing."
)
@click.option(
    "--hardware", is_flag=True, help="The hardware matrix: CPU, RAM, GPU, power, and each model against the budgets."
)
@click.option(
    "--repair", is_flag=True,
    help="Rebuild a damaged database from every row that can be read (the damaged file is kept beside it).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the privacy (or with --hardware, the hardware) report as JSON."
)
@click.pass_context
def doctor(ctx: click.Context, privacy: bool, hardware: bool, repair: bool, as_json: bool) -> None:
    """Check the installation: models, database, and that nothing can leave the machine.

    The privacy section names each layer (the telemetry switches per library, the
    sealed worker with its own network namespace and seccomp filter, the Python guard
    in this process) and whether it holds, and runs a self-test inside a sealed worker.
    """
    settings = _settings(ctx)
    if repair:
        _doctor_repair(settings, as_json)
        return
    if hardware:
        if not _doctor_hardware(settings, as_json):
            ctx.exit(1)
        return
    if as_json:
        from assistant.app.privacy import blocked_attempts, privacy_report

        report = privacy_report(settings)
        data = report.as_dict()
        data["cloud"] = _cloud_line(settings)
        data["blocked_attempts"] = blocked_attempts()
        click.echo(json.dumps(data, indent=1, ensure_ascii=False))
        if not report.ok:
            ctx.exit(1)
        return
    ok = _doctor_privacy(settings).ok
    if not privacy:
        ok &= _doctor_models(settings)
        ok &= _doctor_database(settings)
        ok &= _doctor_files(settings)
        _doctor_locations(settings)
    if not ok:
        ctx.exit(1)
