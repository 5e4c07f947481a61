"""Chat templates rendered the way transformers renders them, with tools, in a Jinja sandbox.

A model's chat template is code its publisher wrote; it runs in Jinja's
``ImmutableSandboxedEnvironment`` (no attribute access to Python internals, no mutation
of the values passed in) with transformers' settings (``trim_blocks``, ``lstrip_blocks``,
``loopcontrols``) and helpers (``raise_exception``, ``strftime_now``, a ``tojson`` that
keeps non-ASCII text), so that a template written for ``apply_chat_template(tools=...)``
renders here as it does there.

:func:`detect_tool_format` reads a template for a *tool-call format*: the template must
render the ``tools`` it is given and must show a call syntax Enclave can constrain and
parse (:data:`ToolFormatName`). A template that does neither (SmolLM2's ChatML) has none.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, get_args

ToolFormatName = Literal["hermes", "llama3_json", "phi4", "mistral"]
TOOL_FORMATS: tuple[ToolFormatName, ...] = get_args(ToolFormatName)

#: The probe tool: names no real template would print unless it renders ``tools``.
_PROBE_NAME = "enclave_probe_function"
_PROBE_TOOL = {
    "type": "function",
    "function": {
        "name": _PROBE_NAME,
        "description": "enclave probe description",
        "parameters": {"type": "object", "properties": {"enclave_probe_arg": {"type": "string"}}},
    },
}
_PROBE_CALL = {
    "id": "call_enclaveprobe",
    "type": "function",
    "function": {"name": _PROBE_NAME, "arguments": {"enclave_probe_arg": "x"}},
}


def _raise(message: str) -> None:
    raise ValueError(message)


def _tojson(value: Any, indent: int | None = None, **_: Any) -> str:
    # transformers' tojson: no HTML escaping, non-ASCII kept, key order kept.
    return json.dumps(value, ensure_ascii=False, indent=indent)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class ChatTemplate:
    """A model's chat template, compiled once in a sandbox."""

    def __init__(self, source: str, bos_token: str = "", eos_token: str = "") -> None:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
        )
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = _strftime_now
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        self._template = env.from_string(source)

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = True,
    ) -> str:
        """The prompt for ``messages`` (OpenAI's shapes, with ``tool_calls`` arguments as
        objects, as transformers expects) offering ``tools``; raises ``ValueError`` (and
        Jinja's errors) when the template refuses them."""
        return str(
            self._template.render(
                messages=[dict(m) for m in messages],
                tools=[dict(t) for t in tools] if tools else None,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
            )
        )


def detect_tool_format(source: str | None) -> ToolFormatName | None:
    """The tool-call format a chat template defines, or None.

    Two checks, both needed: rendered with a probe tool, the prompt shows the tool (the
    template offers ``tools`` to the model); and the template writes calls in a syntax
    named here, seen first in how it renders an assistant message holding a probe call
    (the surest sign), else in the template's text (templates that describe the syntax
    to the model but drop past calls, as Phi-4-mini's does)."""
    if not source:
        return None
    try:
        template = ChatTemplate(source)
        offered = template.render([{"role": "user", "content": "hi"}], [_PROBE_TOOL])
    except Exception:  # noqa: BLE001 - a template that cannot render tools has no tool format
        return None
    if _PROBE_NAME not in offered:
        return None
    try:
        history = template.render(
            [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "", "tool_calls": [_PROBE_CALL]},
                {"role": "tool", "tool_call_id": "call_enclaveprobe", "name": _PROBE_NAME, "content": "ok"},
            ],
            [_PROBE_TOOL],
        )
    except Exception:  # noqa: BLE001 - some templates refuse tool history; the text still tells
        history = ""
    after = history.split("hi", 1)[-1]
    found = _syntax(after) if _PROBE_NAME in after else None
    return found or _syntax(source)


def _syntax(text: str) -> ToolFormatName | None:
    if "<|tool_call|>" in text:
        return "phi4"
    if "[TOOL_CALLS]" in text:
        return "mistral"
    if "<tool_call>" in text:
        return "hermes"
    # Llama 3.x: a bare JSON object, its arguments under "parameters".
    if re.search(r'"name":\s*"' + _PROBE_NAME + r'",\s*"parameters"', text) or (
        '"parameters"' in text and "function name" in text
    ):
        return "llama3_json"
    return None
