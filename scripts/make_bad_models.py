#!/usr/bin/env python
"""Build the malformed-model corpus: every way a model folder a user brings can be wrong.

    python scripts/make_bad_models.py OUT      # writes OUT/<case>/… and OUT/cases.json

Starting from the committed tiny models (tests/assets/tiny-llama, an onnxruntime-genai
folder, and tests/assets/tiny-gemma.litertlm), it writes one case per folder:

* truncations of every file kind (weights, external data, tokenizer, configs, bundle);
* bit flips at spread offsets (deterministic: seeded);
* bad JSON — not JSON, the wrong type, missing or absurd fields (context_length of
  ``"lots"``, -1, 1e400), a decoder file outside the folder, a 200 000-deep nesting;
* hostile chat templates — recursion without end (the native renderer segfaults on
  it), loops that run for hours, a gigabyte of output, ``raise_exception``, templates
  that drop the messages, a sandbox escape, a NUL byte, syntax errors;
* FIFOs in place of each file (a reader would block forever), a UNIX socket;
* symlinks out — to ``/dev/zero`` and ``/dev/null``, to a file outside, dangling, looping,
  a linked folder;
* wrong structure — empty folder, a folder where a file should be, an oversized config.

``cases.json`` lists ``{"name", "path", "group", "note"}``; tests/reliability/test_bad_models.py
runs every case through ``enclave models add`` and ``enclave ask`` and requires a clear
message (or a working model) each time: no internal error, no crash, no hang.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "assets" / "tiny-llama"
BUNDLE = ROOT / "tests" / "assets" / "tiny-gemma.litertlm"


@dataclass(frozen=True)
class Case:
    name: str
    path: str
    group: str
    note: str


def _truncate(path: Path, keep: float | int) -> None:
    data = path.read_bytes()
    size = int(len(data) * keep) if isinstance(keep, float) else (keep if keep >= 0 else len(data) + keep)
    path.write_bytes(data[: max(0, size)])


def _flip(path: Path, fraction: float, rng: random.Random) -> None:
    data = bytearray(path.read_bytes())
    at = min(len(data) - 1, int(len(data) * fraction))
    data[at] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))


def _config(folder: Path, edit: Callable[[dict], object]) -> None:  # type: ignore[type-arg]
    path = folder / "genai_config.json"
    data = json.loads(path.read_text())
    result = edit(data)
    path.write_text(json.dumps(data if result is None else result))


def _replace_with_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _replace_with_link(path: Path, target: str | Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()
    path.symlink_to(target)


def _template(folder: Path, text: str) -> None:
    (folder / "chat_template.jinja").write_text(text)


def _socket_file(path: Path) -> None:
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()  # the socket file stays


RECURSIVE = "{% macro r(n) %}{{ r(n + 1) }}{% endmacro %}{{ r(0) }}"
HOURS_LOOP = (
    "{% for a in range(100000) %}{% for b in range(100000) %}{% for m in messages %}{{ m['content'] }}"
    "{% endfor %}{% endfor %}{% endfor %}"
)


class _Corpus:
    """The folder being written and its cases, in order. One seeded generator serves
    every case in turn, so the order of the cases is part of the corpus."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.rng = random.Random(20261201)
        self.cases: list[Case] = []
        self.outside = out / "_outside"
        self.outside.mkdir()
        (self.outside / "notes.txt").write_text("not a model file\n")

    def folder(self, name: str, group: str, note: str, change: Callable[[Path], object]) -> None:
        """A copy of the tiny model folder, changed."""
        target = self.out / name
        shutil.copytree(TINY, target, symlinks=True)
        change(target)
        self.cases.append(Case(name, str(target), group, note))

    def bundle(self, name: str, group: str, note: str, change: Callable[[Path], object]) -> None:
        """A copy of the tiny .litertlm bundle, changed."""
        target = self.out / name / "model.litertlm"
        target.parent.mkdir()
        shutil.copy(BUNDLE, target)
        change(target)
        self.cases.append(Case(name, str(target), group, note))


