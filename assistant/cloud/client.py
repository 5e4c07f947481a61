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

Hard limits, whatever the server does (a server is not trusted to stop):

* ``max_tokens`` is enforced here too: the answer ends (``length``) after that many
  streamed pieces, or after ``max_tokens`` × :data:`CHARS_PER_TOKEN` characters if a
  server sends big pieces;
* a total ``deadline`` per request — connecting, waiting, retrying and streaming; the
  ``timeout`` is the longest silence, and SSE comments (``: keep-alive``) are not
  answer, so they reset neither;
* at most :data:`MAX_RESPONSE_BYTES` are read, and a line of at most :data:`MAX_LINE_BYTES`;
* every malformed shape (a data line that is not JSON, ``choices`` that are not a list,
  content that is not text, a body that is not a completion) is one :class:`CloudError`;
* anything the server echoes back (an error body quoting the Authorization header, an
  answer repeating the key) has the API key masked before it is shown or stored.
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
from dataclasses import dataclass, field
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
#: Characters allowed per requested token before the answer is cut: BPE tokens of
#: English average ~4 characters and rarely exceed 16; 32 leaves room for any script.
CHARS_PER_TOKEN = 32
#: Bytes read from one response at most: a 32768-token answer streams as ~5 MB of SSE
#: (JSON wrapping costs ~120 bytes per piece); the red team's 60 MB reply is refused.
MAX_RESPONSE_BYTES = 16 * 2**20
#: Longest line of an SSE stream or of the headers (one piece is ~150 bytes).
MAX_LINE_BYTES = 2**20
MASK = "***"


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

    @property
    def loopback(self) -> bool:
        """Whether requests stay on this machine (127.0.0.0/8, ::1, localhost)."""
        import ipaddress

        if self.host.lower() in ("localhost", "localhost.localdomain") or self.host.lower().endswith(".localhost"):
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


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


class Masker:
    """Replaces the API key (and its ``Bearer`` form) wherever a server echoes it.

    For streamed text it holds back the last ``len(key) - 1`` characters of each piece,
    so a key split across two pieces is still caught; :meth:`flush` releases the rest."""

    def __init__(self, key: str | None) -> None:
        # Keys shorter than 8 characters would mask ordinary words; such keys are not real.
        self.key = key if key and len(key) >= 8 else None
        self._pending = ""

    def mask(self, text: str) -> str:
        if self.key is None or not text:
            return text
        return text.replace(self.key, MASK)

    def feed(self, piece: str) -> str:
        if self.key is None:
            return piece
        text = self.mask(self._pending + piece)
        keep = len(self.key) - 1
        self._pending, ready = (text[-keep:], text[:-keep]) if len(text) > keep else (text, "")
        return ready

    def flush(self) -> str:
        text, self._pending = self.mask(self._pending), ""
        return text


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


@dataclass(frozen=True)
class _Retry:
    """An attempt that failed before the answer started, and may be tried again."""

    why: str
    retry_after: float | None = None


@dataclass
class _StreamState:
    """What one streamed answer has read so far."""

    heard: float  # last time the server sent answer data (not a comment)
    limit: int | None  # characters the answer may have
    pieces: list[str] = field(default_factory=list)
    first: float | None = None
    usage: dict[str, Any] | None = None
    reason: str | None = None
    chunks: int = 0
    chars: int = 0
    size: int = 0
    finished: bool = False


