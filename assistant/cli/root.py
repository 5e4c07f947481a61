"""The ``enclave`` command: the root group. Each command group lives in its own module.

Every command prints an :class:`~assistant.core.errors.EnclaveError` as its message and
hint on stderr (exit 1), never as a traceback; ``ENCLAVE_DEBUG=1`` shows the
traceback for developers.

Front ends other than the line interface (the terminal UI) register their command
through the ``enclave.commands`` entry-point group, so this package never imports them.
"""

from __future__ import annotations

import logging
import os
import sys
from importlib.metadata import entry_points

import click

from assistant.cli.audit import audit
from assistant.cli.bench import bench
from assistant.cli.chat import ask, chat
from assistant.cli.cloud import cloud
from assistant.cli.common import EnclaveGroup
from assistant.cli.config import config
from assistant.cli.docs import docs
from assistant.cli.doctor import doctor
from assistant.cli.history import history
from assistant.cli.init import init
from assistant.cli.keys import keys
from assistant.cli.models import models
from assistant.cli.report import report
from assistant.cli.stats import stats

COMMANDS_GROUP = "enclave.commands"


@click.group(cls=EnclaveGroup, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="enclave")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Enclave: a private AI assistant that runs small language models on this machine.

    Nothing leaves the device. With no command, opens the terminal UI.
    """
    from assistant.privacy.guard import install_network_guard

    install_network_guard()
    logging.basicConfig(level=os.environ.get("ENCLAVE_LOG", "WARNING").upper(), stream=sys.stderr)
    ctx.ensure_object(dict)
    if ctx.invoked_subcommand is None:
        tui = main.get_command(ctx, "tui")
        if tui is not None and sys.stdin.isatty() and sys.stdout.isatty():
            ctx.invoke(tui)
        else:
            ctx.invoke(chat)


for command in (ask, chat, models, keys, history, audit, cloud, init, doctor, bench, docs, config, stats, report):
    main.add_command(command)
for entry in entry_points(group=COMMANDS_GROUP):
    main.add_command(entry.load(), entry.name)
