"""Sealed worker processes: starting them, talking to them, and noticing when they die.

:class:`SealedProcess` (front end) starts ``python -S assistant/privacy/seal.py SERVICE``,
waits for the worker's :class:`~assistant.privacy.seal.Isolation` report, then carries
requests and their replies over :mod:`assistant.privacy.wire`. One reader thread routes
each reply to the request that asked (by ``id``), so a cancel can be sent from the UI
thread while the decode thread reads tokens, and a tokenizer call from a third.

:class:`Server` (worker) reads requests on one thread and runs them one at a time on
the main thread; requests marked urgent (a cancel) run at once on the reader thread.

When the worker dies (a native crash, the kernel's OOM killer, a kill), every open
request ends with :class:`Stopped`, which names the signal: front ends turn it into
an error the user can read, and the next request starts a fresh worker.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import re
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from assistant.core import errors
from assistant.core.errors import EnclaveError
from assistant.privacy import offline
from assistant.privacy.seal import Check, Isolation, KernelView, Layer
from assistant.privacy.wire import LENGTHS, MAX_FRAME, Channel, Codec, ProtocolError, decode_header

log = logging.getLogger(__name__)

#: Seconds without a request after which the worker does its idle work (the engine grows a
#: conversation's KV cache for the next turn then). A one-shot ``enclave ask`` closes its
#: session well inside this, so it never starts work nobody will use.
IDLE_AFTER_S = 0.2

SEAL_SCRIPT = Path(__file__).resolve().with_name("seal.py")
#: A fatal or error line of Google's logging (LiteRT-LM): "F0000 00:00:17.1  123 file.cc:45] message".
_GLOG = re.compile(r"^[FE]\d{4} [\d:. ]+\d+ [^\]]+\] (.+)$")
#: Seconds a worker may take from Popen to its report. Measured: 95-340 ms on 2 busy cores.
READY_TIMEOUT = 60.0
#: Test-only switch, read by the worker when it starts: with it set to 1 the worker
#: honours :class:`TestHook` requests (crash on purpose, try a native connect). The
#: front end sends those only from tests; model output can never send a request.
TEST_HOOKS_ENV = "ENCLAVE_TEST_HOOKS"


# --------------------------------------------------------------------------- shared records
@dataclass(frozen=True)
class Failure:
    """A request failed: an :class:`~assistant.core.errors.EnclaveError` (by class name) or a bug."""

    kind: str
    message: str
    hint: str = ""
    held: int = 0
    needed: int = 0
    window: int = 0
    reserve: int = 0


@dataclass(frozen=True)
class Ack:
    """A request that returns nothing succeeded."""


@dataclass(frozen=True)
class SelfTest:
    """Run :func:`assistant.privacy.seal.self_test` inside the worker."""

    port: int


@dataclass(frozen=True)
class SelfTestResult:
    checks: list[Check]


@dataclass(frozen=True)
class Stats:
    """Ask the worker for its own figures."""


@dataclass(frozen=True)
class WorkerStats:
    """The worker's peak and current resident memory and its CPU time so far."""

    peak_rss_mib: float
    rss_mib: float
    cpu_s: float


@dataclass(frozen=True)
class TestHook:
    """Test-only (see :data:`TEST_HOOKS_ENV`): ``abort`` now, ``abort-after`` ``n`` more
    streamed pieces, ``connect`` through libc (the egress tests' positive control)."""

    __test__ = False  # not a pytest test class

    action: str
    n: int = 0


@dataclass(frozen=True)
class Stopped:
    """Not sent by the worker: what the front end reads when the worker is gone."""

    returncode: int | None
    last_words: str = ""

    def describe(self) -> str:
        """E.g. ``signal 6 (SIGABRT)`` or ``exit 1``."""
        code = self.returncode
        if code is None:
            return "it stopped answering"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = "unknown signal"
            return f"signal {-code} ({name})"
        return f"exit {code}"


COMMON: tuple[type[Any], ...] = (
    Failure,
    Ack,
    SelfTest,
    SelfTestResult,
    Check,
    Stats,
    WorkerStats,
    TestHook,
    Isolation,
    Layer,
    KernelView,
)

#: Errors a worker may name in a :class:`Failure`: a closed list, never a lookup of
#: whatever name arrives.
_ERRORS: dict[str, type[EnclaveError]] = {
    cls.__name__: cls
    for cls in (
        errors.EnclaveError,
        errors.EngineError,
        errors.EngineUnavailable,
        errors.ModelCorrupt,
        errors.ContextExhausted,
    )
}