def _cancelled() -> Iterator[Event]:
    return iter([Done(reason="cancelled", text="")])


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
        deadline: float = 300.0,
    ) -> None:
        self.endpoint = endpoint
        self._key = api_key
        self._masker = Masker(api_key)
        self.timeout = timeout
        #: Seconds one request may take in all, retries included.
        self.deadline = deadline
        self._ends = float("inf")
        self._max_tokens: int | None = None
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
        conn.sock.settimeout(self._wait_at_most())  # from now on: the longest silence between chunks
        return conn

    def _left(self) -> float:
        return self._ends - time.monotonic()

    def _wait_at_most(self) -> float:
        """The socket timeout for the next read: the silence allowed, within the deadline."""
        return max(0.05, min(self.timeout, self._left()))

    def _deadline_error(self, partial: bool) -> CloudError:
        what = "stopped mid-answer" if partial else "did not finish answering"
        return CloudError(
            f"The cloud endpoint {self.endpoint.label} {what}: the answer took longer than {self.deadline:g} s in all.",
            "Raise cloud_deadline if answers are just long, or check the server; /cloud off continues locally.",
            connection=True,
        )

    def _malformed(self, what: str) -> CloudError:
        return CloudError(
            f"The cloud endpoint {self.endpoint.label} sent a stream Enclave cannot read: {self._masker.mask(what)}.",
            "Check that cloud_base_url points at an OpenAI-compatible API (…/v1); the partial answer is not saved.",
        )

    def _wait(self, attempt: int, retry_after: float | None) -> None:
        if retry_after is not None:
            delay = min(retry_after, MAX_WAIT_S)
        else:
            delay = min(self.backoff * 2**attempt, MAX_WAIT_S) * random.uniform(0.5, 1.0)
        delay = min(delay, max(0.0, self._left()))
        log.info("cloud: attempt %d failed, waiting %.2f s", attempt + 1, delay)
        self._sleep(delay)

    def _gave_up(self, why: str) -> CloudError:
        label = self.endpoint.label
        tries = self.attempts
        return CloudError(
            f"Could not reach the cloud endpoint {label} ({tries} attempt{'s' if tries != 1 else ''}): "
            f"{self._masker.mask(why)}.",
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
        return CloudError(f"The cloud endpoint {label} refused the request ({self._masker.mask(summary)}).", hint)

    def _open(self, body: bytes) -> Iterator[Event] | http.client.HTTPResponse:
        """Send the request, retrying before the answer starts; the response, or one Error."""
        self.attempts = 0
        while True:
            if self._cancel.is_set():
                return _cancelled()
            self.attempts += 1
            last_try = self.attempts > self.retries or self._left() <= 0
            outcome = self._try_once(body, last_try)
            if not isinstance(outcome, _Retry):
                return outcome
            if last_try:
                return iter([Error(self._gave_up(outcome.why))])
            self._wait(self.attempts - 1, outcome.retry_after)

    def _try_once(self, body: bytes, last_try: bool) -> Iterator[Event] | http.client.HTTPResponse | _Retry:
        """One attempt: the response, the events that end the turn, or why to try again."""
        try:
            conn = self._connect()
        except TimeoutError:
            return _Retry(f"no connection within {min(self.timeout, MAX_CONNECT_S):g} s")
        except (OSError, http.client.HTTPException) as exc:
            return _Retry(getattr(exc, "strerror", None) or str(exc) or type(exc).__name__)
        self._conn = conn
        try:
            conn.request("POST", self.endpoint.chat_path, body=body, headers=self._headers(len(body)))
            response = conn.getresponse()
        except TimeoutError:
            conn.close()
            if self._cancel.is_set():
                return _cancelled()
            return iter([Error(self._timeout_error())])
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            if self._cancel.is_set():
                return _cancelled()
            return _Retry(f"the connection was closed before an answer ({type(exc).__name__})")
        return self._status(conn, response, last_try)

    def _status(
        self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse, last_try: bool
    ) -> Iterator[Event] | http.client.HTTPResponse | _Retry:
        """What the response's status means: read on, a redirect refused, an error, or a retry."""
        if 300 <= response.status < 400:
            conn.close()
            where = self._masker.mask(response.getheader("Location") or "elsewhere")
            return iter([Error(CloudError(
                f"The cloud endpoint {self.endpoint.label} redirects to {where} (HTTP {response.status}); "
                "Enclave does not follow redirects, so nothing goes to a host you did not configure.",
                "Set cloud_base_url to the address the server redirects to, if you trust it.",
            ))])  # fmt: skip
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
        return _Retry(summary, _retry_after(response.getheader("Retry-After")))

    def _timeout_error(self) -> CloudError:
        return CloudError(
            f"The cloud endpoint {self.endpoint.label} did not answer within {self.timeout:g} s.",
            "Raise cloud_timeout if the server is just slow, or check it; /cloud off continues locally.",
            connection=True,
        )

    def stream(self, body: bytes, max_tokens: int | None = None) -> Iterator[Event]:
        """POST ``body`` and yield TextDelta…, Usage, Done (or Error); at most ``max_tokens``
        pieces (default: the body's own ``max_tokens``) within the deadline."""
        start = time.perf_counter()
        self._ends = time.monotonic() + self.deadline
        self._masker = Masker(self._key)
        if max_tokens is None:
            try:
                max_tokens = int(json.loads(body).get("max_tokens") or 0) or None
            except (ValueError, AttributeError, TypeError):
                max_tokens = None
        self._max_tokens = max_tokens
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
            raw = self._read_body(response)
        except TimeoutError:
            yield Error(self._timeout_error() if self._left() > 0 else self._deadline_error(False))
            return
        except CloudError as exc:
            yield Error(exc)
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
            content = (choice.get("message") or {}).get("content") or ""
            if not isinstance(content, str):
                raise TypeError("content is not text")
            text = self._masker.mask(content)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            yield Error(
                CloudError(
                    f"The cloud endpoint {self.endpoint.label} answered with something that is not a chat completion.",
                    "Check that cloud_base_url points at an OpenAI-compatible API (…/v1).",
                )
            )
            return
        reason = _reason(choice.get("finish_reason"))
        limit = self._char_limit()
        if limit is not None and len(text) > limit:
            text, reason = text[:limit], "length"
        if text:
            yield TextDelta(text)
        yield self._usage(data.get("usage"), start, first, time.perf_counter(), 1 if text else 0)
        yield Done(reason=reason, text=text)

    def _char_limit(self) -> int | None:
        return None if self._max_tokens is None else self._max_tokens * CHARS_PER_TOKEN

    def _read_body(self, response: http.client.HTTPResponse) -> bytes:
        """The whole body, within the byte cap and the deadline."""
        parts: list[bytes] = []
        size = 0
        while True:
            if self._left() <= 0:
                raise self._deadline_error(False)
            self._set_timeout()
            block = response.read1(65536) if hasattr(response, "read1") else response.read(65536)
            if not block:
                return b"".join(parts)
            size += len(block)
            if size > MAX_RESPONSE_BYTES:
                raise self._too_big()
            parts.append(block)

    def _too_big(self) -> CloudError:
        return CloudError(
            f"The cloud endpoint {self.endpoint.label} sent more than {MAX_RESPONSE_BYTES // 2**20} MB; "
            "the answer was cut off and not saved.",
            "Check the server; lower --max-tokens if the answers are meant to be that long.",
        )

    def _set_timeout(self) -> None:
        conn = self._conn
        if conn is not None and conn.sock is not None:
            conn.sock.settimeout(self._wait_at_most())

    def _lost(self) -> CloudError:
        return CloudError(
            f"The connection to the cloud endpoint {self.endpoint.label} was lost mid-answer.",
            "The network or the server went away; the partial answer is not saved. The conversation continues locally.",
            connection=True,
        )

    def _read_stream(self, response: http.client.HTTPResponse, start: float) -> Iterator[Event]:
        state = _StreamState(heard=time.monotonic(), limit=self._char_limit())
        while not state.finished:
            stop = self._interrupted(state)
            if stop is not None:
                yield stop
                return
            line = self._next_line(response, state)
            if isinstance(line, Error):
                yield line
                return
            if line is None:  # end of the stream
                cut = self._cut_short(state)
                if cut is not None:
                    yield cut
                    return
                break
            if not line.startswith(b"data:"):
                continue  # blank separators, comments (keep-alives), event:/id:/retry: fields
            state.heard = time.monotonic()
            payload = line[5:].strip()
            if payload == b"[DONE]":
                state.finished = True
                continue
            data = self._chunk(payload)
            if isinstance(data, CloudError):
                yield Error(data)
                return
            if isinstance(data.get("usage"), dict):
                state.usage = data["usage"]
            try:
                yield from self._take_choices(data.get("choices") or [], state)
            except CloudError as exc:
                yield Error(exc)
                return
        rest = self._masker.flush()
        if rest:
            state.pieces.append(rest)
            yield TextDelta(rest)
        end = time.perf_counter()
        yield self._usage(state.usage, start, state.first or end, end, state.chunks)
        yield Done(reason=_reason(state.reason), text="".join(state.pieces))

    def _interrupted(self, state: _StreamState) -> Event | None:
        """Cancelled, past the deadline, or silent too long: the event that ends the answer."""
        if self._cancel.is_set():
            return Done(reason="cancelled", text="".join(state.pieces))
        if self._left() <= 0:
            return Error(self._deadline_error(bool(state.pieces)))
        if time.monotonic() - state.heard > self.timeout:
            return Error(self._silent_error(bool(state.pieces)))
        return None

    def _cut_short(self, state: _StreamState) -> Event | None:
        """At the end of the stream: cancelled, or lost before the server said it finished."""
        if self._cancel.is_set():
            return Done(reason="cancelled", text="".join(state.pieces))
        if state.reason is None:
            return Error(self._lost())
        return None

    def _next_line(self, response: http.client.HTTPResponse, state: _StreamState) -> bytes | Error | None:
        """The next line of the stream without its line end; None at its end; an Error past a limit."""
        self._set_timeout()
        try:
            line = response.readline(MAX_LINE_BYTES + 1)
        except TimeoutError:
            partial = bool(state.pieces)
            return Error(self._deadline_error(partial) if self._left() <= 0 else self._silent_error(partial))
        except (OSError, http.client.HTTPException):
            line = b""
        if not line:
            return None
        state.size += len(line)
        if state.size > MAX_RESPONSE_BYTES:
            return Error(self._too_big())
        if len(line) > MAX_LINE_BYTES:
            return Error(self._malformed(f"a line longer than {MAX_LINE_BYTES // 1024} KB"))
        return line.rstrip(b"\r\n")

    def _chunk(self, payload: bytes) -> dict[str, Any] | CloudError:
        """One data line as a chunk of the answer, or what is wrong with it."""
        try:
            data = json.loads(payload)
        except ValueError:
            return self._malformed("a data line is not JSON")
        if not isinstance(data, dict):
            return self._malformed(f"a data line is {type(data).__name__}, not an object")
        if data.get("error"):
            summary = _summarise(0, "", json.dumps(data).encode()).removeprefix("HTTP 0").lstrip(": ")
            message = f"The cloud endpoint {self.endpoint.label} failed mid-answer: {self._masker.mask(summary)}."
            return CloudError(
                message, "The server reported the failure itself; try again, or /cloud off to continue locally."
            )
        choices = data.get("choices") or []
        if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
            return self._malformed("'choices' is not a list of objects")
        return data

    def _take_choices(self, choices: list[dict[str, Any]], state: _StreamState) -> Iterator[Event]:
        """The pieces of the answer in one chunk (raises :class:`CloudError` for one that is not text)."""
        for choice in choices:
            delta = choice.get("delta") or {}
            content = delta.get("content") if isinstance(delta, dict) else None
            if not isinstance(delta, dict) or not isinstance(content, str | None):
                raise self._malformed("a piece of the answer is not text")
            if content:
                shown = self._take_piece(content, state)
                if shown:
                    yield TextDelta(shown)
            self._end_of_choice(choice, state)
            if state.finished:
                break

    def _take_piece(self, content: str, state: _StreamState) -> str:
        """One piece, cut at the length limit; what of it can be shown now (the key masked)."""
        if state.limit is not None and state.chars + len(content) > state.limit:
            content = content[: max(0, state.limit - state.chars)]
            state.reason = "length"
            state.finished = True
        if state.first is None:
            state.first = time.perf_counter()
        state.chunks += 1
        state.chars += len(content)
        shown = self._masker.feed(content)
        state.pieces.append(shown)
        return shown

    def _end_of_choice(self, choice: dict[str, Any], state: _StreamState) -> None:
        if choice.get("finish_reason") and not state.finished:
            state.reason = str(choice["finish_reason"])
        if self._max_tokens is not None and state.chunks >= self._max_tokens and not state.finished:
            # The server may go on (or never stop): max_tokens holds here too.
            state.reason, state.finished = "length", True

    def _silent_error(self, partial: bool) -> CloudError:
        err = self._timeout_error()
        if partial:
            err.message = f"The cloud endpoint {self.endpoint.label} stopped answering for {self.timeout:g} s."
        return err

    @staticmethod
    def _usage(data: dict[str, Any] | None, start: float, first: float, end: float, chunks: int) -> Usage:
        """Figures for the turn; token counts are the server's when it reports them
        (else the number of streamed chunks, roughly one token each)."""
        data = data if isinstance(data, dict) else {}
        prompt = _count(data.get("prompt_tokens"))
        return Usage(
            prompt_tokens=prompt,
            prefilled_tokens=prompt,
            completion_tokens=_count(data.get("completion_tokens")) or chunks,
            ttft_ms=(first - start) * 1000.0,
            prefill_ms=(first - start) * 1000.0,
            decode_ms=(end - first) * 1000.0,
        )


def _count(value: Any) -> int:
    """A token count the server reported, or 0 when it is not a sane whole number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 2**31:
        return 0
    return int(value)


def _reason(finish: Any) -> FinishReason:
    """The server's finish_reason in Enclave's words (anything unknown ended the answer)."""
    return "length" if finish == "length" else "stop"
