"""The terminal UI end to end, as a person drives it: `scripts/tui_smoke.sh` runs `enclave`
in tmux at 80×24 on the real SmolLM2 (both engines, built by Enclave's own recipes),
asks, picks the model for each engine in the picker, turns documents on and off, quits."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)"),
]
ROOT = Path(__file__).resolve().parents[2]


def test_the_tui_end_to_end_in_tmux_at_80x24(
    smollm2_home: Path, smollm2_litert_home: Path, embedder_home: Path, tmp_path: Path
) -> None:
    # A home of its own, sharing the built models (read-only) with the other slow tests.
    home = tmp_path / "home"
    (home / "data").mkdir(parents=True)
    (home / "data" / "models").symlink_to(smollm2_home / "data" / "models")
    env = dict(os.environ, ENCLAVE_HOME=str(home), ENCLAVE_DOCS_BUILD_EMBEDDER="false", TERM="xterm-256color")
    env.pop("ENCLAVE_DEBUG", None)
    manuals = tmp_path / "manuals"
    manuals.mkdir()
    (manuals / "pump.md").write_text(
        "# P-200 pump\n\n## Reset\n\nTo reset the pump pressure, hold the red RESET button for five seconds.\n"
    )
    subprocess.run(
        [sys.executable, "-m", "assistant", "docs", "add", str(manuals), "-c", "manuals"],
        env=env, cwd=ROOT, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    screens = tmp_path / "screens"
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "tui_smoke.sh"), "80", "24"],
        env=dict(env, OUT=str(screens), ENCLAVE_BIN=str(Path(sys.executable).parent / "enclave")),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok   quit (status 0)" in proc.stdout
    for name in ("answered-on-onnx", "answered-on-litert", "answered-from-the-documents"):
        assert any(name in p.name for p in screens.iterdir()), proc.stdout
