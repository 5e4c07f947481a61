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
    assert "is not a valid LiteRT-LM bundle" in proc.stderr
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
    assert "litert" in text.splitlines()[1] and "onnx" in text.splitlines()[1]
