"""The offline switches are set by Enclave itself, before any runtime can load, in every
process; and the front end never loads a native runtime at all (it runs in sealed workers).

Each check runs in a fresh interpreter whose environment has none of the switches, so
nothing set by this test process (or by CI) can make it pass.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from assistant.privacy.offline import CI_SUPPRESSION, OFFLINE_ENV, RUNTIMES

ROOT = Path(__file__).resolve().parents[2]
#: Every module a process of Enclave may start from (entry points, workers, builders).
ENTRY_MODULES = [
    "assistant",
    "assistant.cli",
    "assistant.cli.root",
    "assistant.app.turns",
    "assistant.engines",
    "assistant.engines.onnx_genai",
    "assistant.engines.litert_lm",
    "assistant.engines.worker",
    "assistant.engines.sealed",
    "assistant.privacy.seal",
    "assistant.privacy.worker",
    "assistant.retrieval.embed",
    "assistant.retrieval.worker",
    "assistant.catalog.convert.recipes",
    "assistant.catalog.convert.embedder",
    "assistant.catalog.convert.litert",
    "assistant.catalog.convert.transcode",
    "assistant.privacy.guard",
    "tui.app",
]


def _clean_env(**extra: str) -> dict[str, str]:
    drop = set(OFFLINE_ENV) | set(CI_SUPPRESSION)
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(extra)
    return env


def _run(code: str, **env: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_clean_env(**env), cwd=ROOT, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("module", ENTRY_MODULES)
def test_importing_any_enclave_module_sets_every_switch_before_a_runtime_loads(module: str) -> None:
    names = json.dumps(sorted(OFFLINE_ENV))
    out = _run(
        f"import json, os, sys\nimport {module}\nfrom assistant.privacy import offline\n"
        f"print(json.dumps({{'env': {{n: os.environ.get(n) for n in {names}}}, 'late': offline.LATE}}))",
        ORT_DISABLE_TELEMETRY="0",  # a user's shell may even say the opposite
    )
    assert out["env"] == OFFLINE_ENV
    assert out["late"] == dict.fromkeys(RUNTIMES, False)


def test_children_get_the_switches_whatever_the_parent_had() -> None:
    from assistant.privacy.offline import child_env

    env = child_env({"PATH": "/bin", "ORT_DISABLE_TELEMETRY": "0"})
    assert {k: env[k] for k in OFFLINE_ENV} == OFFLINE_ENV and env["PATH"] == "/bin"


def test_the_front_end_never_loads_a_native_runtime(tmp_path: Path) -> None:
    """A whole session in one process: a conversation on each engine, documents with the
    embedder (parse + embed + search), a bundle probe. The runtimes load only in workers."""
    code = f"""
import json, shutil, sys
from pathlib import Path
from assistant.app.turns import Assistant
from assistant.catalog.manifests import Catalog, MANIFEST_NAME
from assistant.core.settings import Settings
from assistant.retrieval import open_library
from assistant.retrieval.embed import EMBEDDER_NAME, embedder_folder
settings = Settings.load(model="tiny", max_tokens=8, context_window=512)
catalog = Catalog(settings)
shutil.copytree("tests/assets/tiny-llama", "{tmp_path}/tiny")
catalog.add(Path("{tmp_path}/tiny"), name="tiny")
catalog.add(Path("tests/assets/tiny-gemma.litertlm"), name="tiny-gemma")
folder = embedder_folder(settings)
shutil.copytree("tests/assets/tiny-embedder", folder)
info = json.loads((folder / MANIFEST_NAME).read_text())
for key in ("name", "engine", "files", "sha256"):
    info.pop(key)
catalog.write_manifest(EMBEDDER_NAME, "onnx", folder, info)
docs = Path("{tmp_path}/docs"); docs.mkdir()
(docs / "pump.md").write_text("Reset the pump by holding the red button for five seconds.")
assistant = Assistant(settings)
for model in ("tiny", "tiny-gemma"):
    conv = assistant.conversation(model, save=False)
    assert conv.ask("hello").error is None
library = open_library(settings, assistant.store)
library.add([docs], "manuals")
assert library.search("reset the pump", k=1)
loaded = sorted(name for name in {sorted(RUNTIMES)} if name in sys.modules)
assistant.close()
print(json.dumps({{"loaded": loaded}}))
"""
    out = _run(code, ENCLAVE_HOME=str(tmp_path / "home"), ENCLAVE_DOCS_BUILD_EMBEDDER="false")
    assert out["loaded"] == []
