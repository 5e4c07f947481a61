"""Structured answers: ``enclave ask --schema FILE.json | --regex PATTERN | --grammar FILE.lark``.

Written once for every front end:

* **Up front**, before a model loads, the grammar is read and checked by llguidance
  (the library both engines decode with), a schema also by ``jsonschema``; a problem is
  a :class:`FormatError` (a usage error, exit 2) naming the file and the fix.
* **The token limit.** llguidance makes the answer follow the grammar, but a schema
  whose strings, arrays or integers have no upper size lets a small model write until
  ``--max-tokens`` and stop mid-object. :func:`bound_schema` gives every open size a
  bound derived from the token budget (``maxLength``, ``maxItems``, ``minimum`` /
  ``maximum``, ``additionalProperties: false`` beside listed properties), said in a
  notice; what cannot be bounded (recursion, maps of any keys, values of any type) and
  a schema whose worst case exceeds the budget are refused with the number to raise.
* **After generation** the answer is checked again (:meth:`OutputFormat.check`):
  llguidance replays it byte by byte against the same grammar, a schema answer is
  parsed and validated with ``jsonschema`` against the schema as the user wrote it,
  and an answer that stopped at the token limit while the grammar wanted more is
  reported as truncated, never as valid (:class:`OutputInvalid`, exit 4).
"""

from __future__ import annotations

import copy
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

from assistant.core.errors import EnclaveError
from assistant.core.events import Constraint, ConstraintKind, FinishReason, json_constraint
from assistant.core.records import OutputCheck


class FormatError(EnclaveError):
    """A schema, regular expression or grammar that cannot be used (a usage error)."""

    exit_code = 2


class TooLarge(FormatError):
    """A schema whose shortest bounding still allows answers longer than the budget."""

    def __init__(self, message: str, hint: str, needed: int, fix: str) -> None:
        super().__init__(message, hint)
        #: Characters its longest answer takes with the smallest bounds.
        self.needed = needed
        #: What to change in the schema instead, e.g. "lower the schema's minItems (at /tags)".
        self.fix = fix


class OutputInvalid(EnclaveError):
    """The answer does not match the format it was asked in (truncated, most often)."""

    exit_code = 4


#: Bounds tried for the sizes a schema leaves open, largest first, until the worst-case
#: answer fits the token budget: (characters of a string, items of an array).
LADDER: tuple[tuple[int, int], ...] = (
    (256, 16), (128, 16), (128, 8), (64, 8), (64, 4), (32, 4), (16, 4), (16, 2), (8, 2), (8, 1),
)  # fmt: skip
#: An integer with no minimum or maximum may have any number of digits: bounded to 15.
INT_BOUND = 10**15 - 1
#: llguidance bounds neither the digits nor the fraction of a JSON number; counted as this many.
NUMBER_CHARS = 24
#: Characters of the string formats llguidance knows (the longest form of each).
FORMAT_CHARS = {"date-time": 35, "date": 10, "time": 25, "duration": 40, "uuid": 36, "ipv4": 15, "ipv6": 45}
#: Notes listed one by one before they are counted.
SHOWN_NOTES = 6


