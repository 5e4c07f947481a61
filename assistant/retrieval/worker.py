"""Parse untrusted documents in a sealed child process with memory and time limits.

A malformed PDF can loop for minutes or allocate gigabytes; a crafted .docx can be
a zip bomb. The parent (the indexer) must survive all of it and carry on, so
parsing happens in a long-lived sealed worker (``seal.py parse``: no network, see
:mod:`assistant.privacy.seal`) that caps its own address space. The parent sends one
request per file and waits for the answer with a deadline; a child that overruns is
killed and replaced, and the file is reported as skipped with the reason.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assistant.core.errors import EnclaveError
from assistant.privacy.wire import Codec
from assistant.privacy.worker import COMMON, Reply, SealedProcess, Server, Stopped
from assistant.retrieval.parsers import Block, Parsed, Unreadable, parse

__all__ = ["ParseFailed", "Parsed", "ParserPool"]


class ParseFailed(Exception):
    """The file was skipped; ``str(exc)`` is the reason."""


@dataclass(frozen=True)
class ParseRequest:
    path: str
    max_bytes: int


@dataclass(frozen=True)
class ParseReply:
    kind: str
    blocks: list[Block]
    note: str = ""
    title: str = ""


@dataclass(frozen=True)
class ParseRefused:
    reason: str


CODEC = Codec([*COMMON, ParseRequest, ParseReply, ParseRefused, Block])


class ParserPool:
    """One parsing worker, restarted whenever it dies or overruns its deadline."""

    def __init__(self, timeout: float = 60.0, memory_mb: int = 1024, max_bytes: int = 200 * 2**20) -> None:
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.max_bytes = max_bytes
        self._proc: SealedProcess | None = None

    def parse(self, path: Path) -> Parsed:
        """Parse ``path`` in the worker. Raises :class:`ParseFailed` with the reason."""
        if self._proc is None or not self._proc.alive:
            try:
                self._proc = SealedProcess("parse", CODEC, memory_mb=self.memory_mb)
            except EnclaveError as exc:
                raise ParseFailed(f"the parser process could not start ({exc.message})") from None
        proc = self._proc
        try:
            reply, _ = proc.call(ParseRequest(str(path), self.max_bytes), timeout=self.timeout)
        except TimeoutError:
            self._kill()
            raise ParseFailed(f"parsing took longer than {self.timeout:g} s (setting docs_parse_timeout)") from None
        except EnclaveError as exc:
            raise ParseFailed(exc.message) from None
        if isinstance(reply, Stopped):
            self._proc = None
            code = reply.returncode
            if code is not None and code < 0 and code != -9:
                raise ParseFailed(f"the parser crashed on it ({reply.describe()})")
            raise ParseFailed(f"the parser ran out of memory (limit {self.memory_mb} MiB) or crashed")
        if isinstance(reply, ParseRefused):
            raise ParseFailed(reply.reason)
        if not isinstance(reply, ParseReply):
            raise ParseFailed(f"the parser answered {type(reply).__name__}")
        return Parsed(reply.kind, list(reply.blocks), reply.note, reply.title)

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc = None

    def kill(self) -> None:
        """Stop the worker now, even while another thread waits for its answer (that
        parse then fails): for an interrupted run, which will not use the answer."""
        self._kill()

    def close(self) -> None:
        if self._proc is not None:
            self._proc.close()
            self._proc = None

    def __enter__(self) -> ParserPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _handle(request: Any, reply: Reply) -> None:
    if not isinstance(request, ParseRequest):
        raise ValueError(f"the parser does not handle {type(request).__name__}")
    answer: ParseReply | ParseRefused
    try:
        parsed = parse(Path(request.path), request.max_bytes)
        answer = ParseReply(parsed.kind, parsed.blocks, parsed.note, parsed.title)
    except Unreadable as exc:
        answer = ParseRefused(str(exc))
    except MemoryError:
        answer = ParseRefused("the parser ran out of memory on it")
    except RecursionError:
        answer = ParseRefused("too deeply nested to parse")
    except Exception as exc:  # noqa: BLE001 - any parser bug is one skipped file, not a dead run
        last = traceback.extract_tb(exc.__traceback__)[-1]
        answer = ParseRefused(f"parser error {type(exc).__name__}: {str(exc)[:100]} ({last.name})")
    reply(answer, end=True)


def serve(server: Server) -> None:
    """The ``parse`` service of a sealed worker (its memory limit set by the seal's start)."""
    server.run(CODEC, _handle)
