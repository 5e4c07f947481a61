"""The sentences every front end shows around an answer, written once.

The CLI prints them on stderr, the TUI in the answer's footer and as notifications,
the server (later) in its JSON: the same words everywhere.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from assistant.core.events import Usage
from assistant.core.records import Plan, TurnResult
from assistant.core.settings import Settings
from assistant.core.text import Cleaned

#: How a front end names why an answer stopped, when it was not the model's own end.
STOPPED = {
    "length": "stopped at the answer limit (--max-tokens)",
    "context": "the context window is full",
    "cancelled": "cancelled — not saved",
    "repetition": "stopped: the answer began repeating itself",
    "error": "failed",
}

#: The word the footer uses for each way of answering from documents.
MODE_WORDS = {
    "extract": "quoted from the sources (the model was not asked)",
    "quote": "quotes chosen by the model",
    "free": "quotes + the model's answer, checked",
}


def speculation_note(usage: Usage) -> str:
    """What n-gram speculation did in a turn: the draft tokens accepted of those verified."""
    return f"speculation {usage.accepted_tokens}/{usage.drafted_tokens} drafts accepted"


def answer_footer(result: TurnResult, *, detail: bool = False) -> str:
    """One line under an answer: model · engine · where · speed · sources · why it stopped.

    ``detail`` adds the prompt accounting (prompt tokens, prefilled, answer tokens)
    that the line interface prints on stderr."""
    asked = result.usage is not None and result.usage.prompt_tokens > 0
    if result.finish_reason == "no-evidence" and (result.mode != "quote" or not asked):
        return "documents · not found in the sources, so the model was not asked"
    if result.mode == "extract":
        parts = [f"documents · {MODE_WORDS['extract']}"]
        shown = result.timings.get("first_text_ms")
        if shown is not None:
            parts.append(f"shown after {shown:.0f} ms")
        if result.citations is not None:
            n = len(result.citations)
            parts.append(f"{n} source{'s' if n != 1 else ''}")
        return " · ".join(parts)
    parts = [result.model, result.engine, result.where]
    if result.mode is not None:
        parts.insert(0, _documents_word(result))
    u = result.usage
    if u is not None:
        if detail:
            parts.append(f"{u.prompt_tokens} prompt tokens ({u.prefilled_tokens} prefilled)")
        parts.append(f"TTFT {u.ttft_ms:.0f} ms")
        parts.append(f"{u.decode_tokens_per_s:.1f} tok/s")
        if u.drafted_tokens:
            parts.append(speculation_note(u))
        if detail:
            parts.append(f"{u.completion_tokens} tokens")
    if result.citations is not None:
        n = len(result.citations)
        parts.append(f"{n} source{'s' if n != 1 else ''}")
    if result.finish_reason in STOPPED:
        parts.append(STOPPED[result.finish_reason])
    return " · ".join(parts)


def _documents_word(result: TurnResult) -> str:
    if result.finish_reason == "no-evidence":  # asked for quotes, the model chose none that answer
        return "documents · not found in the sources (the model chose none of the sentences offered)"
    return f"documents · {MODE_WORDS[str(result.mode)]}"


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
    """What a listed passage did for the answer, in the user's words: a label says a
    passage backs the answer only when one of its sentences states a sentence of it."""
    if citation.get("cited"):
        return "quoted"
    if citation.get("supports"):
        return "states a sentence of the answer"
    return "given, not used"


def sentence_lines(result: TurnResult) -> list[str]:
    """One line per sentence of an answer from documents: what it is and where the
    source sentence is ("[1] quoted from GPL-3, lines 427–429"; "not found in the
    sources" for a model sentence no source sentence states)."""
    out = []
    for s in result.answer_sentences:
        if s.kind == "quote":
            out.append(f"[{s.source}] quoted from {s.location}")
        elif s.source is not None:
            out.append(f"“{_short(s.text)}” — supported by [{s.source}] {s.location}")
        else:
            out.append(f"“{_short(s.text)}” — not found in the sources")
    return out


def _short(text: str, limit: int = 70) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def input_notice(cleaned: Cleaned) -> str:
    """What was changed in a message before the model saw it (NUL bytes, control characters,
    bytes that were not UTF-8), in one sentence, so the user knows what was sent."""
    parts = []
    if cleaned.nul:
        parts.append(f"{cleaned.nul} NUL character{'s' if cleaned.nul != 1 else ''} removed")
    if cleaned.controls:
        parts.append(f"{cleaned.controls} control character{'s' if cleaned.controls != 1 else ''} removed")
    if cleaned.undecodable:
        n = cleaned.undecodable
        parts.append(f"{n} byte{'s' if n != 1 else ''} that {'are' if n != 1 else 'is'} not UTF-8 replaced with �")
    return "Your message was cleaned before it was sent: " + ", ".join(parts) + " (the model cannot read them)."


def window_hint(requested: int, model_window: int, window: int, needed: int | None = None) -> str:
    """Whether the context window can grow, as one sentence: ``requested`` is the
    window asked for (--ctx), ``model_window`` the most the model allows (a LiteRT-LM
    bundle's KV cache is fixed when it is built), ``window`` the one in use, ``needed``
    the tokens a message needs (with the room kept for the answer), when known: a
    window that cannot grow enough is not offered."""
    if needed is not None and needed > model_window:
        return (
            f"Not even the model's whole window ({model_window:,} tokens) holds {needed:,}: "
            "split the text and ask about one part at a time, or index it as a document "
            "(enclave docs add FILE) and ask with --docs."
        )
    if window >= model_window:
        if requested > model_window:
            return f"This model's window is fixed at {model_window:,} tokens, so --ctx {requested:,} cannot raise it."
        return f"This is already the model's whole window ({model_window:,} tokens)."
    return f"Or raise --ctx: this model allows up to {model_window:,} tokens."


def window_note(settings: Settings, window: int, engine: str, *, asked: bool = False) -> str | None:
    """What every front end says once when the context window in use is smaller than the
    one asked for (``--ctx``, ``asked``, or a ``context_window`` setting): how large it is,
    and why. None when it is the window asked for, or when nobody asked — the default
    setting on a model with a smaller window is the model's window, not a request refused."""
    requested = settings.context_window
    if window >= requested or (requested == _DEFAULT_WINDOW and not asked):
        return None
    if engine == "litert":
        why = (
            "fixed when its LiteRT-LM bundle was built (an onnx build of it, -e onnx, takes --ctx up to "
            "the model's trained window)"
        )
    else:
        why = "the longest it was trained for"
    return f"--ctx {requested:,} is more than this model allows: the window is {window:,} tokens, {why}."


_DEFAULT_WINDOW = next(f.default for f in fields(Settings) if f.name == "context_window")


def base_model_note(name: str) -> str:
    """What every front end says when a conversation runs on a base model (no chat template)."""
    return f"{name} is a base model: it continues text rather than answering questions."


def base_model_persona_note(name: str) -> str:
    """Why ``/persona`` changes nothing on a base model (it would continue the instructions as text)."""
    return (
        f"{name} is a base model, so it takes no persona: it would only continue a persona's "
        "instructions as more text. Give it a text to start from with /set system TEXT (or -s TEXT)."
    )
