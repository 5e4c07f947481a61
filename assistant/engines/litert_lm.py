"""LiteRT-LM backend (litert-lm-api 0.18.1): Gemma-style ``.litertlm`` bundles.

LiteRT-LM works at the level of messages, not tokens: its Python API can neither
prefill a list of token ids nor report the ids it samples (see
``scripts/probe_litert.py``). So this backend keeps one native *conversation* per
session and feeds it messages: when the next prompt extends exactly the messages
the conversation already holds, only the new user message is sent and the KV
cache is reused (LiteRT-LM prefills just that turn); otherwise — an edited or
dropped turn, a cancelled answer, a changed sampler — the conversation is rebuilt
from Enclave's own copy of the history. The engine's known hazards are handled
here, not exposed:

* a prompt over the window would leave the native conversation broken, so the
  size is checked with the bundle's own tokenizer and template *before* sending;
* after ``cancel_process()`` a conversation answers nothing, so it is dropped and
  rebuilt on the next turn;
* the native loader aborts the whole process on a crafted file, so a bundle that
  is not verified against a manifest is probe-loaded in a child process first
  (:func:`probe_bundle`).
"""

from __future__ import annotations

import logging
import os
import re
import resource
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from assistant.core.errors import ContextExhausted, EngineError, EngineUnavailable, ModelCorrupt
from assistant.core.events import Done, Error, Event, FinishReason, GenerationOptions, TextDelta, Usage
from assistant.engines.base import Capabilities, Engine, ModelInfo, Session, Tokenizer

log = logging.getLogger(__name__)


def _import_litert() -> Any:
    try:
        import litert_lm
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise EngineUnavailable(
            f"litert-lm-api is not installed ({exc}).", "Install Enclave's runtime: pip install -e ."
        ) from exc
    # The native library logs to stderr, which would scribble over the terminal UI.
    litert_lm.set_min_log_severity(litert_lm.LogSeverity.ERROR)
    return litert_lm


# --------------------------------------------------------------------------- bundle metadata
def read_bundle_template(path: Path) -> str | None:
    """The Jinja chat template stored in a bundle's LLM metadata, if one is found.

    The metadata is a protobuf section; the template is a length-delimited string
    field. Without the schema (it ships only with the build tools) the string is
    located by its varint length prefix, which must span valid UTF-8 that renders
    ``messages``.
    """
    data = path.read_bytes()
    for match in re.finditer(rb"\{[%{]", data):
        start = match.start()
        for width in (1, 2, 3):
            if start - width < 0:
                continue
            length, shift, ok = 0, 0, True
            for i, byte in enumerate(data[start - width : start]):
                last = i == width - 1
                if bool(byte & 0x80) == last:  # continuation bits must be 1,1,…,0
                    ok = False
                    break
                length |= (byte & 0x7F) << shift
                shift += 7
            if not ok or start + length > len(data) or length < 20:
                continue
            try:
                text = data[start : start + length].decode("utf-8")
            except UnicodeDecodeError:
                continue
            if "messages" in text and text.rstrip().endswith(("}", "%}")):
                return text
    return None


_PROBE = """
import sys, tempfile
import litert_lm
litert_lm.set_min_log_severity(litert_lm.LogSeverity.FATAL)
with tempfile.TemporaryDirectory() as cache:
    engine = litert_lm.Engine(sys.argv[1], backend=litert_lm.Backend.CPU(thread_count=1), max_num_tokens=64, cache_dir=cache)
    engine.tokenize("probe")
    engine.close()
"""


