"""The ``enclave`` command line (one module per command group)."""

from assistant.cli.root import main

__all__ = ["main"]
