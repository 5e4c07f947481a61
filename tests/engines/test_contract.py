"""The engine contract: every backend passes the same suite on its tiny real model."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from assistant.engines.base import Done, Engine, GenerationOptions, StreamDecoder, TextDelta, Usage
from assistant.errors import ContextExhausted

GREEDY = GenerationOptions(max_tokens=24)


def _engine(kind: str, tiny_dir: Path) -> Engine:
    if kind == "onnx":
        from assistant.engines.onnx_genai import OnnxGenaiEngine

        return OnnxGenaiEngine(tiny_dir, "tiny")
    raise AssertionError(kind)


@pytest.fixture(params=["onnx"])
def engine(request: pytest.FixtureRequest, tiny_dir: Path):  # type: ignore[no-untyped-def]
    eng = _engine(request.param, tiny_dir)
    yield eng
    eng.close()


def prompt(engine: Engine, *turns: str) -> list[int]:
    messages = [{"role": "system", "content": "You are a test."}]
    for i, text in enumerate(turns):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    return engine.tokenizer.encode(engine.tokenizer.render(messages, add_generation_prompt=True))


def run(session, tokens, options=GREEDY):  # type: ignore[no-untyped-def]
    events = list(session.generate(tokens, options))
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    usage = next(e for e in events if isinstance(e, Usage))
    done = events[-1]
    assert isinstance(done, Done)
    return text, usage, done


def test_events_arrive_in_order_and_usage_counts_tokens(engine: Engine) -> None:
    session = engine.open_session(256)
    tokens = prompt(engine, "Hello there")
    events = list(session.generate(tokens, GREEDY))
    kinds = [type(e).__name__ for e in events]
    assert kinds[-2:] == ["Usage", "Done"]
    assert set(kinds[:-2]) <= {"TextDelta"}
    usage = events[-2]
    assert usage.prompt_tokens == len(tokens)
    assert usage.prefilled_tokens == len(tokens)
    assert usage.completion_tokens == GREEDY.max_tokens
    assert usage.ttft_ms > 0 and usage.decode_tokens_per_s > 0
    assert events[-1].reason == "length"


def test_streamed_text_equals_one_shot_decode(engine: Engine) -> None:
    session = engine.open_session(512)
    tokens = prompt(engine, "Tell me about café, 😀 and 日本語")
    text, usage, done = run(session, tokens, GenerationOptions(max_tokens=120))
    generated = session.tokens[len(tokens) :]
    assert len(generated) == usage.completion_tokens
    assert text == engine.tokenizer.decode(generated)
    assert done.text == text


def test_session_tokens_match_the_native_cache(engine: Engine) -> None:
    session = engine.open_session(256)
    run(session, prompt(engine, "one"))
    native = getattr(session, "native_token_count", None)
    if native is None:
        pytest.skip("backend exposes no native token count")
    assert native() == session.token_count


def test_second_turn_prefills_only_new_tokens(engine: Engine) -> None:
    session = engine.open_session(512)
    first = prompt(engine, "What is a pump?")
    answer, _, _ = run(session, first)
    held = session.tokens
    # The next prompt continues exactly what the cache holds.
    delta = engine.tokenizer.encode("<|im_end|>\n<|im_start|>user\nAnd a valve?<|im_end|>\n<|im_start|>assistant\n")
    second = held + delta
    _, usage, _ = run(session, second)
    assert usage.prompt_tokens == len(second)
    assert usage.prefilled_tokens == len(delta)


def test_rewind_then_regenerate_reproduces_greedy_output(engine: Engine) -> None:
    if not engine.capabilities.rewind:
        pytest.skip("backend cannot rewind")
    session = engine.open_session(512)
    tokens = prompt(engine, "Regenerate me")
    first, _, _ = run(session, tokens)
    # Same prompt again: the session rewinds to the prompt and prefills one token.
    again, usage, _ = run(session, tokens)
    assert again == first
    assert usage.prefilled_tokens == 1

    fresh = engine.open_session(512)
    reference, _, _ = run(fresh, tokens)
    assert reference == first


def test_edit_of_an_earlier_turn_rewinds_to_the_shared_prefix(engine: Engine) -> None:
    session = engine.open_session(512)
    a = prompt(engine, "First question", "first answer", "Second question")
    run(session, a)
    b = prompt(engine, "First question", "first answer", "A different second question")
    shared = session.common_prefix(b)
    assert 0 < shared < len(b)
    _, usage, _ = run(session, b)
    expected = len(b) - shared if engine.capabilities.rewind else len(b)
    assert usage.prefilled_tokens == expected


def test_over_long_input_raises_context_exhausted_with_numbers(engine: Engine) -> None:
    session = engine.open_session(64)
    tokens = prompt(engine, "word " * 80)
    with pytest.raises(ContextExhausted) as info:
        list(session.generate(tokens, GREEDY))
    err = info.value
    assert err.capacity == 64
    assert err.held + err.requested == len(tokens)
    assert str(len(tokens)) in err.message and "64" in err.message
    # The session is still usable afterwards.
    text, usage, _ = run(session, prompt(engine, "short"))
    assert usage.completion_tokens > 0


def test_answer_stops_when_the_window_is_full(engine: Engine) -> None:
    session = engine.open_session(48)
    tokens = prompt(engine, "hi")
    _, usage, done = run(session, tokens, GenerationOptions(max_tokens=500))
    assert done.reason == "context"
    assert len(tokens) + usage.completion_tokens == 48


def test_cancel_stops_within_a_few_tokens(engine: Engine) -> None:
    session = engine.open_session(1024)
    tokens = prompt(engine, "Write a very long story")
    reason = None
    held_at_cancel = 0
    for event in session.generate(tokens, GenerationOptions(max_tokens=900)):
        if isinstance(event, TextDelta) and not held_at_cancel:
            held_at_cancel = session.token_count
            # Cancel from another thread, as a UI does.
            canceller = threading.Thread(target=session.cancel)
            canceller.start()
            canceller.join()
        if isinstance(event, Usage):
            completion = event.completion_tokens
        if isinstance(event, Done):
            reason = event.reason
    assert reason == "cancelled"
    generated_at_cancel = held_at_cancel - len(tokens)
    assert completion <= generated_at_cancel + 1  # stopped at the next token boundary


def test_multibyte_characters_are_never_split(engine: Engine) -> None:
    tok = engine.tokenizer
    text = "naïve café — 😀🚀 日本語 Ελληνικά"
    ids = tok.encode(text)
    assert len(ids) > len(text.split())  # multi-byte characters span tokens
    decoder = StreamDecoder(tok)
    pieces = [decoder.push(t) for t in ids] + [decoder.flush()]
    assert "".join(pieces) == tok.decode(ids) == text
    assert all("\ufffd" not in p for p in pieces)


def test_sampling_with_a_seed_is_reproducible(engine: Engine) -> None:
    options = GenerationOptions(max_tokens=20, temperature=0.9, top_p=0.95, top_k=40, seed=7)
    tokens = prompt(engine, "sample")
    a, _, _ = run(engine.open_session(256), tokens, options)
    b, _, _ = run(engine.open_session(256), tokens, options)
    assert a == b
