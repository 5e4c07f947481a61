"""One error hierarchy for everything a user can see.

Every error that reaches a person carries a one-sentence ``message`` naming the
problem and a ``hint`` naming the fix. The CLI prints both (never a traceback);
the TUI shows them as a notification; tests re-raise them.
"""

from __future__ import annotations


class EnclaveError(Exception):
    """Base class for errors with a user-facing message and a hint."""

    exit_code = 1

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} {self.hint}".strip()


class ModelNotInstalled(EnclaveError):
    """The requested model has no installed build for the requested engine."""


class ModelUnknown(EnclaveError):
    """No manifest and no installed model has this name."""


class NotALanguageModel(EnclaveError):
    """The model named to answer is an embedding model (document search), not a language model."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"{name} is an embedding model for document search, not a chat model.",
            "Choose a chat model with --model (see `enclave models list`).",
        )


class ModelCorrupt(EnclaveError):
    """An installed model's files do not match its manifest, or cannot be loaded."""


class BuildError(EnclaveError):
    """A model build failed (missing build extra, missing source, converter error)."""


class BuildCancelled(BuildError):
    """The user stopped a model build; its work folder is kept and reused by the next build."""

    def __init__(self) -> None:
        super().__init__("The build was stopped.", "Run it again to continue; finished steps are reused.")


class EngineError(EnclaveError):
    """An engine failed while loading or generating."""


class EngineUnavailable(EnclaveError):
    """The engine's runtime package is not installed or cannot run here."""


class ContextExhausted(EnclaveError):
    """The prompt does not fit the context window: the one "does not fit" error.

    Raised by the context policy before anything runs (the conversation or the new
    message is too long for the window under the chosen policy) and by an engine
    session when a prompt cannot be prefilled. Carries the numbers so callers can
    decide what to drop: ``needed`` tokens (the whole prompt), the ``window``, the
    ``reserve`` kept free for the answer, and ``held``, the part already in the KV
    cache that would be kept.
    """

    def __init__(
        self,
        needed: int,
        window: int,
        reserve: int = 0,
        *,
        held: int = 0,
        message: str = "",
        hint: str = "",
    ) -> None:
        over = needed + reserve - window
        super().__init__(
            message or f"The prompt needs {needed} tokens but the context window holds {window} ({over} too many).",
            hint
            or "Shorten the message, start a new conversation (/new), "
            "or raise the window with --ctx if the model supports it.",
        )
        self.needed = needed
        self.window = window
        self.reserve = reserve
        self.held = held

    @property
    def capacity(self) -> int:
        """The window, in the engine's words."""
        return self.window

    @property
    def requested(self) -> int:
        """Tokens that would have to be added to what the cache already holds."""
        return self.needed - self.held


class InvalidRequest(EnclaveError):
    """A request to Enclave's API is malformed or names an impossible value; ``param``
    names the field at fault (OpenAI's error shape carries it)."""

    def __init__(self, message: str, hint: str = "", *, param: str | None = None) -> None:
        super().__init__(message, hint)
        self.param = param


class NotSupported(InvalidRequest):
    """A well-formed request asks for something this model or engine cannot do (constrained
    output without the capability, tool calls without a tool-call format, …)."""


class Busy(EnclaveError):
    """A model's queue is full; the request may be retried after ``retry_after`` seconds."""

    def __init__(self, message: str, hint: str = "", *, retry_after: int = 1) -> None:
        super().__init__(message, hint)
        self.retry_after = retry_after


class EngineStopped(EngineError):
    """The engine's worker process ended in the middle of a request (a native crash, the
    out-of-memory killer, a kill). Nothing in the front end is lost; the next request
    starts a fresh worker."""


class PrivacySealRequired(EnclaveError):
    """The ``privacy_seal`` setting is ``require`` and a layer of the sealed worker did
    not take effect on this system."""
