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
  is not verified against a manifest is probe-loaded in a sealed worker first
  (:func:`probe_bundle`), and every model runs in a sealed worker anyway
  (:mod:`assistant.engines.sealed`): an abort ends the worker, not Enclave.

Constrained decoding (llguidance, ``ConstrainedDecodingConfig`` on the
conversation, ``ResponseFormat.regex``/``.json`` per message) takes regular
expressions and JSON Schemas, not Lark grammars. Two measured traps: enabling it
on a conversation builds llguidance's token tables, 11-12 s for Gemma 3's 262k
vocabulary on 2 busy cores (2 ms for the tiny test bundle), so only a constrained
turn gets such a conversation; and litert-lm 0.18.1 hands llguidance the
tokenizer's pieces as written ("▁b" for SentencePiece, "Ġb" for byte-level BPE),
so a grammar with a space fails ("token "▁b" doesn't satisfy the grammar"). For
SentencePiece bundles (Gemma) a regex's spaces are written as "▁" here, which
makes them work; byte-level bundles (Enclave's SmolLM2 build) cannot produce a
space under a grammar at all, so once that is seen the engine stops announcing
constrained decoding and says why.
"""

from __future__ import annotations

import logging
import re
import textwrap
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from assistant.core.cpus import inference_threads
from assistant.core.errors import ContextExhausted, EnclaveError, EngineError, EngineUnavailable, ModelCorrupt
from assistant.core.events import Constraint, Done, Error, Event, FinishReason, GenerationOptions, TextDelta, Usage
from assistant.core.install import requirement_command
from assistant.engines.base import Capabilities, Engine, ModelInfo, Session, Tokenizer, start_text
from assistant.engines.repetition import RepetitionGuard
from assistant.engines.templates import detect_tool_format

log = logging.getLogger(__name__)


#: A base bundle's conversation, as one plain text (what ``CompletionTokenizer`` renders
#: for the token-level engine): the start token, a system text the user gave and a blank
#: line, then each message as written, a user message after a reply on a new line.
#: Passed as ``create_conversation(chat_template=…)`` in place of the bundle's own
#: template, which wraps a base model's text in turn markers it was never tuned on
#: (Gemma 3 270M continued "The capital of Germany is" with "… United Kingdom is London"
#: inside Gemma's turns, " Berlin." as plain text). LiteRT-LM passes content as a list of
#: parts, hence the macro.
COMPLETION_TEMPLATE = (
    "{%- macro text(c) -%}{%- if c is string -%}{{ c }}{%- else -%}{%- for p in c -%}"
    "{%- if p['type'] == 'text' -%}{{ p['text'] }}{%- endif -%}{%- endfor -%}{%- endif -%}{%- endmacro -%}"
    "{{ bos_token }}{%- set ns = namespace(prev='') -%}"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'system' -%}{%- if m['content'] -%}{{ text(m['content']) }}\n\n{%- endif -%}"
    "{%- else -%}{%- if m['role'] == 'user' and ns.prev == 'model' -%}\n{%- endif -%}"
    "{{ text(m['content']) }}{%- set ns.prev = m['role'] -%}{%- endif -%}"
    "{%- endfor -%}"
)


def _import_litert() -> Any:
    try:
        import litert_lm
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise EngineUnavailable(
            f"litert-lm-api is not installed ({exc}).",
            f"Install Enclave's runtime: {requirement_command('litert-lm-api')}",
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


def probe_bundle(path: Path, timeout: float = 60.0, memory_bytes: int = 8 << 30) -> None:
    """Load ``path`` once in a sealed worker process with time and memory limits.

    A crafted or truncated ``.litertlm`` can abort the process inside the native
    loader (SIGABRT); in a worker that is a message, not a dead Enclave.
    """
    import tempfile

    from assistant.engines.protocol import CODEC, Loaded, LoadLitert
    from assistant.privacy.worker import SealedProcess, Stopped

    with tempfile.TemporaryDirectory(prefix="enclave-probe-") as scratch:
        process = SealedProcess("engine", CODEC, home=Path(scratch), memory_mb=memory_bytes >> 20)
        try:
            spec = LoadLitert(str(path), "probe", cache_dir=scratch, threads=1, max_tokens=64)
            reply, _ = process.call(spec, timeout=timeout)
        except TimeoutError as exc:
            process.kill()
            raise ModelCorrupt(
                f"{path} is not a valid LiteRT-LM bundle: loading it took longer than {timeout:.0f} s.",
                "Check that the file is a complete .litertlm download.",
            ) from exc
        except EnclaveError as exc:
            raise ModelCorrupt(
                f"{path} is not a valid LiteRT-LM bundle: {exc.message}",
                "Check that the file is a complete .litertlm download; Google publishes Gemma bundles in this format.",
            ) from exc
        finally:
            process.close()
    if isinstance(reply, Stopped):
        said = f": {reply.last_words}" if reply.last_words else ""
        raise ModelCorrupt(
            f"{path} is not a valid LiteRT-LM bundle: the native loader crashed ({reply.describe()}){said}.",
            "Check that the file is a complete .litertlm download; Google publishes Gemma bundles in this format.",
        )
    if not isinstance(reply, Loaded):
        raise ModelCorrupt(f"{path} could not be probed (the worker answered {type(reply).__name__}).")


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

    def _drop(self) -> None:
        if self._conv is not None:
            try:
                self._conv.close()
            except Exception:
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
        constrained = None
        if options.constraint is not None:
            constrained = lm.ConstrainedDecodingConfig(
                enable=True, provider=lm.LiteRtLmConstraintProviderType.LL_GUIDANCE
            )
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
            constrained_decoding_config=constrained,
            chat_template=COMPLETION_TEMPLATE if self._engine.completion else None,
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
        self.engine.capabilities.check(options, self.engine.name)
        messages = list(messages)
        if len(prompt) >= self.capacity:
            raise ContextExhausted(needed=len(prompt), window=self.capacity)
        if self._cancel.is_set():
            # Cancelled before the turn started (Esc while the prompt was prepared): the
            # native decoder runs ahead in its own thread, so starting it would decode a
            # few tokens before the flag is next looked at.
            self._cancel.clear()
            yield from _cancelled_before_start(len(prompt))
            return
        start = time.perf_counter()
        stream = self._send(messages, options)
        if isinstance(stream, Error):
            yield stream
            return
        pieces: list[str] = []
        first_at: float | None = None
        reason: FinishReason = "stop"
        guard = RepetitionGuard()
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
                if options.constraint is None and options.stop_on_repetition and guard.push(text):
                    # A looping answer is stopped like a cancelled one (and its conversation rebuilt).
                    self._conv.cancel_process()
                    reason = "repetition"
                    break
        except Exception as exc:  # noqa: BLE001 - native errors (a full window is re-raised as ContextExhausted)
            yield self._failed(exc, prompt, options)
            return
        end = time.perf_counter()
        yield from self._finish(prompt, options, messages, "".join(pieces), reason, start, first_at or end, end)

    def _send(self, messages: list[dict[str, str]], options: GenerationOptions) -> Any:
        """Send the turn's new user message, to the native conversation when it holds exactly
        the earlier messages with the same sampler, else to a rebuilt one: the native stream
        of replies, or :class:`Error` when the turn could not start."""
        history, new = messages[:-1], messages[-1]
        reused = self._conv is not None and self._fed == history and self._sampler == _sampler_key(options)
        extra: dict[str, Any] = {}
        if options.repetition_penalty != 1.0:
            extra["repetition_penalty_config"] = self._engine.lm.RepetitionPenaltyConfig(
                repetition_penalty=options.repetition_penalty
            )
        if options.constraint is not None:
            extra["response_format"] = self._engine.response_format(options.constraint)
        try:
            if not reused:
                self._open(history, options)
            return self._conv.send_message_async(new["content"], max_output_tokens=options.max_tokens, **extra)
        except Exception as exc:  # noqa: BLE001 - native errors
            self._drop()
            return Error(EngineError(f"LiteRT-LM failed to start the turn: {exc}"))

    def _failed(self, exc: Exception, prompt: Sequence[int], options: GenerationOptions) -> Error:
        """The native stream failed: drop the conversation and say why. A prompt over the
        window raises :class:`ContextExhausted`."""
        self._drop()
        if "too long" in str(exc) or "Exceeding the maximum" in str(exc):
            raise ContextExhausted(needed=len(prompt), window=self.capacity) from exc
        if options.constraint is not None and "satisfy the grammar" in str(exc):
            return Error(self._engine.grammar_failed(exc, options.constraint))
        return Error(EngineError(f"LiteRT-LM failed while generating: {exc}"))

    def _finish(
        self,
        prompt: Sequence[int],
        options: GenerationOptions,
        messages: list[dict[str, str]],
        answer: str,
        reason: FinishReason,
        start: float,
        first: float,
        end: float,
    ) -> Iterator[Event]:
        """After the stream: keep the conversation for the next turn (or drop it), then the
        turn's :class:`Usage`, from the native benchmark where it is on, and :class:`Done`."""
        bench = self._conv.get_benchmark_info() if self._engine.benchmark else None
        decoded = int(getattr(bench, "last_decode_token_count", 0) or len(self._engine.tokenizer.encode(answer)))
        prefilled = int(getattr(bench, "last_prefill_token_count", 0) or len(prompt))
        if reason == "stop":
            if decoded >= options.max_tokens:
                reason = "length"
            elif len(prompt) + decoded >= self.capacity:
                reason = "context"
        if reason in ("cancelled", "repetition") or options.constraint is not None:
            # A cancelled conversation stays silent, and a constrained one costs llguidance
            # tables on every turn: rebuild a plain one on the next turn.
            self._drop()
        else:
            self._fed = [*messages, {"role": "assistant", "content": answer}]
            # The ids the native cache holds are not exposed: this is the prompt plus
            # the answer re-tokenized (exact for whole-character answers).
            self._held = list(prompt) + self._engine.tokenizer.encode(answer)
        self._cancel.clear()
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


def _cancelled_before_start(prompt_tokens: int) -> Iterator[Event]:
    """The events of a turn cancelled before anything was sent."""
    yield Usage(
        prompt_tokens=prompt_tokens,
        prefilled_tokens=0,
        completion_tokens=0,
        ttft_ms=0.0,
        prefill_ms=0.0,
        decode_ms=0.0,
    )
    yield Done(reason="cancelled", text="")


def _role(role: str) -> str:
    return "model" if role == "assistant" else role


def _sampler_key(options: GenerationOptions) -> tuple[Any, ...]:
    return (options.temperature, options.top_p, options.top_k, options.seed, options.constraint is not None)


def sentencepiece_regex(pattern: str) -> str:
    r"""``pattern`` with its spaces written as SentencePiece writes them ("▁"), for
    litert-lm 0.18.1's llguidance, which matches a grammar against the pieces as written.
    ``\s`` also takes "▁"; everything else is left as it is."""
    out: list[str] = []
    i = 0
    in_class = False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            if nxt == " ":
                out.append("▁")
            elif nxt == "s":
                out.append("\\s▁" if in_class else "[\\s▁]")
            else:
                out.append(pattern[i : i + 2])
            i += 2
            continue
        if c == "[" and not in_class:
            in_class = True
        elif c == "]" and in_class:
            in_class = False
        out.append("▁" if c == " " else c)
        i += 1
    return "".join(out)


# --------------------------------------------------------------------------- engine
class LitertEngine(Engine):
    """A ``.litertlm`` bundle loaded with LiteRT-LM on the CPU."""

    name = "litert"
    capabilities = Capabilities(
        rewind=False,
        cancel=True,
        kv_save=False,
        gpu=False,
        token_count=True,
        token_level=False,
        constrained=True,
        constraint_kinds=frozenset({"regex", "json_schema"}),
    )

    def response_format(self, constraint: Constraint) -> Any:
        """The native response format for ``constraint`` (see the module docstring)."""
        if constraint.kind == "json_schema":
            return self.lm.ResponseFormat.json(constraint.grammar)
        return self.lm.ResponseFormat.regex(sentencepiece_regex(constraint.grammar))

    def grammar_failed(self, exc: Exception, constraint: Constraint) -> EngineError:
        """The error for a grammar litert-lm could not follow. A grammar whose spaces were
        written as SentencePiece pieces fails only on a byte-level tokenizer ("Ġ"
        pieces), which cannot follow any grammar with a space: constrained decoding
        stops being offered for this model."""
        if "Ġ" in str(exc) or (constraint.kind == "regex" and "▁" in sentencepiece_regex(constraint.grammar)):
            self.capabilities = replace(self.capabilities, constrained=False, constraint_kinds=frozenset())
            return EngineError(
                f"LiteRT-LM cannot constrain {self.info.name}'s answers: its byte-level tokenizer's pieces "
                "are read literally by litert-lm 0.18's llguidance, so no space can be written under a grammar.",
                "Use the model's onnx build (--engine onnx) for constrained answers.",
            )
        return EngineError(f"LiteRT-LM could not follow the grammar: {str(exc).splitlines()[0][:300]}")

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
        completion: bool = False,
    ) -> None:
        self.lm = _import_litert()
        #: A base model: conversations are rendered as plain text (COMPLETION_TEMPLATE).
        self.completion = completion
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
            except Exception as exc:
                raise EngineUnavailable(
                    f"LiteRT-LM cannot use a GPU here ({textwrap.shorten(str(exc).strip(), 240, placeholder=' …')}).",
                    "It needs libvulkan1 and the GPU's Vulkan driver (VK_DRIVER_FILES); or use --device cpu.",
                ) from exc
            self._init_rest(path, name, max_tokens, template, gpu=True)
            return
        try:
            self.native = self.lm.Engine(
                str(path),
                backend=self.lm.Backend.CPU(thread_count=threads or inference_threads()),
                max_num_tokens=max_tokens,
                cache_dir=str(cache_dir),
                enable_benchmark=True,
            )
        except Exception as exc:
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
            # Recorded for GET /v1/models; tool calls need a Lark grammar, which LiteRT-LM lacks.
            extra={
                "has_chat_template": tokenizer.has_template,
                "tool_format": detect_tool_format(template),
                "start_text": start_text(tokenizer, tokenizer.bos) if template else "",
            },
        )
        # Without a template counts are approximate: say so through the capability flag.
        self.capabilities = replace(type(self).capabilities, token_count=tokenizer.has_template, gpu=gpu)
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