@dataclass(frozen=True)
class OutputFormat:
    """The format an answer is asked in: what the engine is given (``constraint``), and
    what the answer is checked against afterwards."""

    kind: ConstraintKind
    #: Where it came from, for messages: the file name, or the pattern (quoted).
    source: str
    #: What the engine decodes with: the bounded schema as JSON, the regex, the Lark text.
    grammar: str
    #: The schema as the user wrote it (schema answers are validated against it).
    schema: dict[str, Any] | None = None
    #: What was changed to fit the token limit, in the user's words.
    notices: tuple[str, ...] = field(default_factory=tuple)

    @property
    def constraint(self) -> Constraint:
        if self.kind == "json_schema":
            return json_constraint(self.grammar)
        return Constraint(self.kind, self.grammar)

    def check(self, text: str, reason: FinishReason, max_tokens: int | None = None) -> OutputCheck:
        """Check a finished answer again: the grammar (replayed by llguidance), the token
        limit, and for schemas the parsed JSON against the user's schema."""
        replay = _replay(self.constraint, text)
        limit = f" (--max-tokens {max_tokens})" if max_tokens else ""
        # At the token limit an answer is valid when it matches as it stands: "[a-z ]+"
        # allowed more, but "the sea is a vast" matches it (finish_reason "length" and the
        # footer say it was cut); only one the format still needed more of is not.
        if reason == "length" and not replay.accepting and not replay.error:
            return OutputCheck(self.kind, False, f"it stopped at the token limit{limit} before it was complete")
        if reason == "cancelled":
            return OutputCheck(self.kind, False, "it was cancelled before it was complete")
        if replay.error:
            return OutputCheck(self.kind, False, replay.error)
        if not replay.accepting:
            return OutputCheck(self.kind, False, f"it ended before it was complete (finish reason {reason})")
        if self.kind != "json_schema":
            return OutputCheck(self.kind, True)
        return self._check_json(text)

    def _check_json(self, text: str) -> OutputCheck:
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            return OutputCheck(self.kind, False, f"it is not JSON ({exc.msg} at character {exc.pos})")
        mismatch = schema_mismatch(self.schema, parsed) if self.schema is not None else None
        if mismatch is not None:
            return OutputCheck(self.kind, False, f"it does not match the schema {mismatch}")
        return OutputCheck(self.kind, True, parsed=parsed)


def schema_mismatch(schema: dict[str, Any], value: Any) -> str | None:
    """Where and how ``value`` breaks ``schema`` ("at /path: message"), or None when it matches."""
    import jsonschema

    cls = jsonschema.validators.validator_for(schema)
    error = jsonschema.exceptions.best_match(cls(schema).iter_errors(value))
    if error is None:
        return None
    return "at /" + "/".join(str(p) for p in error.absolute_path) + f": {error.message}"


# --------------------------------------------------------------------------- reading
def output_format(
    *, schema: str | None = None, regex: str | None = None, grammar: str | None = None, max_tokens: int
) -> OutputFormat | None:
    """The format named by ``--schema`` (a file, or ``-`` for stdin), ``--regex`` or
    ``--grammar`` (a Lark file), checked; None when none is given. Raises
    :class:`FormatError` for two at once, an unreadable file, or a grammar llguidance
    refuses; a schema is bounded to ``max_tokens`` (:func:`bound_schema`)."""
    flags = (("--schema", schema), ("--regex", regex), ("--grammar", grammar))
    given = [name for name, value in flags if value is not None]
    if len(given) > 1:
        raise FormatError(f"{' and '.join(given)} cannot be used together.", "Give one output format.")
    for name, value in flags:
        if value is not None and not value.strip():
            what = "a pattern" if name == "--regex" else "a file"
            raise FormatError(f"{name} is empty.", f"Give {what} after {name}, or leave the option out.")
    if schema is not None:
        return schema_format(schema, max_tokens)
    if regex is not None:
        return regex_format(regex)
    if grammar is not None:
        return grammar_format(grammar)
    return None


def _read(path: str, what: str, flag: str) -> tuple[str, str]:
    """(text, name for messages) of ``path``, or of stdin for ``-``."""
    if path == "-":
        return sys.stdin.read(), "the schema on stdin"
    file = Path(path).expanduser()
    try:
        return file.read_text(encoding="utf-8"), str(path)
    except FileNotFoundError:
        hint = f"Give the path of {what}."
        if path.lstrip().startswith("{"):
            hint = f"{flag} takes a file, not the schema itself: save it to a file, or pipe it in with {flag} -."
        raise FormatError(f"{flag} {path}: no such file.", hint) from None
    except IsADirectoryError:
        raise FormatError(f"{flag} {path} is a folder, not a file.", f"Give the path of {what}.") from None
    except UnicodeDecodeError:
        raise FormatError(f"{flag} {path} is not UTF-8 text.", f"Give the path of {what}.") from None
    except OSError as exc:
        raise FormatError(
            f"{flag} {path} cannot be read ({exc.strerror}).", "Check the path and permissions."
        ) from None


