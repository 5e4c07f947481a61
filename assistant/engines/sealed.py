"""The engine adapter the front end uses: a proxy whose model runs in a sealed worker.

:class:`SealedEngine` is an :class:`~assistant.engines.base.Engine` like any other: the
app layer opens sessions, streams turns, cancels them and asks the tokenizer, and
never learns that each of those crosses a pipe to a worker process in its own user and
network namespace under a seccomp filter (:mod:`assistant.privacy.seal`). The front end
never imports onnxruntime-genai or LiteRT-LM.

Crash containment: a native crash (a crafted ``.litertlm`` aborts the loader), the
kernel's OOM killer or a kill ends the worker only. The turn in progress ends with an
:class:`~assistant.core.errors.EngineStopped` error that names the signal; every
session's copy of its cache is emptied; the next request starts a fresh worker, reloads
the model, and each session's next turn re-prefills its prompt from the conversation's
history, announced by a :class:`~assistant.engines.base.Notice`.

Costs (scripts/bench_seal.py, docs/privacy.md): a tokenizer call is a round trip
(0.15 ms median, 2.8 ms at the 90th percentile with 16 runnable tasks on 2 cores), and
``Conversation.plan`` repeats most of its calls turn after turn, so the proxy tokenizer
keeps the last 512 results of each kind: 2 round trips per chat turn remain.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from assistant.core.errors import EnclaveError, EngineError, EngineStopped, ModelCorrupt, PrivacySealRequired
from assistant.core.events import Done, Error, Event, GenerationOptions, Notice, TextDelta, Usage
from assistant.engines.base import Engine, Session, Tokenizer
from assistant.engines.protocol import (
    CODEC,
    Cancel,
    CloseSession,
    Count,
    Decode,
    Encode,
    Generate,
    Held,
    Loaded,
    LoadLitert,
    LoadOnnx,
    NativeCount,
    Opened,
    OpenSession,
    Render,
    RenderTools,
    ResetCancel,
    Score,
    Scores,
    StreamError,
    Text,
    Tokens,
)
from assistant.privacy.worker import Failure, SealedProcess, Stats, Stopped, TestHook, WorkerStats, error_of

log = logging.getLogger(__name__)

LoadSpec = LoadOnnx | LoadLitert
T = TypeVar("T")

#: Results kept per tokenizer call kind. A turn of Conversation.plan renders and encodes
#: ~2-12 prompts, most of them the same as the turn before; 512 entries of a 2k-token
#: window hold a few MB at most.
CACHE_ENTRIES = 512


class _Cache:
    """A small least-recently-used map, safe across threads."""

    def __init__(self, size: int = CACHE_ENTRIES) -> None:
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        return None

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._size:
                self._data.popitem(last=False)


class SealedTokenizer(Tokenizer):
    """The worker's tokenizer, one round trip per call, with the recent results cached."""

    def __init__(self, engine: SealedEngine) -> None:
        self._engine = engine
        self._encoded = _Cache()
        self._decoded = _Cache()
        self._rendered = _Cache()

    def encode(self, text: str) -> list[int]:
        if not text:
            return []
        hit = self._encoded.get(text)
        if hit is None:
            hit = tuple(self._engine.call(Encode(text), Tokens).ids)
            self._encoded.put(text, hit)
        return list(hit)

    def decode(self, tokens: Sequence[int]) -> str:
        if not tokens:
            return ""
        key = tuple(tokens)
        hit = self._decoded.get(key)
        if hit is None:
            hit = self._engine.call(Decode(list(key)), Text).text
            self._decoded.put(key, hit)
        return str(hit)

    def render(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True) -> str:
        plain = [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]
        key = (json.dumps(plain, ensure_ascii=False), add_generation_prompt)
        hit = self._rendered.get(key)
        if hit is None:
            hit = self._engine.call(Render(plain, add_generation_prompt), Text).text
            self._rendered.put(key, hit)
        return str(hit)

    def render_tools(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
    ) -> str:
        request = RenderTools(
            json.dumps(list(messages), ensure_ascii=False),
            json.dumps(list(tools), ensure_ascii=False),
            add_generation_prompt,
        )
        return str(self._engine.call(request, Text).text)


