"""``enclave serve``: Enclave's OpenAI-compatible HTTP API (a front end: it imports only
:mod:`assistant.app` and :mod:`assistant.core`)."""
