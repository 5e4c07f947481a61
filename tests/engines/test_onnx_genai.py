"""onnxruntime-genai specifics, on the tiny real model."""

from __future__ import annotations

import pytest

from assistant.core.events import GenerationOptions, TextDelta, Usage
from assistant.engines import onnx_genai
from assistant.engines.base import Engine

GREEDY = GenerationOptions(max_tokens=16)


def _answer(engine, prompt: list[int]) -> tuple[str, int]:  # type: ignore[no-untyped-def]
    session = engine.open_session(1024)
    text = "".join(e.text for e in session.generate(prompt, GREEDY) if isinstance(e, TextDelta))
    held = session.native_token_count()
    session.close()
    return text, held


def test_a_long_prompt_prefilled_in_chunks_answers_as_in_one_call(tiny_engine, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    tok = tiny_engine.tokenizer
    prompt = tok.encode(tok.render([{"role": "user", "content": "the pump log records pressure. " * 40}]))[:700]
    assert len(prompt) > 3 * 128  # several chunks at the size set below
    monkeypatch.setattr(onnx_genai, "PREFILL_CHUNK", 100_000)
    whole = _answer(tiny_engine, prompt)
    monkeypatch.setattr(onnx_genai, "PREFILL_CHUNK", 128)
    chunked = _answer(tiny_engine, prompt)
    assert chunked == whole
    assert whole[1] >= len(prompt)


REPEATING = "one two three four five six seven eight one two three four five six seven eight one two three"


def _turn(session, prompt: list[int], options: GenerationOptions):  # type: ignore[no-untyped-def]
    events = list(session.generate(prompt, options))
    usage = next(e for e in events if isinstance(e, Usage))
    return "".join(e.text for e in events if isinstance(e, TextDelta)), usage


@pytest.fixture(params=["onnx", "sealed-onnx"])
def speculating_engine(request: pytest.FixtureRequest, tiny_dir, tmp_path):  # type: ignore[no-untyped-def]
    """The tiny model in process, and behind the sealed worker's pipe (the options,
    the capability and the usage counts must cross it)."""
    engine: Engine
    if request.param == "onnx":
        engine = onnx_genai.OnnxGenaiEngine(tiny_dir, "tiny")
    else:
        from assistant.engines.protocol import LoadOnnx
        from assistant.engines.sealed import SealedEngine

        engine = SealedEngine(LoadOnnx(str(tiny_dir), "tiny"), home=tmp_path / "worker")
    yield engine
    engine.close()


def test_speculation_drafts_from_the_prompt_and_keeps_the_cache_in_step(speculating_engine) -> None:  # type: ignore[no-untyped-def]
    tiny_engine = speculating_engine
    assert tiny_engine.capabilities.speculative  # the tiny build keeps logits for every position
    tok = tiny_engine.tokenizer
    prompt = tok.encode(tok.render([{"role": "user", "content": REPEATING}]))
    plain = tiny_engine.open_session(512)
    text, usage = _turn(plain, prompt, GenerationOptions(max_tokens=24))
    assert (usage.drafted_tokens, usage.accepted_tokens) == (0, 0)
    spec = tiny_engine.open_session(512)
    spec_text, spec_usage = _turn(spec, prompt, GenerationOptions(max_tokens=24, speculative=True))
    assert spec_usage.drafted_tokens > 0
    assert 0 <= spec_usage.accepted_tokens <= spec_usage.drafted_tokens
    assert spec_text == text  # the fp32 tiny model verifies drafts exactly
    assert spec.native_token_count() == spec.token_count
    # The next turn appends to the same cache and counts only its own drafts.
    follow = prompt + spec.tokens[len(prompt) :] + tok.encode(" " + REPEATING)
    _, second = _turn(spec, follow, GenerationOptions(max_tokens=8, speculative=True))
    assert second.prefilled_tokens < len(follow)
    assert spec.native_token_count() == spec.token_count
    assert second.as_dict()["drafted_tokens"] == second.drafted_tokens


def test_speculation_is_off_for_sampled_turns(tiny_engine) -> None:  # type: ignore[no-untyped-def]
    tok = tiny_engine.tokenizer
    prompt = tok.encode(tok.render([{"role": "user", "content": REPEATING}]))
    options = GenerationOptions(max_tokens=16, temperature=0.8, seed=3, speculative=True)
    assert not options.speculation_applies
    _, usage = _turn(tiny_engine.open_session(512), prompt, options)
    assert usage.drafted_tokens == 0
