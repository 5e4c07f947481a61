"""`enclave ask --schema / --regex / --grammar` through the real CLI (a subprocess, the
sealed worker, both engines' tiny models): constrained answers that validate, each bad
input a one-line usage error before any model loads, and an answer cut at the token
limit reported as invalid (exit 4), never as valid."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping
from pathlib import Path

import jsonschema
import pytest

from tests.cli.test_cli import enclave

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "tests" / "assets" / "tiny-gemma.litertlm"

SERVER: dict[str, object] = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "tls": {"type": "boolean"},
    },
    "required": ["name", "port", "tls"],
}


@pytest.fixture
def home(enclave_home: Path, tiny_dir: Path, tmp_path: Path) -> Path:
    """Both tiny models: `tiny` (onnx) and `tiny-gemma` (litert)."""
    enclave("models", "add", str(tiny_dir), "--name", "tiny", home=enclave_home)
    bundle = tmp_path / "tiny-gemma.litertlm"
    shutil.copyfile(BUNDLE, bundle)
    enclave("models", "add", str(bundle), home=enclave_home)
    return enclave_home


def write(tmp_path: Path, name: str, content: str | Mapping[str, object]) -> str:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def ask_json(home: Path, *args: str, check: bool = True) -> tuple[dict[str, object], str, int]:
    proc = enclave("ask", "--json", *args, home=home, check=check)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout  # one JSON object, nothing else on stdout
    return json.loads(lines[0]), proc.stderr, proc.returncode


def test_a_schema_answer_validates_and_json_carries_the_parsed_object(home: Path, tmp_path: Path) -> None:
    schema = write(tmp_path, "server.json", SERVER)
    data, stderr, _ = ask_json(home, "-m", "tiny", "--schema", schema, "--max-tokens", "200", "Describe a web server")
    assert data["format"] == "json_schema" and data["valid"] is True and data["finish_reason"] == "stop"
    parsed = data["parsed"]
    assert parsed == json.loads(str(data["text"]))
    jsonschema.validate(parsed, SERVER)
    assert isinstance(parsed, dict) and set(parsed) == {"name", "port", "tls"}  # additionalProperties bounded
    # The open string was bounded to fit the token limit, and the user was told.
    assert "bounded to fit --max-tokens 200" in stderr and "/properties/name: maxLength 128" in stderr
    assert len(parsed["name"]) <= 128


def test_a_schema_answer_on_litert(home: Path, tmp_path: Path) -> None:
    # No free string: litert-lm 0.18.1 reads a byte-level bundle's pieces literally, so a
    # free string can come out with a raw newline (the check after generation says so).
    schema = {"type": "object", "properties": {"port": {"type": "integer", "minimum": 1, "maximum": 9999},
              "tls": {"type": "boolean"}, "mode": {"enum": ["fast", "safe"]}}, "required": ["port", "tls", "mode"]}  # fmt: skip
    data, _, _ = ask_json(home, "-m", "tiny-gemma", "--schema", write(tmp_path, "s.json", schema), "Configure it")
    assert data["engine"] == "litert" and data["valid"] is True
    jsonschema.validate(data["parsed"], schema)


def test_litert_free_strings_that_come_out_broken_are_caught(home: Path, tmp_path: Path) -> None:
    data, stderr, code = ask_json(home, "-m", "tiny-gemma", "--schema", write(tmp_path, "s.json", SERVER),
                                  "--max-tokens", "200", "Describe a web server", check=False)  # fmt: skip
    # Whatever the bundle writes, the result and the exit status agree with a real check.
    try:
        jsonschema.validate(json.loads(str(data["text"])), SERVER)
        really_valid = True
    except (ValueError, jsonschema.ValidationError):
        really_valid = False
    assert data["valid"] is really_valid and (code == 0) is really_valid
    if not really_valid:
        assert "does not match the schema" in stderr and "parsed" not in data


def test_a_schema_can_come_from_stdin(home: Path) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    proc = enclave("ask", "-m", "tiny", "--json", "--schema", "-", "Is it?", home=home, stdin=json.dumps(schema))
    data = json.loads(proc.stdout)
    assert data["valid"] is True and isinstance(data["parsed"]["ok"], bool)


@pytest.mark.parametrize("model", ["tiny", "tiny-gemma"])
def test_a_regex_answer_matches_all_of_it(home: Path, model: str) -> None:
    # No space in the pattern: litert-lm 0.18 cannot write one on a byte-level vocabulary.
    pattern = r"(yes|no)-[0-9]{3}"
    proc = enclave("ask", "-m", model, "--regex", pattern, "Yes or no, and a number?", home=home)
    assert re.fullmatch(pattern, proc.stdout.strip()), proc.stdout
    data, _, _ = ask_json(home, "-m", model, "--regex", pattern, "Yes or no?")
    assert data["valid"] is True and data["format"] == "regex" and "parsed" not in data


def test_a_lark_grammar_answer_on_onnx_and_a_clear_refusal_on_litert(home: Path, tmp_path: Path) -> None:
    grammar = write(tmp_path, "answer.lark", 'start: verdict "." \nverdict: "yes" | "no" | "maybe"\n')
    proc = enclave("ask", "-m", "tiny", "--grammar", grammar, "Will it rain?", home=home)
    assert proc.stdout.strip() in ("yes.", "no.", "maybe.")
    refused = enclave("ask", "-m", "tiny-gemma", "--grammar", grammar, "Will it rain?", home=home, check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "cannot constrain an answer to a lark grammar" in refused.stderr and "--engine onnx" in refused.stderr


@pytest.mark.parametrize("model", ["tiny", "tiny-gemma"])
def test_an_answer_cut_at_the_token_limit_is_reported_invalid(home: Path, model: str) -> None:
    # The grammar wants 60 letters; 5 tokens cannot hold them.
    proc = enclave("ask", "-m", model, "--regex", "[a-z]{60}", "--max-tokens", "5", "Spell", home=home, check=False)
    assert proc.returncode == 4 and "Traceback" not in proc.stderr
    assert "does not match the regular expression '[a-z]{60}'" in proc.stderr
    assert "stopped at the token limit (--max-tokens 5)" in proc.stderr and "Raise --max-tokens" in proc.stderr
    data, _, code = ask_json(home, "-m", model, "--regex", "[a-z]{60}", "--max-tokens", "5", "Spell", check=False)
    assert code == 4
    assert data["valid"] is False and data["finish_reason"] == "length" and "parsed" not in data
    assert "token limit" in str(data["invalid_reason"])


def test_a_schema_answer_cut_mid_object_is_never_shown_as_valid(home: Path, tmp_path: Path) -> None:
    # 30 characters of the tiny model's random text take more tokens than characters
    # (multi-byte pieces): the 41 tokens the worst case needs in characters do not suffice.
    schema = {"type": "object", "properties": {"name": {"type": "string", "minLength": 30, "maxLength": 30}},
              "required": ["name"], "additionalProperties": False}  # fmt: skip
    path = write(tmp_path, "name.json", schema)
    data, stderr, code = ask_json(home, "-m", "tiny", "--schema", path, "--max-tokens", "41", "Name it", check=False)
    assert data["finish_reason"] == "length", data  # the premise: it did run out
    assert code == 4 and data["valid"] is False and "parsed" not in data
    assert "token limit" in str(data["invalid_reason"]) and "does not match the schema" in stderr


BAD_INPUTS = {
    "missing schema file": (["--schema", "nope.json"], "--schema nope.json: no such file"),
    "inline schema": (["--schema", '{"type":"object"}'], "takes a file, not the schema itself"),
    "schema is a folder": (["--schema", "."], "is a folder, not a file"),
    "not JSON": (["--schema", "@bad.json"], "is not valid JSON: Expecting"),
    "not a schema": (["--schema", "@frob.json"], "is not a valid JSON Schema at /type"),
    "keyword llguidance lacks": (["--schema", "@unique.json"], 'Unimplemented keys: ["uniqueItems"]'),
    "recursive schema": (["--schema", "@tree.json"], "it is recursive"),
    "any keys": (["--schema", "@map.json"], "an object with any keys is allowed"),
    "too big for the limit": (
        ["--schema", "@essay.json", "--max-tokens", "64"],
        "Raise --max-tokens to at least 2012, or lower the schema's maxLength at /properties/essay.",
    ),
    # The ladder cannot help a lower bound: the fix is to lower minItems, not maxItems.
    "minItems over the limit": (
        ["--schema", "@many.json", "--max-tokens", "64"],
        "Raise --max-tokens to at least 5501, or lower the schema's minItems at the top level.",
    ),
    "empty regex": (["--regex", ""], "--regex is empty"),
    "empty schema path": (["--schema", ""], "--schema is empty"),
    "bad regex": (["--regex", "a(b"], "unclosed group"),
    "look-around": (["--regex", "(?=a)b"], "look-around"),
    "bad lark": (["--grammar", "@bad.lark"], 'unknown name: "nope"'),
    "empty lark": (["--grammar", "@empty.lark"], "is empty"),
    "two formats": (["--regex", "x", "--grammar", "@bad.lark"], "--regex and --grammar cannot be used together"),
    "with documents": (["--regex", "x", "--docs"], "cannot be used with --docs"),
    "with the cloud": (["--regex", "x", "--cloud"], "cannot be used with --cloud"),
}
FILES: dict[str, str | dict[str, object]] = {
    "bad.json": '{"type": "object",',
    "frob.json": {"type": "frob"},
    "unique.json": {"type": "array", "uniqueItems": True, "maxItems": 2, "items": {"type": "boolean"}},
    "tree.json": {"type": "object", "properties": {"child": {"$ref": "#"}}, "additionalProperties": False},
    "map.json": {"type": "object"},
    "essay.json": {"type": "object", "properties": {"essay": {"type": "string", "maxLength": 2000}}},
    "many.json": {"type": "array", "items": {"type": "string"}, "minItems": 500},
    "bad.lark": 'start: "yes" | nope\n',
    "empty.lark": "\n",
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_a_usage_error_before_any_model_loads(enclave_home: Path, tmp_path: Path, case: str) -> None:
    args, expected = BAD_INPUTS[case]
    args = [write(tmp_path, a[1:], FILES[a[1:]]) if a.startswith("@") else a for a in args]
    # No model is installed at all: the format is checked before one would load.
    proc = enclave("ask", *args, "What is it?", home=enclave_home, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    message, hint = proc.stderr.splitlines()  # the problem, then the fix
    assert message.startswith("error: ") and hint.startswith("  ") and expected in proc.stderr, proc.stderr
    assert "No model" not in proc.stderr
