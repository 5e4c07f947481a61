"""The pipe between the front end and a sealed worker: length-prefixed JSON of typed records.

A frame is ``[4-byte header length][4-byte blob length][header: UTF-8 JSON][blob]``
(big-endian lengths). The header is one JSON object: a request or stream ``id`` and
one record, written as its class name (``op``) and its fields. The blob carries raw
bytes beside it (the embedder's float32 vectors: 32 x 384 floats are 49 KB raw
against ~250 KB as JSON numbers).

Why JSON and not pickle: the worker runs native code on untrusted inputs (a crafted
model file, a crafted PDF). If such an input ever took the worker over, a pickle
from it would run code in the front end, which holds the database and the cloud
key. JSON decodes to data only, and :func:`decode` accepts only the record classes
a protocol lists, checking every field against its annotation. Why not newline-
delimited JSON: a length prefix needs no scanning, carries binary beside the
header, and a stray byte cannot split a message. Measured in docs/privacy.md, one
JSON message per token over a pipe costs 12-17 us; a token of SmolLM2 takes ~10 ms.

This module is stdlib-only: the worker imports it before ``site`` runs.
"""

from __future__ import annotations

import dataclasses
import json
import struct
import threading
import types
import typing
from collections.abc import Callable, Iterable
from typing import IO, Any

LENGTHS = struct.Struct(">II")
#: Largest header or blob accepted. A turn's held tokens (8k ints) are ~50 KB; an
#: embedding batch of 256 x 384 float32 is 384 KB; parsed text of a 200 MB document
#: (the size limit for indexing) fits. Anything larger is a broken or hostile peer.
MAX_FRAME = 512 * 2**20


class ProtocolError(Exception):
    """A frame broke the protocol (bad length, bad JSON, unknown record, wrong field type)."""


