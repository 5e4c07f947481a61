"""The cloud backend: an OpenAI-compatible ``/chat/completions`` endpoint over HTTP.

It exists only when the user configured an endpoint and enabled it for a
conversation (or consented to one fallback turn); :mod:`assistant.cloud.policy` owns that
policy, the preview and the audit entries. This module only speaks the protocol,
with the standard library (``http.client``), and yields the same typed events as
the local engines, so front ends do not care where an answer came from.

Unlike the local engines it works on messages, not tokens: there is no tokenizer
and no KV cache on this side, so it is not a :class:`~assistant.engines.base.Session`;
each request carries the whole conversation.

Retries (exponential backoff with jitter, ``Retry-After`` honoured) happen only
before the first byte of the answer: once text has been shown, a failure is
reported with the partial text rather than silently asking again.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from assistant.core.errors import EnclaveError
from assistant.core.events import Done, Error, Event, FinishReason, GenerationOptions, TextDelta, Usage

log = logging.getLogger("enclave.cloud")

#: Longest wait between attempts, whatever Retry-After says (a server asking for an
#: hour would otherwise hang the turn; the user can retry later instead).
MAX_WAIT_S = 30.0
#: Connecting should be quick even when answers are slow.
MAX_CONNECT_S = 10.0
_RETRY_STATUS = {429, 500, 502, 503, 504}


class CloudError(EnclaveError):
    """The cloud endpoint could not be reached, refused the request, or broke off.

    ``connection`` is true when the network or the server went away (as opposed to
    the server answering with an error): the conversation should go on locally."""

    def __init__(self, message: str, hint: str = "", *, connection: bool = False) -> None:
        super().__init__(message, hint)
        self.connection = connection


@dataclass(frozen=True)
class Endpoint:
    """Where cloud requests go, parsed from the ``cloud_base_url`` setting."""

    base_url: str
    scheme: str
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, base_url: str) -> Endpoint:
        parts = urlsplit(base_url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise EnclaveError(
                f"The cloud endpoint {base_url!r} is not an http(s) URL.",
                "Set cloud_base_url to the server's OpenAI-compatible base, e.g. http://127.0.0.1:8000/v1.",
            )
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise EnclaveError(f"The cloud endpoint {base_url!r} has an invalid port.", "Fix cloud_base_url.") from exc
        return cls(base_url.strip(), parts.scheme, parts.hostname, port, parts.path.rstrip("/"))

    @property
    def label(self) -> str:
        """``host:port``, as shown to the user and recorded with each answer."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def where(self) -> str:
        """The ``where_ran`` value of answers from this endpoint."""
        return f"cloud:{self.label}"

    @property
    def chat_path(self) -> str:
        return f"{self.path}/chat/completions"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.label}{self.chat_path}"