def probe_bundle(path: Path, timeout: float = 60.0, memory_bytes: int = 8 << 30) -> None:
    """Load ``path`` once in a child process with time and memory limits.

    A crafted or truncated ``.litertlm`` can abort the process inside the native
    loader (SIGABRT); in a child that is a message, not a dead Enclave.
    """

    def limit() -> None:  # runs in the child before exec
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))

    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE, str(path)],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            preexec_fn=limit,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise ModelCorrupt(
            f"{path} is not a valid LiteRT-LM bundle: loading it took longer than {timeout:.0f} s.",
            "Check that the file is a complete .litertlm download.",
        ) from exc
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        reason = lines[-1][:300] if lines else ""
        if proc.returncode < 0:
            reason = f"the native loader crashed (signal {-proc.returncode}){': ' + reason if reason else ''}"
        raise ModelCorrupt(
            f"{path} is not a valid LiteRT-LM bundle: {reason or f'exit {proc.returncode}'}.",
            "Check that the file is a complete .litertlm download; Google publishes Gemma bundles in this format.",
        )


# --------------------------------------------------------------------------- tokenizer
class LitertTokenizer(Tokenizer):
    """The bundle's tokenizer (through the engine) and its chat template (Jinja, sandboxed)."""

    def __init__(self, engine: Any, template: str | None) -> None:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        self._engine = engine
        self.has_template = template is not None
        self.bos = str(engine.detokenize([engine.bos_token_id])) if engine.bos_token_id is not None else ""
        env = ImmutableSandboxedEnvironment(trim_blocks=False, lstrip_blocks=False)
        env.globals["raise_exception"] = _raise
        self._template = env.from_string(template) if template else None

    def encode(self, text: str) -> list[int]:
        return [int(t) for t in self._engine.tokenize(text)] if text else []

    def decode(self, tokens: Sequence[int]) -> str:
        return str(self._engine.detokenize(list(tokens))) if tokens else ""

    def render(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True) -> str:
        if self._template is None:
            # No template found: a plain transcript keeps counting approximately right.
            body = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
            return self.bos + body + ("model: " if add_generation_prompt else "")
        return str(
            self._template.render(
                messages=list(messages), add_generation_prompt=add_generation_prompt, bos_token=self.bos
            )
        )


def _raise(message: str) -> None:
    raise ValueError(message)


