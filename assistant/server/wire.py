"""OpenAI's wire format: request JSON into the app layer's records, results back into JSON.

Parsing is strict where a silent guess would change an answer (an unknown role, ``n`` > 1,
a penalty no engine applies, deprecated ``function`` messages) and lenient about fields that change nothing
(``user``, ``metadata``, ``store``, zero penalties), as clients send many of those by default.
Every refusal is an :class:`~assistant.core.errors.InvalidRequest` naming its ``param``.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, get_args

from assistant.app.serving import (
    ROLES,
    ChatMessage,
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    Embeddings,
    ResponseFormat,
    Role,
    Sampling,
    Served,
    ServedModel,
    ToolChoice,
)
from assistant.app.structured import FormatError, decodable_schema
from assistant.app.tools import Tool, ToolCall
from assistant.core.errors import InvalidRequest, NotSupported
from assistant.core.events import FinishReason

#: OpenAI accepts at most 4 stop sequences; so does Enclave (each costs a scan per token).
MAX_STOP_SEQUENCES = 4
#: Inputs per embeddings request (OpenAI's limit is 2048; 256 passages take ~7 s with MiniLM on 2 cores).
MAX_EMBEDDING_INPUTS = 256

#: Enclave's finish reasons in OpenAI's words: an answer cut by the window is "length" to a client.
FINISH: dict[FinishReason, str] = {
    "stop": "stop",
    "length": "length",
    "context": "length",
    "no-evidence": "stop",
    # The loop guard stopped an answer that began repeating itself: to a client, it ended
    # (the `enclave` object says why).
    "repetition": "stop",
    "cancelled": "stop",
    "error": "stop",
}


@dataclass(frozen=True)
class Streaming:
    """How a client wants the answer delivered."""

    stream: bool = False
    include_usage: bool = False


def _get(body: Mapping[str, Any], name: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    value = body.get(name, default)
    if value is None:
        return default
    # bool is an int in Python, but true is not a number in JSON.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise InvalidRequest(f"`{name}` must be {_kind_name(kind)}, not {value!r}.", param=name)
    if not isinstance(value, kind):
        raise InvalidRequest(f"`{name}` must be {_kind_name(kind)}, not {type(value).__name__}.", param=name)
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        list: "a list",
        dict: "an object",
    }
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds if not (k is int and float in kinds))


def _number(body: Mapping[str, Any], name: str, low: float, high: float) -> float | None:
    value = _get(body, name, (int, float))
    if value is None:
        return None
    if not low <= value <= high:
        raise InvalidRequest(f"`{name}` must be between {low:g} and {high:g}, not {value}.", param=name)
    return float(value)


def _sampling(body: Mapping[str, Any]) -> Sampling:
    limit = _get(body, "max_completion_tokens", int, None)
    if limit is None:
        limit = _get(body, "max_tokens", int, None)
    if limit is not None and limit < 1:
        raise InvalidRequest(f"`max_tokens` must be at least 1, not {limit}.", param="max_tokens")
    stop = body.get("stop")
    stops: tuple[str, ...]
    if stop is None:
        stops = ()
    elif isinstance(stop, str):
        stops = (stop,)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        stops = tuple(stop)
    else:
        raise InvalidRequest("`stop` must be a string or a list of strings.", param="stop")
    if len(stops) > MAX_STOP_SEQUENCES:
        raise InvalidRequest(f"`stop` takes at most {MAX_STOP_SEQUENCES} sequences.", param="stop")
    if _get(body, "n", int, 1) != 1:
        raise NotSupported("Enclave writes one answer per request (`n` must be 1).", "Send n requests.", param="n")
    for name in ("presence_penalty", "frequency_penalty"):
        if _number(body, name, -2, 2) not in (None, 0.0):
            raise NotSupported(
                f"`{name}` is not applied by Enclave's engines, so the answer would not be what you asked for.",
                f"Leave `{name}` out (or 0).",
                param=name,
            )
    if body.get("logprobs") or body.get("top_logprobs") or body.get("echo") or body.get("best_of", 1) not in (1, None):
        raise NotSupported(
            "Log-probabilities, echo and best_of are not available from Enclave's engines.",
            "Leave them out.",
            param="logprobs",
        )
    seed = _get(body, "seed", int)
    return Sampling(
        max_tokens=limit,
        temperature=_number(body, "temperature", 0, 2),
        top_p=_number(body, "top_p", 0, 1),
        seed=seed,
        stop=stops,
    )


def _streaming(body: Mapping[str, Any]) -> Streaming:
    stream = bool(_get(body, "stream", bool, False))
    options = _get(body, "stream_options", dict, {})
    return Streaming(stream, stream and bool(options.get("include_usage")))


def _content(value: Any, where: str) -> str:
    """A message's text: a string, or a list of text parts."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts: list[str] = []
        for part in value:
            if not isinstance(part, dict) or part.get("type") not in ("text", "input_text"):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise NotSupported(
                    f"{where} has a {kind!r} part; Enclave's models read text only.",
                    "Send text parts only.",
                    param=where,
                )
            parts.append(str(part.get("text", "")))
        return "".join(parts)
    raise InvalidRequest(f"{where} must be a string or a list of text parts.", param=where)


