"""The sentences every front end shows around an answer, written once.

The CLI prints them on stderr, the TUI in the answer's footer and as notifications,
the server (later) in its JSON: the same words everywhere.
"""

from __future__ import annotations

from typing import Any

from assistant.core.records import Plan, TurnResult

#: How a front end names why an answer stopped, when it was not the model's own end.
STOPPED = {
    "length": "stopped at the answer limit (--max-tokens)",
    "context": "the context window is full",
    "cancelled": "cancelled — not saved",
    "error": "failed",
}


def answer_footer(result: TurnResult, *, detail: bool = False) -> str:
    """One line under an answer: model · engine · where · speed · sources · why it stopped.

    ``detail`` adds the prompt accounting (prompt tokens, prefilled, answer tokens)
    that the line interface prints on stderr."""
    if result.finish_reason == "no-evidence":
        return "documents · nothing relevant found, so the model was not asked"
    parts = [result.model, result.engine, result.where]
    u = result.usage
    if u is not None:
        if detail:
            parts.append(f"{u.prompt_tokens} prompt tokens ({u.prefilled_tokens} prefilled)")
        parts.append(f"TTFT {u.ttft_ms:.0f} ms")
        parts.append(f"{u.decode_tokens_per_s:.1f} tok/s")
        if detail:
            parts.append(f"{u.completion_tokens} tokens")
    if result.citations is not None:
        n = len(result.citations)
        parts.append(f"{n} source{'s' if n != 1 else ''}")
    if result.finish_reason in STOPPED:
        parts.append(STOPPED[result.finish_reason])
    return " · ".join(parts)


def drops_notice(plan: Plan | None) -> str | None:
    """What was left out of the prompt to fit the window, or None when nothing was."""
    if plan is None or not plan.drops:
        return None
    turns = plan.dropped_turns
    cut = len(plan.drops) - turns
    saved = sum(d.tokens for d in plan.drops)
    what = []
    if turns:
        what.append(f"{turns} older turn{'s' if turns > 1 else ''} left out")
    if cut:
        what.append(f"{cut} message{'s' if cut > 1 else ''} shortened")
    return (
        f"{' and '.join(what)} to fit the {plan.window}-token window ({saved} tokens); "
        "the full conversation stays in the history."
    )


def source_status(citation: dict[str, Any]) -> str:
    """What a listed passage did for the answer, in the user's words."""
    if citation.get("cited"):
        return "cited"
    if citation.get("supports"):
        return "not cited, but the answer matches it"
    return "given, not used"
