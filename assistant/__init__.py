"""Enclave: a private AI assistant that runs small language models on this machine.

Importing this package first turns the runtimes' telemetry and hub look-ups off in
this process's environment (:mod:`assistant.privacy.offline`), so no Enclave process
can import onnxruntime before the switches are set: they must precede the import.
"""

from assistant.privacy import offline as _offline

_offline.apply()
