"""The cloud client against a real HTTP server on 127.0.0.1 (tests/fake_openai.py)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest

from assistant.cloud.client import CloudClient, CloudError, Endpoint, request_body
from assistant.core.errors import EnclaveError
from assistant.core.events import Done, Error, GenerationOptions, TextDelta, Usage
from tests.fake_openai import FakeOpenAI

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as s:
        yield s


def _client(server: FakeOpenAI, **kw: object) -> tuple[CloudClient, list[float]]:
    waits: list[float] = []
    kw.setdefault("retries", 3)
    client = CloudClient(Endpoint.parse(server.base_url), kw.pop("key", None), sleep=waits.append, **kw)  # type: ignore[arg-type]
    return client, waits


def _body(model: str = "m1") -> bytes:
    return request_body(model, MESSAGES, GenerationOptions(max_tokens=20))


def test_endpoint_parsing_and_labels() -> None:
    ep = Endpoint.parse("http://127.0.0.1:8000/v1/")
    assert (ep.host, ep.port, ep.chat_path, ep.where) == (
        "127.0.0.1",
        8000,
        "/v1/chat/completions",
        "cloud:127.0.0.1:8000",
    )
    assert Endpoint.parse("https://llm.example.org/v1").port == 443
    with pytest.raises(EnclaveError, match="not an http"):
        Endpoint.parse("llm.example.org:8000")


def test_streams_text_usage_and_done_and_sends_the_documented_body(server: FakeOpenAI) -> None:
    client, _ = _client(server)
    events = list(client.stream(_body()))
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == "Hello from the cloud."
    assert sum(isinstance(e, TextDelta) for e in events) == 4  # streamed, not in one piece
    usage = next(e for e in events if isinstance(e, Usage))
    assert (usage.prompt_tokens, usage.completion_tokens) == (11, 4)
    assert events[-1] == Done(reason="stop", text=text)
    (req,) = server.requests
    assert req.path == "/v1/chat/completions"
    assert req.body["model"] == "m1" and req.body["stream"] is True and req.body["messages"] == MESSAGES
    assert req.body["max_tokens"] == 20
    assert "authorization" not in req.headers  # no key: none sent (local servers need none)


def test_the_key_goes_in_the_authorization_header(server: FakeOpenAI) -> None:
    client, _ = _client(server, key="sk-test-123")
    list(client.stream(_body()))
    assert server.requests[0].headers["authorization"] == "Bearer sk-test-123"


def test_a_server_that_ignores_stream_answers_in_one_piece(server: FakeOpenAI) -> None:
    server.behaviour.stream = False
    client, _ = _client(server)
    events = list(client.stream(_body()))
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Hello from the cloud."]
    assert isinstance(events[-1], Done) and events[-1].reason == "stop"


def test_5xx_and_429_are_retried_with_growing_backoff_then_succeed(server: FakeOpenAI) -> None:
    server.behaviour.fail = [500, 503, 502]
    client, waits = _client(server, retries=3, backoff=0.2)
    events = list(client.stream(_body()))
    assert isinstance(events[-1], Done) and events[-1].text == "Hello from the cloud."
    assert len(server.requests) == 4 and client.attempts == 4
    # Exponential with jitter in [0.5, 1] of the step: 0.1–0.2, 0.2–0.4, 0.4–0.8.
    assert len(waits) == 3
    for n, wait in enumerate(waits):
        assert 0.2 * 2**n * 0.5 <= wait <= 0.2 * 2**n


def test_retry_after_is_honoured(server: FakeOpenAI) -> None:
    server.behaviour.fail = [429]
    server.behaviour.retry_after = "2"
    client, waits = _client(server)
    assert isinstance(list(client.stream(_body()))[-1], Done)
    assert waits == [2.0]


def test_giving_up_names_the_host_the_attempts_and_the_servers_message(server: FakeOpenAI) -> None:
    server.behaviour.fail = [503] * 10
    client, waits = _client(server, retries=2, backoff=0.01)
    events = list(client.stream(_body()))
    assert len(server.requests) == 3 and len(waits) == 2
    assert not any(isinstance(e, TextDelta) for e in events)
    (err,) = [e.error for e in events if isinstance(e, Error)]
    assert isinstance(err, CloudError)
    assert server.label in err.message and "after 3 attempts" in err.message
    assert "HTTP 503" in err.message and "simulated failure 503" in err.message


def test_client_errors_are_not_retried_and_get_a_fitting_hint(server: FakeOpenAI) -> None:
    server.behaviour.fail = [401]
    client, waits = _client(server)
    (err,) = [e.error for e in client.stream(_body()) if isinstance(e, Error)]
    assert isinstance(err, CloudError)
    assert len(server.requests) == 1 and waits == []
    assert "HTTP 401" in err.message and "enclave cloud key set" in err.hint


def test_a_closed_connection_before_the_answer_is_retried(server: FakeOpenAI) -> None:
    server.behaviour.close_first = 2
    client, waits = _client(server, backoff=0.01)
    events = list(client.stream(_body()))
    assert isinstance(events[-1], Done) and len(server.requests) == 3 and len(waits) == 2


def test_a_connection_lost_mid_answer_is_an_error_after_the_partial_text(server: FakeOpenAI) -> None:
    server.behaviour.drop_after = 2
    client, waits = _client(server)
    events = list(client.stream(_body()))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Hello from "
    err = events[-1]
    assert isinstance(err, Error) and isinstance(err.error, CloudError)
    assert "lost mid-answer" in err.error.message and err.error.connection
    assert len(server.requests) == 1 and waits == []  # never retried once text was shown


def test_a_stalled_server_times_out_with_a_clear_message(server: FakeOpenAI) -> None:
    server.behaviour.stall = 1.5
    client, waits = _client(server, timeout=0.3)
    events = list(client.stream(_body()))
    err = events[-1]
    assert isinstance(err, Error) and isinstance(err.error, CloudError)
    assert f"{server.label} did not answer within 0.3 s" in err.error.message
    assert "cloud_timeout" in err.error.hint
    assert len(server.requests) == 1  # a slow server is not asked again


def test_nothing_listening_gives_up_with_the_fix(server: FakeOpenAI) -> None:
    server.stop()
    client, waits = _client(server, retries=1, backoff=0.01)
    (err,) = [e.error for e in client.stream(_body()) if isinstance(e, Error)]
    assert isinstance(err, CloudError)
    assert f"Could not reach the cloud endpoint {server.label} (2 attempts)" in err.message
    assert "cloud_base_url" in err.hint and len(waits) == 1


def test_cancel_between_chunks_ends_with_cancelled(server: FakeOpenAI) -> None:
    server.behaviour.reply = " ".join(["word"] * 50)
    client, _ = _client(server)
    seen: list[object] = []
    for event in client.stream(_body()):
        seen.append(event)
        if isinstance(event, TextDelta) and len(seen) == 3:
            threading.Thread(target=client.cancel).start()
            threading.Event().wait(0.1)
    assert isinstance(seen[-1], Done) and seen[-1].reason == "cancelled"
    assert sum(isinstance(e, TextDelta) for e in seen) < 50


def test_request_body_is_compact_json_with_the_options() -> None:
    body = json.loads(request_body("", MESSAGES, GenerationOptions(max_tokens=7, temperature=0.5, seed=3)))
    assert "model" not in body  # an empty cloud_model leaves it to the server
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert (body["max_tokens"], body["temperature"], body["seed"]) == (7, 0.5, 3)