def schema_format(path: str, max_tokens: int) -> OutputFormat:
    """A JSON Schema file, checked (JSON, a valid schema, one llguidance can follow) and
    bounded to ``max_tokens``."""
    text, name = _read(path, "a JSON Schema file (.json)", "--schema")
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FormatError(
            f"{name} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.",
            "Fix the file; a JSON Schema is one JSON object.",
        ) from None
    if not isinstance(schema, dict):
        raise FormatError(f"{name} is not a JSON Schema: it is not a JSON object.", 'Write e.g. {"type": "object", …}.')
    check_schema(schema, name)
    bounded, notices = bound_schema(schema, max_tokens, name)
    constraint = json_constraint(bounded)
    _validate(constraint, name, SCHEMA_HINT)
    return OutputFormat("json_schema", name, constraint.grammar, schema, notices)


#: What to do about a schema llguidance cannot decode with.
SCHEMA_HINT = "Change the schema: llguidance supports the keywords listed in docs/engine.md."


def check_schema(schema: dict[str, Any], name: str) -> None:
    """Raise :class:`FormatError` naming the place and the problem when ``schema`` is not a
    valid JSON Schema (its own meta-schema, by ``jsonschema``)."""
    import jsonschema

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.exceptions.SchemaError as exc:
        where = "/" + "/".join(str(p) for p in exc.absolute_path)
        raise FormatError(f"{name} is not a valid JSON Schema at {where}: {exc.message}.", "Fix the schema.") from None


def decodable_schema(schema: dict[str, Any], name: str) -> Constraint:
    """The constraint that decodes answers to ``schema`` as it is (no bounds added), checked
    before any generation as ``--schema`` is: a valid JSON Schema that llguidance can follow
    (a ``pattern`` with look-around, an unknown keyword are refused here, not by the engine).
    Raises :class:`FormatError` naming the problem."""
    check_schema(schema, name)
    constraint = json_constraint(schema)
    _validate(constraint, name, SCHEMA_HINT)
    return constraint


def regex_format(pattern: str) -> OutputFormat:
    """A regular expression (llguidance's syntax, Rust's ``regex`` crate: no look-around,
    no back-references); the whole answer must match it."""
    _validate(Constraint("regex", pattern), f"--regex {pattern!r}",
              "Fix the pattern (Rust regex syntax: no look-around or back-references).")  # fmt: skip
    return OutputFormat("regex", repr(pattern), pattern)


def grammar_format(path: str) -> OutputFormat:
    """A Lark grammar file (llguidance's Lark dialect, which starts at ``start``)."""
    text, name = _read(path, "a Lark grammar file (.lark)", "--grammar")
    if not text.strip():
        raise FormatError(f"{name} is empty.", 'Write a Lark grammar, e.g. start: "yes" | "no".')
    _validate(Constraint("lark", text), name, "Fix the grammar (llguidance's Lark syntax; the first rule is start).")
    return OutputFormat("lark", name, text)


# --------------------------------------------------------------------------- llguidance
def _grammar(constraint: Constraint) -> str:
    from llguidance import LLMatcher

    match constraint.kind:
        case "json_schema":
            return str(LLMatcher.grammar_from_json_schema(constraint.grammar))
        case "regex":
            return str(LLMatcher.grammar_from_regex(constraint.grammar))
        case "lark":
            return str(LLMatcher.grammar_from_lark(constraint.grammar))


def _validate(constraint: Constraint, name: str, hint: str) -> None:
    from llguidance import LLMatcher

    problem = LLMatcher.validate_grammar(_grammar(constraint))
    if problem:
        lines = [line.strip() for line in problem.splitlines() if line.strip()]
        detail = [line for line in lines[1:] if line.startswith("error:")]
        raise FormatError(f"{name} cannot be used for decoding: {' '.join(lines[:1] + detail[:1])}", hint)


class _ByteVocabulary:
    """A tokenizer whose tokens are the 256 bytes (and an end token): llguidance then
    checks text byte by byte, whatever model wrote it."""

    eos_token_id = 256
    bos_token_id = None
    tokens = [bytes([i]) for i in range(256)] + [b"<|end|>"]
    special_token_ids = [256]

    def __call__(self, text: str | bytes) -> list[int]:
        return list(text if isinstance(text, bytes) else text.encode("utf-8"))


@lru_cache(maxsize=1)
def _bytes_tokenizer() -> Any:
    from llguidance import LLTokenizer, TokenizerWrapper

    return LLTokenizer(TokenizerWrapper(_ByteVocabulary()), slices=[])


@dataclass(frozen=True)
class _Replay:
    accepting: bool  # the text so far is a whole answer
    complete: bool  # ... and the grammar allows nothing more
    error: str | None = None


