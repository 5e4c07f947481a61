"""The context budget on the real tiny engine: every policy at 0.5× … 2× the window."""

from __future__ import annotations

from dataclasses import replace

import pytest

from assistant.app.turns import Assistant, Conversation
from assistant.catalog.manifests import InstalledModel
from assistant.core.errors import ContextExhausted
from assistant.core.settings import Settings

WINDOW = 512
RESERVE = 64
BUDGET = WINDOW - RESERVE
NEW = "What now?"


def _conversation(settings: Settings, policy: str) -> Conversation:
    settings = replace(settings, context_window=WINDOW, answer_reserve=RESERVE, context_policy=policy, max_tokens=16)
    return Assistant(settings).conversation("tiny", save=False)


def _fill(conv: Conversation, target: int) -> None:
    """Give ``conv`` a history whose next prompt (with NEW) needs exactly ``target`` tokens."""
    conv.messages = [{"role": "user", "content": "First: the pump manual."}, {"role": "assistant", "content": "Noted."}]
    def count() -> int:
        return len(conv.tokens_for(conv.system_messages() + conv.messages + [{"role": "user", "content": NEW}]))

    turn = 0
    while True:
        # Whole turns while far from the target, then one-token padding to land on it.
        if count() + 64 < target:
            turn += 1
            conv.messages += [
                {"role": "user", "content": f"Question {turn} about valves"},
                {"role": "assistant", "content": "ok"},
            ]
            while count() + 64 < target and len(conv.messages[-1]["content"]) < 400:
                conv.messages[-1]["content"] += " a"
            continue
        while count() < target:
            conv.messages[-1]["content"] += " a"
        break


@pytest.mark.parametrize("factor", [0.5, 0.9, 1.0, 1.1, 2.0])
@pytest.mark.parametrize("policy", ["stop", "drop-oldest", "truncate-middle"])
def test_policy_at_fraction_of_the_window(settings: Settings, tiny_installed: InstalledModel, policy: str, factor: float) -> None:
    conv = _conversation(settings, policy)
    target = round(factor * BUDGET)
    _fill(conv, target)
    history = [dict(m) for m in conv.messages]
    needed = len(conv.tokens_for(conv.system_messages() + history + [{"role": "user", "content": NEW}]))
    assert abs(needed - target) <= 1

    if needed <= BUDGET:
        plan = conv.plan(NEW)
        assert plan.drops == [] and plan.used == needed
    elif policy == "stop":
        with pytest.raises(ContextExhausted) as info:
            conv.plan(NEW)
        assert info.value.needed == needed
        assert str(needed - BUDGET) in info.value.message  # says by how much
        return
    else:
        plan = conv.plan(NEW)
        assert plan.drops, "an over-full prompt must report what it left out"
        assert plan.used <= BUDGET
        assert plan.messages[0]["role"] == "system"
        assert plan.messages[-1] == {"role": "user", "content": NEW}
        if policy == "drop-oldest":
            assert plan.dropped_turns >= 1
            assert plan.messages[1:3] == history[:2]  # the first exchange is kept
            kept = plan.messages[1:-1]
            assert all(m in history for m in kept)
        else:
            assert all(d.kind == "truncated" for d in plan.drops)
            assert len(plan.messages) == len(history) + 2  # every turn still there
            assert any("left out to fit" in m["content"] for m in plan.messages)

    # The turn runs, and Enclave's count is exactly the engine's.
    result = conv.ask(NEW)
    assert result.usage is not None
    assert result.usage.prompt_tokens == plan.used
    assert result.context is not None and result.context.used == plan.used
    # The history itself is never cut: drops only shape what is sent.
    assert conv.messages[: len(history)] == history


def test_a_message_too_long_for_the_window_is_refused_with_numbers(settings: Settings, tiny_installed: InstalledModel) -> None:
    for policy in ("stop", "drop-oldest", "truncate-middle"):
        conv = _conversation(settings, policy)
        with pytest.raises(ContextExhausted) as info:
            conv.ask("valve " * 600)
        err = info.value
        assert err.window == WINDOW and err.reserve == RESERVE and err.needed > BUDGET
        assert f"{err.needed - BUDGET} too many" in err.message


def test_after_a_drop_the_cache_keeps_the_shared_prefix(settings: Settings, tiny_installed: InstalledModel) -> None:
    conv = _conversation(settings, "drop-oldest")
    turns = 0
    while True:
        turns += 1
        before = conv.session.tokens
        result = conv.ask(f"Question number {turns} about the pressure relief valve and its seals")
        assert result.usage is not None and result.context is not None
        if result.context.dropped_turns:
            break
        assert turns < 60
    sent = conv.session.tokens[: result.usage.prompt_tokens]
    shared = 0
    while shared < min(len(before), len(sent)) and before[shared] == sent[shared]:
        shared += 1
    # The cache was rewound to the longest prefix it shared with the new prompt
    # (at least the whole system prompt), not emptied.
    tok = conv.engine.tokenizer
    system = len(tok.encode(tok.render(conv.system_messages(), add_generation_prompt=False)))
    assert shared >= system
    assert result.usage.prefilled_tokens == result.usage.prompt_tokens - shared


def test_twenty_turns_never_re_prefill_the_history(settings: Settings, tiny_installed: InstalledModel) -> None:
    settings = replace(settings, context_window=1024, max_tokens=8)
    conv = Assistant(settings).conversation("tiny", save=False)
    previous = None
    total_prefilled = 0
    for turn in range(20):
        result = conv.ask(f"Turn {turn}: check the seals")
        usage = result.usage
        assert usage is not None
        total_prefilled += usage.prefilled_tokens
        if previous is not None:
            # Exactly the tokens the cache did not hold: the new message and template glue.
            assert usage.prefilled_tokens == usage.prompt_tokens - (previous.prompt_tokens + previous.completion_tokens)
            assert usage.prefilled_tokens < 50
        previous = usage
    assert total_prefilled < conv.session.token_count  # the history was never prefilled twice
