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
from assistant.core.errors import EnclaveError


def _doctor_database(settings: Any) -> bool:
    """The database section of `enclave doctor`: encrypted or not, and where the key comes from."""
    from assistant.storage import crypt
    from assistant.storage.database import Store

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
def _open_store(settings: Any) -> Any:
    """The database for read-only sections, or None when it does not exist yet (a doctor
    never creates it) or cannot be opened without asking."""
    from assistant.storage import crypt
    from assistant.storage.database import Store

    if crypt.file_state(settings.locations.database) == "missing":
        return None
    try:
        return Store.open(settings, interactive=False)
    except EnclaveError:
        return None


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
               f"{profile.effective} ({profile.reason}), threads {profile.threads or 'auto'}")  # fmt: skip
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


@click.command()
@click.option("--privacy", is_flag=True, help="Only the privacy checks.")
@click.option(
    "--hardware", is_flag=True, help="The hardware matrix: CPU, RAM, GPU, power, and each model against the budgets."
)
@click.option("--json", "as_json", is_flag=True, help="With --hardware: print JSON.")
@click.pass_context
def doctor(ctx: click.Context, privacy: bool, hardware: bool, as_json: bool) -> None:
    """Check the installation: models, database, and that nothing can leave the machine."""
    from assistant.privacy import guard

    if hardware or as_json:
        if not _doctor_hardware(_settings(ctx), as_json):
            ctx.exit(1)
        return

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
        from assistant.catalog.manifests import Catalog

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
        store = _open_store(settings)
        if store is not None:
            from assistant.app.hardware import budget_flags

            for model in installed:
                for flag in budget_flags(settings, store, model.name, model.engine):
                    click.echo(f"  SLOW {model.name} ({model.engine}) over budget: {flag} (last `enclave bench`)")
            store.close()
        ok &= _doctor_database(settings)
        click.echo("Locations")
        for label, path in (("config", settings.locations.config), ("data", settings.locations.data),
                            ("cache", settings.locations.cache)):  # fmt: skip
            click.echo(f"  {label:6} {path}")
    if not ok:
        ctx.exit(1)
