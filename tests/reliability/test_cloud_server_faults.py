"""The cloud client against a misbehaving server: every behaviour ends, in time, with a clear result.

A real HTTP server on 127.0.0.1 (tests/fake_openai.py) streams forever, keeps the
connection alive with comments, sends 17 MB, sends every malformed shape we could
think of, redirects, or echoes the API key. For each, the client must end within its
deadline with either an answer (``Done``) or one :class:`CloudError` — never another
exception, never a hang — and the key must appear nowhere in what it yields.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from assistant.cloud.client import CloudClient, CloudError, Endpoint, request_body
from assistant.cloud.policy import CloudRequest
from assistant.core.events import Done, Error, Event, GenerationOptions, TextDelta
from tests.fake_openai import Behaviour, FakeOpenAI

KEY = "sk-test-7f3a9c1e5b2d4a6f8e0c"
MESSAGES = [{"role": "user", "content": "Hi"}]
#: Each case's client: 1 s of silence, 3 s in all, no retries (the retry logic has its own tests).
TIMEOUT, DEADLINE = 1.0, 3.0


def _sse(*objects: Any) -> list[bytes]:
    return [b"data: " + (o if isinstance(o, bytes) else json.dumps(o).encode()) + b"\n\n" for o in objects]


def _piece(content: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]}


STOP = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}

#: name → (server behaviour, max_tokens, expected: "stop" | "length" | text the CloudError message holds)
CASES: dict[str, tuple[Behaviour, int, str]] = {
    "normal": (Behaviour(), 20, "stop"),
    "finish-length": (Behaviour(raw=_sse(_piece("a"), {"choices": [{"delta": {}, "finish_reason": "length"}]}) + [b"data: [DONE]\n\n"]), 20, "length"),
    "endless-stream": (Behaviour(endless=True), 20, "length"),
    "endless-slow-stream": (Behaviour(endless=True, drip=0.2), 1000, "in all"),
    "keepalive-forever": (Behaviour(keepalive=0.2), 20, "did not answer within"),
    "one-huge-piece": (Behaviour(raw=_sse(_piece("x" * 10000), STOP)), 5, "length"),
    "17-MB-of-comments": (Behaviour(raw=[b": " + b"x" * 1_000_000 + b"\n"] * 17), 20, "more than 16 MB"),
    "17-MB-whole-body": (Behaviour(whole_body=b" " * (17 * 2**20), content_type="application/json"), 20, "more than 16 MB"),
    "2-MB-line": (Behaviour(raw=[b"data: " + b"x" * (2 * 2**20) + b"\n"]), 20, "longer than"),
    "data-not-json": (Behaviour(raw=_sse(b"{not json")), 20, "not JSON"),
    "data-array": (Behaviour(raw=_sse([1, 2])), 20, "list, not an object"),
    "data-string": (Behaviour(raw=_sse("hello")), 20, "str, not an object"),
    "data-number": (Behaviour(raw=_sse(b"42")), 20, "int, not an object"),
    "choices-object": (Behaviour(raw=_sse({"choices": {"delta": {}}})), 20, "'choices' is not a list"),
    "choices-strings": (Behaviour(raw=_sse({"choices": ["a"]})), 20, "'choices' is not a list"),
    "delta-string": (Behaviour(raw=_sse({"choices": [{"delta": "text"}]})), 20, "not text"),
    "content-number": (Behaviour(raw=_sse(_piece(7))), 20, "not text"),
    "content-list": (Behaviour(raw=_sse(_piece(["a"]))), 20, "not text"),
    "data-not-utf8": (Behaviour(raw=[b"data: {\"choices\": [{\"delta\": {\"content\": \"\xff\xfe\"}}]}\n\n"]), 20, "not JSON"),
    "closed-without-end": (Behaviour(raw=_sse(_piece("partial"))), 20, "lost mid-answer"),
    "error-mid-stream": (Behaviour(raw=_sse(_piece("a"), {"error": {"message": "overloaded"}})), 20, "failed mid-answer: overloaded"),
    "error-echoes-key": (Behaviour(raw=_sse({"error": {"message": f"bad key Bearer {KEY}"}})), 20, "bad key Bearer ***"),
    "401-echoes-authorization": (Behaviour(echo_auth=401), 20, "Invalid token: Bearer ***"),
    "500-echoes-authorization": (Behaviour(echo_auth=500), 20, "Invalid token: Bearer ***"),
    "answer-repeats-key": (Behaviour(reply=f"your key is {KEY} ok"), 40, "stop"),
    "key-split-across-pieces": (Behaviour(raw=_sse(_piece("key " + KEY[:9]), _piece(KEY[9:] + " end"), STOP) + [b"data: [DONE]\n\n"]), 40, "stop"),
    "html-instead-of-json": (Behaviour(whole_body=b"<html>502 Bad Gateway</html>", content_type="text/html"), 20, "not a chat completion"),
    "json-choices-not-list": (Behaviour(whole_body=b'{"choices": {"message": "x"}}', content_type="application/json"), 20, "not a chat completion"),
    "json-content-number": (Behaviour(whole_body=b'{"choices": [{"message": {"content": 5}}]}', content_type="application/json"), 20, "not a chat completion"),
    "redirect-elsewhere": (Behaviour(redirect="http://evil.example/v1/chat/completions"), 20, "does not follow redirects"),
    "usage-garbage": (Behaviour(raw=_sse(_piece("a"), STOP, {"choices": [], "usage": {"prompt_tokens": "many", "completion_tokens": -4}}) + [b"data: [DONE]\n\n"]), 20, "stop"),
    "stall-before-headers": (Behaviour(stall=2.5), 20, "did not answer within"),
    "close-before-answer": (Behaviour(close_first=1), 20, "Could not reach"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(CASES))
def test_every_server_behaviour_ends_in_time_with_a_clear_result(name: str) -> None:
    behaviour, max_tokens, expected = CASES[name]
    with FakeOpenAI(behaviour) as server:
        client = CloudClient(
            Endpoint.parse(server.base_url), KEY, timeout=TIMEOUT, deadline=DEADLINE, retries=0, sleep=lambda _: None
        )
        body = request_body("m", MESSAGES, GenerationOptions(max_tokens=max_tokens))
        started = time.monotonic()
        events: list[Event] = list(client.stream(body))  # any other exception fails the test
        elapsed = time.monotonic() - started
    assert elapsed < DEADLINE + 2, f"{name} took {elapsed:.1f} s"
    last = events[-1]
    shown = "".join(e.text for e in events if isinstance(e, TextDelta))
    if expected in ("stop", "length"):
        assert isinstance(last, Done) and last.reason == expected, last
        assert last.text == shown
        assert len(shown) <= max_tokens * 32
    else:
        assert isinstance(last, Error) and isinstance(last.error, CloudError), last
        assert expected in last.error.message, last.error.message
        assert last.error.hint
    everything = shown + " ".join(
        f"{getattr(e.error, 'message', e.error)} {getattr(e.error, 'hint', '')}" for e in events if isinstance(e, Error)
    ) + (last.text if isinstance(last, Done) else "")
    assert KEY not in everything and KEY[:12] not in everything


def test_max_tokens_counts_pieces_of_an_endless_stream() -> None:
    with FakeOpenAI(Behaviour(endless=True)) as server:
        client = CloudClient(Endpoint.parse(server.base_url), None, timeout=TIMEOUT, deadline=DEADLINE, retries=0)
        events = list(client.stream(request_body("m", MESSAGES, GenerationOptions(max_tokens=25))))
    assert sum(isinstance(e, TextDelta) for e in events) == 25
    assert isinstance(events[-1], Done) and events[-1].reason == "length"


def test_the_preview_names_an_endpoint_that_leaves_the_machine() -> None:
    body = request_body("m", MESSAGES, GenerationOptions(max_tokens=5))

    def preview(url: str) -> str:
        return CloudRequest(Endpoint.parse(url), "m", MESSAGES, body, False, 0).preview()

    far = preview("http://llm.example.org/v1")
    assert "LEAVES THIS MACHINE: llm.example.org is not a loopback address" in far and "NOT encrypted" in far
    assert "encrypted (https)" in preview("https://10.1.2.3:8443/v1")
    for url in ("http://127.0.0.1:8000/v1", "http://localhost:8000/v1", "http://[::1]:8000/v1", "http://127.8.9.1/v1"):
        assert "Stays on this machine" in preview(url), url
