"""What every command shares: the error boundary, settings, the options of the commands that run a model."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from assistant.app.models import ENGINE_NAMES
from assistant.core.errors import EnclaveError

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("enclave")


# --------------------------------------------------------------------------- helpers
def _err(text: str = "", nl: bool = True) -> None:
    click.echo(text, err=True, nl=nl)


def _settings(ctx: click.Context, **overrides: Any) -> Any:
    from assistant.core.settings import Settings

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
        click.option("-e", "--engine", type=click.Choice(ENGINE_NAMES), help="Engine to run the model with."),
        click.option("-p", "--persona", help="Persona / system prompt (general, technician, legal, or your own)."),
        click.option("--max-tokens", type=int, help="Longest answer, in tokens (default 512)."),
        click.option("-t", "--temperature", type=float, help="0 = greedy and reproducible (default); >0 samples."),
        click.option("--seed", type=int, help="Random seed when sampling."),
        click.option("--ctx", "context_window", type=int, help="Context window in tokens (default 2048)."),
        click.option("--threads", type=int, help="Inference threads (default: the engine's choice)."),
        click.option(
            "--device",
            type=click.Choice(["cpu", "gpu"]),
            help="Run on the CPU (default) or a GPU; a GPU that cannot be used falls back to the CPU, said so.",
        ),
        click.option(
            "--power",
            type=click.Choice(["auto", "saver", "performance"]),
            help="Power profile: saver (1 thread, background indexing paused), performance, or auto (saver on battery).",
        ),
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


def _store(ctx: click.Context) -> Any:
    from assistant.storage.database import Store

    return Store.open(_settings(ctx))


def _audit(store: Any) -> Any:
    from assistant.storage.audit import AuditLog

    return AuditLog(store)


def _write_or_print(text: str, output: Path | None) -> None:
    """Write ``text`` to ``output`` (the one export writer, :func:`write_export`), or print it."""
    from assistant.app.history import write_export

    if output is None:
        click.echo(text)
        return
    write_export(output, text + "\n")
    _err(f"Wrote {output}")
