"""Ctrl-C at a terminal signals the whole foreground process group: it must cancel the
answer, and never reach the engine's worker (which would fail the turn instead)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ctrl_c_at_the_terminal_cancels_the_answer_and_the_chat_goes_on(enclave_home: Path, tiny_dir: Path) -> None:
    env = dict(os.environ, ENCLAVE_HOME=str(enclave_home), ENCLAVE_TEST_DECODE_DELAY_S="0.02")  # ~50 tok/s
    py = [sys.executable, "-m", "assistant"]
    subprocess.run([*py, "models", "add", str(tiny_dir), "--name", "tiny"], env=env, check=True, capture_output=True)
    # Its own process group, as a shell gives a foreground job: the signal goes to the group.
    chat = subprocess.Popen(
        [*py, "chat", "-m", "tiny", "--max-tokens", "400"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
        start_new_session=True,
    )  # fmt: skip
    assert chat.stdin is not None
    chat.stdin.write("Write a long story\n")
    chat.stdin.flush()
    time.sleep(4)  # the model loads (~1 s) and decodes; 400 tokens would take ~8 s
    os.killpg(chat.pid, signal.SIGINT)
    time.sleep(0.5)
    _, stderr = chat.communicate("And a short one\n", timeout=120)
    assert chat.returncode == 0, stderr
    assert "[cancelled]" in stderr and "error" not in stderr.lower(), stderr
    summaries = [line for line in stderr.splitlines() if "tiny · onnx" in line]
    assert len(summaries) == 2 and "cancelled" in summaries[0] and "--max-tokens" in summaries[1]


def test_ctrl_c_during_ask_cancels_and_exits_130(enclave_home: Path, tiny_dir: Path) -> None:
    env = dict(os.environ, ENCLAVE_HOME=str(enclave_home), ENCLAVE_TEST_DECODE_DELAY_S="0.02")
    py = [sys.executable, "-m", "assistant"]
    subprocess.run([*py, "models", "add", str(tiny_dir), "--name", "tiny"], env=env, check=True, capture_output=True)
    ask = subprocess.Popen(
        [*py, "ask", "-m", "tiny", "--max-tokens", "400", "Write a long story"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT, start_new_session=True,
    )  # fmt: skip
    time.sleep(4)  # loaded and decoding; 400 tokens would take ~8 s
    os.killpg(ask.pid, signal.SIGINT)
    _, stderr = ask.communicate(timeout=120)
    # 128 + SIGINT: a script can tell a cancelled answer from a whole one.
    assert ask.returncode == 130, stderr
    assert "[cancelled]" in stderr and "Traceback" not in stderr, stderr