def write_frame(stream: IO[bytes], header: dict[str, Any], blob: bytes = b"") -> None:
    """Write one frame and flush it (a token goes out when it is made).

    ASCII JSON: a path whose name is not UTF-8 arrives as a str with lone surrogates
    (Python's surrogateescape), which UTF-8 cannot encode; as ``\\udcXX`` escapes it
    crosses the pipe and comes back as the same str."""
    data = json.dumps(header, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    stream.write(LENGTHS.pack(len(data), len(blob)) + data + blob)
    stream.flush()


def read_frame(stream: IO[bytes]) -> tuple[dict[str, Any], bytes] | None:
    """The next frame, or ``None`` at a clean end of stream. Raises :class:`ProtocolError`."""
    prefix = _read_exactly(stream, LENGTHS.size)
    if prefix is None:
        return None
    size, blob_size = LENGTHS.unpack(prefix)
    if size > MAX_FRAME or blob_size > MAX_FRAME:
        raise ProtocolError(f"a frame of {size} + {blob_size} bytes exceeds the {MAX_FRAME}-byte limit")
    data = _read_exactly(stream, size)
    blob = _read_exactly(stream, blob_size) if blob_size else b""
    if data is None or blob is None:
        raise ProtocolError("the stream ended inside a frame")
    return decode_header(data), blob


def decode_header(data: bytes) -> dict[str, Any]:
    """A frame's header: one JSON object, or :class:`ProtocolError`."""
    try:
        header = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"a frame header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ProtocolError("a frame header is not a JSON object")
    return header


def _read_exactly(stream: IO[bytes], n: int) -> bytes | None:
    chunks: list[bytes] = []
    left = n
    while left:
        chunk = stream.read(left)
        if not chunk:
            if left == n:
                return None
            raise ProtocolError("the stream ended inside a frame")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


class Channel:
    """Both ends of a conversation over two byte streams; ``send`` may be called from any thread."""

    def __init__(self, reader: IO[bytes], writer: IO[bytes]) -> None:
        self._reader = reader
        self._writer = writer
        self._lock = threading.Lock()

    def send(self, header: dict[str, Any], blob: bytes = b"") -> None:
        with self._lock:
            write_frame(self._writer, header, blob)

    def receive(self) -> tuple[dict[str, Any], bytes] | None:
        """The next frame (one reader thread only), ``None`` at the end of the stream."""
        return read_frame(self._reader)

    def close(self) -> None:
        for stream in (self._writer, self._reader):
            try:
                stream.close()
            except OSError:
                pass


# --------------------------------------------------------------------------- typed records
Check = Callable[[Any], Any]


class Codec:
    """Encodes dataclass records to JSON objects and decodes them back, checking types.

    Only the classes given are known; a record names its class in ``op``. Field
    annotations are compiled into checks once per class, so decoding a token costs
    a dictionary look-up and a few ``isinstance`` calls.
    """

    def __init__(self, classes: Iterable[type[Any]]) -> None:
        self._classes: dict[str, type[Any]] = {}
        self._checks: dict[str, list[tuple[str, Check]]] = {}
        pending = list(classes)
        for cls in pending:
            if not dataclasses.is_dataclass(cls):
                raise TypeError(f"{cls!r} is not a dataclass")
            self._classes[cls.__name__] = cls
        for cls in pending:
            hints = typing.get_type_hints(cls)
            self._checks[cls.__name__] = [
                (f.name, self._check_for(hints[f.name])) for f in dataclasses.fields(cls) if f.init
            ]

    def encode(self, record: Any) -> dict[str, Any]:
        """``record`` as a JSON object: ``{"op": ClassName, field: value, ...}``."""
        name = type(record).__name__
        if self._classes.get(name) is not type(record):
            raise TypeError(f"{name} is not a record of this protocol")
        out: dict[str, Any] = {"op": name}
        for field, _ in self._checks[name]:
            out[field] = self._plain(getattr(record, field))
        return out

    def _plain(self, value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return self.encode(value)
        if isinstance(value, list | tuple):
            return [self._plain(v) for v in value]
        if isinstance(value, set | frozenset):
            return sorted(self._plain(v) for v in value)
        if isinstance(value, dict):
            return {str(k): self._plain(v) for k, v in value.items()}
        return value

    def decode(self, data: Any) -> Any:
        """The record ``data`` names; :class:`ProtocolError` for anything else."""
        if not isinstance(data, dict):
            raise ProtocolError(f"expected a record, got {type(data).__name__}")
        name = data.get("op")
        cls = self._classes.get(name) if isinstance(name, str) else None
        if cls is None or not isinstance(name, str):
            raise ProtocolError(f"unknown record {name!r}")
        values = {}
        for field, check in self._checks[name]:
            if field in data:
                try:
                    values[field] = check(data[field])
                except ProtocolError as exc:
                    raise ProtocolError(f"{name}.{field}: {exc}") from None
        try:
            return cls(**values)
        except TypeError as exc:
            raise ProtocolError(f"{name}: {exc}") from None

    # -- checks compiled from annotations
    def _check_for(self, hint: Any) -> Check:
        simple = _simple_check(hint)
        if simple is not None:
            return simple
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
        if origin is typing.Literal:
            return _literal(set(args))
        if origin in (typing.Union, types.UnionType):
            return _union(hint, [self._check_for(a) for a in args])
        if origin in (list, tuple, frozenset) or hint in (list, tuple, frozenset):
            make: Callable[[Iterable[Any]], Any] = (
                tuple if tuple in (origin, hint) else frozenset if frozenset in (origin, hint) else list
            )
            return _sequence(self._check_for(args[0]) if args else _json_value, make)
        if origin is dict or hint is dict:
            return _mapping(self._check_for(args[1]) if len(args) == 2 else _json_value)
        if isinstance(hint, type) and hint.__name__ in self._classes:
            return self.decode
        raise TypeError(f"no wire form for the annotation {hint!r}")


def _simple_check(hint: Any) -> Check | None:
    """The check of a plain annotation (Any, None, bool, int, float, str), else None."""
    if hint is Any:
        return _json_value
    if hint is int:
        return _integer
    if hint is float:
        return _number
    for kind in (type(None), bool, str):
        if hint is kind:
            return _exact(kind)
    return None


def _literal(allowed: set[Any]) -> Check:
    def literal(value: Any) -> Any:
        if value not in allowed:
            raise ProtocolError(f"{value!r} is not one of {sorted(map(str, allowed))}")
        return value

    return literal


def _union(hint: Any, options: list[Check]) -> Check:
    def union(value: Any) -> Any:
        for option in options:
            try:
                return option(value)
            except ProtocolError:
                continue
        raise ProtocolError(f"{value!r} does not match {hint}")

    return union


def _sequence(item: Check, make: Callable[[Iterable[Any]], Any]) -> Check:
    def sequence(value: Any) -> Any:
        if not isinstance(value, list):
            raise ProtocolError(f"expected a list, got {type(value).__name__}")
        return make(item(v) for v in value)

    return sequence


def _mapping(item: Check) -> Check:
    def mapping(value: Any) -> Any:
        if not isinstance(value, dict):
            raise ProtocolError(f"expected an object, got {type(value).__name__}")
        return {str(k): item(v) for k, v in value.items()}

    return mapping


def _exact(kind: type) -> Check:
    def check(value: Any) -> Any:
        if type(value) is not kind:
            raise ProtocolError(f"expected {kind.__name__}, got {type(value).__name__}")
        return value

    return check


def _integer(value: Any) -> int:
    if type(value) is not int:
        raise ProtocolError(f"expected int, got {type(value).__name__}")
    return value


def _number(value: Any) -> float:
    if type(value) not in (int, float):
        raise ProtocolError(f"expected a number, got {type(value).__name__}")
    return float(value)


def _json_value(value: Any) -> Any:
    return value  # json.loads only ever makes dict, list, str, int, float, bool, None