def request_body(model: str, messages: Sequence[dict[str, str]], options: GenerationOptions) -> bytes:
    """The exact bytes POSTed for one turn (shown in the preview, hashed in the audit)."""
    body: dict[str, Any] = {}
    if model:
        body["model"] = model
    body["messages"] = [{"role": m["role"], "content": m["content"]} for m in messages]
    body["stream"] = True
    body["stream_options"] = {"include_usage": True}
    body["max_tokens"] = options.max_tokens
    body["temperature"] = options.temperature
    body["top_p"] = options.top_p
    if options.seed is not None:
        body["seed"] = options.seed
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (a number or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _summarise(status: int, reason: str, raw: bytes) -> str:
    """One line from an HTTP error body: the JSON error message if there is one."""
    text = raw.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
        err = data.get("error", data) if isinstance(data, dict) else data
        if isinstance(err, dict):
            text = str(err.get("message") or err.get("detail") or err)
        elif isinstance(err, str):
            text = err
    except ValueError:
        pass
    text = " ".join(text.split())
    if len(text) > 200:
        text = text[:200] + "…"
    return f"HTTP {status} {reason}".strip() + (f": {text}" if text else "")


class CloudClient:
    """Streams chat completions from one endpoint; one request at a time.

    ``sleep`` waits between attempts (tests pass one that records the waits).
    :meth:`cancel` may be called from any thread; the stream then ends with
    ``Done(reason="cancelled")`` within one chunk.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.endpoint = endpoint
        self._key = api_key
        self.timeout = timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self._sleep = sleep
        self._cancel = threading.Event()
        self._conn: http.client.HTTPConnection | None = None
        self.attempts = 0  # of the last request, for the caller's records

    # -- control
    def cancel(self) -> None:
        """Stop the running request; the socket is shut so a blocked read returns."""
        self._cancel.set()
        conn = self._conn
        if conn is not None and conn.sock is not None:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # -- protocol
    def _headers(self, size: int) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream, application/json",
            "Content-Length": str(size),
            "User-Agent": "enclave",
        }
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        return headers

    def _connect(self) -> http.client.HTTPConnection:
        ep = self.endpoint
        connect_timeout = min(self.timeout, MAX_CONNECT_S)
        conn: http.client.HTTPConnection
        if ep.scheme == "https":
            conn = http.client.HTTPSConnection(ep.host, ep.port, timeout=connect_timeout)
        else:
            conn = http.client.HTTPConnection(ep.host, ep.port, timeout=connect_timeout)
        conn.connect()
        assert conn.sock is not None
        conn.sock.settimeout(self.timeout)  # from now on: the longest silence between chunks
        return conn

    def _wait(self, attempt: int, retry_after: float | None) -> None:
        if retry_after is not None:
            delay = min(retry_after, MAX_WAIT_S)
        else:
            delay = min(self.backoff * 2**attempt, MAX_WAIT_S) * random.uniform(0.5, 1.0)
        log.info("cloud: attempt %d failed, waiting %.2f s", attempt + 1, delay)
        self._sleep(delay)

    def _gave_up(self, why: str) -> CloudError:
        label = self.endpoint.label
        tries = self.attempts
        return CloudError(
            f"Could not reach the cloud endpoint {label} ({tries} attempt{'s' if tries != 1 else ''}): {why}.",
            "Check that the server is running and that cloud_base_url is right; "
            "nothing was answered, and /cloud off continues the conversation locally.",
            connection=True,
        )

    def _http_error(self, status: int, summary: str) -> CloudError:
        label = self.endpoint.label
        if status in (401, 403):
            hint = "Set the API key with `enclave cloud key set` or ENCLAVE_CLOUD_API_KEY."
        elif status == 404:
            hint = "Check cloud_base_url (usually ending in /v1) and cloud_model."
        elif status in _RETRY_STATUS:
            hint = "The server is overloaded or failing; try again later, or /cloud off to continue locally."
        else:
            hint = "Check the server's log and the cloud_model setting."
        return CloudError(f"The cloud endpoint {label} refused the request ({summary}).", hint)

    def _open(self, body: bytes) -> Iterator[Event] | http.client.HTTPResponse:
        """Send the request, retrying before the answer starts; the response, or one Error."""
        self.attempts = 0
        while True:
            if self._cancel.is_set():
                return iter([Done(reason="cancelled", text="")])
            self.attempts += 1
            last_try = self.attempts > self.retries
            retry_after: float | None = None
            try:
                conn = self._connect()
            except TimeoutError:
                why = f"no connection within {min(self.timeout, MAX_CONNECT_S):g} s"
            except (OSError, http.client.HTTPException) as exc:
                why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            else:
                self._conn = conn
                try:
                    conn.request("POST", self.endpoint.chat_path, body=body, headers=self._headers(len(body)))
                    response = conn.getresponse()
                except TimeoutError:
                    conn.close()
                    if self._cancel.is_set():
                        return iter([Done(reason="cancelled", text="")])
                    return iter([Error(self._timeout_error())])
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()
                    if self._cancel.is_set():
                        return iter([Done(reason="cancelled", text="")])
                    why = f"the connection was closed before an answer ({type(exc).__name__})"
                else:
                    if response.status < 400:
                        return response
                    summary = _summarise(response.status, response.reason, response.read(4096))
                    conn.close()
                    if response.status not in _RETRY_STATUS:
                        return iter([Error(self._http_error(response.status, summary))])
                    if last_try:
                        err = self._http_error(response.status, summary)
                        err.message = err.message.rstrip(".") + f", after {self.attempts} attempts."
                        return iter([Error(err)])
                    why = summary
                    retry_after = _retry_after(response.getheader("Retry-After"))
            if last_try:
                return iter([Error(self._gave_up(why))])
            self._wait(self.attempts - 1, retry_after)

    def _timeout_error(self) -> CloudError:
        return CloudError(
            f"The cloud endpoint {self.endpoint.label} did not answer within {self.timeout:g} s.",
            "Raise cloud_timeout if the server is just slow, or check it; /cloud off continues locally.",
            connection=True,
        )

    def stream(self, body: bytes) -> Iterator[Event]:
        """POST ``body`` and yield TextDelta…, Usage, Done (or Error)."""
        start = time.perf_counter()
        try:
            opened = self._open(body)
            if not isinstance(opened, http.client.HTTPResponse):
                yield from opened
                return
            response = opened
            ctype = (response.getheader("Content-Type") or "").lower()
            if "text/event-stream" in ctype:
                yield from self._read_stream(response, start)
            else:
                yield from self._read_whole(response, start)
        finally:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._cancel.clear()

    def _read_whole(self, response: http.client.HTTPResponse, start: float) -> Iterator[Event]:
        """A server that ignored ``stream: true`` answers with one JSON object."""
        try:
            raw = response.read()
        except TimeoutError:
            yield Error(self._timeout_error())
            return
        except (OSError, http.client.HTTPException):
            if self._cancel.is_set():
                yield Done(reason="cancelled", text="")
                return
            yield Error(self._lost())
            return
        first = time.perf_counter()
        try:
            data = json.loads(raw)
            choice = data["choices"][0]
            text = str((choice.get("message") or {}).get("content") or "")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            yield Error(
                CloudError(
                    f"The cloud endpoint {self.endpoint.label} answered with something that is not a chat completion.",
                    "Check that cloud_base_url points at an OpenAI-compatible API (…/v1).",
                )
            )
            return
        if text:
            yield TextDelta(text)
        yield self._usage(data.get("usage"), start, first, time.perf_counter(), 1 if text else 0)
        yield Done(reason=_reason(choice.get("finish_reason")), text=text)

    def _lost(self) -> CloudError:
        return CloudError(
            f"The connection to the cloud endpoint {self.endpoint.label} was lost mid-answer.",
            "The network or the server went away; the partial answer is not saved. The conversation continues locally.",
            connection=True,
        )

    def _read_stream(self, response: http.client.HTTPResponse, start: float) -> Iterator[Event]:
        pieces: list[str] = []
        first: float | None = None
        usage: dict[str, Any] | None = None
        reason: str | None = None
        chunks = 0
        finished = False
        while not finished:
            if self._cancel.is_set():
                yield Done(reason="cancelled", text="".join(pieces))
                return
            try:
                line = response.readline()
            except TimeoutError:
                err = self._timeout_error()
                if pieces:
                    err.message = f"The cloud endpoint {self.endpoint.label} stopped answering for {self.timeout:g} s."
                yield Error(err)
                return
            except (OSError, http.client.HTTPException):
                line = b""
            if not line:  # end of the stream
                if self._cancel.is_set():
                    yield Done(reason="cancelled", text="".join(pieces))
                    return
                if reason is None:
                    yield Error(self._lost())
                    return
                break
            line = line.rstrip(b"\r\n")
            if not line.startswith(b"data:"):
                continue  # blank separators, comments, event:/id: fields
            payload = line[5:].strip()
            if payload == b"[DONE]":
                finished = True
                continue
            try:
                data = json.loads(payload)
            except ValueError:
                continue
            if isinstance(data, dict) and data.get("error"):
                summary = _summarise(0, "", json.dumps(data).encode()).removeprefix("HTTP 0").lstrip(": ")
                yield Error(CloudError(f"The cloud endpoint {self.endpoint.label} failed mid-answer: {summary}."))
                return
            if data.get("usage"):
                usage = data["usage"]
            for choice in data.get("choices") or []:
                content = (choice.get("delta") or {}).get("content") or ""
                if content:
                    if first is None:
                        first = time.perf_counter()
                    chunks += 1
                    pieces.append(content)
                    yield TextDelta(content)
                if choice.get("finish_reason"):
                    reason = choice["finish_reason"]
        end = time.perf_counter()
        yield self._usage(usage, start, first or end, end, chunks)
        yield Done(reason=_reason(reason), text="".join(pieces))

    @staticmethod
    def _usage(data: dict[str, Any] | None, start: float, first: float, end: float, chunks: int) -> Usage:
        """Figures for the turn; token counts are the server's when it reports them
        (else the number of streamed chunks, roughly one token each)."""
        data = data or {}
        prompt = int(data.get("prompt_tokens") or 0)
        return Usage(
            prompt_tokens=prompt,
            prefilled_tokens=prompt,
            completion_tokens=int(data.get("completion_tokens") or chunks),
            ttft_ms=(first - start) * 1000.0,
            prefill_ms=(first - start) * 1000.0,
            decode_ms=(end - first) * 1000.0,
        )


def _reason(finish: Any) -> FinishReason:
    """The server's finish_reason in Enclave's words (anything unknown ended the answer)."""
    return "length" if finish == "length" else "stop"
