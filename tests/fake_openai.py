"""A real OpenAI-compatible HTTP server on 127.0.0.1 for the cloud-fallback tests.

It runs ``http.server.ThreadingHTTPServer`` in a thread, records every request
(path, headers, JSON body), and answers ``POST …/chat/completions`` the way the
test sets it up: streamed SSE (default) or one JSON object, after failing the
first requests with chosen statuses (and ``Retry-After``), stalling, or closing
the connection without an answer or in the middle of one — and, for the fault tests,
misbehaving on purpose: streaming forever, keeping the connection alive with SSE
comments and never answering, sending a huge reply, raw malformed stream lines,
redirecting, or echoing the request's Authorization header in an error body.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Behaviour:
    reply: str = "Hello from the cloud."
    stream: bool = True  # False: ignore "stream" and answer one JSON object
    fail: list[int] = field(default_factory=list)  # statuses for the first requests, in order
    retry_after: str | None = None  # sent with 429/503 failures
    close_first: int = 0  # close the connection without answering this many times
    stall: float = 0.0  # seconds to wait before answering
    drop_after: int | None = None  # close mid-stream after this many chunks
    usage: bool = True
    endless: bool = False  # stream pieces until the client goes away
    keepalive: float | None = None  # send ": keep-alive" comments every N s, forever, no answer
    drip: float = 0.0  # seconds between streamed pieces
    raw: list[bytes] | None = None  # send these body lines as they are (after a 200 SSE header)
    content_type: str = "text/event-stream"
    echo_auth: int | None = None  # answer with this status and the Authorization header in the body
    redirect: str | None = None  # answer 307 with this Location
    whole_body: bytes | None = None  # a non-streamed 200 answer with exactly these bytes


class FakeOpenAI:
    """Start with ``with FakeOpenAI() as server:``; ``server.base_url`` ends in /v1."""

    def __init__(self, behaviour: Behaviour | None = None) -> None:
        self.behaviour = behaviour or Behaviour()
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def label(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        return type("Handler", (_Handler,), {"fake": self})


class _Handler(BaseHTTPRequestHandler):
    """The fake server's request handler; ``fake`` is the :class:`FakeOpenAI` it serves."""

    fake: FakeOpenAI
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        with self.fake._lock:
            self.fake.requests.append(
                Recorded(self.path, {k.lower(): v for k, v in self.headers.items()}, json.loads(raw or b"{}"))
            )
            n = len(self.fake.requests)
        b = self.fake.behaviour
        if self._refuse(n, b):
            return
        if b.stall:
            time.sleep(b.stall)
        if b.whole_body is not None:
            self.send_response(200)
            self.send_header("Content-Type", b.content_type)
            self.send_header("Content-Length", str(len(b.whole_body)))
            self.end_headers()
            self.wfile.write(b.whole_body)
            return
        if b.raw is not None or b.keepalive is not None or b.endless:
            self._misbehave(b)
            return
        self._answer(b)

    def _refuse(self, n: int, b: Behaviour) -> bool:
        """The behaviours that answer request ``n`` with no completion; whether one did."""
        if not self.path.endswith("/chat/completions"):
            self._json(404, {"error": {"message": f"no route {self.path}"}})
            return True
        if n <= b.close_first:
            self.close_connection = True
            self.connection.close()
            return True
        failures = n - b.close_first
        if failures <= len(b.fail):
            status = b.fail[failures - 1]
            extra = {"Retry-After": b.retry_after} if b.retry_after else {}
            self._json(status, {"error": {"message": f"simulated failure {status}"}}, extra)
            return True
        if b.echo_auth is not None:
            auth = self.headers.get("Authorization", "")
            self._json(b.echo_auth, {"error": {"message": f"Invalid token: {auth}", "header": auth}})
            return True
        if b.redirect is not None:
            self.send_response(307)
            self.send_header("Location", b.redirect)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return True
        return False

    def _answer(self, b: Behaviour) -> None:
        """The reply, as one JSON body or streamed word by word."""
        words = [w + " " for w in b.reply.split(" ")]
        words[-1] = words[-1].rstrip()
        usage = {"prompt_tokens": 11, "completion_tokens": len(words), "total_tokens": 11 + len(words)}
        if not b.stream:
            message = {"role": "assistant", "content": b.reply}
            body: dict[str, Any] = {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
            if b.usage:
                body["usage"] = usage
            self._json(200, body)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        for i, word in enumerate(words):
            if b.drop_after is not None and i >= b.drop_after:
                self.connection.close()
                return
            chunk = {"choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
            self._event(chunk)
        self._event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if b.usage:
            self._event({"choices": [], "usage": usage})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def _misbehave(self, b: Behaviour) -> None:
        self.send_response(200)
        self.send_header("Content-Type", b.content_type)
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            if b.raw is not None:
                for line in b.raw:
                    self.wfile.write(line)
                    self.wfile.flush()
                    if b.drip:
                        time.sleep(b.drip)
                return
            while True:  # until the client closes the connection
                if b.keepalive is not None:
                    self.wfile.write(b": keep-alive\n\n")
                    time.sleep(b.keepalive)
                else:
                    chunk = {"choices": [{"index": 0, "delta": {"content": "more "}, "finish_reason": None}]}
                    self._event(chunk)
                    if b.drip:
                        time.sleep(b.drip)
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            return

    def _event(self, data: dict[str, Any]) -> None:
        self.wfile.write(b"data: " + json.dumps(data).encode() + b"\n\n")
        self.wfile.flush()

    def _json(self, status: int, data: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        raw = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)
