"""One settings tree, built once in the entry point and passed down.

Where things live: XDG directories (config, data, cache), all moved at once by
``ENCLAVE_HOME``. Settings come from defaults, then ``config.toml`` in the config
directory (path overridable with ``ENCLAVE_CONFIG``), then ``ENCLAVE_*``
environment variables, then command-line flags (applied by the CLI).
"""

from __future__ import annotations

import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

from assistant.core.errors import EnclaveError
from assistant.core.files import write_private
from assistant.core.records import AnswerModeSetting

#: Where a model runs (``--device``).
Device = Literal["cpu", "gpu"]
#: Power profile (``--power``).
PowerMode = Literal["auto", "saver", "performance"]
#: How a model process is sealed off the network (``privacy_seal``).
SealPolicy = Literal["warn", "require"]
#: N-gram speculation (``speculation``).
SpeculationMode = Literal["auto", "on", "off"]
#: How the ONNX engine allocates a session's KV cache (``kv_cache``).
KvCacheMode = Literal["auto", "grow", "window"]


def _xdg(var: str, default: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / default


@dataclass(frozen=True)
class Locations:
    """The three directories Enclave writes to."""

    config: Path
    data: Path
    cache: Path

    @classmethod
    def from_env(cls) -> Locations:
        home = os.environ.get("ENCLAVE_HOME")
        if home:
            root = Path(home).expanduser()
            return cls(config=root / "config", data=root / "data", cache=root / "cache")
        return cls(
            config=_xdg("XDG_CONFIG_HOME", ".config") / "enclave",
            data=_xdg("XDG_DATA_HOME", ".local/share") / "enclave",
            cache=_xdg("XDG_CACHE_HOME", ".cache") / "enclave",
        )

    @property
    def models(self) -> Path:
        """Installed models: ``models/<name>/<engine>/``."""
        return self.data / "models"

    @property
    def releases(self) -> Path:
        """Signed model releases: ``releases/<name>/<engine>/v<N>/`` (``models/<name>/<engine>``
        links to the current one)."""
        return self.data / "releases"

    @property
    def database(self) -> Path:
        return self.data / "enclave.db"

    @property
    def config_file(self) -> Path:
        override = os.environ.get("ENCLAVE_CONFIG")
        return Path(override) if override else self.config / "config.toml"


@dataclass(frozen=True)
class Settings:
    """Every user-facing setting, with its default."""

    locations: Locations = field(default_factory=Locations.from_env)
    #: Model used when none is named (a manifest name from ``models/``).
    model: str = "smollm2-135m-instruct"
    #: Engine used when none is named: ``onnx`` (onnxruntime-genai).
    engine: str = "onnx"
    #: Tokens of context the KV cache holds. The cache grows up to this size (or is
    #: preallocated at it: ``kv_cache``), so it is bounded well below the model's trained
    #: window by default.
    context_window: int = 2048
    #: Most tokens one answer may have.
    max_tokens: int = 512
    #: 0 is greedy decoding (reproducible); above 0 samples.
    temperature: float = 0.0
    top_p: float = 0.95
    top_k: int = 40
    seed: int | None = None
    #: Inference threads; 0 means the engine's own choice (all cores).
    threads: int = 0
    #: Persona (system prompt) name from ``prompts/`` or the config directory.
    persona: str = "general"
    #: What to do when a conversation outgrows the window: stop, drop-oldest, truncate-middle.
    context_policy: str = "drop-oldest"
    #: Tokens kept free for the answer; 0 means min(max_tokens, window / 4).
    answer_reserve: int = 0
    #: Passages from documents given to the model per question (fewer when the window is tight).
    docs_passages: int = 5
    #: Weakest cosine similarity (all-MiniLM-L6-v2) of the best passage that still counts as
    #: evidence; below it Enclave says it found nothing relevant. 0.44 answered 95 % of the
    #: answerable questions and refused 69 % of the unanswerable ones
    #: (scripts/calibrate_evidence.py on the seeded corpus).
    docs_min_similarity: float = 0.44
    #: How answers from documents are made: extract (the source sentences that answer,
    #: chosen by Enclave; the model is not asked), quote (the model chooses them, decoding
    #: constrained to verbatim quotes), free (the extracted sentences, then the model's
    #: own short answer, each sentence checked against the sources), or auto (the mode
    #: measured best for the model, recorded in its manifest; extract for other models).
    docs_answer_mode: str = "auto"
    #: Repetition penalty: 1.0 is off; above 1 makes tokens already in the answer less
    #: likely (1.1-1.3 is usual). Loops are stopped whatever it is set to.
    repeat_penalty: float = 1.0
    #: Build the embedding model (vector search) on the first `enclave docs add` when it is
    #: missing and the build tools are installed (about 30 s, once).
    docs_build_embedder: bool = True
    #: Files larger than this are skipped when indexing documents.
    docs_max_file_mb: int = 200
    #: Seconds one document may take to parse before it is skipped.
    docs_parse_timeout: float = 60.0
    #: Query-time re-scoring: the passages among the best this many of a search that have
    #: only the cheap static vector get their MiniLM vector at once (stored, so the
    #: background embedder skips them), and the search ranks again with it. 0 turns it
    #: off. 20 took seeded recall@5 from 87 % to 95 % of the all-MiniLM figure, for about
    #: 20 x 60 ms of MiniLM on two loaded cores, once per passage (docs/documents-at-scale.md).
    docs_rescore_top: int = 20
    #: Let the background embedder (MiniLM vectors after `docs add`) run on battery power.
    docs_background_on_battery: bool = True
    #: Terminal UI theme, e.g. textual-dark, textual-light, nord, gruvbox (Ctrl+P lists them).
    theme: str = "textual-dark"
    #: Cloud fallback, off unless configured here AND enabled per conversation: an
    #: OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1. Empty: no cloud.
    #: The API key is never a setting (keyring or ENCLAVE_CLOUD_API_KEY).
    cloud_base_url: str = ""
    #: Model name sent to the endpoint; empty leaves it to the server.
    cloud_model: str = ""
    #: Seconds to wait for the connection, and for each piece of the answer.
    cloud_timeout: float = 60.0
    #: Seconds one cloud answer may take in all (connecting, waiting and streaming): a
    #: server that never stops, or keeps the connection open with keep-alive comments,
    #: is cut off here. 300 s is 25x the ~12 s a 512-token answer takes at 40 tok/s.
    cloud_deadline: float = 300.0
    #: Retries (exponential backoff) on connection errors, 5xx and 429, before the answer starts.
    cloud_retries: int = 3
    #: Mask e-mail addresses, phone numbers and cloud_redact_patterns in what is sent.
    cloud_redact: bool = True
    #: Extra regular expressions to mask: a TOML array of strings; in the
    #: environment a JSON array, or one pattern per line.
    cloud_redact_patterns: tuple[str, ...] = ()
    #: Keep the database encrypted with SQLCipher (`enclave init --encrypt` turns it on).
    encrypt: bool = False
    #: Where models run: cpu, or gpu (LiteRT-LM's GPU backend, onnxruntime's CUDA provider);
    #: when the GPU cannot be used Enclave says so and runs on the CPU.
    device: str = "cpu"
    #: Power profile: auto (saver on battery, per /sys/class/power_supply), saver or performance.
    #: Saver runs one inference thread: 1 thread used 13.5 CPU-s per 1,000 tokens vs 16.4 for
    #: 2 threads on SmolLM2 (18 % less energy per token, 75 vs 120 tok/s); it also pauses
    #: background document indexing.
    power: str = "auto"
    #: N-gram (prompt-lookup) speculation, for builds that keep the full lm_head and greedy
    #: turns only: auto (document answers, which copy their passages), on (every greedy
    #: turn), off. It saves work where answers copy the prompt and costs work on free text
    #: (SmolLM2, 1 thread: -7 % and +16 % CPU per token; scripts/bench_speculation.py).
    speculation: str = "auto"
    #: The ONNX engine's KV cache: ``grow`` sizes it to what a turn can reach (prompt +
    #: max_tokens, in steps of 128 tokens) and doubles it, up to context_window, ahead of
    #: the next turn in the worker's idle time while the user reads (a turn that outgrows
    #: it anyway, arriving with no pause, re-reads the conversation); ``window``
    #: preallocates the whole window, so every turn keeps the cache; ``auto`` is grow for a
    #: one-shot ``enclave ask`` and window for conversations (chat, the UI, the server): a
    #: conversation that reaches the window peaked higher grown than preallocated
    #: (docs/engine.md). SmolLM2 at 2,048: 46 KB a token, 94 MB for the window; a 941-token
    #: question + 128 tokens peaks at 311 MiB grown against 353 preallocated.
    kv_cache: str = "auto"
    #: Latency budgets `enclave doctor` checks against the last `enclave bench`: time to the
    #: first token of a 500-token prompt, and decode speed. SmolLM2 int4 on 2 cores: ~1.2 s, ~85 tok/s.
    budget_ttft_ms: float = 3000.0
    budget_decode_tokens_per_s: float = 10.0
    #: Largest signed bundle `enclave models install` unpacks (MiB), so a hostile file cannot fill the disk.
    bundle_max_mb: int = 16384
    #: `models install` refuses a new version whose perplexity on the shipped text rises more
    #: than this fraction above the current version's (SmolLM2's int4 transcode and
    #: llama.cpp differ by 0.2 %), unless --accept-drift.
    drift_max_perplexity_rise: float = 0.10
    #: ...or whose greedy golden answers agree with the current version's on less than this
    #: share of tokens (mean common prefix over 16 tokens per prompt).
    drift_min_agreement: float = 0.25
    #: `enclave serve`: the port on 127.0.0.1 (0 picks a free one).
    serve_port: int = 8642
    #: `enclave serve`: requests that may wait per model while one runs; more get 429.
    serve_queue: int = 4
    #: `enclave serve`: memory for kept KV sessions per model, in MiB (SmolLM2 at a
    #: 2048-token window preallocates 94 MB a session, so 512 keeps 5 conversations warm).
    serve_kv_mib: int = 512
    #: `enclave serve`: the largest request body, in KiB (a 2048-token window holds about
    #: 8 KB of text; 2048 KiB leaves room for 32k-token windows and JSON escaping).
    serve_max_body_kib: int = 2048
    #: `enclave serve`: web origins allowed to call the API from a browser (CORS), listed
    #: one by one, e.g. ["http://localhost:3000"]. Empty: no browser page may.
    serve_cors_origins: tuple[str, ...] = ()
    #: `enclave serve`: extra host names a Host header may carry besides localhost and the
    #: loopback addresses (DNS-rebinding protection), e.g. ["enclave.internal"].
    serve_allowed_hosts: tuple[str, ...] = ()
    #: `enclave serve`: keep API conversations in the history (default: not saved; the audit
    #: log records every request without its text either way).
    serve_save_history: bool = False
    #: Models, document parsing and embedding run in a worker process sealed off the network
    #: (its own user + network namespace, a seccomp filter). Where the system refuses part of
    #: it: warn (say so once and keep the other layers) or require (refuse to run).
    privacy_seal: str = "warn"

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Defaults ← config file ← ``ENCLAVE_*`` variables ← ``overrides``, each value checked.

        Every value goes through :func:`parse_setting` (the one schema, :data:`RULES`);
        an unknown name, a value of the wrong type, out of range or not one of the
        choices is an :class:`InvalidSetting` naming the setting, where the value came
        from, and what it accepts — never silently replaced by a default.
        """
        locations = Locations.from_env()
        path = locations.config_file
        values: dict[str, tuple[Any, str]] = {}
        for name, value in read_config_file(path).items():
            values[name] = (value, f"{path}")
        for name in RULES:
            env = os.environ.get(f"ENCLAVE_{name.upper()}")
            if env is not None:
                values[name] = (env, f"the environment variable ENCLAVE_{name.upper()}")
        for name, value in overrides.items():
            if value is not None:
                values[name] = (value, "the command line")
        unknown = sorted(set(values) - set(RULES))
        if unknown:
            where = values[unknown[0]][1]
            raise InvalidSetting(
                f"Unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} in {where}.",
                f"Known settings: {', '.join(RULES)}.",
            )
        converted = {name: parse_setting(name, value, where) for name, (value, where) in values.items()}
        settings = replace(cls(locations=locations), **converted)
        check_together(settings, {name: where for name, (_, where) in values.items()})
        return settings


# --------------------------------------------------------------------------- the schema
class InvalidSetting(EnclaveError):
    """A setting's name or value is not acceptable (wrong type, out of range, not a choice)."""


RuleKind = Literal["bool", "int", "float", "text", "choice", "list", "seed"]


@dataclass(frozen=True)
class Rule:
    """What one setting accepts, and why: the one place a value is checked.

    ``low``/``high`` bound numbers (``low_open``: strictly above ``low``); ``choices``
    close a set; ``pattern`` constrains text (a full match); ``why`` is told to the
    user with a refusal.
    """

    kind: RuleKind
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple[str, ...] = ()
    pattern: str | None = None
    max_length: int = 200
    regex: bool = True  # a list's items are regular expressions, checked to compile
    why: str = ""

    def describe(self, name: str) -> str:
        """What ``name`` accepts, in one phrase (for errors and `config show`)."""
        if self.kind == "bool":
            return "true or false (also 1/0, yes/no, on/off)"
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind in ("int", "float", "seed"):
            number = "a whole number" if self.kind != "float" else "a number"
            low = "" if self.low is None else f"{'>' if self.low_open else '≥'} {_num(self.low)}"
            top = _high(self, name)
            high = "" if top is None else f"≤ {_num(top)}"
            bounds = " and ".join(b for b in (low, high) if b)
            extra = " (or empty for none)" if self.kind == "seed" else ""
            return f"{number} {bounds}{extra}".strip()
        if self.kind == "list" and not self.regex:
            return "a list of text items (a TOML array; in the environment a JSON array or one per line)"
        if self.kind == "list":
            return "a list of regular expressions (a TOML array; in the environment a JSON array or one per line)"
        if self.pattern == _NAME:
            return f"a name of letters, digits, '.', '_' and '-' (at most {self.max_length} characters)"
        return f"text without control characters (at most {self.max_length} characters)"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _cores() -> int:
    """CPUs this process may run on (a container's share, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


#: Names: model, persona and theme names are file and folder names Enclave looks up.
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"

#: The schema: every field of :class:`Settings` and what it accepts. The ranges are
#: limits against typos and nonsense, with the number that justified each.
RULES: dict[str, Rule] = {
    "model": Rule("text", pattern=_NAME, max_length=100, why="a model name from `enclave models list`"),
    "engine": Rule("choice", choices=("onnx", "litert"), why="the engines Enclave ships"),
    "context_window": Rule(
        "int",
        64,
        131072,
        why="the KV cache is preallocated at this size; 64 tokens hold a template's glue and a short "
        "question, and 131072 is the longest window of any model Enclave runs (Phi-3-mini-128k, Gemma 3)",
    ),
    "max_tokens": Rule("int", 1, 32768, why="an answer of 32768 tokens already takes ~6 minutes at 90 tok/s"),
    "temperature": Rule("float", 0, 2, why="0 is greedy; above 2 sampling is close to uniform noise (OpenAI's range)"),
    "top_p": Rule("float", 0, 1, low_open=True, why="a probability mass: above 0, at most 1 (1 keeps every token)"),
    "top_k": Rule("int", 1, 1000, why="1 is greedy; past 1000 candidates top_p already decides"),
    "seed": Rule("seed", 0, 2**31 - 1, why="the engines take a 32-bit signed seed"),
    "threads": Rule(
        "int",
        0,
        None,
        why="0 lets the engine choose; more threads than cores only contend (2 threads decoded 120 tok/s on "
        "2 cores, 1000 threads made decoding 250x slower)",
    ),
    "persona": Rule("text", pattern=r"[^/\\]+", max_length=100, why="a persona name (a .md file in prompts/)"),
    "context_policy": Rule(
        "choice",
        choices=("stop", "drop-oldest", "truncate-middle"),
        why="what to do when a conversation outgrows the window",
    ),
    "answer_reserve": Rule(
        "int", 0, 32768, why="0 means min(max_tokens, window / 4); it must leave room for the prompt"
    ),
    "docs_passages": Rule("int", 1, 50, why="each passage costs ~100-300 tokens of the window"),
    "docs_min_similarity": Rule("float", -1, 1, why="a cosine similarity lies between -1 and 1"),
    "docs_background_on_battery": Rule("bool"),
    "docs_rescore_top": Rule("int", 0, 50, why="passages embedded per search at most; 0 turns it off"),
    "docs_build_embedder": Rule("bool"),
    "docs_max_file_mb": Rule("int", 1, 10240, why="a bound on one file's size, in MB (10 GB at the most)"),
    "docs_parse_timeout": Rule("float", 1, 3600, why="seconds; one document parses in well under a minute"),
    "theme": Rule("text", pattern=_NAME, max_length=64, why="a theme name (Ctrl+P → Change theme lists them)"),
    "cloud_base_url": Rule("text", max_length=2000, why="an http(s) URL such as http://127.0.0.1:8000/v1, or empty"),
    "cloud_model": Rule("text", max_length=200, why="the model name the endpoint expects, or empty"),
    "cloud_timeout": Rule("float", 1, 600, why="seconds of silence tolerated from the endpoint"),
    "cloud_deadline": Rule("float", 1, 3600, why="seconds one cloud answer may take in all"),
    "cloud_retries": Rule("int", 0, 10, why="each retry waits up to 30 s"),
    "cloud_redact": Rule("bool"),
    "cloud_redact_patterns": Rule("list", max_length=100),
    "encrypt": Rule("bool"),
    "docs_answer_mode": Rule(
        "choice", choices=get_args(AnswerModeSetting), why="how answers from documents are made (see *Documents*)"
    ),
    "repeat_penalty": Rule("float", 1, 3, why="1.0 is off; 1.1-1.3 is usual, above 3 the answer avoids every word"),
    "device": Rule("choice", choices=get_args(Device), why="where models run"),
    "power": Rule("choice", choices=get_args(PowerMode), why="saver on battery, or fixed"),
    "kv_cache": Rule(
        "choice",
        choices=get_args(KvCacheMode),
        why="auto: grow for one-shot ask, window for conversations; grow: memory follows the conversation, "
        "grown between turns while the user reads (a turn that outgrows it anyway re-reads it); window: "
        "preallocated, every turn keeps the cache",
    ),
    "speculation": Rule(
        "choice", choices=get_args(SpeculationMode), why="auto: for document answers; on: every greedy turn"
    ),
    "budget_ttft_ms": Rule("float", 1, None, why="milliseconds to the first token of a 500-token prompt"),
    "budget_decode_tokens_per_s": Rule("float", 0, None, why="tokens a second"),
    "bundle_max_mb": Rule("int", 1, 1048576, why="MiB one signed bundle may unpack to"),
    "drift_max_perplexity_rise": Rule("float", 0, 10, why="a fraction: 0.10 is 10 % above the current version"),
    "drift_min_agreement": Rule("float", 0, 1, why="a share of tokens"),
    "serve_port": Rule("int", 0, 65535, why="a TCP port; 0 picks a free one"),
    "serve_queue": Rule("int", 0, 1024, why="requests waiting per model while one runs"),
    "serve_kv_mib": Rule("int", 0, 1048576, why="MiB of kept KV sessions per model"),
    "serve_max_body_kib": Rule("int", 1, 1048576, why="KiB of one request body"),
    "serve_cors_origins": Rule("list", max_length=100, regex=False, why="web origins such as http://localhost:3000"),
    "serve_allowed_hosts": Rule("list", max_length=100, regex=False, why="host names such as enclave.internal"),
    "serve_save_history": Rule("bool"),
    "privacy_seal": Rule("choice", choices=get_args(SealPolicy), why="what to do when the system refuses part of the seal"),
}

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def parse_setting(name: str, value: Any, where: str = "the command line") -> Any:
    """``value`` (from TOML, the environment, or a flag) as setting ``name`` holds it.

    Raises :class:`InvalidSetting` with the reason. Booleans are strict: only
    true/false, 1/0, yes/no, on/off (any case) — ``ture`` is an error, never false.
    Numbers must be finite (``1e400`` in TOML is infinity) and within the rule's range.
    """
    rule = RULES.get(name)
    if rule is None:
        raise InvalidSetting(f"There is no setting named {name!r} (in {where}).", "`enclave config show` lists them.")

    def bad(problem: str) -> InvalidSetting:  # the refusal, with what is accepted
        shown = repr(value) if not isinstance(value, str) or len(value) <= 60 else repr(value[:60] + "…")
        return InvalidSetting(
            f"The setting {name} = {shown} (from {where}) is not valid: {problem}.",
            f"{name} takes {rule.describe(name)}" + (f": {rule.why}." if rule.why else "."),
        )

    parser = _PARSERS.get(rule.kind, _parse_text)
    return parser(name, rule, value, bad)


_Refusal = Callable[[str], InvalidSetting]


def _parse_bool(name: str, rule: Rule, value: Any, bad: _Refusal) -> Any:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, str | int) else None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise bad("it is neither true nor false")


def _parse_whole(name: str, rule: Rule, value: Any, bad: _Refusal) -> Any:
    if rule.kind == "seed" and (value is None or (isinstance(value, str) and not value.strip())):
        return None
    number = _whole(value)
    if number is None:
        raise bad("it is not a whole number")
    _check_range(rule, name, number, bad)
    return number


def _parse_float(name: str, rule: Rule, value: Any, bad: _Refusal) -> Any:
    real = _real(value)
    if real is None:
        raise bad("it is not a finite number")
    _check_range(rule, name, real, bad)
    return real


def _parse_choice(name: str, rule: Rule, value: Any, bad: _Refusal) -> Any:
    if not isinstance(value, str) or value not in rule.choices:
        raise bad("it is not one of the choices")
    return value


def _parse_list(name: str, rule: Rule, value: Any, bad: _Refusal) -> Any:
    try:
        items = _string_list(value)
    except ValueError as exc:
        raise bad(str(exc)) from None
    if len(items) > rule.max_length:
        raise bad(f"it has {len(items)} patterns")
    for pattern in items if rule.regex else ():
        try:
            re.compile(pattern)
        except re.error as exc:
            raise bad(f"{pattern!r} is not a regular expression ({exc})") from None
    return items


def _parse_text(name: str, rule: Rule, value: Any, bad: _Refusal) -> Any:
    if not isinstance(value, str):
        raise bad("it is not text")
    if len(value) > rule.max_length:
        raise bad(f"it is {len(value)} characters long")
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F or 0xD800 <= ord(ch) <= 0xDFFF for ch in value):
        raise bad("it contains control characters")
    if rule.pattern and not re.fullmatch(rule.pattern, value):
        raise bad("it contains characters a name cannot have")
    if name == "cloud_base_url" and value.strip():
        problem = _url_problem(value.strip())
        if problem:
            raise bad(problem)
    return value


#: How each kind of setting is read (text: every other kind).
_PARSERS: dict[str, Callable[[str, Rule, Any, _Refusal], Any]] = {
    "bool": _parse_bool,
    "int": _parse_whole,
    "seed": _parse_whole,
    "float": _parse_float,
    "choice": _parse_choice,
    "list": _parse_list,
}


def _whole(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d{1,19}\s*", value):
        return int(value)
    return None


def _real(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        real = float(value)
    elif isinstance(value, str):
        try:
            real = float(value)
        except ValueError:
            return None
    else:
        return None
    return real if math.isfinite(real) else None


def _high(rule: Rule, name: str) -> float | None:
    """The upper bound; for threads it is this machine's: twice its cores."""
    return 2 * _cores() if name == "threads" else rule.high


def _check_range(rule: Rule, name: str, number: float, bad: Callable[[str], InvalidSetting]) -> None:
    high = _high(rule, name)
    if rule.low is not None and (number < rule.low or (rule.low_open and number == rule.low)):
        raise bad("it is too small")
    if high is not None and number > high:
        raise bad(
            "it is too large"
            + (f" (this machine has {_cores()} cores; up to twice that, {2 * _cores()}, is allowed)" if name == "threads" else "")
        )


def _url_problem(url: str) -> str:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on an invalid port
    except ValueError as exc:
        return f"it is not a URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "it is not an http(s) URL"
    if any(ch.isspace() for ch in url):
        return "it contains spaces"
    return ""


def check_together(settings: Settings, where: dict[str, str]) -> None:
    """Rules between settings: the answer reserve must leave room for a prompt."""
    if settings.answer_reserve and settings.answer_reserve >= settings.context_window:
        source = where.get("answer_reserve") or where.get("context_window") or "the defaults"
        raise InvalidSetting(
            f"The setting answer_reserve = {settings.answer_reserve} (from {source}) leaves no room for the prompt "
            f"in a {settings.context_window}-token context window.",
            "Set answer_reserve below context_window (0 chooses min(max_tokens, window / 4)).",
        )


def _string_list(value: Any) -> tuple[str, ...]:
    """A list setting from TOML (an array of strings) or the environment (a JSON
    array, or one item per line: regular expressions often contain commas)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError:
                raise ValueError("it is not a JSON array of strings") from None
        else:
            value = [line for line in text.splitlines() if line.strip()]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError("it is not a list of strings")
    return tuple(value)


def read_config_file(path: Path) -> dict[str, Any]:
    """The settings in ``config.toml`` (``{}`` when there is none), as TOML typed them."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except IsADirectoryError:
        raise InvalidSetting(f"The settings file {path} is a directory.", "Move it away to use the defaults.") from None
    except PermissionError:
        raise InvalidSetting(
            f"The settings file {path} cannot be read (permission denied).",
            f"Check its owner and mode: chmod 600 {path}",
        ) from None
    except UnicodeDecodeError as exc:
        raise InvalidSetting(
            f"The settings file {path} is not UTF-8 text ({exc.reason} at byte {exc.start}).",
            "Fix the line it names, or move the file away to use the defaults.",
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidSetting(
            f"The settings file {path} is not valid TOML: {exc}.",
            "Fix the line it names, or move the file away to use the defaults.",
        ) from exc


def write_setting(path: Path, name: str, value: bool | int | float | str | Sequence[str]) -> None:
    """Set ``name = value`` in the TOML file at ``path``, keeping every other line as it is.

    The file is flat (no tables), so the first top-level ``name = …`` line is
    replaced, or the setting is appended. Written to a temporary file and renamed,
    so a crash leaves the old file or the new one; a new file is 0600 (it may name
    the cloud endpoint), an existing one keeps its mode.
    """
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int | float):
        text = repr(value)
    elif not isinstance(value, str):  # a list of strings: a TOML array
        text = "[" + ", ".join(json.dumps(v, ensure_ascii=False) for v in value) + "]"
    else:
        text = json.dumps(value, ensure_ascii=False)  # JSON string escapes are valid TOML
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    line = f"{name} = {text}"
    pattern = re.compile(rf"^\s*{re.escape(name)}\s*=")
    for i, existing in enumerate(lines):
        if existing.lstrip().startswith("["):
            lines.insert(i, line)  # before the first table, where top-level keys belong
            break
        if pattern.match(existing):
            lines[i] = line
            break
    else:
        lines.append(line)
    write_private(path, ("\n".join(lines) + "\n").encode("utf-8"))