def failure_of(exc: BaseException) -> Failure:
    """``exc`` as a record (worker side)."""
    if isinstance(exc, errors.ContextExhausted):
        return Failure(
            "ContextExhausted", exc.message, exc.hint, exc.held, exc.needed, exc.window, exc.reserve
        )
    if isinstance(exc, EnclaveError):
        kind = next((c.__name__ for c in type(exc).__mro__ if c.__name__ in _ERRORS), "EnclaveError")
        return Failure(kind, exc.message, exc.hint)
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    at = f" ({where.name} in {Path(where.filename).name}:{where.lineno})" if where else ""
    return Failure("bug", f"{type(exc).__name__}: {exc}{at}", "This is a bug in Enclave.")


def error_of(failure: Failure) -> EnclaveError:
    """The front end's error for a :class:`Failure`."""
    if failure.kind == "ContextExhausted":
        return errors.ContextExhausted(
            failure.needed,
            failure.window,
            failure.reserve,
            held=failure.held,
            message=failure.message,
            hint=failure.hint,
        )
    cls = _ERRORS.get(failure.kind, errors.EngineError)
    return cls(failure.message, failure.hint)


# --------------------------------------------------------------------------- worker side
Reply = Callable[..., None]


class Server:
    """The worker's end: requests in, replies out, one request at a time."""

    def __init__(self, reader: IO[bytes], writer: IO[bytes], isolation: Isolation) -> None:
        self.channel = Channel(reader, writer)
        self.isolation = isolation
        self.test_hooks = os.environ.get(TEST_HOOKS_ENV) == "1"

    def run(
        self,
        codec: Codec,
        handle: Callable[[Any, Reply], None],
        urgent: Callable[[Any], bool] = lambda _: False,
        closed: Callable[[], None] = lambda: None,
        idle: Callable[[Callable[[], bool]], None] | None = None,
    ) -> None:
        """Report ready, then serve until the front end closes the pipe.

        ``handle(request, reply)`` runs on the main thread; ``reply(record, blob=b"",
        end=False)`` sends a reply (the last one with ``end=True``). ``urgent(request)``
        runs on the reader thread and returns True when it dealt with the request.
        ``closed()`` runs on the reader thread when the front end is gone (its end of the
        pipe closed, e.g. it was killed): a turn still decoding should stop.
        ``idle(interrupted)`` runs on the main thread once no request has come for
        ``IDLE_AFTER_S`` after the last one (the user is reading or typing); it should
        return soon after ``interrupted()`` turns true (a request is waiting). It runs
        again only after another request.
        """
        self.channel.send({"id": 0, "end": True, **codec.encode(self.isolation)})
        requests: queue.SimpleQueue[tuple[int, Any] | None] = queue.SimpleQueue()
        threading.Thread(
            target=self._read, args=(codec, urgent, closed, requests), name="enclave-worker-pipe", daemon=True
        ).start()
        idle_due = False
        while True:
            if idle_due and idle is not None:
                try:
                    item = requests.get(timeout=IDLE_AFTER_S)
                except queue.Empty:
                    idle_due = False
                    try:
                        idle(lambda: not requests.empty())
                    except Exception as exc:  # noqa: BLE001 - idle work is optional; the next request is not
                        log.warning("idle work failed: %s", exc)
                    continue
            else:
                item = requests.get()
            if item is None:
                break
            idle_due = True
            rid, request = item

            def reply(record: Any, blob: bytes = b"", end: bool = False, rid: int = rid) -> None:
                self.channel.send({"id": rid, "end": end, **codec.encode(record)}, blob)

            try:
                if isinstance(request, TestHook):
                    reply(self.test_hook(request), end=True)
                elif isinstance(request, Stats):
                    reply(worker_stats(), end=True)
                elif isinstance(request, SelfTest):
                    from assistant.privacy.seal import self_test

                    reply(SelfTestResult(self_test(request.port)), end=True)
                else:
                    handle(request, reply)
            except BrokenPipeError:
                break
            except BaseException as exc:  # noqa: BLE001 - every failure goes back as a record
                reply(failure_of(exc), end=True)

    def _read(
        self,
        codec: Codec,
        urgent: Callable[[Any], bool],
        closed: Callable[[], None],
        requests: queue.SimpleQueue[tuple[int, Any] | None],
    ) -> None:
        """The reader thread: each request onto ``requests`` (urgent ones dealt with here),
        then None when the front end is gone."""
        try:
            while (frame := self.channel.receive()) is not None:
                header, _ = frame
                rid = header.pop("id", None)
                header.pop("end", None)
                if not isinstance(rid, int):
                    raise ProtocolError("a request without an id")
                request = codec.decode(header)
                if not urgent(request):
                    requests.put((rid, request))
        except (ProtocolError, OSError, ValueError) as exc:
            print(f"enclave worker: {exc}", file=sys.stderr)
        closed()
        requests.put(None)

    # -- test-only hooks
    abort_after: int = -1

    def test_hook(self, hook: TestHook) -> Any:
        if not self.test_hooks:
            raise EnclaveError(f"Test hooks are off in this worker ({TEST_HOOKS_ENV} is not 1).")
        if hook.action == "abort":
            os.abort()
        if hook.action == "abort-after":
            self.abort_after = hook.n
            return Ack()
        if hook.action == "connect":
            return SelfTestResult(positive_control())
        raise EnclaveError(f"Unknown test hook {hook.action!r}.")

    def streamed(self) -> None:
        """Call once per streamed piece: a pending ``abort-after`` hook counts down here."""
        if self.abort_after > 0:
            self.abort_after -= 1
        elif self.abort_after == 0:
            os.abort()


