"""The API server on the real tiny models, in a thread of the test process, on an
ephemeral loopback port; the real `openai` client talks to it over HTTP."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from assistant.catalog.manifests import InstalledModel
from assistant.core.settings import Settings
from assistant.server.run import BackgroundServer
from tests.conftest import ROOT, TINY_MODEL

ServerFactory = Callable[..., BackgroundServer]


@pytest.fixture
def start_server(settings: Settings, tiny_installed: InstalledModel) -> Iterator[ServerFactory]:
    """Start a server with the test settings, changed by keyword (``serve_queue=0``, …)."""
    running: list[BackgroundServer] = []

    def start(**changes: Any) -> BackgroundServer:
        server = BackgroundServer(dataclasses.replace(settings, **changes)).__enter__()
        running.append(server)
        return server

    yield start
    for server in reversed(running):
        server.__exit__(None, None, None)


@pytest.fixture
def api(start_server: ServerFactory) -> BackgroundServer:
    return start_server()


@pytest.fixture
def client(api: BackgroundServer) -> openai.OpenAI:
    # No retries: a test that expects a 429 must see it, not a retried success.
    return openai.OpenAI(base_url=api.base_url, api_key=api.token, max_retries=0, timeout=60)


def audit_entries(home: Path, kind: str) -> list[dict[str, Any]]:
    """The audit log's entries of ``kind`` (details decoded), oldest first."""
    db = sqlite3.connect(home / "data" / "enclave.db")
    try:
        rows = db.execute("select detail from audit where kind = ? order by seq", [kind]).fetchall()
    finally:
        db.close()
    return [json.loads(row[0]) for row in rows]


#: A Qwen2.5-style chat template (Hermes tool calls: ``<tool_call>{json}</tool_call>``).
QWEN_TOOL_TEMPLATE = ROOT / "tests" / "assets" / "tool-templates" / "qwen2.5.jinja"


@pytest.fixture
def tools_installed(settings: Settings, tiny_installed: InstalledModel, tmp_path: Path) -> InstalledModel:
    """The tiny model given a Qwen2.5-style tool template, registered as ``tiny-tools``
    (beside ``tiny``, whose ChatML template has no tool-call format)."""
    from assistant.catalog.manifests import Catalog

    target = tmp_path / "tiny-tools"
    shutil.copytree(TINY_MODEL, target)
    (target / "chat_template.jinja").write_text(QWEN_TOOL_TEMPLATE.read_text(encoding="utf-8"), encoding="utf-8")
    return Catalog(settings).add(target, name="tiny-tools")
