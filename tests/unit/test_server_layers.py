"""The API server is a front end: it imports only the app layer and the core, and the app
layer's serving use cases load no HTTP stack (checked statically and in a fresh interpreter)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = ("assistant.app", "assistant.core", "assistant.server")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_server_imports_only_the_app_layer_and_the_core() -> None:
    for path in sorted((ROOT / "assistant" / "server").glob("*.py")):
        inner = {n for n in _imports(path) if n.startswith("assistant")}
        below = {n for n in inner if not n.startswith(ALLOWED)}
        assert not below, f"{path.name} reaches past the app layer: {sorted(below)}"


def test_the_serving_use_cases_load_no_http_stack() -> None:
    code = "import assistant.app.serving, assistant.app.access, sys; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    loaded = {line.split(".")[0] for line in out.splitlines()}
    # (click is not checked: sqlite-utils, under the storage layer, imports it.)
    web = {"starlette", "uvicorn", "httpx", "textual"}
    assert not loaded & web, sorted(loaded & web)