class SealedSession(Session):
    """A session whose KV cache lives in the worker; ``tokens`` is kept in step with it."""

    def __init__(self, engine: SealedEngine, capacity: int) -> None:
        super().__init__(engine, capacity)
        self._sealed = engine
        self._sid = engine._new_session_id()
        self._requested = capacity
        self._epoch = 0  # the worker this session was opened in (0: none yet)
        self._closed = False
        self._open()

    def _open(self) -> tuple[SealedProcess, bool]:
        """The worker, with this session opened in it; and whether it was opened again
        after an earlier worker stopped (its cache is then empty)."""
        process, epoch = self._sealed.process()
        again = False
        if self._epoch != epoch:
            reply, _ = process.call(OpenSession(self._sid, self._requested))
            if isinstance(reply, Stopped):
                raise self._sealed.stopped_error(reply, "opening a conversation")
            assert isinstance(reply, Opened)
            again = self._epoch != 0
            self.capacity = reply.capacity
            self._epoch = epoch
            self._held = []
        return process, again

    def cancel(self) -> None:
        super().cancel()
        process = self._sealed.current()
        if process is not None and self._epoch == self._sealed.epoch:
            process.send(Cancel(self._sid))

    def reset_cancel(self) -> None:
        super().reset_cancel()
        process = self._sealed.current()
        if process is not None and self._epoch == self._sealed.epoch:
            process.send(ResetCancel(self._sid))

    def generate(
        self,
        prompt: Sequence[int],
        options: GenerationOptions | None = None,
        messages: Sequence[dict[str, str]] | None = None,
    ) -> Iterator[Event]:
        options = options or GenerationOptions()
        try:
            process, again = self._open()
        except EnclaveError as exc:  # the worker could not be restarted, or the model reloaded
            yield Error(exc)
            return
        if again:
            yield Notice(
                f"The engine process was restarted (it had stopped: {self._sealed.last_stop}); "
                "this conversation was read back in from its history."
            )
        if self._cancel.is_set():
            process.send(Cancel(self._sid))  # an Esc pressed before this turn started still counts
        request = Generate(
            self._sid,
            list(prompt),
            options,
            [dict(m) for m in messages] if messages is not None else None,
            list(self.engine.info.eos_token_ids),
        )
        yield from self._stream(process, request)

    def _stream(self, process: SealedProcess, request: Generate) -> Iterator[Event]:
        try:
            for reply, _ in process.request(request):
                match reply:
                    case TextDelta() | Usage():
                        yield reply
                    case Held(tokens=tokens):
                        self._held = tokens
                    case Done():
                        self._cancel.clear()
                        yield reply
                    case StreamError():
                        yield Error(error_of(Failure(reply.kind, reply.message, reply.hint)))
                    case Stopped():
                        self._held = []
                        yield Error(self._sealed.stopped_error(reply, "answering"))
                        return
                    case _:
                        pass
        except GeneratorExit:
            # Abandoned half-way (the caller stopped iterating): stop the worker's turn too.
            # What its cache holds then is not known here; the next turn's reply says.
            process.send(Cancel(self._sid))
            self._held = []
            raise

    def score(self, tokens: Sequence[int]) -> list[float]:
        """Log-probabilities of ``tokens[1:]``, computed in the worker (its own cache there)."""
        return self._sealed.call(Score(self._sid, list(tokens)), Scores).logprobs

    def native_token_count(self) -> int:
        """Tokens the native generator in the worker holds (for tests of the bookkeeping)."""
        return self._sealed.call(NativeCount(self._sid), Count).n

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        process = self._sealed.current()
        if process is not None and self._epoch == self._sealed.epoch:
            try:
                process.call(CloseSession(self._sid))
            except EngineError:
                log.debug("closing a session in the engine worker failed", exc_info=True)


