"""The context budget: what goes into the model's window, and what is left out.

Before every turn Enclave counts, with the model's own tokenizer and chat
template, the system prompt + history + (later) retrieved passages + the new
message, and keeps ``reserve`` tokens free for the answer. When that does not
fit, a policy decides:

* ``stop`` — refuse, saying by how many tokens it is over;
* ``drop-oldest`` — drop whole turns, oldest first, always keeping the system
  prompt and the first exchange (it usually states the task);
* ``truncate-middle`` — keep every turn but shorten the middle of the longest
  older messages (head and tail kept, a marker in between).

Whatever is dropped or shortened is returned as :class:`Drop` records so the
caller can store them and tell the user; nothing is ever cut silently. A new
message that cannot fit even alone is an error under every policy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from assistant.core.errors import ContextExhausted, EnclaveError
from assistant.core.records import Drop, Message, Plan

POLICIES = ("stop", "drop-oldest", "truncate-middle")
TRUNCATION_MARKER = "\n[… {n} tokens left out to fit the context window …]\n"

Counter = Callable[[Sequence[Message]], int]


def _preview(text: str, words: int = 8) -> str:
    parts = text.split()
    return " ".join(parts[:words]) + (" …" if len(parts) > words else "")


def fit(
    system: Sequence[Message],
    history: Sequence[Message],
    new: Message,
    count: Counter,
    window: int,
    reserve: int,
    policy: str = "drop-oldest",
    encode: Callable[[str], list[int]] | None = None,
    decode: Callable[[list[int]], str] | None = None,
    grow: str | Callable[[int], str] = "Or raise --ctx if the model's window allows it.",
) -> Plan:
    """Choose what to send so that ``count(messages) + reserve <= window``.

    ``count`` renders messages with the chat template and returns the exact token
    count the engine will see; ``encode``/``decode`` are needed for
    ``truncate-middle``; ``grow`` says whether and how the window can grow, given the
    tokens a message needs (:func:`assistant.app.notices.window_hint`).
    """
    if policy not in POLICIES:
        raise EnclaveError(f"Unknown context policy {policy!r}.", f"Policies: {', '.join(POLICIES)}.")
    reserve = max(0, min(reserve, window - 1))
    budget = window - reserve
    history = list(history)
    messages = [*system, *history, new]
    used = count(messages)
    if used <= budget:
        return Plan(messages, used, window, reserve)

    alone = count([*system, new])
    if alone > budget:
        raise ContextExhausted(
            message=f"This message needs {alone} tokens with the system prompt, but the window holds {window} "
            f"with {reserve} kept for the answer ({alone - budget} too many).",
            hint=f"Shorten the message. {grow(alone + reserve) if callable(grow) else grow}",
            needed=alone,
            window=window,
            reserve=reserve,
        )
    if policy == "stop":
        raise ContextExhausted(
            message=f"The conversation needs {used} tokens, but the window holds {window} with {reserve} kept for "
            f"the answer ({used - budget} too many).",
            hint="Start a new conversation (/new), or use --context-policy drop-oldest or truncate-middle.",
            needed=used,
            window=window,
            reserve=reserve,
        )
    if policy == "drop-oldest":
        return _drop_oldest(system, history, new, count, window, reserve)
    if encode is None or decode is None:
        raise ValueError("truncate-middle needs encode and decode")
    return _truncate_middle(system, history, new, count, window, reserve, encode, decode)


def _turns(history: Sequence[Message]) -> list[list[int]]:
    """Indices of history grouped into exchanges: a user message and what follows it."""
    groups: list[list[int]] = []
    for i, message in enumerate(history):
        if message["role"] == "user" or not groups:
            groups.append([i])
        else:
            groups[-1].append(i)
    return groups


def _drop_oldest(
    system: Sequence[Message], history: list[Message], new: Message, count: Counter, window: int, reserve: int
) -> Plan:
    budget = window - reserve
    groups = _turns(history)
    keep = [True] * len(groups)
    drops: list[Drop] = []
    # Group 0 (the first exchange) is kept; drop from group 1 onward.
    for g in range(1, len(groups)):
        kept = [history[i] for k, grp in zip(keep, groups, strict=True) if k for i in grp]
        if count([*system, *kept, new]) <= budget:
            break
        before = count([*system, *kept, new])
        keep[g] = False
        kept_after = [history[i] for k, grp in zip(keep, groups, strict=True) if k for i in grp]
        drops.append(
            Drop(
                "turn",
                groups[g][0],
                before - count([*system, *kept_after, new]),
                _preview(history[groups[g][0]]["content"]),
            )
        )
    kept = [history[i] for k, grp in zip(keep, groups, strict=True) if k for i in grp]
    used = count([*system, *kept, new])
    if used > budget and groups:
        # Even the first exchange must go.
        before = used
        keep[0] = False
        kept = [history[i] for k, grp in zip(keep, groups, strict=True) if k for i in grp]
        used = count([*system, *kept, new])
        drops.insert(0, Drop("turn", 0, before - used, _preview(history[0]["content"])))
    return Plan([*system, *kept, new], used, window, reserve, drops)


def _truncate_middle(
    system: Sequence[Message],
    history: list[Message],
    new: Message,
    count: Counter,
    window: int,
    reserve: int,
    encode: Callable[[str], list[int]],
    decode: Callable[[list[int]], str],
) -> Plan:
    budget = window - reserve
    history = [dict(m) for m in history]
    drops: list[Drop] = []
    used = count([*system, *history, new])
    # Shorten the longest messages first (oldest first among equals) until it fits.
    while used > budget:
        sizes = [(len(encode(m["content"])), -i, i) for i, m in enumerate(history) if m["content"]]
        if not sizes:
            break
        size, _, index = max(sizes)
        over = used - budget
        tokens = encode(history[index]["content"])
        marker_cost = len(encode(TRUNCATION_MARKER.format(n=len(tokens))))
        remove = min(len(tokens), over + marker_cost)
        if remove >= len(tokens) - 2 * 8 or len(tokens) <= marker_cost + 16:
            # Too short to keep a head and a tail: drop the message text entirely.
            drops.append(Drop("truncated", index, len(tokens), _preview(history[index]["content"])))
            history[index]["content"] = ""
        else:
            head = (len(tokens) - remove) // 2
            tail = len(tokens) - remove - head
            cut = tokens[head : len(tokens) - tail]
            history[index]["content"] = (
                decode(tokens[:head]) + TRUNCATION_MARKER.format(n=len(cut)) + decode(tokens[len(tokens) - tail :])
            )
            drops.append(Drop("truncated", index, len(cut), _preview(decode(cut))))
        used = count([*system, *history, new])
    if used > budget:
        # Only template glue is left to save: drop whole exchanges as well.
        plan = _drop_oldest(system, history, new, count, window, reserve)
        return Plan(plan.messages, plan.used, window, reserve, drops + plan.drops)
    return Plan([*system, *history, new], used, window, reserve, drops)
