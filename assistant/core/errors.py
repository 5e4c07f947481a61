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


class EngineError(EnclaveError):
    """An engine failed while loading or generating."""


class EngineUnavailable(EnclaveError):
    """The engine's runtime package is not installed or cannot run here."""


class ContextExhausted(EnclaveError):
    """A request needs more tokens than the model's context window holds.

    Carries the numbers so that callers can decide what to drop: ``held`` tokens
    already in the KV cache that would be kept, ``requested`` tokens to add, and
    the session's ``capacity``.
    """

    def __init__(self, held: int, requested: int, capacity: int, hint: str = "") -> None:
        over = held + requested - capacity
        message = (
            f"The prompt needs {held + requested} tokens but the context window holds {capacity} ({over} too many)."
        )
        super().__init__(
            message,
            hint
            or "Shorten the message, start a new conversation (/new), "
            "or raise the window with --ctx if the model supports it.",
        )
        self.held = held
        self.requested = requested
        self.capacity = capacity