class SealedEngine(Engine):
    """A model loaded in a sealed worker process; see the module docstring.

    ``spec`` says what to load; ``home`` is a folder in Enclave's cache that the worker
    uses as ``HOME`` and ``TMPDIR``; with ``require`` a worker whose network namespace or
    seccomp filter did not take effect is refused
    (:class:`~assistant.core.errors.PrivacySealRequired`).
    """

    def __init__(self, spec: LoadSpec, *, home: Path | None = None, require: bool = False) -> None:
        self.spec = spec
        self._home = home
        self._require = require
        self._lock = threading.RLock()
        self._process: SealedProcess | None = None
        self._next_session = 0
        self._closed = False
        self.epoch = 0
        self.restarts = 0
        self.last_stop = ""
        loaded = self._start()
        self.name = loaded.engine
        self.capabilities = loaded.capabilities
        super().__init__(loaded.info, SealedTokenizer(self))

    # -- the worker
    def _start(self) -> Loaded:
        process = SealedProcess("engine", CODEC, home=self._home)
        isolation = process.isolation
        if self._require and not isolation.sealed:
            process.close()
            refused = [f"{layer.name}: {layer.detail}" for layer in isolation.layers if layer.state != "active"]
            raise PrivacySealRequired(
                "The engine process could not be sealed, and the privacy_seal setting requires it "
                f"({'; '.join(refused)}).",
                "Allow unprivileged user namespaces for Enclave (see `enclave doctor --privacy`), "
                "or set privacy_seal = warn to run with the other layers.",
            )
        try:
            reply, _ = process.call(self.spec)
        except BaseException:
            process.close()
            raise
        if isinstance(reply, Stopped):
            what = Path(self.spec.path).name
            raise ModelCorrupt(
                f"The engine process stopped while loading {what} ({reply.describe()}): the file is damaged "
                f"or not a model this engine reads{'; it said: ' + reply.last_words.rstrip('.') if reply.last_words else ''}.",
                f"Check it with `enclave models verify {self.spec.name}`; nothing else was affected.",
            )
        if not isinstance(reply, Loaded):
            process.close()
            raise EngineError(f"The engine process answered {type(reply).__name__} to a load.", "This is a bug.")
        self._process = process
        self.epoch += 1
        self.isolation = isolation
        log.info("engine worker %s ready in %.0f ms: %s", process.pid, process.ready_ms, isolation.summary())
        return reply

    def process(self) -> tuple[SealedProcess, int]:
        """The live worker and its epoch, restarting it (and reloading the model) if it died."""
        with self._lock:
            if self._closed:
                raise EngineError("This model was closed.", "Open the conversation again.")
            process = self._process
            if process is None or not process.alive:
                if process is not None:
                    stopped = process.stopped or Stopped(process.proc.poll())
                    self.last_stop = stopped.describe()
                    self.restarts += 1
                    log.info("engine worker %s stopped (%s); restarting it", process.pid, self.last_stop)
                self._process = None
                self._start()
                process = self._process
            assert process is not None
            return process, self.epoch

    def current(self) -> SealedProcess | None:
        """The worker if it is alive (never starts one)."""
        process = self._process
        return process if process is not None and process.alive else None

    def call(self, record: Any, expect: type[T]) -> T:
        """One request, one reply of type ``expect``; a dead worker is restarted first and
        :class:`EngineStopped` is raised if it dies during the call."""
        process, _ = self.process()
        reply, _ = process.call(record)
        if isinstance(reply, Stopped):
            raise self.stopped_error(reply, f"running {type(record).__name__.lower()}")
        if not isinstance(reply, expect):
            raise EngineError(f"The engine process answered {type(reply).__name__}, not {expect.__name__}.")
        return reply

    def stopped_error(self, stopped: Stopped, during: str) -> EngineStopped:
        self.last_stop = stopped.describe()
        said = f" Its last message: {stopped.last_words}" if stopped.last_words else ""
        return EngineStopped(
            f"The engine process stopped ({stopped.describe()}) while {during}; nothing saved was lost.{said}",
            "Send your message again: Enclave restarts the engine and reads the conversation back in.",
        )

    def _new_session_id(self) -> int:
        with self._lock:
            self._next_session += 1
            return self._next_session

    # -- the engine seam
    def open_session(self, capacity: int) -> SealedSession:
        return SealedSession(self, capacity)

    def process_peak_rss_mib(self) -> float:
        """The worker's peak resident memory (the model, its KV caches, the runtime)."""
        return self.call(Stats(), WorkerStats).peak_rss_mib

    def process_cpu_seconds(self) -> float:
        """The worker's CPU time so far (user + system)."""
        return self.call(Stats(), WorkerStats).cpu_s

    def test_hook(self, action: str, n: int = 0) -> Any:
        """Test-only (the worker honours it only with ``ENCLAVE_TEST_HOOKS=1``): ``abort``,
        ``abort-after`` ``n`` streamed pieces, ``connect``."""
        process, _ = self.process()
        if action == "abort":
            process.send(TestHook(action))
            process.proc.wait(timeout=30)
            return None
        reply, _ = process.call(TestHook(action, n))
        return reply

    def close(self) -> None:
        with self._lock:
            self._closed = True
            process, self._process = self._process, None
        if process is not None:
            process.close()
