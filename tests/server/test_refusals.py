"""What `enclave serve` refuses, and how: each case over real HTTP against the real server."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from assistant.app.access import ServerToken
from assistant.core.errors import EnclaveError
from assistant.core.settings import Settings
from assistant.server.run import BackgroundServer
from tests.server.conftest import ServerFactory, audit_entries

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is the capital of France?"}]
SECRET_QUESTION = "my bank PIN is 4711, is that safe?"


def _post(api: BackgroundServer, path: str, body: Any, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {api.token}", **kw.pop("headers", {})}
    timeout = kw.pop("timeout", 30)
    if isinstance(body, bytes):
        return httpx.post(f"{api.base_url}{path}", content=body, headers=headers, timeout=timeout)
    return httpx.post(f"{api.base_url}{path}", json=body, headers=headers, timeout=timeout)


def _error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and {"message", "type", "param", "code"} <= set(body["error"])
    error: dict[str, Any] = body["error"]
    return error


def _wait_for(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_no_token_and_a_wrong_token_are_401(api: BackgroundServer, settings: Settings) -> None:
    missing = httpx.get(f"{api.base_url}/models")
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    assert _error(missing)["code"] == "invalid_api_key" and "is missing" in _error(missing)["message"]
    wrong = httpx.get(f"{api.base_url}/models", headers={"Authorization": "Bearer enclave-guess"})
    assert wrong.status_code == 401 and "was not accepted" in _error(wrong)["message"]
    basic = httpx.get(f"{api.base_url}/models", headers={"Authorization": f"Basic {api.token}"})
    assert basic.status_code == 401
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=api.base_url, api_key="sk-wrong", max_retries=0).models.list()
    refused = audit_entries(settings.locations.data.parent, "api_refused")
    assert {e["reason"] for e in refused} >= {"no_token"}


def test_the_token_file_is_private_and_rotating_it_needs_no_restart(api: BackgroundServer, settings: Settings) -> None:
    path = ServerToken.location(settings)
    assert path.stat().st_mode & 0o777 == 0o600
    old = api.token
    assert httpx.get(f"{api.base_url}/models", headers={"Authorization": f"Bearer {old}"}).status_code == 200
    new = ServerToken.rotate(settings)
    assert new.secret != old and path.stat().st_mode & 0o777 == 0o600
    assert httpx.get(f"{api.base_url}/models", headers={"Authorization": f"Bearer {old}"}).status_code == 401
    assert httpx.get(f"{api.base_url}/models", headers={"Authorization": f"Bearer {new.secret}"}).status_code == 200


def test_a_token_file_others_can_read_is_refused(settings: Settings) -> None:
    ServerToken.load(settings)
    os.chmod(ServerToken.location(settings), 0o644)
    with pytest.raises(EnclaveError, match="can be read by other users"):
        ServerToken.load(settings)


def test_a_foreign_host_header_is_refused(api: BackgroundServer, settings: Settings) -> None:
    port = api.prepared.where.port
    auth = {"Authorization": f"Bearer {api.token}"}
    # A page on evil.example whose DNS answer flipped to 127.0.0.1 (DNS rebinding).
    rebound = httpx.get(f"{api.base_url}/models", headers={**auth, "Host": f"evil.example:{port}"})
    assert rebound.status_code == 421 and _error(rebound)["code"] == "misdirected_request"
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "localhost"):
        assert httpx.get(f"{api.base_url}/models", headers={**auth, "Host": host}).status_code == 200, host
    assert any(e["reason"] == "foreign_host" for e in audit_entries(settings.locations.data.parent, "api_refused"))


def test_an_oversized_body_is_413(start_server: ServerFactory) -> None:
    api = start_server(serve_max_body_kib=16)
    big = {"model": "tiny", "messages": [{"role": "user", "content": "x" * 40_000}]}
    over = _post(api, "/chat/completions", big)
    assert over.status_code == 413 and _error(over)["code"] == "request_too_large"
    assert "16 KiB" in _error(over)["message"]
    # Far over the limit: refused from the Content-Length alone, before reading it.
    huge = _post(api, "/chat/completions", b"{" + b" " * 200_000 + b"}", headers={"Content-Type": "application/json"})
    assert huge.status_code == 413


def test_malformed_json_is_400_with_where_it_broke(api: BackgroundServer) -> None:
    broken = _post(
        api, "/chat/completions", b'{"model": "tiny", "messages": [', headers={"Content-Type": "application/json"}
    )
    assert broken.status_code == 400 and _error(broken)["code"] == "invalid_json"
    assert "not valid JSON" in _error(broken)["message"] and "line 1, column" in _error(broken)["message"]
    array = _post(api, "/chat/completions", [1, 2])
    assert array.status_code == 400 and "must be a JSON object" in _error(array)["message"]
    no_messages = _post(api, "/chat/completions", {"model": "tiny"})
    assert no_messages.status_code == 400 and _error(no_messages)["param"] == "messages"
    bad_role = _post(api, "/chat/completions", {"model": "tiny", "messages": [{"role": "wizard", "content": "hi"}]})
    assert _error(bad_role)["param"] == "messages[0].role"
    hot = _post(api, "/chat/completions", {"model": "tiny", "messages": HELLO, "temperature": 7})
    assert hot.status_code == 400 and "between 0 and 2" in _error(hot)["message"]
    nowhere = _post(api, "/nowhere", {})
    assert nowhere.status_code == 404 and _error(nowhere)["code"] == "not_found"


def test_a_full_queue_is_429(start_server: ServerFactory, slow_decoding: Callable[[float], None]) -> None:
    slow_decoding(0.05)
    api = start_server(serve_queue=0)  # one running, none waiting
    client = openai.OpenAI(base_url=api.base_url, api_key=api.token, max_retries=0)
    first: list[Any] = []
    running = threading.Thread(
        target=lambda: first.append(client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=20))
    )
    running.start()
    _wait_for(lambda: api.models.admitted("tiny") == 1)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=2)
    assert caught.value.code == "queue_full" and caught.value.response.headers["retry-after"] == "1"
    running.join()
    assert first[0].choices[0].finish_reason == "length"
    # The queue has room again.
    assert client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=2).usage is not None


def test_a_client_that_disconnects_cancels_its_generation(
    start_server: ServerFactory, slow_decoding: Callable[[float], None], settings: Settings
) -> None:
    slow_decoding(0.05)  # 300 tokens would take 15 s
    api = start_server()
    # Loaded first (the sealed worker's start and the load take ~0.7 s), so that the
    # disconnect below comes in the middle of decoding, not during the load.
    warm = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    _post(api, "/chat/completions", warm, timeout=httpx.Timeout(60))
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": SECRET_QUESTION}],
        "max_tokens": 300,
        "stream": True,
    }
    with pytest.raises(httpx.ReadTimeout):
        # The client gives up after 0.5 s and closes the connection.
        _post(api, "/chat/completions", body, timeout=httpx.Timeout(30, read=0.5))
    home = settings.locations.data.parent

    def finished() -> list[dict[str, Any]]:
        return [e for e in audit_entries(home, "api_request") if e["endpoint"] == "chat"]

    _wait_for(lambda: len(finished()) == 2)  # the warm-up request, then this one
    entry = finished()[1]
    assert entry["outcome"] == "cancelled"
    # Decoding stopped within a few tokens of the disconnect: ~10 decoded in 0.5 s, not 300.
    assert entry["completion_tokens"] < 40, entry
    assert entry["token"] == api.prepared.token.id
    # The audit log never holds the text of a request.
    assert SECRET_QUESTION not in json.dumps(audit_entries(home, "api_request"))
    assert "4711" not in (home / "data" / "enclave.db").read_bytes().decode("latin-1")


def test_cors_is_off_unless_origins_are_listed(start_server: ServerFactory) -> None:
    preflight = {
        "Origin": "http://localhost:3000",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    closed = start_server()
    response = httpx.options(f"{closed.base_url}/chat/completions", headers=preflight)
    assert "access-control-allow-origin" not in response.headers
    opened = start_server(serve_cors_origins=("http://localhost:3000",))
    allowed = httpx.options(f"{opened.base_url}/chat/completions", headers=preflight)
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "http://localhost:3000"
    other = httpx.options(f"{opened.base_url}/chat/completions", headers={**preflight, "Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    get = httpx.get(
        f"{opened.base_url}/models",
        headers={"Origin": "http://localhost:3000", "Authorization": f"Bearer {opened.token}"},
    )
    assert get.status_code == 200 and get.headers["access-control-allow-origin"] == "http://localhost:3000"
    with pytest.raises(EnclaveError, match="a wildcard is not accepted"):
        start_server(serve_cors_origins=("*",))


def test_listening_beyond_loopback_needs_the_flag(settings: Settings) -> None:
    from assistant.app.access import binding

    with pytest.raises(EnclaveError, match="--i-understand-the-risk"):
        binding("0.0.0.0", 0)
    assert binding("0.0.0.0", 0, understood=True).exposed
    assert not binding("127.0.0.1", 0).exposed and not binding("::1", 0).exposed


def test_api_conversations_are_saved_only_when_the_setting_says_so(
    start_server: ServerFactory, settings: Settings
) -> None:
    from assistant.storage.database import Store

    quiet = start_server()
    client = openai.OpenAI(base_url=quiet.base_url, api_key=quiet.token, max_retries=0)
    client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=2)
    store = Store.open(settings)
    assert store.db.execute("select count(*) from conversations").fetchone()[0] == 0
    store.close()

    saving = start_server(serve_save_history=True)
    client = openai.OpenAI(base_url=saving.base_url, api_key=saving.token, max_retries=0)
    first = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=2)
    messages: Any = [*HELLO, {"role": "assistant", "content": first.choices[0].message.content}]
    messages.append({"role": "user", "content": "And of Spain?"})
    second = client.chat.completions.create(model="tiny", messages=messages, max_tokens=2)
    ids = {(r.model_extra or {})["enclave"]["conversation_id"] for r in (first, second)}
    assert len(ids) == 1  # the continued conversation is the same stored one
    store = Store.open(settings)
    rows = store.db.execute("select role, content from messages order by seq").fetchall()
    store.close()
    assert [r[1] for r in rows if r[0] == "user"] == [HELLO[0]["content"], "And of Spain?"]
    audited = [e for e in audit_entries(settings.locations.data.parent, "api_request") if "conversation" in e]
    assert {e["conversation"] for e in audited} == ids


def test_listing_models_is_audited_too(client: openai.OpenAI, api: BackgroundServer, settings: Settings) -> None:
    client.models.list()
    (entry,) = [e for e in audit_entries(settings.locations.data.parent, "api_request") if e["endpoint"] == "models"]
    assert entry["token"] == api.prepared.token.id and entry["outcome"] == "ok"


def test_the_server_start_is_audited(api: BackgroundServer, settings: Settings) -> None:
    (start,) = audit_entries(settings.locations.data.parent, "serve_start")
    assert start["host"] == "127.0.0.1" and start["port"] == api.prepared.where.port
    assert start["token"] == api.prepared.token.id and start["save_history"] is False
    assert audit_entries(settings.locations.data.parent, "serve_token_created") == [{"token": api.prepared.token.id}]
    assert Path(ServerToken.location(settings)).read_text().strip() == api.token