def _replay(constraint: Constraint, text: str) -> _Replay:
    """Feed ``text`` to llguidance one byte at a time, as decoding would have."""
    from llguidance import LLMatcher

    matcher = LLMatcher(_bytes_tokenizer(), _grammar(constraint), log_level=0)
    data = list(text.encode("utf-8"))
    ok = matcher.validate_tokens(data)
    if ok < len(data):
        before = bytes(data[:ok]).decode("utf-8", "replace")
        where = f"at character {len(before) + 1} ({text[len(before) : len(before) + 1]!r}), after {before[-30:]!r}"
        return _Replay(False, False, f"it leaves the grammar {where}")
    matcher.consume_tokens(data)
    return _Replay(matcher.is_accepting(), matcher.is_stopped())


# --------------------------------------------------------------------------- the token limit
class _Unbounded(Exception):
    def __init__(self, where: str, what: str, fix: str) -> None:
        super().__init__(what)
        self.where, self.what, self.fix = where, what, fix


class _Sizer:
    """The longest compact JSON a schema allows, in characters (with every open string
    given ``chars`` characters and every open array ``items`` items); with ``apply`` the
    bounds are written into the schema and listed in ``notes``. ``gap`` is the space after
    each ``,`` and ``:`` (1 for the ``", "`` / ``": "`` that tool-call templates print)."""

    def __init__(self, root: dict[str, Any], chars: int, items: int, apply: bool = False, gap: int = 0) -> None:
        self.root, self.chars, self.items, self.apply, self.gap = root, chars, items, apply, gap
        self.notes: list[str] = []
        #: The schema's own size keywords that set a size here, with where: a lower bound
        #: above the ladder's (minItems 500 forces 500 items whatever the ladder says) or an
        #: upper bound the schema gives, so that a refusal names what to lower.
        self.sizing: dict[tuple[str, str], None] = {}

    def size(self, node: Any, where: str, refs: tuple[str, ...] = ()) -> int:
        if node is True or node == {}:
            raise _Unbounded(where or "/", "any JSON value is allowed", "give it a type")
        if node is False:
            return 0
        if not isinstance(node, dict):
            return 0
        if "const" in node:
            return _chars(node["const"], self.gap)
        if "enum" in node and isinstance(node["enum"], list) and node["enum"]:
            return max(_chars(v, self.gap) for v in node["enum"])
        # Every keyword of a schema applies at once: the answer is as long as the
        # shortest of its parts ($ref, the combinators, the type's own keywords).
        parts: list[Callable[[], int]] = []
        if "$ref" in node:
            parts.append(partial(self._ref, node["$ref"], where, refs))
        for key, pick in (("anyOf", max), ("oneOf", max), ("allOf", min)):
            if isinstance(node.get(key), list) and node[key]:
                parts.append(partial(self._branches, node[key], f"{where}/{key}", refs, pick))
        if not parts or any(k in node for k in ("type", "properties", "items", "prefixItems")):
            parts.append(partial(self._typed, node, where, refs))
        return self._shortest(parts)

    @staticmethod
    def _shortest(parts: list[Callable[[], int]]) -> int:
        sizes: list[int] = []
        problem: _Unbounded | None = None
        for part in parts:
            try:
                sizes.append(part())
            except _Unbounded as exc:
                problem = problem or exc
        if not sizes:
            assert problem is not None
            raise problem
        return min(sizes)

    def _branches(self, branches: list[Any], where: str, refs: tuple[str, ...], pick: Callable[..., int]) -> int:
        if pick is min:  # allOf: one bounded branch bounds them all
            return self._shortest([partial(self.size, b, f"{where}/{i}", refs) for i, b in enumerate(branches)])
        return max(self.size(b, f"{where}/{i}", refs) for i, b in enumerate(branches))

    def _ref(self, ref: Any, where: str, refs: tuple[str, ...]) -> int:
        if ref in refs:
            raise _Unbounded(
                where, f"it is recursive ($ref {ref} refers back to itself)", "write the nesting out to a fixed depth"
            )
        target: Any = self.root
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise _Unbounded(where, f"$ref {ref} is not inside the schema", "copy the definition into $defs")
        for part in [p for p in ref[1:].split("/") if p]:
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, dict) or part not in target:
                raise _Unbounded(where, f"$ref {ref} does not exist", "fix the reference")
            target = target[part]
        return self.size(target, ref[1:], (*refs, ref))

    def _typed(self, node: dict[str, Any], where: str, refs: tuple[str, ...]) -> int:
        kind = node.get("type")
        if kind is None:
            kind = "object" if "properties" in node else "array" if "items" in node or "prefixItems" in node else None
        if kind is None:
            raise _Unbounded(where or "/", "any JSON value is allowed", "give it a type")
        kinds = kind if isinstance(kind, list) else [kind]
        return max(self._one(node, str(k), where, refs) for k in kinds)

    def _one(self, node: dict[str, Any], kind: str, where: str, refs: tuple[str, ...]) -> int:
        match kind:
            case "string":
                return self._string(node, where)
            case "integer":
                return self._integer(node, where)
            case "number":
                return NUMBER_CHARS
            case "boolean":
                return 5
            case "null":
                return 4
            case "array":
                return self._array(node, where, refs)
            case "object":
                return self._object(node, where, refs)
        return 0

    def _bound(self, node: dict[str, Any], key: str, value: int, where: str) -> None:
        if self.apply:
            node[key] = value
            self.notes.append(f"{_at(where)}: {key} {value}")

    def _string(self, node: dict[str, Any], where: str) -> int:
        if isinstance(node.get("maxLength"), int):
            self.sizing[("maxLength", where)] = None
            return int(node["maxLength"]) + 2
        if node.get("format") in FORMAT_CHARS:
            return FORMAT_CHARS[str(node["format"])] + 2
        least = int(node.get("minLength", 0))
        if least > self.chars:
            self.sizing[("minLength", where)] = None
        bound = max(self.chars, least)
        self._bound(node, "maxLength", bound, where)
        return bound + 2

    def _integer(self, node: dict[str, Any], where: str) -> int:
        ends: list[float] = []
        added: list[str] = []
        for keys, default in (
            (("minimum", "exclusiveMinimum"), -INT_BOUND),
            (("maximum", "exclusiveMaximum"), INT_BOUND),
        ):
            given = [node[k] for k in keys if isinstance(node.get(k), int | float)]
            if not given:
                given = [default]
                added.append(f"{keys[0]} {default}")
                if self.apply:
                    node[keys[0]] = default
            ends.append(given[0])
        if added and self.apply:
            self.notes.append(f"{_at(where)}: {', '.join(added)}")
        return max(len(str(math.floor(v))) for v in ends)

    def _array(self, node: dict[str, Any], where: str, refs: tuple[str, ...]) -> int:
        given = node.get("prefixItems")
        prefix: list[Any] = given if isinstance(given, list) else []
        items = node.get("items", True)
        sizes = [self.size(p, f"{where}/prefixItems/{i}", refs) for i, p in enumerate(prefix)]
        if items is False:
            count = len(prefix)
        else:
            if isinstance(node.get("maxItems"), int):
                self.sizing[("maxItems", where)] = None
                count = int(node["maxItems"])
            else:
                least = int(node.get("minItems", 0))
                if least > max(self.items, len(prefix)):
                    self.sizing[("minItems", where)] = None
                count = max(self.items, least, len(prefix))
                self._bound(node, "maxItems", count, where)
            rest = count - len(prefix)
            if rest > 0:
                sizes += [self.size(items, f"{where}/items", refs)] * rest
        return 2 + sum(sizes) + max(0, len(sizes) - 1) * (1 + self.gap)

    def _object(self, node: dict[str, Any], where: str, refs: tuple[str, ...]) -> int:
        given = node.get("properties")
        props: dict[str, Any] = given if isinstance(given, dict) else {}
        extra = node.get("additionalProperties", True)
        if node.get("patternProperties") or (extra is not False and extra is not True and extra != {}):
            raise _Unbounded(where or "/", "it allows any number of keys", 'list the keys under "properties"')
        if extra is not False:
            if not props:
                raise _Unbounded(where or "/", "an object with any keys is allowed", 'list its keys under "properties"')
            if self.apply:
                node["additionalProperties"] = False
                self.notes.append(f"{_at(where)}: additionalProperties false")
        sizes = [_chars(k) + 1 + self.gap + self.size(v, f"{where}/properties/{k}", refs) for k, v in props.items()]
        return 2 + sum(sizes) + max(0, len(sizes) - 1) * (1 + self.gap)


