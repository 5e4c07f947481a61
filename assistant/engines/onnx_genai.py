"""onnxruntime-genai backend (0.18): continuous decoding with an explicit KV cache.

One ``og.Generator`` per session holds the KV cache; a turn appends only the tokens
the cache does not hold yet (``append_tokens``) and edits rewind it (``rewind_to``).
Measured on SmolLM2-135M int4 (2 cores): a 15-token turn delta prefills in ~0.1 s
where re-prefilling a 180-token history takes ~0.35 s.

Constrained decoding is llguidance inside the runtime
(``GeneratorParams.set_guidance("json_schema" | "regex" | "lark_grammar", …)``): the
grammar is fixed per generator and holds its parser state, so a constrained turn
gets a generator of its own, dropped when the turn ends (the next turn re-prefills
from scratch: a constrained turn costs its cache). The repetition penalty is the
search option ``repetition_penalty``, also fixed per generator.
"""

from __future__ import annotations

import json
import logging
import textwrap
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from assistant.core.cpus import inference_threads
from assistant.core.errors import ContextExhausted, EngineError, EngineUnavailable, ModelCorrupt
from assistant.core.events import CONSTRAINT_KINDS, Event, GenerationOptions
from assistant.core.install import requirement_command
from assistant.core.records import PLAIN_TEMPLATE
from assistant.engines.base import Capabilities, Engine, ModelInfo, Tokenizer, TokenSession, start_text
from assistant.engines.templates import ChatTemplate, detect_tool_format

log = logging.getLogger(__name__)

#: Prompts are prefilled in chunks of at most this many tokens. GroupQueryAttention's
#: score buffer is (heads x chunk x max_length) floats, and the activation arena keeps
#: its largest size, so the chunk bounds the peak. Measured on SmolLM2 int4, 2,048
#: window, 2 threads (scripts/probe_engine_memory.py, 934-token prompt, 3 rounds):
#: peak RSS 392 MiB in one call, 368 at 512, 353 at 256, 346 at 128, 342 at 64, with
#: prefill no slower down to 128 (548 -> 580 tok/s; a 1,891-token prompt with
#: --prompt-repeats 56: 517 -> 533) and slower below it (32: 458); docs/engine.md,
#: "Prefill chunks, re-measured".
PREFILL_CHUNK = 128

#: N-gram (prompt-lookup) speculation: look up the last NGRAM_SIZE tokens in the
#: prompt and answer so far, draft up to MAX_DRAFT_TOKENS tokens that followed them,
#: verify them in one pass. Only for builds that keep logits for every position (not
#: ``prune_lm_head``); see scripts/bench_speculation.py for where it wins and loses.
NGRAM_SIZE = 3
MAX_DRAFT_TOKENS = 4

#: The KV cache (``kv_cache = "grow"``) is allocated in steps of this many tokens. genai
#: preallocates a generator's cache to its ``max_length`` and zero-fills it, so all of it
#: is resident from the start (SmolLM2: 46 KB a token, 94 MB at 2,048); sizing it to what a
#: turn can reach is what keeps a short conversation's memory short. A turn that needs more
#: gets a new generator twice the size (genai 0.18 cannot copy a cache into another
#: generator: scripts/probe_kv_restore.py), which re-reads the conversation once.
KV_STEP = 128
#: Between turns (``GenaiSession.prepare_next``, the worker's idle time) a conversation's
#: cache grows when the next turn could not fit: what it holds, the last turn's
#: ``max_tokens`` and drafts, and a next message of up to this many tokens. The re-read
#: is then done while the user reads and types, in chunks of IDLE_CHUNK tokens so that
#: a message arriving meanwhile waits at most one chunk (SmolLM2, 2 cores: ~0.1 s).
NEXT_MESSAGE_ROOM = 128
IDLE_CHUNK = 64


