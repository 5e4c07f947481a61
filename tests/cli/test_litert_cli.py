"""LiteRT-LM through the `enclave` command: add a bundle, ask, chat, and refuse bad bundles."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.cli.test_cli import enclave

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "tests" / "assets" / "tiny-gemma.litertlm"


@pytest.fixture
def home(enclave_home: Path, tmp_path: Path) -> Path:
    bundle = tmp_path / "tiny-gemma.litertlm"
    shutil.copyfile(BUNDLE, bundle)
    out = enclave("models", "add", str(bundle), home=enclave_home).stdout
    assert "Added tiny-gemma (litert" in out
    return enclave_home


def test_ask_and_chat_on_litert(home: Path) -> None:
    data = json.loads(
        enclave("ask", "-m", "tiny-gemma", "--engine", "litert", "--json", "--max-tokens", "6", "hi", home=home).stdout
    )
    assert data["engine"] == "litert" and data["model"] == "tiny-gemma" and len(data["model_sha256"]) == 64
    usage = data["usage"]
    assert usage["completion_tokens"] == 6 and usage["prefilled_tokens"] == usage["prompt_tokens"] > 0
    rows = [
        json.loads(line)
        for line in enclave(
            "chat", "-m", "tiny-gemma", "--json", "--max-tokens", "6", home=home, stdin="one\ntwo\n"
        ).stdout.splitlines()
    ]
    assert len(rows) == 2
    # Turn 2 reuses the native conversation: only the new turn is prefilled.
    assert rows[1]["usage"]["prefilled_tokens"] < rows[1]["usage"]["prompt_tokens"] - rows[0]["usage"]["prompt_tokens"]


def test_a_ctx_above_the_bundles_window_is_capped_with_a_note_saying_why(home: Path) -> None:
    proc = enclave("ask", "-m", "tiny-gemma", "-e", "litert", "--ctx", "4096", "--json", "--max-tokens", "2", "hi",
                   home=home)  # fmt: skip
    assert json.loads(proc.stdout)["context"]["window"] == 2048
    note = "note: --ctx 4,096 is more than this model allows: the window is 2,048 tokens, fixed when its LiteRT-LM bundle was built"
    assert proc.stderr.count(note) == 1
    chat = enclave("chat", "-m", "tiny-gemma", "--ctx", "4096", "--max-tokens", "2", home=home, stdin="one\n")
    assert chat.stderr.count(note) == 1


def test_listing_shows_the_engine(home: Path) -> None:
    listing = json.loads(enclave("models", "list", "--json", home=home).stdout)
    assert [(m["name"], m["engine"]) for m in listing["installed"]] == [("tiny-gemma", "litert")]


@pytest.mark.parametrize(
    "content",
    [os.urandom(4096), BUNDLE.read_bytes()[:200_000], b""],
    ids=["random-4k", "truncated", "empty"],
)
def test_a_bad_bundle_is_a_message_not_a_dead_process(enclave_home: Path, tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.litertlm"
    bad.write_bytes(content)
    proc = enclave("models", "add", str(bad), home=enclave_home, check=False)
    assert proc.returncode == 1, proc.stdout
    assert "Traceback" not in proc.stderr
    assert "was refused" in proc.stderr and "nothing was registered" in proc.stderr
    assert json.loads(enclave("models", "list", "--json", home=enclave_home).stdout)["installed"] == []


def test_bench_compare_runs_every_engine_side_by_side(enclave_home: Path, tiny_dir: Path, tmp_path: Path) -> None:
    # Two different tiny models registered under one name stand in for one model built for both engines.
    bundle = tmp_path / "pair.litertlm"
    shutil.copyfile(BUNDLE, bundle)
    enclave("models", "add", str(bundle), "--name", "pair", home=enclave_home)
    enclave("models", "add", str(tiny_dir), "--name", "pair", home=enclave_home)
    reports = json.loads(
        enclave("bench", "--compare", "-m", "pair", "--turns", "2", "--json", home=enclave_home).stdout
    )
    assert [r["engine"] for r in reports] == ["litert", "onnx"]
    for report in reports:
        assert report["load_s"] > 0 and report["peak_rss_mib"] > 0
        assert [t["turn"] for t in report["turns"]] == [1, 2]
        assert report["turns"][1]["prefilled_tokens"] < report["turns"][1]["prompt_tokens"]
    text = enclave("bench", "--compare", "-m", "pair", "--turns", "2", home=enclave_home).stdout
    assert any("litert" in line and "onnx" in line for line in text.splitlines()[:3])


def test_bench_models_side_by_side_with_quality(enclave_home: Path, tiny_dir: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "gemma.litertlm"
    shutil.copyfile(BUNDLE, bundle)
    enclave("models", "add", str(bundle), "--name", "tiny-gemma", home=enclave_home)
    enclave("models", "add", str(tiny_dir), "--name", "tiny", home=enclave_home)
    proc = enclave("bench", "--models", "tiny@onnx,tiny-gemma", "--turns", "2", "--json", home=enclave_home)
    reports = json.loads(proc.stdout)
    assert [(r["model"], r["engine"]) for r in reports] == [("tiny", "onnx"), ("tiny-gemma", "litert")]
    onnx, litert = (r["quality"] for r in reports)
    assert onnx["perplexity"] > 1 and 0 < onnx["bits_per_byte"] < 20 and onnx["tokens"] > 100
    assert litert["perplexity"] is None and "no token probabilities" in litert["perplexity_note"]
    for quality in (onnx, litert):
        assert quality["answers"] == 5 and 0 <= quality["answers_supported"] <= 5
    assert "measuring tiny@onnx" in proc.stderr  # progress on stderr, one JSON document on stdout
    text = enclave("bench", "--models", "tiny@onnx,tiny-gemma", "--turns", "2", home=enclave_home).stdout
    assert "perplexity on GPL-3" in text and "answers supported by their source" in text and "n/a" in text
    bad = enclave("bench", "--models", "tiny@nosuch", home=enclave_home, check=False)
    assert bad.returncode == 1 and "Unknown engine 'nosuch'" in bad.stderr


def test_bench_help_lists_only_options_that_apply() -> None:
    from click.testing import CliRunner

    from assistant.cli.root import main

    text = CliRunner().invoke(main, ["bench", "--help"]).output
    for applies in ("--model", "--engine", "--models", "--compare", "--quality", "--runs", "--turns", "--ctx"):
        assert applies in text
    for ignored in ("--persona", "--temperature", "--seed", "--no-save", "--context-policy"):
        assert ignored not in text


def test_a_fixed_window_is_named_instead_of_asking_to_raise_ctx(home: Path) -> None:
    long = "pump valve seal " * 900
    proc = enclave("ask", "-m", "tiny-gemma", "-e", "litert", "--ctx", "4096", long, home=home, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    # The window note names the fixed window once; the hint for a message longer than the
    # whole window offers splitting or indexing it, never a larger --ctx.
    assert "--ctx 4,096 is more than this model allows: the window is 2,048 tokens" in proc.stderr
    assert "Not even the model's whole window (2,048 tokens)" in proc.stderr
    assert "enclave docs add FILE" in proc.stderr
    assert "raise --ctx" not in proc.stderr
