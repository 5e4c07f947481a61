"""What every command shares: the error boundary, settings, the options of the commands that run a model."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from assistant.app import ENGINE_NAMES
from assistant.core.errors import EnclaveError
from assistant.core.text import displayable, inline

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


def _quiet_stdout() -> None:
    """Point stdout at /dev/null: its reader is gone (``| head``), and the interpreter's
    last flush must not fail with "Broken pipe" either."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is not a real file (tests, embedding)
        pass


class NeedsConfirmation(EnclaveError):
    """A destructive command was run without a terminal to confirm on and without --yes."""

    exit_code = 2


def confirm_destructive(question: str, yes: bool, refusal: str) -> str:
    """Ask before destroying something; how the user confirmed it (for the audit log).

    With ``--yes`` nothing is asked. Without a terminal on stdin there is no one to ask,
    so the command refuses (exit 2) rather than act on piped input: ``refusal`` is the
    one-line reason, e.g. "refusing to delete conversation 3 without --yes"."""
    if yes:
        return "--yes"
    if not sys.stdin.isatty():
        raise NeedsConfirmation(f"{refusal}: stdin is not a terminal, so no one can confirm (pass --yes).")
    click.confirm(question, abort=True, err=True)
    return "confirmed at the prompt"


def _damaged_database(ctx: click.Context, exc: Exception) -> EnclaveError | None:
    """The message for an SQLite error that says the database file is damaged (None for any other)."""
    from assistant.app.setup import damaged_database

    try:
        settings = _settings(ctx)
    except EnclaveError:  # the settings themselves are broken: the generic message stands
        return None
    return damaged_database(exc, settings)


class EnclaveGroup(click.Group):
    """Turns EnclaveError (and anything unexpected) into a message, not a traceback.

    A closed stdout (``enclave history list | head -1``) ends the command quietly with
    status 0, as a Unix filter does."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().main(*args, **kwargs)
        finally:
            try:
                sys.stdout.flush()
            except BrokenPipeError:
                _quiet_stdout()
            except (OSError, ValueError):
                pass

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            _quiet_stdout()
            ctx.exit(0)
        except EnclaveError as exc:
            if os.environ.get("ENCLAVE_DEBUG"):
                raise
            # Messages name files, models and settings the user (or a file) chose: shown
            # through the one sanitiser, so no name can send escapes to the terminal.
            _err(click.style("error: ", fg="red", bold=True) + displayable(exc.message))
            if exc.hint:
                _err("  " + displayable(exc.hint))
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            # Ctrl-C that no command turned into its own message (while starting up, say):
            # one line and the shell's 130, not click's "Aborted!" and status 1.
            _err("Interrupted.")
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except OSError as exc:
            if os.environ.get("ENCLAVE_DEBUG"):
                raise
            detail = f"{exc.strerror or exc} ({inline(str(exc.filename))})" if exc.filename else str(exc)
            hint = "Free some disk space and try again." if exc.errno == 28 else "Check the path and permissions."
            _err(click.style("error: ", fg="red", bold=True) + detail)
            _err("  " + hint + " Nothing already saved was changed.")
            ctx.exit(1)
        except Exception as exc:  # the last line of defence for users
            if os.environ.get("ENCLAVE_DEBUG"):
                raise
            damage = _damaged_database(ctx, exc)
            if damage is not None:
                _err(click.style("error: ", fg="red", bold=True) + displayable(damage.message))
                _err("  " + displayable(damage.hint))
                ctx.exit(1)
            _err(click.style("internal error: ", fg="red", bold=True) + displayable(f"{type(exc).__name__}: {exc}"))
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
        click.option("--threads", type=int, help="Inference threads (default: one per physical core; 1 in the saver power profile)."),
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
            "--repeat-penalty",
            type=click.FloatRange(1.0, 3.0),
            help="Make tokens already in the answer less likely: 1.0 is off (default), 1.1-1.3 usual.",
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


def docs_option(func: F) -> F:
    """``--docs [COLLECTION]``, ``--path GLOB`` and ``--answer-mode`` for the commands that answer."""
    func = click.option(
        "--answer-mode",
        type=click.Choice(["auto", "extract", "quote", "free"]),
        help="How answers from documents are made (default auto: the mode recorded for the model).",
    )(func)
    func = click.option(
        "--path",
        "paths",
        multiple=True,
        metavar="GLOB",
        help="With --docs: answer only from the files this glob or path matches (repeatable), e.g. 'GPL-*'.",
    )(func)
    return click.option(
        "--docs",
        "docs",
        is_flag=False,
        flag_value="all",
        default=None,
        metavar="[COLLECTION]",
        help="Answer from your indexed documents, quoting them (all collections, or the one named).",
    )(func)

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


def _store(ctx: click.Context, *, write: bool = True) -> Any:
    """The database; ``write=False`` for commands that only read (they then work on a read-only home)."""
    from assistant.app.setup import open_store

    return open_store(_settings(ctx), write=write)


def _audit(store: Any) -> Any:
    from assistant.app.setup import audit_log

    return audit_log(store)


force_option = click.option(
    "--force", is_flag=True, help="Replace the output even if it is not a regular file (a symlink, a device)."
)


def _write_or_print(text: str, output: Path | None, *, force: bool = False) -> None:
    """Write ``text`` to ``output`` (the one export writer, :func:`write_export`), or print it
    (through the sanitiser when stdout is a terminal: stored text is data)."""
    from assistant.app.history import write_export

    if output is None:
        click.echo(displayable(text) if sys.stdout.isatty() else text)
        return
    write_export(output, text + "\n", force=force)
    _err(f"Wrote {inline(str(output))}")
