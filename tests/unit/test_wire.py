"""The pipe to a sealed worker carries data only: typed records, checked field by field.

A worker that a crafted input took over can send anything; the front end must decode
nothing but the records its protocol lists, with the types their annotations say.
"""

from __future__ import annotations

import io
import json
import struct

import pytest

from assistant.core.events import Done, GenerationOptions, TextDelta, Usage
from assistant.engines.base import ModelInfo
from assistant.engines.protocol import CODEC, Generate, Held, Loaded
from assistant.privacy.wire import MAX_FRAME, ProtocolError, read_frame, write_frame


def test_records_round_trip_through_a_frame() -> None:
    records = [
        TextDelta("café 😀"),
        Usage(10, 4, 3, 1.5, 1.0, 2.0),
        Done("stop", "answer"),
        Held([1, 2, 3]),
        Generate(1, [5, 6], GenerationOptions(max_tokens=4, seed=None), [{"role": "user", "content": "hi"}], [2]),
        Loaded("onnx", ModelInfo("m", "/p", 2048, (2,), {"has_chat_template": True}), CODEC.decode({"op": "Capabilities"})),
    ]
    stream = io.BytesIO()
    for record in records:
        write_frame(stream, {"id": 7, **CODEC.encode(record)}, b"\x00\x01")
    stream.seek(0)
    for record in records:
        frame = read_frame(stream)
        assert frame is not None
        header, blob = frame
        assert header.pop("id") == 7 and blob == b"\x00\x01"
        assert CODEC.decode(header) == record
    assert read_frame(stream) is None  # a clean end


@pytest.mark.parametrize(
    "data",
    [
        {"op": "Popen", "args": ["sh"]},  # not a record of the protocol
        {"op": "__builtins__"},
        {"op": "TextDelta", "text": 5},  # wrong type
        {"op": "Held", "tokens": [1, "2"]},
        {"op": "Held", "tokens": [True]},  # a bool is not a token id
        {"op": "Done", "reason": "stop"},  # a field missing
        {"op": "Usage", "prompt_tokens": 1.5, "prefilled_tokens": 1, "completion_tokens": 1,
         "ttft_ms": 1, "prefill_ms": 1, "decode_ms": 1},  # fmt: skip
        ["TextDelta", "x"],
        {"op": "Loaded", "engine": "onnx", "info": {"op": "Popen"}, "capabilities": {"op": "Capabilities"}},
    ],
)
def test_anything_else_is_refused(data: object) -> None:
    with pytest.raises(ProtocolError):
        CODEC.decode(data)


def test_broken_frames_are_refused() -> None:
    too_big = io.BytesIO(struct.pack(">II", MAX_FRAME + 1, 0))
    with pytest.raises(ProtocolError, match="exceeds"):
        read_frame(too_big)
    cut = io.BytesIO(struct.pack(">II", 50, 0) + b'{"op": "Te')
    with pytest.raises(ProtocolError, match="ended inside a frame"):
        read_frame(cut)
    not_json = b"\xff\xfe not json"
    with pytest.raises(ProtocolError, match="not JSON"):
        read_frame(io.BytesIO(struct.pack(">II", len(not_json), 0) + not_json))
    array = json.dumps([1, 2]).encode()
    with pytest.raises(ProtocolError, match="not a JSON object"):
        read_frame(io.BytesIO(struct.pack(">II", len(array), 0) + array))