def _chars(value: Any, gap: int = 0) -> int:
    separators = (", ", ": ") if gap else (",", ":")
    return len(json.dumps(value, separators=separators, ensure_ascii=False))


def schema_size(schema: dict[str, Any], gap: int = 0) -> int:
    """The longest JSON (in characters) a schema :func:`bound_schema` returned allows."""
    chars, items = LADDER[0]
    return _Sizer(schema, chars, items, gap=gap).size(schema, "")


def bound_schema(
    schema: dict[str, Any], budget: int, name: str = "the schema", gap: int = 0
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """``schema`` with a bound on every size it leaves open, the largest on :data:`LADDER`
    whose longest answer fits ``budget`` tokens (counting a character as a token: a byte-level
    vocabulary writes at least one byte a token; escapes and non-ASCII text can take more,
    which the check after generation reports), and the notices saying what was added.

    Raises :class:`FormatError` when something cannot be bounded or even the smallest
    bounds do not fit."""
    try:
        sizers = [(_Sizer(schema, chars, items, gap=gap), chars, items) for chars, items in LADDER]
        sizes = [(sizer.size(schema, ""), chars, items) for sizer, chars, items in sizers]
    except _Unbounded as exc:
        raise FormatError(
            f"{name} at {exc.where}: {exc.what}, so the answer has no size limit and could run past the token limit.",
            f"In the schema, {exc.fix}.",
        ) from None
    for worst, chars, items in sizes:
        if worst <= budget:
            bounded = copy.deepcopy(schema)
            sizer = _Sizer(bounded, chars, items, apply=True, gap=gap)
            sizer.size(bounded, "")
            return bounded, _notices(sizer.notes, budget, name)
    smallest = sizes[-1][0]
    even = (
        ""
        if smallest == sizes[0][0]
        else f", even with strings of {LADDER[-1][0]} characters and arrays of {LADDER[-1][1]}"
    )
    fix = _fix(sizers[-1][0])
    raise TooLarge(
        f"{name} allows answers of up to {smallest} characters, more than the token limit ({budget}) holds{even}.",
        f"Raise --max-tokens to at least {smallest}, or {fix}.",
        smallest,
        fix,
    )


def _fix(sizer: _Sizer) -> str:
    """What to lower in a schema too large for the budget: the size keywords of its own
    that set a size at the smallest bounds, lower bounds first (a minItems or minLength
    forces its size, however small the bounds Enclave adds)."""
    found = sorted(sizer.sizing, key=lambda kw: not kw[0].startswith("min"))
    if not found:  # its size comes from the properties it lists, their enums and constants
        return "list fewer properties (or shorter values) in the schema"
    named = [f"{key} at {where or 'the top level'}" for key, where in found]
    more = f" and {len(named) - 3} more" if len(named) > 3 else ""
    return f"lower the schema's {', '.join(named[:3])}{more}"


def _notices(notes: list[str], budget: int, name: str) -> tuple[str, ...]:
    if not notes:
        return ()
    shown = "; ".join(dict.fromkeys(notes[:SHOWN_NOTES]))
    more = f"; and {len(notes) - SHOWN_NOTES} more" if len(notes) > SHOWN_NOTES else ""
    return (f"{name} leaves some sizes open; bounded to fit --max-tokens {budget}: {shown}{more}.",)


def invalid(fmt: OutputFormat, check: OutputCheck) -> OutputInvalid:
    """The error a front end ends with when an answer does not match its format."""
    what = {"json_schema": "the schema", "regex": "the regular expression", "lark": "the grammar"}[fmt.kind]
    truncated = check.reason is not None and "token limit" in check.reason
    if truncated:
        hint = "Raise --max-tokens" + (", or ask for less (smaller maxLength/maxItems)." if fmt.schema else ".")
    else:
        hint = "Ask again (other words or a --temperature above 0 may help); the answer is shown as it came."
    return OutputInvalid(f"The answer does not match {what} {fmt.source}: {check.reason}.", hint)


def _at(where: str) -> str:
    """A place in a schema for a notice: its JSON pointer, or the top level."""
    return where or "(top level)"