def worker_stats() -> WorkerStats:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return WorkerStats(
        peak_rss_mib=usage.ru_maxrss / 1024.0,  # KiB on Linux
        rss_mib=pages * os.sysconf("SC_PAGE_SIZE") / 2**20,
        cpu_s=usage.ru_utime + usage.ru_stime,
    )


def positive_control() -> list[Check]:
    """A deliberate native egress attempt: libc ``socket(AF_INET)`` then ``connect()`` to
    192.0.2.1:53 (TEST-NET-1: never routed). Under the seal both fail; ``strace`` sees them."""
    import ctypes
    import socket
    import struct

    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.socket(socket.AF_INET, socket.SOCK_DGRAM, 0)
    made = f"fd {fd}" if fd >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")
    address = struct.pack("=H", socket.AF_INET) + struct.pack("!H4s8x", 53, socket.inet_aton("192.0.2.1"))
    rc = libc.connect(fd, ctypes.c_char_p(address), len(address))
    connected = "connected" if rc == 0 else errno.errorcode.get(ctypes.get_errno(), "?")
    if fd >= 0:
        libc.close(fd)
    return [
        Check("socket(AF_INET) via libc", fd < 0, made),
        Check("connect(192.0.2.1:53) via libc", rc != 0, connected),
    ]


def serve(server: Server) -> None:
    """The ``probe`` service: a worker with no native library, for ``doctor --privacy``."""

    def handle(request: Any, reply: Reply) -> None:
        raise EnclaveError(f"The probe worker does not handle {type(request).__name__}.")

    server.run(Codec(COMMON), handle)


# --------------------------------------------------------------------------- front-end side
@dataclass
class _Pending:
    replies: deque[tuple[Any, bytes, bool] | Stopped] = field(default_factory=deque)


