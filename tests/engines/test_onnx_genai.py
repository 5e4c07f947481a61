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


def test_the_cache_allocation_is_sized_to_the_turn_rounded_doubled_and_capped() -> None:
    def alloc(need: int, current: int, capacity: int, floor: int = 0) -> int:
        return onnx_genai.kv_allocation(need, current, capacity, floor, step=256)

    assert alloc(300, 0, 2048) == 512  # rounded up to the 256-token step
    assert alloc(300, 512, 2048) == 512  # enough: unchanged
    assert alloc(600, 512, 2048) == 1024  # outgrown: twice the old size...
    assert alloc(1300, 512, 2048) == 1536  # ...or the need, whichever is larger
    assert alloc(1900, 1536, 2048) == 2048  # never above the window
    assert alloc(40, 0, 2048, floor=513) == 513  # a sliding-window model's minimum


def _chat(engine, kv: str, window: int = 1024, between=None):  # type: ignore[no-untyped-def]
    """Ten turns of ~60 new tokens each in one session: answers, usage, final bookkeeping.
    ``between(session)``, when given, runs after each turn; what it returns ends the row."""
    engine.kv_cache = kv
    tok = engine.tokenizer
    session = engine.open_session(window)
    messages: list[dict[str, str]] = []
    rows = []
    for i in range(10):
        messages.append({"role": "user", "content": f"turn {i}: " + "valve logged. " * 3})
        prompt = tok.encode(tok.render(messages))
        text, usage = _turn(session, prompt, GenerationOptions(max_tokens=16))
        extra = between(session) if between is not None else ()
        rows.append((text, usage.prompt_tokens, usage.prefilled_tokens, usage.cache_tokens, *extra))
        messages.append({"role": "assistant", "content": text})
    held = (session.native_token_count(), session.token_count)
    session.close()
    return rows, held


def test_a_growing_cache_answers_as_the_preallocated_window_does(tiny_engine) -> None:  # type: ignore[no-untyped-def]
    window_rows, window_held = _chat(tiny_engine, "window")
    grow_rows, grow_held = _chat(tiny_engine, "grow")
    assert [r[0] for r in grow_rows] == [r[0] for r in window_rows]  # the same greedy answers
    assert {r[3] for r in window_rows} == {1024}
    sizes = [r[3] for r in grow_rows]
    assert sizes[0] < 1024 and sizes == sorted(sizes) and sizes[-1] == 1024
    assert len(set(sizes)) >= 3  # grown twice, doubling
    for (_text, prompt, prefilled, size), before in zip(grow_rows[1:], sizes, strict=False):
        if size > before:  # the turn that outgrew the cache re-read the conversation
            assert prefilled == prompt
        else:
            assert prefilled < prompt
        assert prompt + 16 <= size
    assert grow_held[0] == grow_held[1] and window_held[0] == window_held[1]


def _chat_with_pauses(engine, interrupt_after: int | None = None):  # type: ignore[no-untyped-def]
    """``_chat``'s ten turns with the idle time between them given to ``prepare_next``
    (``interrupt_after``: a request "arrives" after that many of its checks). Rows:
    text, prompt, prefilled, cache before, tokens re-read, cache after."""

    def pause(session) -> tuple[int, int]:  # type: ignore[no-untyped-def]
        checks = iter(range(10_000))

        def interrupted() -> bool:
            return interrupt_after is not None and next(checks) >= interrupt_after

        return session.prepare_next(interrupted), session._cache_tokens()

    return _chat(engine, "grow", between=pause)


def test_a_cache_grown_between_turns_keeps_every_turn_incremental(tiny_engine) -> None:  # type: ignore[no-untyped-def]
    window_rows, _ = _chat(tiny_engine, "window")
    rows, held = _chat_with_pauses(tiny_engine)
    assert [r[0] for r in rows] == [r[0] for r in window_rows]  # the same greedy answers
    grown = [r for r in rows if r[4] > 0]
    assert len(grown) >= 2  # it grew between turns, more than once...
    for _text, _prompt, _prefilled, before, read, after in grown:
        assert after > before and read > 0
    # ...so no turn re-read the conversation: each read what the preallocated window's did.
    assert [r[2] for r in rows] == [r[2] for r in window_rows]
    assert all(prefilled < prompt for _t, prompt, prefilled, *_ in rows[1:])
    assert rows[0][3] < 1024 and rows[-1][5] <= 1024
    assert held[0] == held[1]
    # Nothing left to do once the cache holds the window, or when it has room.
    assert all(r[4] == 0 for r in rows if r[3] == 1024)