def kv_allocation(need: int, current: int, capacity: int, floor: int = 0, step: int = KV_STEP) -> int:
    """Tokens of KV cache for a turn that may reach ``need`` tokens, the session holding
    ``current`` (0: none yet): unchanged while it suffices, else ``need`` or twice
    ``current``, whichever is larger, rounded up to ``step``; never above ``capacity`` (the
    window), never below ``floor`` (a sliding-window model's minimum)."""
    if 0 < need <= current:
        return current
    target = max(need, 2 * current)
    target = -(-target // step) * step
    return max(floor, min(capacity, target))


def _import_og() -> Any:
    try:
        import onnxruntime_genai as og
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise EngineUnavailable(
            f"onnxruntime-genai is not installed ({exc}).",
            f"Install Enclave's runtime: {requirement_command('onnxruntime-genai')}",
        ) from exc
    return og


def read_chat_template(model_dir: Path) -> str | None:
    """The chat template shipped with a model folder, if any.

    transformers 5 writes ``chat_template.jinja``; older folders (and Microsoft's
    published Phi folders) keep it in ``tokenizer_config.json``.
    """
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    config = model_dir / "tokenizer_config.json"
    if config.is_file():
        try:
            value = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        if isinstance(value, str):
            return value
        if isinstance(value, list):  # [{"name": "default", "template": ...}, ...]
            for entry in value:
                if isinstance(entry, dict) and entry.get("name") == "default":
                    return str(entry.get("template"))
    return None




def _sliding_window(genai_config: dict[str, Any]) -> int:
    """The smallest KV cache a generator of this model accepts: a sliding-window model
    (Gemma 3: 512) refuses a shorter ``max_length`` ("KV cache capacity (257) must be at
    least local_window_size (512)"), which scoring a short text would otherwise ask for."""
    window = genai_config.get("model", {}).get("decoder", {}).get("sliding_window") or {}
    size = window.get("window_size", 0) if isinstance(window, dict) else 0
    return int(size) + 1 if isinstance(size, int) and size > 0 else 0


def read_tokenizer_config(model_dir: Path) -> dict[str, Any]:
    """``tokenizer_config.json`` of a model folder ({} when missing or unreadable)."""
    try:
        config = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def special_tokens(config: dict[str, Any]) -> tuple[str, str]:
    """(BOS, EOS) as text, from a tokenizer config (templates print them)."""

    def text(value: Any) -> str:
        if isinstance(value, dict):
            value = value.get("content")
        return value if isinstance(value, str) else ""

    return text(config.get("bos_token")), text(config.get("eos_token"))


def add_bos(config: dict[str, Any]) -> bool | None:
    """``add_bos_token`` of a tokenizer config (None when it does not say)."""
    value = config.get("add_bos_token")
    return value if isinstance(value, bool) else None


class GenaiTokenizer(Tokenizer):
    def __init__(self, og: Any, model: Any, template: str | None, specials: tuple[str, str] = ("", "")) -> None:
        self._tok = og.Tokenizer(model)
        self.template = template or PLAIN_TEMPLATE
        self.has_template = template is not None
        self.tool_format = detect_tool_format(template)
        self.specials = specials  # (BOS, EOS) as text
        self._tool_template: ChatTemplate | None = None

    def encode(self, text: str) -> list[int]:
        if not text:
            return []
        return [int(t) for t in self._tok.encode(text)]

    def decode(self, tokens: Sequence[int]) -> str:
        if not tokens:
            return ""
        return str(self._tok.decode(np.asarray(tokens, dtype=np.int32)))

    def render(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return str(
            self._tok.apply_chat_template(
                json.dumps(list(messages)),
                template_str=self.template,
                add_generation_prompt=add_generation_prompt,
            )
        )

    def render_tools(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
    ) -> str:
        # Jinja (transformers' rendering), not onnxruntime-genai's own template engine: tool
        # templates (Qwen2.5's) use namespaces, loop look-behind and tojson on nested values.
        if self.tool_format is None:
            return super().render_tools(messages, tools, add_generation_prompt)
        if self._tool_template is None:
            self._tool_template = ChatTemplate(self.template, *self.specials)
        try:
            return self._tool_template.render(messages, tools, add_generation_prompt)
        except Exception as exc:  # the template's own refusal (raise_exception, Jinja errors), in its words
            raise EngineError(
                f"The model's chat template refused this conversation: {exc}",
                "Check the order of the messages (tool results follow the assistant's tool_calls).",
            ) from exc

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        return tuple(int(t) for t in self._tok.eos_token_ids)


class GenaiSession(TokenSession):
    def __init__(self, engine: OnnxGenaiEngine, capacity: int) -> None:
        super().__init__(engine, capacity)
        self._engine = engine
        self._options: GenerationOptions | None = None
        self._generator: Any = None
        #: Tokens the current generator's KV cache has room for (its ``max_length``), and
        #: what the turn being run may reach.
        self._allocated = 0
        self._need = 0

    def _new_generator(self, options: GenerationOptions) -> Any:
        og = self._engine.og
        params = og.GeneratorParams(self._engine.model)
        # Always bound max_length: the shared KV buffer is preallocated to it (the
        # builder's default 8192 costs +355 MiB on SmolLM2). A sliding-window model
        # refuses a buffer shorter than its window (Gemma 3: 512), whatever the
        # session's own capacity (a 256-token probe).
        floor = self._engine.min_cache_length
        if self._engine.kv_cache == "grow":
            self._allocated = kv_allocation(self._need or self.capacity, self._allocated, self.capacity, floor)
        else:
            self._allocated = max(self.capacity, floor)
        search: dict[str, Any] = {"max_length": self._allocated, "do_sample": options.temperature > 0}
        if options.temperature > 0:
            search.update(temperature=options.temperature, top_p=options.top_p, top_k=options.top_k)
        if options.seed is not None:
            search["random_seed"] = options.seed
        if options.repetition_penalty != 1.0:
            search["repetition_penalty"] = options.repetition_penalty
        params.set_search_options(**search)
        if self._speculates(options):
            params.set_speculative_options(ngram_size=NGRAM_SIZE, max_draft_tokens=MAX_DRAFT_TOKENS)
        if options.constraint is not None:
            params.set_guidance(_GUIDANCE[options.constraint.kind], options.constraint.grammar)
        return og.Generator(self._engine.model, params)

    def _key(self, options: GenerationOptions) -> tuple[Any, ...]:
        return (*_generator_key(options), self._speculates(options))

    def _speculates(self, options: GenerationOptions) -> bool:
        return self._engine.capabilities.speculative and options.speculation_applies

    def _cache_tokens(self) -> int:
        return self._allocated if self._generator is not None else 0

    def _speculation_counts(self) -> tuple[int, int]:
        if self._generator is None or self._options is None or not self._speculates(self._options):
            return (0, 0)
        stats = self._generator.get_speculative_stats()
        return (int(stats.get("draft_tokens_evaluated", 0)), int(stats.get("draft_tokens_accepted", 0)))

    def _ensure(self, options: GenerationOptions | None = None) -> Any:
        options = options or self._options or GenerationOptions()
        current = self._options
        if self._generator is not None and current is not None:
            if self._key(options) == self._key(current) and options.constraint is None:
                return self._generator
            if options is current:  # the same turn (a constrained one) goes on
                return self._generator
            # Sampling settings and grammars are fixed per generator: changing them costs the cache.
            self._generator = None
            self._held = []
        self._generator = self._new_generator(options)
        self._options = options
        return self._generator

    def generate(  # type: ignore[no-untyped-def]
        self,
        prompt: Sequence[int],
        options: GenerationOptions | None = None,
        messages: Sequence[dict[str, str]] | None = None,
    ):
        options = options or GenerationOptions()
        self.engine.capabilities.check(options, self.engine.name)
        # What this turn may reach: the prompt, the answer, and the drafts speculation
        # verifies past the last accepted token.
        self._need = min(self.capacity, len(prompt) + options.max_tokens + MAX_DRAFT_TOKENS + 1)
        if self._generator is not None and self._need > self._allocated:
            # Outgrown: a larger generator, which re-reads what the old one held.
            self._generator = None
            self._held = []
        self._ensure(options)
        if options.constraint is None:
            return super().generate(prompt, options, messages)
        return self._constrained(prompt, options, messages)

    def _constrained(
        self, prompt: Sequence[int], options: GenerationOptions, messages: Sequence[dict[str, str]] | None
    ) -> Iterator[Event]:
        """A constrained turn: its generator (grammar state included) is spent after it."""
        try:
            yield from super().generate(prompt, options, messages)
        finally:
            self._generator = None
            self._options = None
            self._held = []

    def prepare_next(self, interrupted: Callable[[], bool] = lambda: False) -> int:
        """Grow the cache now if the next turn could outgrow it (``kv_cache = "grow"``):
        a generator of the next size re-reads what this one holds, the old one freed
        first (two caches never coexist). Interrupted, the session is left empty: the
        next turn reads its whole prompt, as it would have without this."""
        options = self._options
        if self._engine.kv_cache != "grow" or self._generator is None or options is None:
            return 0
        if options.constraint is not None or self._allocated >= self.capacity or not self._held:
            return 0
        held = list(self._held)
        need = min(self.capacity, len(held) + NEXT_MESSAGE_ROOM + options.max_tokens + MAX_DRAFT_TOKENS + 1)
        if need <= self._allocated:
            return 0
        self._generator = None
        self._held = []
        self._need = need
        gen = self._ensure(options)
        try:
            for start in range(0, len(held), IDLE_CHUNK):
                if interrupted():
                    self._generator = None
                    return start
                gen.append_tokens(np.asarray(held[start : start + IDLE_CHUNK], dtype=np.int32))
        except Exception:
            self._generator = None
            raise
        self._held = held
        log.info("KV cache grown to %d tokens between turns (%d re-read)", self._allocated, len(held))
        return len(held)

    def _append(self, tokens: list[int]) -> None:
        gen = self._ensure()
        try:
            for start in range(0, len(tokens), PREFILL_CHUNK):
                gen.append_tokens(np.asarray(tokens[start : start + PREFILL_CHUNK], dtype=np.int32))
        except RuntimeError as exc:
            if "exceeds max length" in str(exc):
                raise ContextExhausted(
                    needed=len(self._held) + len(tokens), window=self.capacity, held=len(self._held)
                ) from exc
            raise

    def _rewind(self, n: int) -> None:
        self._ensure().rewind_to(n)

    def _reset(self) -> None:
        # A fresh generator is the only reset that is always valid.
        self._generator = None
        if self._options is not None:
            self._generator = self._new_generator(self._options)

    def _decode_step(self, options: GenerationOptions) -> int:
        gen = self._ensure()
        gen.generate_next_token()
        return int(gen.get_next_tokens()[0])

    def _after_stop_token(self) -> None:
        # generate_next_token() fed the end-of-turn token to the cache; Enclave's
        # token list (and the next turn's template glue) does not include it.
        if self._options is not None and self._options.constraint is not None:
            return  # a constrained generator is dropped after its turn anyway
        self._ensure().rewind_to(len(self._held))

    def score(self, tokens: Sequence[int]) -> list[float]:
        # One token at a time: a pruned lm_head (prune_lm_head=true) gives logits for the
        # last position only. SmolLM2 int4: ~10 ms a token on 2 cores.
        if len(tokens) < 2:
            return []
        og = self._engine.og
        params = og.GeneratorParams(self._engine.model)
        params.set_search_options(max_length=max(len(tokens) + 1, self._engine.min_cache_length), do_sample=False)
        gen = og.Generator(self._engine.model, params)
        out: list[float] = []
        gen.append_tokens(np.asarray(tokens[:1], dtype=np.int32))
        for token in tokens[1:]:
            logits = np.asarray(gen.get_logits(), dtype=np.float64).reshape(-1)
            top = float(logits.max())
            out.append(float(logits[token] - top - np.log(np.exp(logits - top).sum())))
            gen.append_tokens(np.asarray([token], dtype=np.int32))
        return out

    def native_token_count(self) -> int:
        """Tokens the native generator holds (for tests that check our bookkeeping)."""
        return int(self._ensure().token_count())

    def _close(self) -> None:
        self._generator = None


_GUIDANCE = {"json_schema": "json_schema", "regex": "regex", "lark": "lark_grammar"}


def _generator_key(options: GenerationOptions) -> tuple[Any, ...]:
    return (options.temperature, options.top_p, options.top_k, options.seed, options.repetition_penalty)


class OnnxGenaiEngine(Engine):
    """A model folder for onnxruntime-genai (``genai_config.json`` + ONNX)."""

    name = "onnx"
    capabilities = Capabilities(
        rewind=True,
        cancel=True,
        kv_save=False,
        gpu=False,
        token_count=True,
        constrained=True,
        constraint_kinds=frozenset(CONSTRAINT_KINDS),
        logprobs=True,
    )

    def __init__(
        self, model_dir: Path, name: str, threads: int | None = None, device: str = "cpu", kv_cache: str = "window"
    ) -> None:
        self.og = _import_og()
        #: ``grow`` (sized to what a turn can reach, doubling) or ``window`` (preallocated).
        self.kv_cache = kv_cache
        #: The inference threads this model runs (0 on a GPU).
        self.threads = 0
        if not (model_dir / "genai_config.json").is_file():
            raise ModelCorrupt(
                f"{model_dir} is not an onnxruntime-genai model folder (no genai_config.json).",
                f"Point to the folder that holds genai_config.json, or rebuild with `enclave models build {name}`.",
            )
        if device == "gpu":
            self._load_on_gpu(model_dir, name)
        else:
            self._load(model_dir, name, threads)
            if self._can_speculate():
                self.capabilities = replace(self.capabilities, speculative=True)
        genai_config = json.loads((model_dir / "genai_config.json").read_text())
        self.min_cache_length = _sliding_window(genai_config)
        tokenizer_config = read_tokenizer_config(model_dir)
        tokenizer = GenaiTokenizer(self.og, self.model, read_chat_template(model_dir), special_tokens(tokenizer_config))
        eos = genai_config.get("model", {}).get("eos_token_id", [])
        eos_ids = tuple(eos) if isinstance(eos, list) else (eos,)
        info = ModelInfo(
            name=name,
            path=str(model_dir),
            context_length=int(genai_config.get("model", {}).get("context_length", 2048)),
            eos_token_ids=tuple(int(e) for e in eos_ids) or tokenizer.eos_token_ids,
            extra={
                "has_chat_template": tokenizer.has_template,
                "tool_format": tokenizer.tool_format,
                "start_text": start_text(tokenizer, tokenizer.specials[0], add_bos(tokenizer_config)),
            },
            kv_bytes_per_token=_kv_bytes_per_token(genai_config),
        )
        super().__init__(info, tokenizer)

    def _load_on_gpu(self, model_dir: Path, name: str) -> None:
        """The CUDA execution provider (``onnxruntime-genai-cuda`` + ``onnxruntime-gpu``);
        EngineUnavailable when this installation or machine cannot run it."""
        try:
            config = self.og.Config(str(model_dir))
            config.clear_providers()
            config.append_provider("cuda")
            self.model = self.og.Model(config)
        except Exception as exc:
            raise EngineUnavailable(
                f"onnxruntime-genai cannot use a GPU here ({textwrap.shorten(str(exc).strip(), 240, placeholder=' …')}).",
                "Install onnxruntime-genai-cuda and onnxruntime-gpu on a machine with an NVIDIA GPU, or use --device cpu.",
            ) from exc
        self.capabilities = replace(type(self).capabilities, gpu=True)

    def _load(self, model_dir: Path, name: str, threads: int | None) -> None:
        try:
            config = self.og.Config(str(model_dir))
            # Always explicit: genai's own default is one thread (see assistant.core.cpus).
            self.threads = threads or inference_threads()
            config.overlay(
                json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": self.threads}}}})
            )
            self.model = self.og.Model(config)
        except Exception as exc:
            raise ModelCorrupt(
                f"The model in {model_dir} could not be loaded: {exc}",
                f"Check it with `enclave models verify {name}`; rebuild with `enclave models build {name}`.",
            ) from exc

    def _can_speculate(self) -> bool:
        """Whether this build can verify drafts: genai refuses speculation when the
        lm_head was pruned to the last position (``prune_lm_head``), at generator creation."""
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(max_length=8, do_sample=False)
        try:
            params.set_speculative_options(ngram_size=NGRAM_SIZE, max_draft_tokens=MAX_DRAFT_TOKENS)
            self.og.Generator(self.model, params)
        except Exception as exc:  # noqa: BLE001 - any refusal only means: no speculation
            log.info("speculation off for this build: %s", exc)
            return False
        return True

    def open_session(self, capacity: int) -> GenaiSession:
        return GenaiSession(self, min(capacity, self.info.context_length))

    def score(self, tokens: Sequence[int]) -> list[float]:
        # One token per append: builds with prune_lm_head compute logits only for the
        # last token of each append (SmolLM2: ~1,000 tokens in about 10 s on 2 cores).
        og = self.og
        params = og.GeneratorParams(self.model)
        params.set_search_options(max_length=max(len(tokens) + 1, self.min_cache_length), do_sample=False)
        gen = og.Generator(self.model, params)
        out: list[float] = []
        for i, token in enumerate(tokens):
            if i > 0:
                logits = np.asarray(gen.get_logits(), dtype=np.float64).reshape(-1)
                top = logits.max()
                out.append(float(logits[token] - top - np.log(np.exp(logits - top).sum())))
            gen.append_tokens(np.asarray([token], dtype=np.int32))
        return out

    def close(self) -> None:
        self.model = None


def _kv_bytes_per_token(genai_config: dict[str, Any]) -> int | None:
    """Key and value, every layer, float32 (the CPU build's cache type): SmolLM2-135M is
    2 x 30 layers x 3 KV heads x 64 x 4 B = 46 KB per token, so a 2048-token session
    preallocates 94 MB whatever it holds (the shared buffer is sized to ``max_length``)."""
    decoder = genai_config.get("model", {}).get("decoder", {})
    try:
        layers = int(decoder["num_hidden_layers"])
        heads = int(decoder.get("num_key_value_heads") or decoder["num_attention_heads"])
        head_size = int(decoder["head_size"])
    except (KeyError, TypeError, ValueError):
        return None
    return 2 * layers * heads * head_size * 4