def build(out: Path) -> list[Case]:
    """Write the corpus under ``out`` (emptied first); the cases, in order."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    corpus = _Corpus(out)
    for write in (
        _truncations,
        _bit_flips,
        _bad_json,
        _hostile_templates,
        _fifos_and_sockets,
        _symlinks_out,
        _structure,
    ):
        write(corpus)
    (out / "cases.json").write_text(json.dumps([asdict(c) for c in corpus.cases], indent=1))
    return corpus.cases


def _truncations(corpus: _Corpus) -> None:
    """Every file kind cut short."""
    for file, keeps in {
        "model.onnx": [0, 1, 100, 0.5, -1],
        "model.onnx.data": [0, 0.5, -4],
        "tokenizer.json": [0, 10, 0.5],
        "genai_config.json": [0, 0.5],
        "tokenizer_config.json": [0.5],
        "chat_template.jinja": [0.5],
    }.items():
        for keep in keeps:
            label = f"{keep:g}" if isinstance(keep, float) else str(keep)
            corpus.folder(
                f"truncate-{file}-{label}", "truncation", f"{file} cut to {label}",
                lambda d, f=file, k=keep: _truncate(d / f, k),
            )  # fmt: skip
    for keep in (0, 1024, 0.1, 0.5, -1):
        label = f"{keep:g}" if isinstance(keep, float) else str(keep)
        corpus.bundle(
            f"truncate-bundle-{label}", "truncation", f"bundle cut to {label}", lambda p, k=keep: _truncate(p, k)
        )


def _bit_flips(corpus: _Corpus) -> None:
    """One bit flipped at spread offsets (seeded)."""
    for file, fractions in {
        "model.onnx": [0.0, 0.02, 0.3, 0.6, 0.95],
        "model.onnx.data": [0.1, 0.9],
        "tokenizer.json": [0.05, 0.5],
        "genai_config.json": [0.3],
    }.items():
        for fraction in fractions:
            corpus.folder(
                f"flip-{file}-{fraction:g}", "bit flip", f"one bit of {file} flipped at {fraction:.0%}",
                lambda d, f=file, x=fraction: _flip(d / f, x, corpus.rng),
            )  # fmt: skip
    for fraction in (0.0, 0.01, 0.5, 0.99):
        corpus.bundle(f"flip-bundle-{fraction:g}", "bit flip", f"bundle bit flipped at {fraction:.0%}",
                      lambda p, x=fraction: _flip(p, x, corpus.rng))  # fmt: skip


def _bad_json(corpus: _Corpus) -> None:
    """Bad JSON: not JSON, the wrong type, missing or absurd fields."""

    def text(content: str) -> Callable[[Path], None]:
        return lambda d: (d / "genai_config.json").write_text(content)

    for name, change in {
        "config-not-json": text("{model: oops"),
        "config-array": text("[1, 2, 3]"),
        "config-string": text('"genai"'),
        "config-empty-object": text("{}"),
        "config-deep-nesting": text("[" * 200_000 + "]" * 200_000),
        "config-not-utf8": lambda d: (d / "genai_config.json").write_bytes(b'{"model": "\xff\xfe"}'),
        "config-model-not-object": lambda d: _config(d, lambda c: c.__setitem__("model", "llama")),
        "config-context-words": lambda d: _config(d, lambda c: c["model"].__setitem__("context_length", "lots")),
        "config-context-negative": lambda d: _config(d, lambda c: c["model"].__setitem__("context_length", -1)),
        "config-context-huge": lambda d: _config(d, lambda c: c["model"].__setitem__("context_length", 10**12)),
        "config-context-infinite": lambda d: (d / "genai_config.json").write_text(
            (d / "genai_config.json").read_text().replace('"context_length": 1024', '"context_length": 1e400')
        ),
        "config-context-bool": lambda d: _config(d, lambda c: c["model"].__setitem__("context_length", True)),
        "config-no-decoder": lambda d: _config(d, lambda c: c["model"].pop("decoder")),
        "config-decoder-outside": lambda d: _config(
            d, lambda c: c["model"]["decoder"].__setitem__("filename", "../../../../etc/passwd")
        ),
        "config-decoder-missing": lambda d: _config(
            d, lambda c: c["model"]["decoder"].__setitem__("filename", "nope.onnx")
        ),
        "config-eos-words": lambda d: _config(d, lambda c: c["model"].__setitem__("eos_token_id", "end")),
        "config-vocab-zero": lambda d: _config(d, lambda c: c["model"].__setitem__("vocab_size", 0)),
        "config-layers-huge": lambda d: _config(
            d, lambda c: c["model"]["decoder"].__setitem__("num_hidden_layers", 100000)
        ),
        "config-heads-zero": lambda d: _config(
            d, lambda c: c["model"]["decoder"].__setitem__("num_attention_heads", 0)
        ),
        "config-oversized": lambda d: (d / "genai_config.json").write_text(
            (d / "genai_config.json").read_text() + " " * (2 * 2**20)
        ),
        "tokenizer-config-not-json": lambda d: (d / "tokenizer_config.json").write_text("{nope"),
        "tokenizer-not-json": lambda d: (d / "tokenizer.json").write_text("not a tokenizer"),
        "tokenizer-empty-object": lambda d: (d / "tokenizer.json").write_text("{}"),
        "template-in-config-number": lambda d: (
            (d / "chat_template.jinja").unlink(),
            (d / "tokenizer_config.json").write_text(json.dumps({"chat_template": 42})),
        ),
        "template-in-config-list-junk": lambda d: (
            (d / "chat_template.jinja").unlink(),
            (d / "tokenizer_config.json").write_text(json.dumps({"chat_template": [{"name": "default"}, 7]})),
        ),
    }.items():
        corpus.folder(name, "bad JSON", name.replace("-", " "), change)


def _hostile_templates(corpus: _Corpus) -> None:
    """Chat templates that recurse, loop, explode, raise or escape."""
    for name, template in {
        "template-recursive-macro": RECURSIVE,
        "template-recursive-set": "{% set ns = namespace(x=0) %}{% macro f() %}{{ f() }}{{ f() }}{% endmacro %}{{ f() }}",
        "template-loops-for-hours": HOURS_LOOP,
        "template-gigabyte-output": "{{ 'x' * 1000000000 }}{% for m in messages %}{{ m['content'] }}{% endfor %}",
        "template-raises": "{{ raise_exception('this model refuses to chat') }}",
        "template-drops-messages": "<|im_start|>assistant\n",
        "template-syntax-error": "{% for m in messages %}{{ m['content'] }",
        "template-undefined": "{{ foo.bar.baz }}{% for m in messages %}{{ m['content'] }}{% endfor %}",
        "template-sandbox-escape": "{{ ''.__class__.__mro__[1].__subclasses__() }}{% for m in messages %}{{ m['content'] }}{% endfor %}",
        "template-nul-byte": "{% for m in messages %}\x00{{ m['content'] }}{% endfor %}",
        "template-deep-if": "{% if true %}" * 5000
        + "{% for m in messages %}{{ m['content'] }}{% endfor %}"
        + "{% endif %}" * 5000,
        "template-empty": "",
    }.items():
        corpus.folder(
            name,
            "hostile template",
            name.removeprefix("template-").replace("-", " "),
            lambda d, t=template: _template(d, t),
        )
    corpus.folder(
        "template-recursive-in-tokenizer-config", "hostile template", "recursive template in tokenizer_config.json",
        lambda d: ((d / "chat_template.jinja").unlink(), (d / "tokenizer_config.json").write_text(json.dumps({"chat_template": RECURSIVE}))),
    )  # fmt: skip


def _fifos_and_sockets(corpus: _Corpus) -> None:
    """FIFOs in place of each file (a reader would block forever), a UNIX socket."""
    for file in ("tokenizer.json", "model.onnx", "model.onnx.data", "genai_config.json", "chat_template.jinja"):
        corpus.folder(f"fifo-{file}", "FIFO", f"{file} is a named pipe", lambda d, f=file: _replace_with_fifo(d / f))
    corpus.folder("fifo-LICENSE", "FIFO", "LICENSE is a named pipe", lambda d: os.mkfifo(d / "LICENSE"))
    corpus.folder("socket-extra", "FIFO", "a UNIX socket in the folder", lambda d: _socket_file(d / "control.sock"))
    fifo_bundle = corpus.out / "fifo-bundle" / "model.litertlm"
    fifo_bundle.parent.mkdir()
    os.mkfifo(fifo_bundle)
    corpus.cases.append(Case("fifo-bundle", str(fifo_bundle), "FIFO", "the .litertlm is a named pipe"))


def _symlinks_out(corpus: _Corpus) -> None:
    """Symlinks out of the folder: to devices, outside files, dangling, looping."""
    for name, (file, target) in {
        "link-model-to-dev-zero": ("model.onnx", "/dev/zero"),
        "link-tokenizer-to-dev-null": ("tokenizer.json", "/dev/null"),
        "link-data-to-dev-urandom": ("model.onnx.data", "/dev/urandom"),
        "link-config-dangling": ("genai_config.json", "/nonexistent/genai_config.json"),
        "link-tokenizer-outside": ("tokenizer.json", str(corpus.outside / "notes.txt")),
        "link-template-to-folder": ("chat_template.jinja", str(corpus.outside)),
    }.items():
        corpus.folder(name, "symlink", f"{file} → {target}", lambda d, f=file, t=target: _replace_with_link(d / f, t))
    corpus.folder(
        "link-loop",
        "symlink",
        "a link to itself",
        lambda d: _replace_with_link(d / "tokenizer.json", d / "tokenizer.json"),
    )
    corpus.folder("link-folder-to-root", "symlink", "a linked folder to /", lambda d: (d / "extra").symlink_to("/"))
    corpus.folder(
        "link-data-outside-genuine", "symlink", "model.onnx.data → a genuine copy outside (accepted)",
        lambda d: (shutil.copy(d / "model.onnx.data", corpus.outside / "genuine.data"),
                   _replace_with_link(d / "model.onnx.data", corpus.outside / "genuine.data")),
    )  # fmt: skip
    dev_bundle = corpus.out / "link-bundle-to-dev-zero" / "model.litertlm"
    dev_bundle.parent.mkdir()
    dev_bundle.symlink_to("/dev/zero")
    corpus.cases.append(Case("link-bundle-to-dev-zero", str(dev_bundle), "symlink", "the .litertlm → /dev/zero"))


def _structure(corpus: _Corpus) -> None:
    """Wrong structure: empty, folders for files, not a model at all."""
    empty = corpus.out / "empty-folder"
    empty.mkdir()
    corpus.cases.append(Case("empty-folder", str(empty), "structure", "an empty folder"))
    corpus.folder(
        "no-genai-config", "structure", "genai_config.json removed", lambda d: (d / "genai_config.json").unlink()
    )
    corpus.folder("config-is-a-folder", "structure", "genai_config.json is a folder",
                  lambda d: ((d / "genai_config.json").unlink(), (d / "genai_config.json").mkdir()))  # fmt: skip
    corpus.folder("model-is-a-folder", "structure", "model.onnx is a folder",
                  lambda d: ((d / "model.onnx").unlink(), (d / "model.onnx").mkdir()))  # fmt: skip
    corpus.folder("unreadable-tokenizer", "structure", "tokenizer.json mode 000 (root can still read it)",
                  lambda d: os.chmod(d / "tokenizer.json", 0))  # fmt: skip
    corpus.bundle(
        "bundle-random-bytes", "structure", "4 KB of random bytes", lambda p: p.write_bytes(corpus.rng.randbytes(4096))
    )
    corpus.bundle("bundle-empty", "structure", "an empty .litertlm", lambda p: p.write_bytes(b""))
    corpus.bundle("bundle-is-text", "structure", "a text file named .litertlm", lambda p: p.write_text("hello\n" * 100))
    dir_bundle = corpus.out / "bundle-is-a-folder" / "model.litertlm"
    dir_bundle.mkdir(parents=True)
    corpus.cases.append(Case("bundle-is-a-folder", str(dir_bundle), "structure", "a folder named .litertlm"))
    text_file = corpus.out / "plain-text-file.txt"
    text_file.write_text("not a model\n")
    corpus.cases.append(Case("plain-text-file", str(text_file), "structure", "a .txt file"))
    corpus.cases.append(Case("dev-null", "/dev/null", "structure", "/dev/null itself"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    cases = build(args.out)
    groups: dict[str, int] = {}
    for case in cases:
        groups[case.group] = groups.get(case.group, 0) + 1
    print(json.dumps({"cases": len(cases), "groups": groups}))


if __name__ == "__main__":
    main()
