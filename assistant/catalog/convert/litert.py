"""Hugging Face folder → LiteRT-LM bundle (``.litertlm``), a child-process build step.

Converts a transformers folder (as written by :mod:`assistant.catalog.convert.hf`, i.e. a
float32 model dequantised from a GGUF) with ``litert-torch`` into one
``.litertlm`` file: a quantised prefill/decode TFLite model, the tokenizer and
the LLM metadata (chat template, start and stop tokens, context length).

    python -m assistant.catalog.convert.litert HF_DIR OUT_FILE [--prefill 16,64,256]
        [--cache-length 2048] [--quantization dynamic_wi8_afp32]
        [--stop-token-ids 1,106] [--chat-template FILE]

The metadata that litert-torch would write is corrected before packaging:

* **Chat template.** LiteRT-LM's conversation hands the template each message's
  ``content`` as a list of parts (``[{"type": "text", "text": ...}]``) where
  transformers passes a string; templates that concatenate ``content`` fail in
  the runtime. A preamble (:data:`CONTENT_PREAMBLE`) rebuilds ``messages`` with
  string content before the template proper runs, so any template works.
* **Start token.** The runtime renders ``bos_token`` as an empty string and
  prepends the bundle's start token itself. The start token is therefore set
  only when the template emits the BOS through ``bos_token``; a template that
  writes the BOS as a literal (``{{ '<bos>' }}``) is rewritten to use the
  variable, and a template without any BOS (ChatML: SmolLM2, whose declared
  "BOS" is ``<|im_start|>``) gets no start token, so no stray token is added.
* **Stop tokens** are exactly the given ids (default: the generation config's
  ``eos_token_id``); litert-torch would add string variants such as
  ``"!<end_of_turn>\\n"`` collected in a hash-ordered ``set``.
* **Reproducibility.** The bundle's ``uuid`` and ``creation_timestamp`` are
  derived from the inputs, and the process runs with ``PYTHONHASHSEED=0``
  (torch.export / MLIR lowering order some constant buffers by iterating
  string-keyed sets), so the same inputs give a byte-identical bundle.

The result is written to ``OUT_FILE + ".partial"`` and renamed into place.
Needs the ``build`` extra plus ``litert-torch``; Gemma 3 270M takes ~4–5 min
and ~6 GiB on 2 cores, which is why it runs in a child process.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
import types
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_PREFILL = (16, 64, 256)
DEFAULT_CACHE_LENGTH = 2048
DEFAULT_QUANTIZATION = "dynamic_wi8_afp32"
FIXED_TIMESTAMP = "2026-01-01T00:00:00+00:00"

# Rebuilds ``messages`` so every ``content`` is a string: a list of parts is
# joined from its text parts (other part types are dropped), any other keys of
# the message are kept. Written to render the same in Jinja2 and MiniJinja
# (the runtime's engine): no ``do`` extension, no dict methods.
CONTENT_PREAMBLE = (
    "{%- set _enclave = namespace(messages=[]) -%}"
    "{%- for _m in messages -%}"
    "{%- if _m['content'] is string -%}"
    "{%- set _enclave.messages = _enclave.messages + [_m] -%}"
    "{%- else -%}"
    "{%- set _enclave_text = namespace(value='') -%}"
    "{%- for _part in _m['content'] -%}"
    "{%- if _part['type'] == 'text' -%}{%- set _enclave_text.value = _enclave_text.value + _part['text'] -%}{%- endif -%}"
    "{%- endfor -%}"
    "{%- set _enclave.messages = _enclave.messages + [{'role': _m['role'], 'content': _enclave_text.value}] -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- set messages = _enclave.messages -%}"
)


@dataclass(frozen=True)
class BundleTemplate:
    """The chat template and start token to write into the bundle."""

    template: str
    start_token: str | None  # None: the runtime prepends nothing


def log(stage: str) -> None:
    """One short progress line on stdout (the parent process relays it)."""
    print(f"[litert] {stage}", flush=True)


# --------------------------------------------------------------------------- template


def accept_content_parts(template: str) -> str:
    """Return ``template`` with :data:`CONTENT_PREAMBLE` in front (idempotent)."""
    return template if template.startswith(CONTENT_PREAMBLE) else CONTENT_PREAMBLE + template


def bos_literal_to_variable(template: str, bos_token: str) -> str:
    """Rewrite output statements that print the BOS as a string literal
    (``{{ '<bos>' }}``) to print ``bos_token`` instead."""
    pattern = r"\{\{(-?)\s*(['\"])" + re.escape(bos_token) + r"\2\s*(-?)\}\}"
    return re.sub(pattern, r"{{\1 bos_token \3}}", template)


def render(template: str, messages: list[dict[str, Any]], bos_token: str, eos_token: str = "") -> str:
    """Render ``template`` with Jinja2 the way transformers does (trimmed blocks)."""
    import jinja2

    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    return env.from_string(template).render(
        messages=messages, bos_token=bos_token, eos_token=eos_token, add_generation_prompt=True
    )


def plan_template(template: str, bos_token: str | None) -> BundleTemplate:
    """Choose the bundle's template and start token so the runtime's prompt equals
    the one transformers renders (exactly one BOS where the template has one,
    none where it has none).

    The runtime renders ``bos_token`` as ``""`` and prepends the start token.
    """
    probe = [{"role": "user", "content": "x"}]
    if not bos_token:
        return BundleTemplate(accept_content_parts(template), None)
    expected = render(template, probe, bos_token)  # what the model was trained on
    candidate = bos_literal_to_variable(template, bos_token)
    runtime = render(candidate, probe, "")
    if expected.startswith(bos_token) and not runtime.startswith(bos_token) and bos_token + runtime == expected:
        return BundleTemplate(accept_content_parts(candidate), bos_token)
    # No BOS at all, or one the runtime reproduces as text: no start token.
    if render(template, probe, "") != expected:
        raise ValueError("the chat template uses bos_token other than as its first output")
    return BundleTemplate(accept_content_parts(template), None)


# --------------------------------------------------------------------------- litert-torch patches


def stub_tensorflow_importer() -> None:
    """litert-torch's exporter imports an image-generation model module that
    imports ``tensorflow`` (not installed, not needed for text models): replace
    that one module with an empty stand-in before importing the exporter."""
    name = "litert_torch.generative.export_hf.model_ext.bonsai_flux2.bonsai_flux2"
    stub = types.ModuleType(name)
    stub.BonsaiFlux2 = type("BonsaiFlux2", (), {})  # type: ignore[attr-defined]  # flux2_klein subclasses it
    sys.modules[name] = stub


def fix_metadata(meta: Any, bundle: BundleTemplate, stop_token_ids: Sequence[int]) -> Any:
    """Overwrite template, start token and stop tokens of an ``LlmMetadata`` proto."""
    meta.jinja_prompt_template = bundle.template
    meta.ClearField("prompt_templates")
    meta.ClearField("start_token")
    if bundle.start_token is not None:
        meta.start_token.token_str = bundle.start_token
    del meta.stop_tokens[:]
    for token_id in stop_token_ids:
        meta.stop_tokens.add().token_ids.ids.append(token_id)
    return meta


def patch_packaging(bundle: BundleTemplate, stop_token_ids: Sequence[int], bundle_uuid: str) -> None:
    """Make litert-torch's packaging step write our metadata, deterministically.

    litert-lm-builder stamps every bundle with a fresh ``uuid`` and
    ``creation_timestamp``; litert-torch derives template, start and stop tokens
    itself (see the module docstring for what goes wrong).
    """
    from litert_lm_builder import litertlm_builder as lmb
    from litert_torch.generative.export_hf.core import litert_lm_builder as torch_lmb

    def fixed_system_metadata(system_metadata: list) -> list:  # type: ignore[type-arg]
        kept = [m for m in system_metadata if m.key not in ("uuid", "creation_timestamp")]
        return [
            *kept,
            lmb.Metadata(key="uuid", value=bundle_uuid, dtype=lmb.DType.STRING),
            lmb.Metadata(key="creation_timestamp", value=FIXED_TIMESTAMP, dtype=lmb.DType.STRING),
        ]

    build_llm_metadata = torch_lmb.build_llm_metadata

    def our_llm_metadata(*args: Any, **kwargs: Any) -> Any:
        return fix_metadata(build_llm_metadata(*args, **kwargs), bundle, stop_token_ids)

    lmb.populate_system_metadata = fixed_system_metadata
    torch_lmb.build_llm_metadata = our_llm_metadata


# --------------------------------------------------------------------------- build


def read_hf_folder(hf_dir: Path) -> tuple[str | None, str | None, list[int]]:
    """Return (chat template, BOS string, eos ids) from a transformers folder
    without loading the model."""
    tok_cfg = json.loads((hf_dir / "tokenizer_config.json").read_text())
    template = tok_cfg.get("chat_template")
    jinja_file = hf_dir / "chat_template.jinja"
    if jinja_file.exists():
        template = jinja_file.read_text()
    bos = tok_cfg.get("bos_token")
    if isinstance(bos, dict):  # AddedToken serialised
        bos = bos.get("content")
    eos_ids: list[int] = []
    for name in ("generation_config.json", "config.json"):
        path = hf_dir / name
        if path.exists():
            value = json.loads(path.read_text()).get("eos_token_id")
            if value is not None:
                eos_ids = [value] if isinstance(value, int) else list(value)
                break
    return template, bos, eos_ids


def input_digest(hf_dir: Path, settings: dict[str, Any]) -> str:
    """A digest of the conversion's inputs (small files hashed, weights by size)."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for path in sorted(hf_dir.iterdir()):
        if path.is_file():
            h.update(path.name.encode())
            if path.suffix == ".safetensors" or path.stat().st_size > 64 << 20:
                h.update(str(path.stat().st_size).encode())
            else:
                h.update(path.read_bytes())
    return h.hexdigest()