class SealedProcess:
    """One worker process and the pipe to it (front end).

    ``service`` is a name from :data:`assistant.privacy.seal.SERVICES`; ``codec`` knows
    the records of that service. ``home`` is a folder inside Enclave's cache that the
    worker uses as ``HOME`` and ``TMPDIR``; ``memory_mb`` caps its address space.
    Raises :class:`~assistant.core.errors.EnclaveError` when it cannot start.

    No thread reads the pipe on its own: a caller waiting for a reply reads frames
    itself (one caller at a time, the others wait on a condition), keeps its own and
    hands the others' to them. A dedicated reader thread cost ~210 us of CPU per token in
    this process (two thread wake-ups and a GIL hand-off per frame, measured on SmolLM2),
    about 2 % of a token on 2 cores the model already fills; reading in the waiting
    thread costs one ``read`` per frame.
    """

    def __init__(
        self,
        service: str,
        codec: Codec,
        *,
        home: Path | None = None,
        memory_mb: int = 0,
        extra_env: dict[str, str] | None = None,
        sealed: bool = True,
    ) -> None:
        self.service = service
        self.codec = codec
        self._pending: dict[int, _Pending] = {}
        self._cond = threading.Condition()
        self._reading = False
        self._next = 1
        self._stopped: Stopped | None = None
        #: Set when this side kills the worker (Ctrl-C, a stop): a frame cut short then is expected.
        self._killed = False
        self._stderr: deque[str] = deque(maxlen=40)
        started = time.perf_counter()
        command = [sys.executable, "-S", str(SEAL_SCRIPT), service, "--parent-netns", _netns()]
        if home is not None:
            command += ["--home", str(home)]
        if memory_mb:
            command += ["--memory-mb", str(memory_mb)]
        if not sealed:
            command += ["--seal", "off"]
        env = offline.child_env(extra=extra_env)
        try:
            # Its own session: Ctrl-C at the terminal goes to the front end's process group,
            # which cancels the turn; the worker must not get it (it would abort the turn).
            self.proc = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            raise EnclaveError(
                f"The sealed {service} process could not start: {exc}.", f"Check that {sys.executable} runs."
            ) from exc
        assert self.proc.stdin is not None and self.proc.stdout is not None and self.proc.stderr is not None
        self.pid = self.proc.pid
        self._writer = Channel(self.proc.stdout, self.proc.stdin)  # send() only: framing and a lock
        self._frames = FrameReader(self.proc.stdout.fileno())
        threading.Thread(
            target=_read_stderr, args=(self.proc.stderr, self._stderr, service), daemon=True,
            name=f"enclave-{service}-stderr",
        ).start()  # fmt: skip
        self._finalizer = weakref.finalize(self, _close_process, self.proc)
        try:
            first = self._read(time.monotonic() + READY_TIMEOUT)
        except TimeoutError:
            self.kill()
            raise EnclaveError(
                f"The sealed {service} process did not start within {READY_TIMEOUT:.0f} s.",
                "The machine may be very busy; try again.",
            ) from None
        if first is None:
            stopped = self._stop()
            words = f" ({stopped.last_words})" if stopped.last_words else ""
            raise EnclaveError(
                f"The sealed {service} process stopped while starting ({stopped.describe()}){words}.",
                "Run `enclave doctor --privacy` to see which layer this system refuses.",
            )
        rid, record, _, _ = first
        if rid != 0 or not isinstance(record, Isolation):
            self.kill()
            raise EnclaveError(f"The sealed {service} process began with {type(record).__name__}, not its report.")
        self.isolation = record
        self.ready_ms = (time.perf_counter() - started) * 1000

    # -- requests
    def request(self, record: Any, blob: bytes = b"", timeout: float | None = None) -> Iterator[tuple[Any, bytes]]:
        """Send ``record``; iterate its replies (record, blob) up to the last one.

        A :class:`Failure` is raised as its error; a dead worker yields one
        :class:`Stopped` record and ends. With ``timeout``, :class:`TimeoutError` when a
        reply takes longer (the worker keeps running: the caller decides whether to
        :meth:`kill` it).
        """
        pending = _Pending()
        with self._cond:
            rid = self._next
            self._next += 1
            stopped = self._stopped
            if stopped is None:
                self._pending[rid] = pending
        if stopped is not None:
            yield stopped, b""
            return
        try:
            try:
                self._writer.send({"id": rid, **self.codec.encode(record)}, blob)
            except (OSError, ValueError):
                self._stop()
            while True:
                deadline = time.monotonic() + timeout if timeout is not None else None
                item = self._wait(pending, deadline)
                if isinstance(item, Stopped):
                    yield item, b""
                    return
                reply, data, end = item
                if isinstance(reply, Failure):
                    raise error_of(reply)
                yield reply, data
                if end:
                    return
        finally:
            with self._cond:
                self._pending.pop(rid, None)

    def call(self, record: Any, blob: bytes = b"", timeout: float | None = None) -> tuple[Any, bytes]:
        """Send ``record`` and wait for its one reply; :class:`Stopped` when the worker died.

        Raises :class:`TimeoutError` after ``timeout`` seconds (see :meth:`request`).
        """
        return next(self.request(record, blob, timeout))

    def send(self, record: Any) -> None:
        """Send a request that has no reply (a cancel); ignored when the worker is gone."""
        with self._cond:
            rid = self._next
            self._next += 1
        try:
            self._writer.send({"id": rid, **self.codec.encode(record)})
        except (OSError, ValueError):
            pass

    # -- reading (by whichever caller waits)
    def _wait(self, pending: _Pending, deadline: float | None) -> tuple[Any, bytes, bool] | Stopped:
        """The next reply for ``pending``: read frames until it comes, or wait while
        another caller reads them."""
        while True:
            with self._cond:
                while True:
                    if pending.replies:
                        return pending.replies.popleft()
                    if self._stopped is not None:
                        return self._stopped
                    if not self._reading:
                        self._reading = True
                        break
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise TimeoutError("no answer in time")
                    self._cond.wait(left)
            try:
                frame = self._read(deadline)
            except TimeoutError:
                with self._cond:
                    self._reading = False
                    self._cond.notify_all()
                raise
            except (ProtocolError, OSError, ValueError) as exc:
                self._broken(exc)
                frame = None
            with self._cond:
                self._reading = False
                if frame is not None:
                    rid, record, blob, end = frame
                    target = self._pending.get(rid)
                    if target is not None:
                        target.replies.append((record, blob, end))
                self._cond.notify_all()
            if frame is None:
                self._stop()

    def _broken(self, exc: Exception) -> None:
        """The stream broke off inside a frame: logged, unless this side killed the worker
        (Ctrl-C), where that is expected; the worker is stopped either way."""
        if not self._killed:
            log.warning("the sealed %s worker broke the protocol (%s); it is stopped", self.service, exc)
        self.kill()

    def _read(self, deadline: float | None) -> tuple[int, Any, bytes, bool] | None:
        """One decoded frame, ``None`` at the end of the stream (the worker is gone)."""
        frame = self._frames.read(deadline)
        if frame is None:
            return None
        header, blob = frame
        rid = header.pop("id", None)
        end = header.pop("end", False) is True
        if not isinstance(rid, int):
            raise ProtocolError("a reply without an id")
        return rid, self.codec.decode(header), blob, end

    # -- state
    @property
    def alive(self) -> bool:
        return self._stopped is None and self.proc.poll() is None

    @property
    def stopped(self) -> Stopped | None:
        return self._stopped

    @property
    def last_words(self) -> str:
        """The worker's last message on stderr (a native library's abort reason), if any:
        the last glog-style ``F``/``E`` line without its prefix, else the last line that
        is not a frame of a stack trace."""
        lines = list(self._stderr)
        for line in reversed(lines):
            match = _GLOG.match(line)
            if match:
                return match.group(1).strip()
        for line in reversed(lines):
            if line.strip() and not line.startswith((" ", "\t", "@", "***", "Stack trace", "WARNING: Logging")):
                return line.strip()
        return ""

    def _stop(self) -> Stopped:
        """The worker is gone (or must be): reap it, and end every request waiting on it."""
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        time.sleep(0.01)  # the stderr thread drains the last lines
        with self._cond:
            if self._stopped is None:
                self._stopped = Stopped(code, self.last_words[:300])
            self._cond.notify_all()
            return self._stopped

    def close(self, timeout: float = 5.0) -> None:
        """Ask the worker to exit (end of its input), then make sure it did."""
        try:
            self._writer.close()
        finally:
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self._finalizer.detach()

    def kill(self) -> None:
        self._killed = True
        self.proc.kill()
        self.proc.wait()


