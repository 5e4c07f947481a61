#!/usr/bin/env python
"""Structured answers on a real model: how often a schema's answer validates, how
often it runs into the token limit, and what bounding the schema changes.

Each schema of ``SCHEMAS`` (written as a user would: strings and arrays without sizes,
``additionalProperties`` left open) is asked with each of its prompts twice, through
the app layer exactly as ``enclave ask --schema`` runs it (the sealed worker,
greedy, the persona's system prompt):

* ``as written``: the schema given to llguidance unchanged;
* ``bounded``: what ``enclave ask`` does, :func:`assistant.app.structured.bound_schema`
  to the token budget first.

Every answer is checked again (:meth:`OutputFormat.check`); the table counts the
valid ones, those cut at the token limit, and the median tokens an answer took::

    ENCLAVE_HOME=~/.cache/enclave-test-models python scripts/measure_structured.py \\
        [-m smollm2-135m-instruct] [-e onnx] [--max-tokens 128] [--json]

Progress goes to stderr, the table (or JSON) to stdout. Conversations are not saved.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from typing import Any

SCHEMAS: dict[str, tuple[dict[str, Any], list[str]]] = {
    "person": (
        {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "age": {"type": "integer"},
                "hobbies": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["name", "age", "hobbies"],
        },
        [
            "Describe a fictional person as JSON.",
            "Give me a person who likes sports, as JSON.",
            "Invent a character for a novel: name, age and hobbies.",
            "Tell me about a retired teacher.",
        ],
    ),
    "review": (
        {
            "type": "object",
            "properties": {
                "title": {"type": "string"},
                "rating": {"type": "integer", "minimum": 1, "maximum": 5},
                "pros": {"type": "array", "items": {"type": "string"}},
                "cons": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["title", "rating", "pros", "cons"],
        },
        [
            "Review a cheap coffee machine.",
            "Write a review of a laptop with a great screen and a weak battery.",
            "Review the last film you liked.",
            "Review a pair of running shoes.",
        ],
    ),
    "server": (
        {
            "type": "object",
            "properties": {
                "host": {"type": "string"},
                "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                "tls": {"type": "boolean"},
                "tags": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["host", "port", "tls"],
        },
        [
            "Configure a web server for example.com.",
            "Set up a database server on port 5432.",
            "Describe a mail server with TLS.",
            "A test server on localhost, please.",
        ],
    ),
}


def run(model: str | None, engine: str | None, max_tokens: int) -> list[dict[str, Any]]:
    from assistant.app.structured import OutputFormat, bound_schema
    from assistant.app.turns import Assistant, result_of
    from assistant.core.settings import Settings

    settings = Settings.load(max_tokens=max_tokens, **({"model": model} if model else {}))
    assistant = Assistant(settings)
    rows: list[dict[str, Any]] = []
    try:
        for name, (schema, prompts) in SCHEMAS.items():
            bounded, _ = bound_schema(schema, max_tokens, name)
            variants = {
                "as written": OutputFormat("json_schema", name, json.dumps(schema), schema),
                "bounded": OutputFormat("json_schema", name, json.dumps(bounded), schema),
            }
            for variant, fmt in variants.items():
                for prompt in prompts:
                    conv = assistant.conversation(model, engine, save=False)
                    result = result_of(conv.turn(prompt, output=fmt))
                    conv.close()
                    check = result.output
                    row = {
                        "schema": name,
                        "variant": variant,
                        "prompt": prompt,
                        "engine": result.engine,
                        "finish_reason": result.finish_reason,
                        "tokens": result.usage.completion_tokens if result.usage else 0,
                        "valid": bool(check and check.valid),
                        "reason": check.reason if check else (result.error.message if result.error else None),
                        "text": result.text,
                    }
                    rows.append(row)
                    print(f"{name:7} {variant:10} {row['finish_reason']:6} {row['tokens']:4} tok  "
                          f"{'valid' if row['valid'] else 'INVALID'}  {result.text[:70]!r}", file=sys.stderr)  # fmt: skip
    finally:
        assistant.close()
    return rows


def table(rows: list[dict[str, Any]], max_tokens: int) -> str:
    lines = [
        f"| schema | variant | valid | cut at the limit ({max_tokens}) | median tokens |",
        "|---|---|---|---|---|",
    ]
    keys = dict.fromkeys((r["schema"], r["variant"]) for r in rows)
    for schema, variant in [*keys, ("all", "as written"), ("all", "bounded")]:
        group = [r for r in rows if r["variant"] == variant and schema in ("all", r["schema"])]
        valid = sum(r["valid"] for r in group)
        cut = sum(r["finish_reason"] == "length" for r in group)
        median = statistics.median(r["tokens"] for r in group)
        lines.append(f"| {schema} | {variant} | {valid} of {len(group)} | {cut} | {median:g} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-m", "--model", help="installed model (default: the settings' model)")
    parser.add_argument("-e", "--engine", help="engine (default: the model's first)")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    print(f"load average before: {os.getloadavg()[0]:.1f}", file=sys.stderr)
    rows = run(args.model, args.engine, args.max_tokens)
    print(json.dumps(rows, ensure_ascii=False, indent=1) if args.json else table(rows, args.max_tokens))
    return 0


if __name__ == "__main__":
    sys.exit(main())
