"""The ``enclave`` command: the root group. Each command group lives in its own module.

Every command prints an :class:`~assistant.core.errors.EnclaveError` as its message and
hint on stderr (exit 1), never as a traceback; ``ENCLAVE_DEBUG=1`` shows the
traceback for developers.

Front ends other than the line interface (the terminal UI) register their command
through the ``enclave.commands`` entry-point group, so this package never imports them.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
from importlib.metadata import EntryPoint, entry_points

import click

from assistant.cli.common import EnclaveGroup

COMMANDS_GROUP = "enclave.commands"

#: Every built-in command, by name: the module that defines it and the object's name
#: there. A command's module (and what it imports: the catalog, numpy, sqlite-utils …)
#: is imported only when that command runs, or when help lists them all: one
#: `enclave docs search` imports the documents code alone.
BUILTIN_COMMANDS: dict[str, tuple[str, str]] = {
    "ask": ("assistant.cli.chat", "ask"),
    "chat": ("assistant.cli.chat", "chat"),
    "models": ("assistant.cli.models", "models"),
    "keys": ("assistant.cli.keys", "keys"),
    "history": ("assistant.cli.history", "history"),
    "audit": ("assistant.cli.audit", "audit"),
    "cloud": ("assistant.cli.cloud", "cloud"),
    "init": ("assistant.cli.init", "init"),
    "doctor": ("assistant.cli.doctor", "doctor"),
    "bench": ("assistant.cli.bench", "bench"),
    "docs": ("assistant.cli.docs", "docs"),
    "config": ("assistant.cli.config", "config"),
    "stats": ("assistant.cli.stats", "stats"),
    "report": ("assistant.cli.report", "report"),
    "serve": ("assistant.cli.serve", "serve"),
}


class LazyGroup(EnclaveGroup):
    """The root group: built-in commands imported on first use, front ends registered
    through the ``enclave.commands`` entry points (looked up only when a name is not
    built in, or for the full list)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *BUILTIN_COMMANDS, *_front_ends()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands:
            if cmd_name in BUILTIN_COMMANDS:
                module, attribute = BUILTIN_COMMANDS[cmd_name]
                command = getattr(importlib.import_module(module), attribute)
            else:
                entry = _front_ends().get(cmd_name)
                if entry is None:
                    return None
                command = entry.load()
            self.add_command(command, cmd_name)
        return self.commands.get(cmd_name)


def _front_ends() -> dict[str, EntryPoint]:
    return {entry.name: entry for entry in entry_points(group=COMMANDS_GROUP)}


@click.group(cls=LazyGroup, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="enclave")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Enclave: a private AI assistant that runs small language models on this machine.

    Nothing leaves the device. With no command, opens the terminal UI.
    """
    from assistant.app.privacy import install_network_guard

    install_network_guard()
    _tolerant_streams()
    _private_roots()
    logging.basicConfig(level=os.environ.get("ENCLAVE_LOG", "WARNING").upper(), stream=sys.stderr)
    ctx.ensure_object(dict)
    sub = ctx.invoked_subcommand
    tui = main.get_command(ctx, "tui") if sub is None else None
    opens_tui = sub == "tui" or (sub is None and tui is not None and sys.stdin.isatty() and sys.stdout.isatty())
    if not opens_tui:  # the terminal UI keeps its own handling (it restores the terminal)
        _stop_cleanly_on_signals()
    if sub is None:
        command = tui if opens_tui else main.get_command(ctx, "chat")
        if command is not None:  # chat is built in
            ctx.invoke(command)


def _stop_cleanly_on_signals() -> None:
    """SIGTERM (a service manager, ``kill``) and SIGHUP (the terminal closed) end a command
    by unwinding it, as Ctrl-C does, instead of Python's default of dying on the spot: a
    model build then kills its converter and removes its partial output, a database
    transaction in progress rolls back, the engine worker is closed. Exit status 128 +
    the signal's number, as a shell reports a killed command."""

    def stop(signum: int, _frame: object) -> None:
        try:
            sys.stderr.write(f"\nenclave: stopped by {signal.Signals(signum).name}; cleaning up.\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass  # no terminal left (SIGHUP): stop all the same
        raise SystemExit(128 + signum)

    for name in ("SIGTERM", "SIGHUP"):  # SIGHUP is not on every system
        sig = getattr(signal, name, None)
        if sig is None:
            continue
        try:
            signal.signal(sig, stop)
        except (ValueError, OSError):  # not the main thread (an embedding host): leave it
            pass


def _private_roots() -> None:
    """Create Enclave's three folders 0700 before any command puts something in them (a
    model build or `models add` would otherwise create the data folder 0755 under the
    usual umask). Existing folders are left as they are; a read-only home is fine."""
    from assistant.core.files import private_dir
    from assistant.core.settings import Locations

    locations = Locations.from_env()
    for folder in (locations.config, locations.data, locations.cache):
        try:
            private_dir(folder)
        except OSError:
            pass  # read-only: commands that only read still run


def _tolerant_streams() -> None:
    """Input that is not UTF-8 (a pasted binary, a Latin-1 file on stdin) is read, not a
    crash: stdin decodes with surrogateescape (the app layer then replaces those bytes
    with U+FFFD and says so), and anything still unencodable prints as an escape."""
    for stream, errors in ((sys.stdin, "surrogateescape"), (sys.stdout, "backslashreplace")):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors=errors)
            except (ValueError, OSError):  # a closed or unusual stream: leave it be
                pass