# --------------------------------------------------------------------------- session
class LitertSession(Session):
    """One native conversation, rebuilt from Enclave's history whenever it cannot be reused."""

    def __init__(self, engine: LitertEngine, capacity: int) -> None:
        super().__init__(engine, capacity)
        self._engine = engine
        self._conv: Any = None
        self._fed: list[dict[str, str]] = []  # messages the native conversation holds
        self._sampler: tuple[Any, ...] | None = None

    # Token-level hooks: LiteRT-LM offers none of them (see the module docstring).
    def _append(self, tokens: list[int]) -> None:
        raise EngineError("LiteRT-LM cannot prefill token ids.", "This is a bug in Enclave: use messages.")

    def _rewind(self, n: int) -> None:
        raise EngineError("LiteRT-LM cannot rewind.", "This is a bug in Enclave.")

    def _reset(self) -> None:
        self._drop()

    def _decode_step(self, options: GenerationOptions) -> int:
        raise EngineError("LiteRT-LM does not expose token ids.", "This is a bug in Enclave.")

    def _drop(self) -> None:
        if self._conv is not None:
            try:
                self._conv.close()
            except Exception:  # noqa: BLE001 - a broken conversation may refuse to close
                log.debug("closing a LiteRT-LM conversation failed", exc_info=True)
        self._conv = None
        self._fed = []
        self._held = []

    def _close(self) -> None:
        self._drop()
        if self in self._engine._sessions:
            self._engine._sessions.remove(self)

    def _open(self, history: list[dict[str, str]], options: GenerationOptions) -> None:
        lm = self._engine.lm
        self._drop()
        system = history[0]["content"] if history and history[0]["role"] == "system" else None
        earlier = history[1:] if system is not None else history
        sampler = lm.SamplerConfig(
            top_k=1 if options.temperature <= 0 else options.top_k,
            top_p=None if options.temperature <= 0 else options.top_p,
            temperature=None if options.temperature <= 0 else options.temperature,
            seed=options.seed if options.seed is not None else 0,
        )
        self._conv = self._engine.native.create_conversation(
            system_message=system,
            messages=[{"role": _role(m["role"]), "content": m["content"]} for m in earlier] or None,
            sampler_config=sampler,
        )
        self._fed = list(history)
        self._sampler = _sampler_key(options)

    def generate(
        self,
        prompt: Sequence[int],
        options: GenerationOptions | None = None,
        messages: Sequence[dict[str, str]] | None = None,
    ) -> Iterator[Event]:
        options = options or GenerationOptions()
        if messages is None:
            raise EngineError("LiteRT-LM sessions need the messages of the turn.", "This is a bug in Enclave.")
        messages = list(messages)
        if len(prompt) >= self.capacity:
            raise ContextExhausted(needed=len(prompt), window=self.capacity)
        history, new = messages[:-1], messages[-1]
        reused = self._conv is not None and self._fed == history and self._sampler == _sampler_key(options)
        start = time.perf_counter()
        try:
            if not reused:
                self._open(history, options)
            stream = self._conv.send_message_async(new["content"], max_output_tokens=options.max_tokens)
        except Exception as exc:  # noqa: BLE001 - native errors
            self._drop()
            yield Error(EngineError(f"LiteRT-LM failed to start the turn: {exc}"))
            return
        pieces: list[str] = []
        first_at: float | None = None
        reason: FinishReason = "stop"
        try:
            for message in stream:
                text = "".join(p.get("text", "") for p in message.get("content", []) if p.get("type") == "text")
                if text:
                    if first_at is None:
                        first_at = time.perf_counter()
                    pieces.append(text)
                    yield TextDelta(text)
                if self._cancel.is_set():
                    self._conv.cancel_process()
                    reason = "cancelled"
                    break
        except Exception as exc:  # noqa: BLE001
            self._drop()
            if "too long" in str(exc) or "Exceeding the maximum" in str(exc):
                raise ContextExhausted(needed=len(prompt), window=self.capacity) from exc
            yield Error(EngineError(f"LiteRT-LM failed while generating: {exc}"))
            return
        end = time.perf_counter()
        bench = self._conv.get_benchmark_info() if self._engine.benchmark else None
        answer = "".join(pieces)
        decoded = int(getattr(bench, "last_decode_token_count", 0) or len(self._engine.tokenizer.encode(answer)))
        prefilled = int(getattr(bench, "last_prefill_token_count", 0) or len(prompt))
        if reason == "cancelled":
            # A cancelled conversation stays silent: rebuild it on the next turn.
            self._drop()
        else:
            if decoded >= options.max_tokens:
                reason = "length"
            elif len(prompt) + decoded >= self.capacity:
                reason = "context"
            self._fed = [*messages, {"role": "assistant", "content": answer}]
            # The ids the native cache holds are not exposed: this is the prompt plus
            # the answer re-tokenized (exact for whole-character answers).
            self._held = list(prompt) + self._engine.tokenizer.encode(answer)
        self._cancel.clear()
        first = first_at or end
        # Measured here, as for every engine (the benchmark's TTFT is that of the first turn only).
        ttft = (first - start) * 1000
        decode_rate = float(getattr(bench, "last_decode_tokens_per_second", 0) or 0)
        decode_ms = (decoded - 1) / decode_rate * 1000 if decode_rate and decoded > 1 else (end - first) * 1000
        prefill_rate = float(getattr(bench, "last_prefill_tokens_per_second", 0) or 0)
        yield Usage(
            prompt_tokens=len(prompt),
            prefilled_tokens=prefilled,
            completion_tokens=decoded,
            ttft_ms=ttft,
            prefill_ms=prefilled / prefill_rate * 1000 if prefill_rate else ttft,
            decode_ms=decode_ms,
        )
        yield Done(reason=reason, text=answer)


def _role(role: str) -> str:
    return "model" if role == "assistant" else role


def _sampler_key(options: GenerationOptions) -> tuple[Any, ...]:
    return (options.temperature, options.top_p, options.top_k, options.seed)


