"""Constrained decoding (llguidance) and the repetition penalty behind the engine seam,
on both engines' tiny test models: the capability flags say what works, a constraint
is honoured, the session stays usable after it, an unsupported grammar fails with a
message, not a native crash."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from assistant.core.errors import EngineError
from assistant.core.events import Constraint, Done, Error, GenerationOptions, TextDelta
from assistant.engines.base import Engine, Session
from tests.engines.test_contract import _engine, messages, tokens

QUOTES = r'(\[1\] "abc def")|(\[2\] "hello world")|Not found in the sources\.'


def answer(engine: Engine, session: Session, options: GenerationOptions, text: str = "Say something") -> tuple[str, Done | Error]:
    msgs = messages(text)
    out, end = [], None
    for event in session.generate(tokens(engine, msgs), options, messages=msgs):
        if isinstance(event, TextDelta):
            out.append(event.text)
        elif isinstance(event, Done | Error):
            end = event
    assert end is not None
    return "".join(out), end


@pytest.fixture
def onnx(tiny_dir: Path, tmp_path: Path) -> Iterator[Engine]:
    engine = _engine("onnx", tiny_dir, tmp_path)
    yield engine
    engine.close()


@pytest.fixture
def litert(tiny_dir: Path, tmp_path: Path) -> Iterator[Engine]:
    engine = _engine("litert", tiny_dir, tmp_path)
    yield engine
    engine.close()


def test_onnx_honours_every_grammar_kind(onnx: Engine) -> None:
    caps = onnx.capabilities
    assert caps.constrained and caps.constraint_kinds == {"json_schema", "regex", "lark"}
    session = onnx.open_session(512)
    text, done = answer(onnx, session, GenerationOptions(max_tokens=40, constraint=Constraint("regex", QUOTES)))
    assert isinstance(done, Done) and re.fullmatch(QUOTES, text), text
    text, _ = answer(onnx, session, GenerationOptions(max_tokens=8, constraint=Constraint("lark", 'start: "yes" | "no"')))
    assert text in ("yes", "no")
    schema = {
        "type": "object",
        "properties": {"port": {"type": "integer", "minimum": 1, "maximum": 65535}},
        "required": ["port"],
        "additionalProperties": False,
        "x-guidance": {"whitespace_flexible": False},
    }
    text, _ = answer(onnx, session, GenerationOptions(max_tokens=20, constraint=Constraint("json_schema", json.dumps(schema))))
    assert 1 <= json.loads(text)["port"] <= 65535
    # The constrained generator is spent: the next plain turn runs as usual.
    text, done = answer(onnx, session, GenerationOptions(max_tokens=6, stop_on_repetition=False))
    assert isinstance(done, Done) and done.reason == "length"


def test_repetition_penalty_changes_the_greedy_answer(onnx: Engine) -> None:
    runs = []
    for penalty in (1.0, 1.5):
        session = onnx.open_session(512)
        answer(onnx, session, GenerationOptions(max_tokens=40, repetition_penalty=penalty, stop_on_repetition=False), "pump")
        runs.append(session.tokens)
    assert runs[0] != runs[1]


def test_litert_takes_regex_and_schemas_not_lark(litert: Engine) -> None:
    caps = litert.capabilities
    assert caps.constrained and caps.constraint_kinds == {"json_schema", "regex"}
    session = litert.open_session(512)
    with pytest.raises(EngineError, match="lark"):
        answer(litert, session, GenerationOptions(max_tokens=8, constraint=Constraint("lark", 'start: "a"')))
    # A grammar without spaces works on this byte-level bundle.
    text, done = answer(litert, session, GenerationOptions(max_tokens=16, constraint=Constraint("regex", r'\[1\]"abc"|\[2\]"hello"')))
    assert isinstance(done, Done) and text in ('[1]"abc"', '[2]"hello"')
    schema = json.dumps({"type": "object", "properties": {"a": {"type": "integer", "maximum": 9, "minimum": 0}},
                         "required": ["a"], "additionalProperties": False})  # fmt: skip
    text, done = answer(litert, session, GenerationOptions(max_tokens=16, constraint=Constraint("json_schema", schema)))
    assert 0 <= json.loads(text)["a"] <= 9


def test_litert_byte_level_bundle_says_it_cannot_write_spaces_under_a_grammar(litert: Engine) -> None:
    session = litert.open_session(512)
    _, end = answer(litert, session, GenerationOptions(max_tokens=30, constraint=Constraint("regex", QUOTES)))
    assert isinstance(end, Error) and "byte-level tokenizer" in str(end.error)
    assert not litert.capabilities.constrained  # no longer offered
    # The session still answers plain turns.
    _, done = answer(litert, session, GenerationOptions(max_tokens=6, stop_on_repetition=False))
    assert isinstance(done, Done)


def test_litert_writes_spaces_as_sentencepiece_pieces() -> None:
    from assistant.engines.litert_lm import sentencepiece_regex

    assert sentencepiece_regex(r'\[1\] "a b"|x\ y|[ z]\s') == '\\[1\\]▁"a▁b"|x▁y|[▁z][\\s▁]'