def convert(
    hf_dir: Path,
    out_file: Path,
    *,
    prefill: Sequence[int] = DEFAULT_PREFILL,
    cache_length: int = DEFAULT_CACHE_LENGTH,
    quantization: str = DEFAULT_QUANTIZATION,
    stop_token_ids: Sequence[int] | None = None,
    chat_template: str | None = None,
) -> Path:
    """Convert ``hf_dir`` into the ``.litertlm`` bundle ``out_file``."""
    start = time.perf_counter()
    hf_template, bos, eos_ids = read_hf_folder(hf_dir)
    template = chat_template if chat_template is not None else hf_template
    if not template:
        raise SystemExit(f"no chat template in {hf_dir}; pass --chat-template")
    stops = list(stop_token_ids) if stop_token_ids else eos_ids
    if not stops:
        raise SystemExit("no eos_token_id in the model's configs; pass --stop-token-ids")
    bundle = plan_template(template, bos)
    settings = {
        "prefill": list(prefill),
        "cache_length": cache_length,
        "quantization": quantization,
        "stop_token_ids": stops,
        "template": bundle.template,
        "start_token": bundle.start_token,
    }
    bundle_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, "enclave/litertlm/" + input_digest(hf_dir, settings)))
    log(f"template: start token {bundle.start_token!r}, stop token ids {stops}")

    stub_tensorflow_importer()
    log("importing litert-torch")
    from litert_torch.generative.export_hf import export as hf_export

    patch_packaging(bundle, stops, bundle_uuid)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    partial = out_file.with_name(out_file.name + ".partial")
    with tempfile.TemporaryDirectory(prefix="litert-", dir=out_file.parent) as tmp:
        log(f"exporting (prefill {list(prefill)}, cache {cache_length}, {quantization}); takes minutes")
        hf_export.export(
            model=str(hf_dir),
            output_dir=tmp,
            prefill_lengths=list(prefill),
            cache_length=cache_length,
            quantization_recipe=quantization,
            use_jinja_template=True,
            bundle_litert_lm=True,
            export_vision_encoder=False,
            export_audio_encoder=False,
        )
        bundles = sorted(Path(tmp).glob("*.litertlm"))
        if len(bundles) != 1:
            raise SystemExit(f"expected one .litertlm from litert-torch, found {[b.name for b in bundles]}")
        shutil.move(bundles[0], partial)
    os.replace(partial, out_file)
    log(f"wrote {out_file} ({out_file.stat().st_size / 2**20:.1f} MiB, {time.perf_counter() - start:.0f} s)")
    return out_file


