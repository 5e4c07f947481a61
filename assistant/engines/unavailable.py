"""A stand-in engine for when the local model cannot be loaded.

With cloud fallback configured, a conversation can still be opened: every local
turn fails with the load error (as an :class:`~assistant.core.errors.EngineError`), which
is exactly the failure front ends answer by offering the cloud (with preview and
consent). Nothing here runs a model; the tokenizer counts UTF-8 bytes, an upper
bound on tokens, so context fitting stays on the safe side.
"""

from __future__ import annotations

from collections.abc import Sequence

from assistant.core.errors import EnclaveError, EngineError
from assistant.core.events import GenerationOptions
from assistant.engines.base import Capabilities, Engine, ModelInfo, Session, Tokenizer, TokenSession


class _ByteTokenizer(Tokenizer):
    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, tokens: Sequence[int]) -> str:
        return bytes(tokens).decode("utf-8", errors="replace")

    def render(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True) -> str:
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
        return text + ("assistant: " if add_generation_prompt else "")


class _FailingSession(TokenSession):
    def _fail(self) -> EngineError:
        problem = self.engine.problem  # type: ignore[attr-defined]
        return EngineError(f"The local model is not available: {problem.message}", problem.hint)

    def _append(self, tokens: list[int]) -> None:
        raise self._fail()

    def _rewind(self, n: int) -> None:
        pass

    def _reset(self) -> None:
        pass

    def _decode_step(self, options: GenerationOptions) -> int:
        raise self._fail()


class UnavailableEngine(Engine):
    """Holds the reason the real engine could not load; its sessions never generate."""

    name = "unavailable"
    capabilities = Capabilities(rewind=False, cancel=True, token_count=False)

    def __init__(self, model_name: str, problem: EnclaveError, context_length: int) -> None:
        super().__init__(ModelInfo(name=model_name, path="", context_length=context_length), _ByteTokenizer())
        self.problem = problem

    def open_session(self, capacity: int) -> Session:
        return _FailingSession(self, capacity)
