"""One settings tree, built once in the entry point and passed down.

Where things live: XDG directories (config, data, cache), all moved at once by
``ENCLAVE_HOME``. Settings come from defaults, then ``config.toml`` in the config
directory (path overridable with ``ENCLAVE_CONFIG``), then ``ENCLAVE_*``
environment variables, then command-line flags (applied by the CLI).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, get_args

from assistant.core.errors import EnclaveError

#: Where a model runs (``--device``).
Device = Literal["cpu", "gpu"]
#: Power profile (``--power``).
PowerMode = Literal["auto", "saver", "performance"]
#: Settings whose values form a closed set, checked when the settings are loaded.
CHOICES: dict[str, tuple[str, ...]] = {"device": get_args(Device), "power": get_args(PowerMode)}


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


def _string_list(value: Any) -> tuple[str, ...]:
    """A list setting from TOML (an array of strings) or the environment (a JSON
    array, or one item per line: regular expressions often contain commas)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            value = json.loads(text)
        else:
            value = [line for line in text.splitlines() if line.strip()]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of strings")
    return tuple(value)


@dataclass(frozen=True)
class Settings:
    """Every user-facing setting, with its default."""

    locations: Locations = field(default_factory=Locations.from_env)
    #: Model used when none is named (a manifest name from ``models/``).
    model: str = "smollm2-135m-instruct"
    #: Engine used when none is named: ``onnx`` (onnxruntime-genai).
    engine: str = "onnx"
    #: Tokens of context the KV cache holds. The cache is preallocated at this size,
    #: so it is bounded well below the model's trained window by default.
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
    #: Build the embedding model (vector search) on the first `enclave docs add` when it is
    #: missing and the build tools are installed (about 30 s, once).
    docs_build_embedder: bool = True
    #: Files larger than this are skipped when indexing documents.
    docs_max_file_mb: int = 200
    #: Seconds one document may take to parse before it is skipped.
    docs_parse_timeout: float = 60.0
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

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Defaults ← config file ← ``ENCLAVE_*`` variables ← ``overrides``."""
        locations = Locations.from_env()
        values: dict[str, Any] = {}
        path = locations.config_file
        if path.is_file():
            try:
                values.update(tomllib.loads(path.read_text(encoding="utf-8")))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise EnclaveError(
                    f"The settings file {path} is not valid TOML: {exc}.",
                    "Fix the line it names, or move the file away to use the defaults.",
                ) from exc
        known = {f.name: f for f in fields(cls) if f.name != "locations"}
        for name in known:
            env = os.environ.get(f"ENCLAVE_{name.upper()}")
            if env is not None:
                values[name] = env
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - set(known)
        if unknown:
            raise EnclaveError(
                f"Unknown setting(s) in {path}: {', '.join(sorted(unknown))}.",
                f"Known settings: {', '.join(known)}.",
            )
        settings = cls(locations=locations)
        converted: dict[str, Any] = {}
        for name, value in values.items():
            default = getattr(settings, name)
            try:
                if isinstance(default, bool):
                    converted[name] = str(value).lower() in ("1", "true", "yes", "on")
                elif isinstance(default, int) and not isinstance(default, bool):
                    converted[name] = int(value)
                elif isinstance(default, float):
                    converted[name] = float(value)
                elif isinstance(default, tuple):
                    converted[name] = _string_list(value)
                elif name == "seed":
                    converted[name] = None if value in (None, "") else int(value)
                else:
                    converted[name] = str(value)
            except (TypeError, ValueError) as exc:
                raise EnclaveError(
                    f"Setting {name!r} has an invalid value {value!r}.",
                    f"Use a value like {default!r}.",
                ) from exc
        for name, allowed in CHOICES.items():
            if name in converted and converted[name] not in allowed:
                raise EnclaveError(
                    f"Setting {name!r} has an invalid value {converted[name]!r}.", f"Use one of: {', '.join(allowed)}."
                )
        return replace(settings, **converted)


def write_setting(path: Path, name: str, value: bool | int | float | str | Sequence[str]) -> None:
    """Set ``name = value`` in the TOML file at ``path``, keeping every other line as it is.

    The file is flat (no tables), so the first top-level ``name = …`` line is
    replaced, or the setting is appended. Written to a temporary file and renamed,
    so a crash leaves the old file or the new one.
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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, path)