def int_list(text: str) -> list[int]:
    """Parse ``"16,64,256"``."""
    return [int(part) for part in text.split(",") if part.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m assistant.catalog.convert.litert", description=__doc__.splitlines()[0]
    )
    parser.add_argument("hf_dir", type=Path, help="transformers folder (from assistant.catalog.convert.hf)")
    parser.add_argument("out_file", type=Path, help="the .litertlm bundle to write")
    parser.add_argument(
        "--prefill", type=int_list, default=list(DEFAULT_PREFILL), help="prefill lengths, e.g. 16,64,256"
    )
    parser.add_argument("--cache-length", type=int, default=DEFAULT_CACHE_LENGTH, help="KV cache length (context)")
    parser.add_argument("--quantization", default=DEFAULT_QUANTIZATION, help="litert-torch quantization recipe")
    parser.add_argument("--stop-token-ids", type=int_list, default=None, help="default: generation config eos ids")
    parser.add_argument("--chat-template", type=Path, default=None, help="Jinja file; default: the folder's template")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point; re-executes itself with ``PYTHONHASHSEED=0`` for reproducible output."""
    if os.environ.get("PYTHONHASHSEED") != "0":
        command = [sys.executable, "-m", "assistant.catalog.convert.litert", *(sys.argv[1:] if argv is None else argv)]
        os.execve(sys.executable, command, {**os.environ, "PYTHONHASHSEED": "0"})
    # The offline switches are set: importing `assistant` applied them (assistant.privacy.offline).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = parse_args(argv)
    convert(
        args.hf_dir,
        args.out_file,
        prefill=args.prefill,
        cache_length=args.cache_length,
        quantization=args.quantization,
        stop_token_ids=args.stop_token_ids,
        chat_template=args.chat_template.read_text() if args.chat_template else None,
    )


if __name__ == "__main__":
    main()