class FrameReader:
    """Frames from a pipe's file descriptor, with a deadline (``select`` before each read)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = bytearray()

    def read(self, deadline: float | None) -> tuple[dict[str, Any], bytes] | None:
        prefix = LENGTHS.size
        if not self._fill(prefix, deadline):
            return None
        size, blob_size = LENGTHS.unpack(self._buffer[:prefix])
        if size > MAX_FRAME or blob_size > MAX_FRAME:
            raise ProtocolError(f"a frame of {size} + {blob_size} bytes exceeds the {MAX_FRAME}-byte limit")
        total = prefix + size + blob_size
        if not self._fill(total, deadline):
            raise ProtocolError("the stream ended inside a frame")
        data = bytes(self._buffer[prefix : prefix + size])
        blob = bytes(self._buffer[prefix + size : total])
        del self._buffer[:total]
        return decode_header(data), blob

    def _fill(self, n: int, deadline: float | None) -> bool:
        while len(self._buffer) < n:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self._fd], [], [], left)[0]:
                    raise TimeoutError("no answer in time")
            chunk = os.read(self._fd, max(65536, n - len(self._buffer)))
            if not chunk:
                if self._buffer:
                    raise ProtocolError("the stream ended inside a frame")
                return False
            self._buffer += chunk
        return True


def _netns() -> str:
    try:
        return os.readlink("/proc/self/ns/net")
    except OSError:
        return ""


def _close_process(proc: subprocess.Popen[bytes]) -> None:
    """The worker of a process object nobody holds any more: end it."""
    for stream in (proc.stdin, proc.stdout):
        try:
            if stream is not None:
                stream.close()
        except OSError:
            pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()


def _read_stderr(stream: IO[bytes], tail: deque[str], service: str) -> None:
    worker_log = logging.getLogger(f"assistant.worker.{service}")
    for raw in stream:
        line = raw.decode("utf-8", "replace").rstrip()
        if line:
            tail.append(line)
            worker_log.debug("%s", line)
    stream.close()