# --------------------------------------------------------------------------- engine
class LitertEngine(Engine):
    """A ``.litertlm`` bundle loaded with LiteRT-LM on the CPU."""

    name = "litert"
    capabilities = Capabilities(
        rewind=False, cancel=True, kv_save=False, gpu=False, token_count=True, token_level=False
    )

    def __init__(
        self,
        path: Path,
        name: str,
        cache_dir: Path,
        threads: int | None = None,
        max_tokens: int = 2048,
        template: str | None = None,
        verified: bool = True,
        device: str = "cpu",
    ) -> None:
        self.lm = _import_litert()
        if not path.is_file():
            raise ModelCorrupt(
                f"{path} does not exist.", f"Rebuild it with `enclave models build {name} --engine litert`."
            )
        if not verified:
            probe_bundle(path)
        # The cache directory must exist, or LiteRT-LM writes a model-sized cache next to the model.
        cache_dir.mkdir(parents=True, exist_ok=True)
        self.benchmark = True
        # Strong references: a native conversation must be closed before its engine,
        # never by the garbage collector after it. Closed sessions remove themselves.
        self._sessions: list[LitertSession] = []
        if device == "gpu":
            # WebGPU over Vulkan: needs libvulkan1 and a GPU's Vulkan ICD. Without a GPU the
            # engine creation fails with a catchable RuntimeError (measured), never an abort.
            try:
                self.native = self.lm.Engine(
                    str(path),
                    backend=self.lm.Backend.GPU(),
                    max_num_tokens=max_tokens,
                    cache_dir=str(cache_dir),
                    enable_benchmark=True,
                )
            except Exception as exc:  # noqa: BLE001 - native loader errors
                raise EngineUnavailable(
                    f"LiteRT-LM cannot use a GPU here ({str(exc).strip()[:200]}).",
                    "It needs libvulkan1 and the GPU's Vulkan driver (VK_DRIVER_FILES); or use --device cpu.",
                ) from exc
            self._init_rest(path, name, max_tokens, template, gpu=True)
            return
        try:
            self.native = self.lm.Engine(
                str(path),
                backend=self.lm.Backend.CPU(thread_count=threads or os.cpu_count() or 2),
                max_num_tokens=max_tokens,
                cache_dir=str(cache_dir),
                enable_benchmark=True,
            )
        except Exception as exc:  # noqa: BLE001 - native loader errors
            raise ModelCorrupt(
                f"The LiteRT-LM bundle {path} could not be loaded: {exc}",
                f"Check it with `enclave models verify {name}`.",
            ) from exc
        self._init_rest(path, name, max_tokens, template, gpu=False)

    def _init_rest(self, path: Path, name: str, max_tokens: int, template: str | None, gpu: bool) -> None:
        template = template or read_bundle_template(path)
        tokenizer = LitertTokenizer(self.native, template)
        eos = tuple(int(ids[0]) for ids in (self.native.eos_token_ids or []) if ids)
        info = ModelInfo(
            name=name,
            path=str(path),
            context_length=max_tokens,
            eos_token_ids=eos,
            extra={"has_chat_template": tokenizer.has_template},
        )
        # Without a template counts are approximate: say so through the capability flag.
        self.capabilities = Capabilities(
            rewind=False, cancel=True, token_count=tokenizer.has_template, token_level=False, gpu=gpu
        )
        super().__init__(info, tokenizer)

    def open_session(self, capacity: int) -> LitertSession:
        session = LitertSession(self, min(capacity, self.info.context_length))
        self._sessions.append(session)
        return session

    def close(self) -> None:
        # Conversations must be closed before their engine.
        for session in list(self._sessions):
            session.close()
        native, self.native = getattr(self, "native", None), None
        if native is not None:
            native.close()


def bundle_summary(path: Path) -> dict[str, Any]:
    """What `models add` records about a user's bundle."""
    template = read_bundle_template(path)
    return {"chat": template is not None, "template_found": template is not None, "bytes": path.stat().st_size}
