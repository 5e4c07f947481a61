"""The structured-output policy (assistant/app/structured.py) without a model: how a
schema is bounded to the token budget or refused, and how a finished answer is checked
again (llguidance replaying it byte by byte, jsonschema on the parsed object)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from assistant.app.structured import (
    FormatError,
    bound_schema,
    grammar_format,
    regex_format,
    schema_format,
    schema_mismatch,
)


def test_open_sizes_get_bounds_that_fit_the_budget_and_are_told() -> None:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 0},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "when": {"type": "string", "format": "date"},
            "kind": {"enum": ["a", "b"]},
        },
    }
    bounded, notices = bound_schema(schema, 256, "s.json")
    props = bounded["properties"]
    assert bounded["additionalProperties"] is False
    assert props["age"] == {"type": "integer", "minimum": 0, "maximum": 10**15 - 1}  # the given minimum stays
    assert props["tags"]["maxItems"] >= 1 and props["tags"]["items"]["maxLength"] == props["name"]["maxLength"]
    assert "maxLength" not in props["when"] and "maxLength" not in props["kind"]  # already bounded
    assert schema["properties"]["name"] == {"type": "string"}  # the user's schema is not changed
    # The longest answer the bounded schema allows fits the budget, in characters.
    longest = {"name": "x" * props["name"]["maxLength"], "age": 10**15 - 1, "when": "2026-12-02", "kind": "a",
               "tags": ["y" * props["tags"]["items"]["maxLength"]] * props["tags"]["maxItems"]}  # fmt: skip
    jsonschema.validate(longest, bounded)
    assert len(json.dumps(longest, separators=(",", ":"))) <= 256
    (notice,) = notices
    assert notice.startswith("s.json leaves some sizes open; bounded to fit --max-tokens 256:")
    assert f"/properties/name: maxLength {props['name']['maxLength']}" in notice


def test_a_bigger_budget_gives_bigger_bounds() -> None:
    schema = {"type": "object", "properties": {"text": {"type": "string"}}, "additionalProperties": False}
    small, _ = bound_schema(schema, 64)
    large, notices = bound_schema(schema, 2048)
    assert small["properties"]["text"]["maxLength"] < large["properties"]["text"]["maxLength"] == 256
    assert "additionalProperties" not in notices[0]  # it was closed already


def test_a_schema_with_nothing_open_is_unchanged() -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "additionalProperties": False}
    assert bound_schema(schema, 16) == (schema, ())


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "object"}, "an object with any keys"),
        ({"type": "object", "additionalProperties": {"type": "integer"}}, "any number of keys"),
        ({"type": "object", "patternProperties": {"^a": {"type": "integer"}}, "properties": {}}, "any number of keys"),
        ({"type": "object", "properties": {"x": {}}}, "at /properties/x: any JSON value"),
        ({"$defs": {"n": {"type": "array", "items": {"$ref": "#/$defs/n"}}}, "$ref": "#/$defs/n"}, "recursive"),
        ({"type": "object", "properties": {"x": {"$ref": "http://example.com/s.json"}}}, "not inside the schema"),
    ],
)
def test_what_cannot_be_bounded_is_refused_with_where_and_the_fix(schema: dict[str, Any], expected: str) -> None:
    with pytest.raises(FormatError, match="no size limit") as caught:
        bound_schema(schema, 512)
    assert expected in caught.value.message and caught.value.hint.startswith("In the schema, ")
    assert caught.value.exit_code == 2


def test_a_schema_too_big_for_the_budget_names_the_tokens_it_needs() -> None:
    schema = {"type": "array", "items": {"type": "string", "maxLength": 10}, "maxItems": 20}
    with pytest.raises(FormatError) as caught:
        bound_schema(schema, 100)
    assert "up to 261 characters" in caught.value.message and "at least 261" in caught.value.hint
    assert "even with" not in caught.value.message  # nothing was open to shrink
    assert bound_schema(schema, 261)[0] == schema  # 20 strings of 12, 19 commas, 2 brackets


def schema_file(tmp_path: Path, schema: dict[str, Any]) -> str:
    path = tmp_path / "s.json"
    path.write_text(json.dumps(schema))
    return str(path)


def test_a_schema_answer_is_checked_against_the_grammar_the_limit_and_the_schema(tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9}},
              "required": ["n"], "additionalProperties": False}  # fmt: skip
    fmt = schema_format(schema_file(tmp_path, schema), 64)
    assert '"whitespace_flexible": false' in fmt.constraint.grammar
    good = fmt.check('{"n":7}', "stop")
    assert good.valid and good.parsed == {"n": 7} and good.as_dict() == {"format": "json_schema", "valid": True, "parsed": {"n": 7}}
    cut = fmt.check('{"n":', "length", 3)
    assert not cut.valid and cut.reason == "it stopped at the token limit (--max-tokens 3) before it was complete"
    assert "parsed" not in cut.as_dict() and cut.as_dict()["invalid_reason"] == cut.reason
    outside = fmt.check('{"n":12}', "stop")
    assert not outside.valid and "leaves the grammar at character 7 ('2')" in str(outside.reason)
    assert not fmt.check('{"n":', "stop").valid  # ended early without hitting the limit
    assert not fmt.check('{"n":7}', "cancelled").valid


def test_a_complete_answer_that_used_every_token_is_valid(tmp_path: Path) -> None:
    fmt = schema_file(tmp_path, {"type": "boolean"})
    assert schema_format(fmt, 8).check("true", "length", 1).valid


def test_an_answer_that_matches_at_the_limit_is_valid_and_one_that_needed_more_is_not() -> None:
    """Found by a tester: "the sea is a vast" for '[a-z ]+' at --max-tokens was reported
    as not matching the pattern (exit 4), though it does: the pattern allowed more, it
    did not need more. finish_reason "length" says it was cut."""
    fmt = regex_format("[a-z ]+")
    assert fmt.check("the sea is a vast", "stop").valid
    assert fmt.check("the sea is a vast", "length", 5).valid
    assert regex_format("yes|no").check("no", "length", 1).valid  # nothing more was possible
    needs_more = regex_format("[a-z]+ [0-9]+")
    cut = needs_more.check("abc ", "length", 2)
    assert not cut.valid and cut.reason == "it stopped at the token limit (--max-tokens 2) before it was complete"


def test_a_lark_answer_is_replayed_through_the_grammar(tmp_path: Path) -> None:
    path = tmp_path / "g.lark"
    path.write_text('start: "a" "b"+\n')
    fmt = grammar_format(str(path))
    assert fmt.check("abbb", "stop").valid
    assert not fmt.check("ac", "stop").valid


def test_keywords_beside_a_combinator_bound_it_together() -> None:
    # anyOf of bare "required" branches: the object's own properties bound the answer.
    schema = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "boolean"}},
              "anyOf": [{"required": ["a"]}, {"required": ["b"]}]}  # fmt: skip
    bounded, _ = bound_schema(schema, 64)
    assert bounded["properties"]["a"]["maxLength"] <= 64 and bounded["additionalProperties"] is False
    # allOf: one part with a type is enough; anyOf: each branch is bounded.
    assert bound_schema({"allOf": [{"type": "boolean"}, {"description": "x"}]}, 8)[1] == ()
    nullable, _ = bound_schema({"anyOf": [{"type": "string"}, {"type": "null"}]}, 40)
    assert nullable["anyOf"][0]["maxLength"] <= 38
    with pytest.raises(FormatError, match="any JSON value"):
        bound_schema({"anyOf": [{"type": "boolean"}, {}]}, 64)


def test_a_mismatch_names_the_place_and_the_rule() -> None:
    """What the server's response_format check and the CLI's schema check report."""
    schema = {"type": "object", "properties": {"port": {"type": "integer", "maximum": 65535}}, "required": ["port"]}
    assert schema_mismatch(schema, {"port": 3493}) is None
    assert schema_mismatch(schema, {"port": 70000}) == "at /port: 70000 is greater than the maximum of 65535"
    missing = schema_mismatch(schema, {})
    assert missing is not None and missing.startswith("at /:") and "'port' is a required property" in missing
