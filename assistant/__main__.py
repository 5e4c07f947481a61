"""`python -m assistant` is the `enclave` command."""

from assistant.cli import main

main(prog_name="enclave")
