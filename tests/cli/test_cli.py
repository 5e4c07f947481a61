"""The `enclave` command, run as a user runs it: a real subprocess on the tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def enclave(
    *args: str, home: Path, stdin: str | None = None, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ENCLAVE_HOME=str(home))
    env.pop("ENCLAVE_DEBUG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "assistant", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture
def home(enclave_home: Path, tiny_dir: Path) -> Path:
    enclave("models", "add", str(tiny_dir), "--name", "tiny", home=enclave_home)
    return enclave_home


def test_ask_streams_text_and_prints_a_summary(home: Path) -> None:
    proc = enclave("ask", "-m", "tiny", "--max-tokens", "16", "What is the capital of France?", home=home)
    summary = proc.stderr.strip().splitlines()[-1]
    assert summary.startswith("tiny · onnx · ")
    assert "prompt tokens" in summary and "TTFT" in summary and "tok/s" in summary
    assert proc.stdout.endswith("\n")


def test_ask_json_has_the_documented_fields(home: Path) -> None:
    proc = enclave("ask", "-m", "tiny", "--json", "--max-tokens", "8", "hello", home=home)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert {"text", "model", "model_sha256", "engine", "usage"} <= set(data)
    assert data["model"] == "tiny" and data["engine"] == "onnx"
    assert len(data["model_sha256"]) == 64
    usage = data["usage"]
    assert {"prompt_tokens", "prefilled_tokens", "completion_tokens", "ttft_ms", "decode_tokens_per_s"} <= set(usage)
    assert usage["prompt_tokens"] == usage["prefilled_tokens"] > 0
    assert usage["completion_tokens"] == 8


def test_a_one_shot_ask_sizes_the_cache_to_its_question_and_a_piped_chat_keeps_the_window(home: Path) -> None:
    window = ["--ctx", "1024", "--max-tokens", "8"]
    asked = json.loads(enclave("ask", "-m", "tiny", "--json", *window, "hello", home=home).stdout)["usage"]
    # kv_cache = auto: one question, then the process ends, so the cache is what it can reach.
    assert asked["prompt_tokens"] + 8 <= asked["cache_tokens"] < 1024
    # A conversation keeps its window, so no turn re-reads it.
    chatted = enclave("chat", "-m", "tiny", "--json", *window, home=home, stdin="hello\nagain\n").stdout
    assert {json.loads(line)["usage"]["cache_tokens"] for line in chatted.splitlines()} == {1024}
    # The setting decides when it is not auto.
    for value, command, stdin in (("window", ["ask", "hello"], None), ("grow", ["chat"], "hello\nagain\n")):
        proc = subprocess.run(
            [sys.executable, "-m", "assistant", command[0], "-m", "tiny", "--json", *window, *command[1:]],
            input=stdin, capture_output=True, text=True, cwd=ROOT, timeout=120,
            env=dict(os.environ, ENCLAVE_KV_CACHE=value, ENCLAVE_HOME=str(home)),
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        sizes = {json.loads(line)["usage"]["cache_tokens"] for line in proc.stdout.splitlines()}
        assert sizes == {1024} if value == "window" else max(sizes) < 1024


def _typed_chat(home: Path, turns: int, kv_cache: str | None) -> list[dict[str, int]]:
    """``enclave chat --json`` with a terminal (a pty) on stdin, as a person types: a turn,
    then a second to read the answer. Each stdout line must be JSON, no prompt before it."""
    import pty
    import termios
    import time

    leader, follower = pty.openpty()
    attrs = termios.tcgetattr(follower)
    attrs[3] &= ~termios.ECHO  # the typed lines are not echoed back to be drained
    termios.tcsetattr(follower, termios.TCSANOW, attrs)
    env = dict(os.environ, ENCLAVE_HOME=str(home))
    env.pop("ENCLAVE_KV_CACHE", None)
    if kv_cache is not None:
        env["ENCLAVE_KV_CACHE"] = kv_cache
    proc = subprocess.Popen(
        [sys.executable, "-m", "assistant", "chat", "-m", "tiny", "--json", "--ctx", "1024", "--max-tokens", "16"],
        stdin=follower, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )  # fmt: skip
    os.close(follower)
    assert proc.stdout is not None
    rows = []
    try:
        for i in range(turns):
            os.write(leader, f"turn {i}: the valve on line {i} was logged at noon and checked again.\n".encode())
            rows.append(json.loads(proc.stdout.readline())["usage"])
            time.sleep(1.0)  # reading the answer
        os.write(leader, b"/bye\n")
        assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
    return rows


def test_a_growing_cache_grows_while_the_user_reads_at_a_terminal_and_no_turn_rereads(home: Path) -> None:
    rows = _typed_chat(home, 5, "grow")
    sizes = [u["cache_tokens"] for u in rows]
    assert sizes[0] < 1024 and sizes == sorted(sizes) and len(set(sizes)) >= 2  # it grew...
    for usage in rows[1:]:  # ...and no turn re-read the conversation (a turn that outgrew it would)
        assert usage["prefilled_tokens"] < usage["prompt_tokens"]
    # kv_cache = auto keeps a conversation's window, typed or piped.
    assert {u["cache_tokens"] for u in _typed_chat(home, 2, None)} == {1024}


def test_chat_from_a_pipe_prefills_only_new_tokens_each_turn(home: Path) -> None:
    turns = ["first question", "second question", "third question"]
    proc = enclave("chat", "-m", "tiny", "--json", "--max-tokens", "8", home=home, stdin="\n".join(turns) + "\n")
    rows = [json.loads(line) for line in proc.stdout.strip().splitlines()]
    assert len(rows) == 3
    first, *rest = [r["usage"] for r in rows]
    assert first["prefilled_tokens"] == first["prompt_tokens"]
    previous = first
    for usage in rest:
        # The new prompt holds the whole previous prompt and answer...
        assert usage["prompt_tokens"] > previous["prompt_tokens"] + previous["completion_tokens"]
        # ...but only the new message and template glue are run through the model.
        assert usage["prefilled_tokens"] == usage["prompt_tokens"] - (
            previous["prompt_tokens"] + previous["completion_tokens"]
        )
        previous = usage


def test_missing_model_is_one_clear_sentence_not_a_traceback(enclave_home: Path) -> None:
    proc = enclave("ask", "hello", home=enclave_home, check=False)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "not built yet" in proc.stderr
    assert "enclave models build smollm2-135m-instruct" in proc.stderr


def test_unknown_model_lists_the_known_ones(home: Path) -> None:
    proc = enclave("ask", "-m", "nonesuch", "hi", home=home, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "No model is called 'nonesuch'" in proc.stderr
    assert "tiny" in proc.stderr and "smollm2-135m-instruct" in proc.stderr


def test_models_list_json_and_verify(home: Path) -> None:
    listing = json.loads(enclave("models", "list", "--json", home=home).stdout)
    names = [m["name"] for m in listing["installed"]]
    assert names == ["tiny"]
    assert "smollm2-135m-instruct" in [m["name"] for m in listing["buildable"]]
    assert enclave("models", "verify", home=home).stdout.startswith("ok   tiny")


def test_verify_detects_a_changed_file_and_ask_refuses_it(home: Path, tiny_dir: Path) -> None:
    weights = tiny_dir / "model.onnx.data"
    data = bytearray(weights.read_bytes())
    data[1000] ^= 0xFF
    weights.write_bytes(bytes(data))
    proc = enclave("models", "verify", "tiny", home=home, check=False)
    assert proc.returncode == 1
    assert "model.onnx.data: sha256 differs" in proc.stdout
    ask = enclave("ask", "-m", "tiny", "hi", home=home, check=False)
    assert ask.returncode == 1 and "Traceback" not in ask.stderr
    assert "does not match its manifest" in ask.stderr


def test_add_rejects_a_folder_that_is_not_a_model(enclave_home: Path, tmp_path: Path) -> None:
    folder = tmp_path / "notamodel"
    folder.mkdir()
    (folder / "readme.txt").write_text("hello")
    proc = enclave("models", "add", str(folder), home=enclave_home, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "is not a model Enclave can run" in proc.stderr
    # Every kind it takes is named, the GGUF a user most likely has among them.
    assert ".gguf file" in proc.stderr and ".litertlm bundle" in proc.stderr and "Nothing was registered" in proc.stderr


def test_add_rejects_a_corrupt_model_and_leaves_nothing_registered(enclave_home: Path, tiny_dir: Path) -> None:
    (tiny_dir / "model.onnx").write_bytes(b"\x00garbage" * 100)
    proc = enclave("models", "add", str(tiny_dir), "--name", "broken", home=enclave_home, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "could not be loaded" in proc.stderr
    listing = json.loads(enclave("models", "list", "--json", home=enclave_home).stdout)
    assert listing["installed"] == []


def test_remove_unregisters_but_keeps_user_files(home: Path, tiny_dir: Path) -> None:
    out = enclave("models", "remove", "tiny", home=home).stdout  # a model you added: unregistered without asking
    assert "unregistered" in out
    assert (tiny_dir / "model.onnx").exists()
    assert json.loads(enclave("models", "list", "--json", home=home).stdout)["installed"] == []


def test_every_command_has_help_and_is_in_the_readme() -> None:
    from click import Command, Context, Group

    from assistant.cli.root import main

    readme = (ROOT / "README.md").read_text()

    def walk(group: Group, prefix: str) -> list[tuple[str, Command]]:
        found: list[tuple[str, Command]] = []
        ctx = Context(group)
        for name in group.list_commands(ctx):  # the root group imports its commands on demand
            command = group.get_command(ctx, name)
            assert command is not None, name
            path = f"{prefix} {name}"
            found.append((path, command))
            if isinstance(command, Group):
                found.extend(walk(command, path))
        return found

    for path, command in walk(main, "enclave"):
        assert (command.help or "").strip(), f"{path} has no help text"
        assert f"`{path}" in readme, f"{path} is not documented in README.md"


def test_a_window_below_the_models_says_how_far_ctx_can_go(home: Path) -> None:
    proc = enclave("ask", "-m", "tiny", "--ctx", "256", "pump valve seal " * 60, home=home, check=False)
    assert proc.returncode == 1
    assert "Or raise --ctx: this model allows up to 1,024 tokens." in proc.stderr


def test_a_message_longer_than_the_models_whole_window_is_not_told_to_raise_ctx(home: Path) -> None:
    """Found by a tester: 8,841 tokens were told "Or raise --ctx: this model allows up to
    8,192", and --ctx 8192 refused again."""
    proc = enclave("ask", "-m", "tiny", "--ctx", "256", "pump valve seal " * 600, home=home, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "raise --ctx" not in proc.stderr
    assert "Not even the model's whole window (1,024 tokens) holds" in proc.stderr and "docs add" in proc.stderr


def test_a_ctx_above_the_models_window_is_capped_with_a_note_on_stderr(home: Path) -> None:
    note = "note: --ctx 100,000 is more than this model allows: the window is 1,024 tokens, the longest it was trained for."
    proc = enclave("ask", "-m", "tiny", "--ctx", "100000", "--json", "--max-tokens", "2", "hi", home=home)
    data = json.loads(proc.stdout)  # stdout stays one JSON document
    assert data["context"]["window"] == 1024
    assert proc.stderr.count(note) == 1
    chat = enclave("chat", "-m", "tiny", "--ctx", "100000", "--max-tokens", "2", home=home, stdin="one\ntwo\n")
    assert chat.stderr.count(note) == 1 and "note:" not in chat.stdout
    # Nothing to say when the window is the one asked for, or when nobody asked (the
    # default 2,048 on this 1,024-token model is its window, not a request refused).
    for args in (["--ctx", "1024"], ["--ctx", "512"], []):
        quiet = enclave("ask", "-m", "tiny", *args, "--max-tokens", "2", "hi", home=home)
        assert "more than this model allows" not in quiet.stderr


def test_a_model_without_a_build_for_the_engine_says_which_engines_it_has(home: Path) -> None:
    proc = enclave("ask", "-m", "tiny", "-e", "litert", "hi", home=home, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "No model is called" not in proc.stderr
    message, hint = proc.stderr.splitlines()
    assert (
        message
        == "error: 'tiny' has no litert build: it is installed for onnx only (a model you added runs on the engine its files are for)."
    )
    assert hint.strip() == (
        "Use `--engine onnx`, or register a LiteRT-LM .litertlm bundle of it with `enclave models add PATH --name tiny`."
    )
    # The fix works: the same question on the engine it has.
    assert enclave("ask", "-m", "tiny", "-e", "onnx", "--max-tokens", "2", "hi", home=home).returncode == 0
