"""The records that cross the pipe between the engine proxy and its sealed worker.

Requests go front end -> worker; every request gets replies ending with one marked
``end``. The events of a turn (:class:`~assistant.engines.base.TextDelta`,
:class:`~assistant.engines.base.Usage`, :class:`~assistant.engines.base.Done`) travel as
themselves; an :class:`~assistant.engines.base.Error` event travels as
:class:`StreamError` (an exception is not data). See :mod:`assistant.privacy.wire` for
the framing and why it is JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from assistant.core.events import Constraint, Done, GenerationOptions, TextDelta, Usage
from assistant.engines.base import Capabilities, ModelInfo
from assistant.privacy.wire import Codec
from assistant.privacy.worker import COMMON


# --------------------------------------------------------------------------- loading
@dataclass(frozen=True)
class LoadOnnx:
    """Load an onnxruntime-genai model folder."""

    path: str
    name: str
    threads: int = 0
    device: str = "cpu"
    #: ``grow`` or ``window`` (``kv_cache``'s ``auto`` is decided before this).
    kv_cache: str = "window"


@dataclass(frozen=True)
class LoadLitert:
    """Load a ``.litertlm`` bundle (``verified``: its hash matched a manifest)."""

    path: str
    name: str
    cache_dir: str
    threads: int = 0
    max_tokens: int = 2048
    verified: bool = True
    device: str = "cpu"
    #: A base model: plain text, not the bundle's chat template.
    completion: bool = False


@dataclass(frozen=True)
class Loaded:
    engine: str
    info: ModelInfo
    capabilities: Capabilities


# --------------------------------------------------------------------------- sessions
@dataclass(frozen=True)
class OpenSession:
    session: int
    capacity: int


@dataclass(frozen=True)
class Opened:
    capacity: int


@dataclass(frozen=True)
class Generate:
    """One turn. ``eos`` is the front end's ``ModelInfo.eos_token_ids`` (callers may change it)."""

    session: int
    prompt: list[int]
    options: GenerationOptions
    messages: list[dict[str, str]] | None
    eos: list[int]


@dataclass(frozen=True)
class Held:
    """The tokens the session's cache holds now, all of them: a turn that was abandoned
    half-way cannot leave the front end's copy out of step (a 2,048-token window is
    ~10 KB of JSON, ~0.2 ms, once per turn)."""

    tokens: list[int]


@dataclass(frozen=True)
class StreamError:
    """An :class:`~assistant.engines.base.Error` event of the turn."""

    kind: str
    message: str
    hint: str = ""


@dataclass(frozen=True)
class Cancel:
    """Stop the running turn of ``session`` (handled at once, beside the turn)."""

    session: int


@dataclass(frozen=True)
class ResetCancel:
    session: int


@dataclass(frozen=True)
class CloseSession:
    session: int


@dataclass(frozen=True)
class NativeCount:
    """Tokens the native generator holds (tests check the bookkeeping with it)."""

    session: int


@dataclass(frozen=True)
class Count:
    n: int


@dataclass(frozen=True)
class Score:
    """Teacher-forced log-probabilities of ``tokens`` (perplexity, drift checks)."""

    session: int
    tokens: list[int]


@dataclass(frozen=True)
class Scores:
    logprobs: list[float]


# --------------------------------------------------------------------------- tokenizer
@dataclass(frozen=True)
class Encode:
    text: str


@dataclass(frozen=True)
class Decode:
    ids: list[int]


@dataclass(frozen=True)
class Render:
    messages: list[dict[str, str]]
    add_generation_prompt: bool = True


@dataclass(frozen=True)
class RenderTools:
    """The chat template with tools; messages and tools as JSON text (nested values)."""

    messages_json: str
    tools_json: str
    add_generation_prompt: bool = True


@dataclass(frozen=True)
class Tokens:
    ids: list[int]


@dataclass(frozen=True)
class Text:
    text: str


RECORDS: tuple[type[Any], ...] = (
    *COMMON,
    LoadOnnx,
    LoadLitert,
    Loaded,
    ModelInfo,
    Capabilities,
    GenerationOptions,
    Constraint,
    OpenSession,
    Opened,
    Generate,
    TextDelta,
    Usage,
    Done,
    Held,
    StreamError,
    Cancel,
    ResetCancel,
    CloseSession,
    NativeCount,
    Count,
    Score,
    Scores,
    Encode,
    Decode,
    Render,
    RenderTools,
    Tokens,
    Text,
)

CODEC = Codec(RECORDS)