def _messages(body: Mapping[str, Any]) -> tuple[ChatMessage, ...]:
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise InvalidRequest("`messages` must be a non-empty list of messages.", param="messages")
    out: list[ChatMessage] = []
    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise InvalidRequest(f"{where} must be an object with `role` and `content`.", param=where)
        role = message.get("role")
        if role == "developer":  # OpenAI's newer name for the system message
            role = "system"
        if role == "function":
            raise NotSupported(
                f"{where} has the role 'function' (OpenAI's deprecated function calling).",
                'Send tool results with the role "tool" and a `tool_call_id`.',
                param=f"{where}.role",
            )
        if role not in ROLES:
            raise InvalidRequest(f"{where} has the role {role!r}; roles are {', '.join(ROLES)}.", param=f"{where}.role")
        checked: Role = role
        calls = _tool_calls(message.get("tool_calls"), where) if role == "assistant" else ()
        content = message.get("content")
        text = "" if content is None and (calls or role == "tool") else _content(content or "", f"{where}.content")
        call_id = None
        if role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise InvalidRequest(
                    f"{where} is a tool result without a `tool_call_id`.", param=f"{where}.tool_call_id"
                )
        out.append(ChatMessage(checked, text, calls, call_id))
    return tuple(out)


def _tool_calls(raw: Any, where: str) -> tuple[ToolCall, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidRequest(f"{where}.tool_calls must be a list.", param=f"{where}.tool_calls")
    calls: list[ToolCall] = []
    for j, call in enumerate(raw):
        function = call.get("function") if isinstance(call, dict) else None
        if (
            not isinstance(function, dict)
            or not isinstance(function.get("name"), str)
            or not isinstance(function.get("arguments", ""), str)
        ):
            raise InvalidRequest(
                f"{where}.tool_calls[{j}] must be {{'id': …, 'type': 'function', "
                "'function': {'name': …, 'arguments': '<JSON text>'}}.",
                param=f"{where}.tool_calls",
            )
        ident = call.get("id")
        calls.append(
            ToolCall(
                ident if isinstance(ident, str) else f"call_{j}", function["name"], function.get("arguments") or "{}"
            )
        )
    return tuple(calls)


def _response_format(body: Mapping[str, Any]) -> ResponseFormat | None:
    raw = _get(body, "response_format", dict)
    if raw is None:
        return None
    kind = raw.get("type")
    if kind == "text":
        return ResponseFormat("text")
    if kind == "json_object":
        return ResponseFormat("json_object")
    if kind == "json_schema":
        spec = raw.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise InvalidRequest(
                "`response_format.json_schema.schema` must be a JSON Schema object.",
                param="response_format.json_schema",
            )
        # Checked here, before any model runs, as `enclave ask --schema` checks it: an
        # invalid schema is the client's 400, not the engine's "Error creating grammar".
        _check_schema(schema, "response_format.json_schema.schema", "response_format")
        return ResponseFormat("json_schema", json.dumps(schema))
    raise InvalidRequest(
        f"`response_format.type` must be text, json_object or json_schema, not {kind!r}.",
        param="response_format.type",
    )


@dataclass(frozen=True)
class Tools:
    """A request's ``tools``, ``tool_choice`` and ``parallel_tool_calls``."""

    tools: tuple[Tool, ...] = ()
    choice: ToolChoice = "auto"
    name: str | None = None
    parallel: bool = True


def _tools(body: Mapping[str, Any]) -> Tools:
    raw = _get(body, "tools", list, [])
    tools: list[Tool] = []
    for i, tool in enumerate(raw):
        function = tool.get("function") if isinstance(tool, dict) else None
        if (
            not isinstance(tool, dict)
            or tool.get("type", "function") != "function"
            or not isinstance(function, dict)
            or not isinstance(function.get("name"), str)
            or not function["name"]
        ):
            raise InvalidRequest(
                f"tools[{i}] must be {{'type': 'function', 'function': {{'name': …, 'parameters': {{…}}}}}}.",
                param="tools",
            )
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise InvalidRequest(f"tools[{i}].function.parameters must be a JSON Schema object.", param="tools")
        if parameters:
            _check_schema(parameters, f"tools[{i}].function.parameters", "tools")
        description = function.get("description")
        tools.append(Tool(function["name"], description if isinstance(description, str) else "", parameters))
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise InvalidRequest("Two tools have the same name.", "Give every function its own name.", param="tools")
    parallel = bool(_get(body, "parallel_tool_calls", bool, True))
    choice = body.get("tool_choice", "auto")
    if choice is None:
        choice = "auto"
    if isinstance(choice, dict):
        function = choice.get("function")
        if (
            choice.get("type") != "function"
            or not isinstance(function, dict)
            or not isinstance(function.get("name"), str)
        ):
            raise InvalidRequest(
                "`tool_choice` must be none, auto, required or {'type': 'function', 'function': {'name': …}}.",
                param="tool_choice",
            )
        return Tools(tuple(tools), "named", function["name"], parallel)
    if choice not in get_args(ToolChoice) or choice == "named":
        raise InvalidRequest(
            f"`tool_choice` must be none, auto, required or a function, not {choice!r}.", param="tool_choice"
        )
    if choice == "required" and not tools:
        raise InvalidRequest('tool_choice "required" needs `tools`.', param="tool_choice")
    checked: ToolChoice = choice
    return Tools(tuple(tools), checked, None, parallel)


def _check_schema(schema: dict[str, Any], where: str, param: str) -> None:
    """A request's JSON Schema, refused (400, naming ``param``) unless it is valid and
    llguidance can decode with it (:func:`~assistant.app.structured.decodable_schema`)."""
    try:
        decodable_schema(schema, where)
    except FormatError as exc:
        raise InvalidRequest(exc.message, exc.hint, param=param) from None


def _documents(body: Mapping[str, Any]) -> tuple[str, ...] | None:
    """Enclave's extension: ``"enclave": {"documents": ["manuals"]}`` (or ``"all"`` / ``true``)."""
    ext = _get(body, "enclave", dict)
    if ext is None or ext.get("documents") in (None, False, []):
        return None
    docs = ext["documents"]
    if docs is True or docs == "all":
        return ()
    if isinstance(docs, str):
        return (docs,)
    if isinstance(docs, list) and all(isinstance(d, str) for d in docs):
        return tuple(docs)
    raise InvalidRequest(
        '`enclave.documents` must be a collection name, a list of them, or "all".', param="enclave.documents"
    )


def parse_chat(body: Mapping[str, Any]) -> tuple[ChatRequest, Streaming]:
    """A chat completion request (``POST /v1/chat/completions``)."""
    tools = _tools(body)
    request = ChatRequest(
        model=_get(body, "model", str),
        messages=_messages(body),
        sampling=_sampling(body),
        response_format=_response_format(body),
        tools=tools.tools,
        tool_choice=tools.choice,
        tool_name=tools.name,
        parallel_tool_calls=tools.parallel,
        documents=_documents(body),
    )
    return request, _streaming(body)


def parse_completion(body: Mapping[str, Any]) -> tuple[CompletionRequest, Streaming]:
    """A text completion request (``POST /v1/completions``)."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise InvalidRequest(
            "`prompt` must be a string (one prompt per request; token arrays are not accepted).", param="prompt"
        )
    if body.get("suffix"):
        raise NotSupported("`suffix` (fill-in-the-middle) is not supported.", "Leave it out.", param="suffix")
    return CompletionRequest(_get(body, "model", str), prompt, _sampling(body)), _streaming(body)


def parse_embeddings(body: Mapping[str, Any]) -> tuple[EmbeddingRequest, bool, int | None]:
    """An embeddings request: ``(request, as_base64, dimensions)``."""
    raw = body.get("input")
    inputs: list[str]
    if isinstance(raw, str):
        inputs = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(t, str) for t in raw):
        inputs = list(raw)
    else:
        raise InvalidRequest("`input` must be a string or a non-empty list of strings.", param="input")
    if len(inputs) > MAX_EMBEDDING_INPUTS:
        raise InvalidRequest(f"`input` takes at most {MAX_EMBEDDING_INPUTS} texts per request.", param="input")
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise InvalidRequest("`encoding_format` must be float or base64.", param="encoding_format")
    dimensions = _get(body, "dimensions", int)
    return EmbeddingRequest(_get(body, "model", str), tuple(inputs)), fmt == "base64", dimensions


# --------------------------------------------------------------------------- responses
def model_json(model: ServedModel) -> dict[str, Any]:
    return {
        "id": model.id,
        "object": "model",
        "created": model.created,
        "owned_by": "enclave",
        "enclave": {
            "name": model.name,
            "engine": model.engine,
            "kind": model.kind,
            "sha256": model.sha256,
            "context_window": model.context_window,
            "dimensions": model.dimensions,
            "constrained": model.constrained,
            # The tool-call format (hermes, llama3_json, phi4, mistral) once the model is loaded,
            # false for none, null while it is not known (embedding models, not loaded yet).
            "tool_calls": (model.tool_format or False)
            if model.kind == "chat" and model.tool_format is not None
            else None,
        },
    }


def usage_json(served: Served) -> dict[str, Any]:
    usage = served.usage
    prompt = usage.prompt_tokens if usage else 0
    completion = usage.completion_tokens if usage else 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": served.cached_tokens},
    }


def enclave_json(served: Served) -> dict[str, Any]:
    """Enclave's extension of a response: where it ran, the timings, and the sources."""
    usage = served.usage
    out: dict[str, Any] = {
        "model": served.model.name,
        "engine": served.model.engine,
        "model_sha256": served.model.sha256,
        "finish_reason": served.finish_reason,
    }
    if usage is not None:
        out.update(
            prefilled_tokens=usage.prefilled_tokens,
            cached_tokens=served.cached_tokens,
            cache_tokens=usage.cache_tokens,
            ttft_ms=round(usage.ttft_ms, 1),
            prefill_ms=round(usage.prefill_ms, 1),
            decode_tokens_per_s=round(usage.decode_tokens_per_s, 1),
        )
    if served.citations is not None:
        out["citations"] = [
            {
                "n": c.n,
                "collection": c.collection,
                "path": c.path,
                "page": c.page,
                "line_start": c.line_start,
                "line_end": c.line_end,
                "unit": c.unit,
                "heading": c.heading,
                "cited": c.cited,
                "supports": c.supports,
                "text": c.text,
            }
            for c in served.citations
        ]
    if served.notices:
        out["notices"] = list(served.notices)
    if served.conversation_id is not None:
        out["conversation_id"] = served.conversation_id
    return out


def chat_json(served: Served, ident: str, created: int) -> dict[str, Any]:
    return {
        "id": ident,
        "object": "chat.completion",
        "created": created,
        "model": served.model.id,
        "system_fingerprint": "enclave-" + served.model.sha256[:12],
        "choices": [
            {
                "index": 0,
                "message": message_json(served),
                "logprobs": None,
                "finish_reason": finish_of(served),
            }
        ],
        "usage": usage_json(served),
        "enclave": enclave_json(served),
    }


def finish_of(served: Served) -> str:
    """OpenAI's finish reason: "tool_calls" when the answer is calls."""
    return "tool_calls" if served.tool_calls else FINISH[served.finish_reason]


def message_json(served: Served) -> dict[str, Any]:
    if not served.tool_calls:
        return {"role": "assistant", "content": served.text}
    return {"role": "assistant", "content": None, "tool_calls": [c.as_json() for c in served.tool_calls]}


def tool_call_chunk(index: int, arguments: str, ident: str | None, name: str | None) -> dict[str, Any]:
    """A streamed tool call's delta, as OpenAI sends them: the first with its id and name."""
    call: dict[str, Any] = {"index": index}
    if ident is not None:
        call.update(id=ident, type="function", function={"name": name, "arguments": arguments})
    else:
        call["function"] = {"arguments": arguments}
    return {"tool_calls": [call]}


def chat_chunk(
    ident: str, created: int, model: str, delta: dict[str, Any], finish: str | None = None
) -> dict[str, Any]:
    return {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def completion_json(served: Served, ident: str, created: int) -> dict[str, Any]:
    return {
        "id": ident,
        "object": "text_completion",
        "created": created,
        "model": served.model.id,
        "choices": [{"index": 0, "text": served.text, "logprobs": None, "finish_reason": FINISH[served.finish_reason]}],
        "usage": usage_json(served),
        "enclave": enclave_json(served),
    }


def completion_chunk(ident: str, created: int, model: str, text: str, finish: str | None = None) -> dict[str, Any]:
    return {
        "id": ident,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
    }


def embeddings_json(result: Embeddings, as_base64: bool) -> dict[str, Any]:
    data = []
    for i, vector in enumerate(result.vectors):
        value: Any = list(vector)
        if as_base64:  # what the openai client asks for by default: little-endian float32
            value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
        data.append({"object": "embedding", "index": i, "embedding": value})
    return {
        "object": "list",
        "data": data,
        "model": result.model.id,
        "usage": {"prompt_tokens": result.tokens, "total_tokens": result.tokens},
    }


def error_json(message: str, kind: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape, which every client's error handling reads."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def sse(data: Mapping[str, Any] | str) -> str:
    """One server-sent event."""
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"data: {payload}\n\n"