def test_an_interrupted_growth_leaves_the_next_turn_to_read_its_prompt(tiny_engine) -> None:  # type: ignore[no-untyped-def]
    window_rows, _ = _chat(tiny_engine, "window")
    rows, held = _chat_with_pauses(tiny_engine, interrupt_after=0)
    assert [r[0] for r in rows] == [r[0] for r in window_rows]
    assert all(r[4] == 0 for r in rows)  # every growth was interrupted before it read a chunk
    # The turn after an interrupted growth read its whole prompt (the cache was given up).
    assert any(prefilled == prompt for _t, prompt, prefilled, *_ in rows[1:])
    assert held[0] == held[1]


def test_prepare_next_does_nothing_for_a_preallocated_window(tiny_engine) -> None:  # type: ignore[no-untyped-def]
    tiny_engine.kv_cache = "window"
    tok = tiny_engine.tokenizer
    session = tiny_engine.open_session(1024)
    _turn(session, tok.encode(tok.render([{"role": "user", "content": "hello"}])), GenerationOptions(max_tokens=8))
    assert session.prepare_next() == 0 and session._cache_tokens() == 1024
    session.close()


@pytest.mark.parametrize("kv", ["grow", "window"])
def test_the_kv_cache_setting_crosses_the_sealed_worker(kv: str, tiny_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from assistant.engines.protocol import LoadOnnx
    from assistant.engines.sealed import SealedEngine

    engine = SealedEngine(LoadOnnx(str(tiny_dir), "tiny", kv_cache=kv), home=tmp_path / "worker")
    try:
        tok = engine.tokenizer
        prompt = tok.encode(tok.render([{"role": "user", "content": "Is the valve logged?"}]))
        _, usage = _turn(engine.open_session(1024), prompt, GenerationOptions(max_tokens=16))
        need = len(prompt) + 16 + onnx_genai.MAX_DRAFT_TOKENS + 1
        assert usage.cache_tokens == (onnx_genai.kv_allocation(need, 0, 1024) if kv == "grow" else 1024)
        assert kv == "window" or usage.cache_tokens < 1024
        assert usage.as_dict()["cache_tokens"] == usage.cache_tokens
    finally:
        engine.close()


def test_the_sealed_worker_grows_the_cache_while_the_user_reads(tiny_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import time

    from assistant.engines.protocol import LoadOnnx
    from assistant.engines.sealed import SealedEngine
    from assistant.privacy.worker import IDLE_AFTER_S

    engine = SealedEngine(LoadOnnx(str(tiny_dir), "tiny", kv_cache="grow"), home=tmp_path / "worker")
    try:
        tok = engine.tokenizer
        options = GenerationOptions(max_tokens=16)

        def chat(pause_s: float) -> list[Usage]:
            session = engine.open_session(1024)
            messages: list[dict[str, str]] = []
            usages = []
            for i in range(3):
                messages.append({"role": "user", "content": f"turn {i}: " + "valve logged. " * 3})
                text, usage = _turn(session, tok.encode(tok.render(messages)), options)
                usages.append(usage)
                messages.append({"role": "assistant", "content": text})
                time.sleep(pause_s)
            session.close()
            return usages

        paused = chat(IDLE_AFTER_S + 0.8)  # a user reading each answer: the worker grows the cache meanwhile
        assert paused[0].cache_tokens < paused[1].cache_tokens <= 1024
        for usage in paused[1:]:  # grown, and still only the new message read
            assert usage.prefilled_tokens < usage.prompt_tokens
    finally:
        engine.close()
