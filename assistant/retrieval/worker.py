"""Parse untrusted documents in a child process with memory and time limits.

A malformed PDF can loop for minutes or allocate gigabytes; a crafted .docx can be
a zip bomb. The parent (the indexer) must survive all of it and carry on, so
parsing happens in a long-lived child (``python -m assistant.retrieval.worker``)
that caps its own address space. The parent sends one JSON request per line and
waits for the answer with a deadline; a child that overruns is killed and
replaced, and the file is reported as skipped with the reason.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assistant.retrieval.parsers import Block, Unreadable, parse


@dataclass
class Parsed:
    kind: str
    blocks: list[Block]
    note: str = ""


class ParseFailed(Exception):
    """The file was skipped; ``str(exc)`` is the reason."""


class ParserPool:
    """One parsing child, restarted whenever it dies or overruns its deadline."""

    def __init__(self, timeout: float = 60.0, memory_mb: int = 1024, max_bytes: int = 200 * 2**20) -> None:
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.max_bytes = max_bytes
        self._proc: subprocess.Popen[bytes] | None = None
        self._lines: queue.Queue[bytes | None] = queue.Queue()

    def _start(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ, ENCLAVE_PARSER_MEMORY_MB=str(self.memory_mb))
        proc = subprocess.Popen(
            [sys.executable, "-m", "assistant.retrieval.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        self._lines = queue.Queue()
        lines = self._lines
        stdout = proc.stdout
        assert stdout is not None

        def pump() -> None:
            for line in stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, name="enclave-parser-pipe", daemon=True).start()
        return proc

    def parse(self, path: Path) -> Parsed:
        """Parse ``path`` in the child. Raises :class:`ParseFailed` with the reason."""
        if self._proc is None or self._proc.poll() is not None:
            self._proc = self._start()
        proc = self._proc
        assert proc.stdin is not None
        request = json.dumps({"path": str(path), "max_bytes": self.max_bytes}) + "\n"
        try:
            proc.stdin.write(request.encode())
            proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self._kill()
            raise ParseFailed("the parser process could not start") from None
        try:
            line = self._lines.get(timeout=self.timeout)
        except queue.Empty:
            self._kill()
            raise ParseFailed(f"parsing took longer than {self.timeout:g} s (setting docs_parse_timeout)") from None
        if line is None:
            code = proc.wait()
            self._proc = None
            if code in (-9, 137) or code < 0:
                raise ParseFailed(f"the parser crashed on it (signal {-code})")
            raise ParseFailed(f"the parser ran out of memory (limit {self.memory_mb} MiB) or crashed")
        reply = json.loads(line)
        if not reply["ok"]:
            raise ParseFailed(reply["reason"])
        return Parsed(reply["kind"], [Block(*b) for b in reply["blocks"]], reply.get("note", ""))

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            assert self._proc.stdin is not None
            try:
                self._proc.stdin.close()
                self._proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._kill()

    def __enter__(self) -> ParserPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _limit_memory() -> None:
    megabytes = int(os.environ.get("ENCLAVE_PARSER_MEMORY_MB", "1024"))
    try:
        import resource

        limit = megabytes * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):  # not on this platform: the deadline still holds
        pass


def _serve() -> None:
    _limit_memory()
    out = sys.stdout.buffer
    for raw in sys.stdin.buffer:
        request = json.loads(raw)
        try:
            kind, blocks, note = parse(Path(request["path"]), int(request["max_bytes"]))
            reply: dict[str, Any] = {"ok": True, "kind": kind, "blocks": [b.as_list() for b in blocks], "note": note}
        except Unreadable as exc:
            reply = {"ok": False, "reason": str(exc)}
        except MemoryError:
            reply = {"ok": False, "reason": "the parser ran out of memory on it"}
        except RecursionError:
            reply = {"ok": False, "reason": "too deeply nested to parse"}
        except Exception as exc:  # noqa: BLE001 - any parser bug is one skipped file, not a dead run
            last = traceback.extract_tb(exc.__traceback__)[-1]
            reply = {"ok": False, "reason": f"parser error {type(exc).__name__}: {str(exc)[:100]} ({last.name})"}
        out.write(json.dumps(reply, ensure_ascii=True).encode() + b"\n")
        out.flush()


if __name__ == "__main__":
    _serve()
