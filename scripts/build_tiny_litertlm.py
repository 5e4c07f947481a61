#!/usr/bin/env python
"""Build the tiny random-weight test model for the LiteRT-LM engine.

A 2-layer Gemma-3-like model (hidden 64, one sliding + one global attention
layer) with a byte-level BPE tokenizer trained here on a fixed corpus that
includes multi-byte text ("café 😀 日本語"), so characters really are split
across tokens. It is converted with litert-torch (dynamic int8, prefill
signatures 16/64/256, KV cache 1024) into a ``.litertlm`` bundle whose metadata
carries a Gemma-style Jinja chat template, ``<bos>`` as start token and
``<end_of_turn>`` as stop token.

The model emits noise. Unlike Gemma its output head is not tied to the
embeddings: with tied random weights the residual stream keeps the input
token's embedding and greedy decoding just repeats the last prompt token. The
output rows of the stop tokens are zeroed, so their logits are 0 and greedy
decoding never picks them (the largest of ~350 random logits is positive),
which lets tests rely on answers running to their token limit.

litert-torch needs torch and transformers, which Enclave's runtime venv must
not carry, so this runs in a separate venv::

    python3.11 -m venv /work/litert-venv
    /work/litert-venv/bin/pip install torch==2.13.0          # CPU wheel, first
    /work/litert-venv/bin/pip install litert-torch==0.10.0 transformers==5.24.0
    /work/litert-venv/bin/python scripts/build_tiny_litertlm.py tests/assets/tiny-gemma.litertlm

Takes about a minute on 2 cores; weights come from fixed seeds.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import time
import types
from pathlib import Path

# Offline machine: never try the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PREFILL_LENGTHS = [16, 64, 256]
CACHE_LENGTH = 1024

# Gemma 3's own template, simplified: a system message is folded into the
# first user turn (Gemma has no system role), the assistant is "model".
# LiteRT-LM's Conversation hands the template each message's content as a list
# of parts ([{"type": "text", "text": ...}]) where transformers passes a string,
# so both are accepted. Written to render the same in Jinja2 and MiniJinja.
GEMMA_TEMPLATE = (
    "{% macro text(content) %}"
    "{% if content is string %}{{ content }}"
    "{% else %}{% for part in content %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
    "{% endif %}"
    "{% endmacro %}"
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{% set first_user_prefix = text(messages[0]['content']) + '\n\n' %}"
    "{% set loop_messages = messages[1:] %}"
    "{% else %}"
    "{% set first_user_prefix = '' %}"
    "{% set loop_messages = messages %}"
    "{% endif %}"
    "{% for message in loop_messages %}"
    "{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ text(message['content']) }}"
    "{{ '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

CORPUS = [
    "The capital of France is Paris. The pump must be isolated before service.",
    "Check the pressure gauge, close the valve, and record the reading in the log.",
    "The agreement may be terminated by either party with thirty days written notice.",
    "Hello, how are you today? I am fine, thank you. What is the weather like?",
    "Voilà: café, naïve, façade, Ærø, smörgåsbord, Straße, Ελληνικά, русский язык.",
    "café 😀 日本語 — 日本語のテキストと中文文本, 한국어 텍스트, emoji 😀🚀🔧⚠️✅.",
    "def main():\n    print('hello world')\n    return 0\n",
    "1 2 3 4 5 6 7 8 9 10 100 1000 3.14159 2.71828 -42 +7 = % $ € £ ¥",
    "user model system assistant question answer",
]

# Gemma's special tokens at Gemma's ids where they are small (pad 0, eos 1, bos 2, unk 3).
SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]


def stub_tensorflow_importer() -> None:
    """litert-torch's export module imports an image-generation model module that
    imports ``tensorflow`` (not installed, not needed for text models): replace
    that one module with an empty stand-in before importing the exporter."""
    name = "litert_torch.generative.export_hf.model_ext.bonsai_flux2.bonsai_flux2"
    stub = types.ModuleType(name)
    stub.BonsaiFlux2 = type("BonsaiFlux2", (), {})  # flux2_klein subclasses it at import
    sys.modules[name] = stub


def make_bundle_reproducible(stop_token_ids: list[int]) -> None:
    """Patch the two non-deterministic steps of packaging.

    litert-lm-builder stamps every bundle with a fresh ``uuid`` and
    ``creation_timestamp``; litert-torch collects stop tokens in a ``set`` (its
    order follows the string hash seed) and adds punctuation-prefixed string
    variants of the template's turn suffix ("!<end_of_turn>\\n", …) meant for
    SentencePiece merges. Here the stop tokens become exactly the given ids, and
    the system metadata is fixed.
    """
    import uuid

    from litert_lm_builder import litertlm_builder as lmb
    from litert_torch.generative.export_hf.core import litert_lm_builder as torch_lmb

    def fixed_system_metadata(system_metadata: list) -> list:  # type: ignore[type-arg]
        kept = [m for m in system_metadata if m.key not in ("uuid", "creation_timestamp")]
        return [
            *kept,
            lmb.Metadata(
                key="uuid", value=str(uuid.uuid5(uuid.NAMESPACE_URL, "enclave/tiny-gemma")), dtype=lmb.DType.STRING
            ),
            lmb.Metadata(key="creation_timestamp", value="2026-01-01T00:00:00+00:00", dtype=lmb.DType.STRING),
        ]

    build_llm_metadata = torch_lmb.build_llm_metadata

    def clean_llm_metadata(*args, **kwargs):  # type: ignore[no-untyped-def]
        meta = build_llm_metadata(*args, **kwargs)
        del meta.stop_tokens[:]
        for token_id in stop_token_ids:
            meta.stop_tokens.add().token_ids.ids.append(token_id)
        return meta

    lmb.populate_system_metadata = fixed_system_metadata
    torch_lmb.build_llm_metadata = clean_llm_metadata


def build_hf(out: Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=352,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=["<start_of_turn>", "<end_of_turn>"],
    )
    fast.chat_template = GEMMA_TEMPLATE
    ids = {t: fast.convert_tokens_to_ids(t) for t in SPECIALS}
    assert ids == {t: i for i, t in enumerate(SPECIALS)}, ids

    torch.manual_seed(1234)
    config = Gemma3TextConfig(
        vocab_size=len(fast),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=CACHE_LENGTH,
        sliding_window=128,
        layer_types=["sliding_attention", "full_attention"],
        initializer_range=0.2,
        tie_word_embeddings=False,
        pad_token_id=ids["<pad>"],
        bos_token_id=ids["<bos>"],
        eos_token_id=[ids["<eos>"], ids["<end_of_turn>"]],
    )
    model = Gemma3ForCausalLM(config).eval()
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        for stop in ("<eos>", "<end_of_turn>"):
            head[ids[stop]].zero_()
    model.generation_config.eos_token_id = [ids["<eos>"], ids["<end_of_turn>"]]
    model.save_pretrained(out)
    fast.save_pretrained(out)


def convert(hf: Path, out_dir: Path) -> Path:
    stub_tensorflow_importer()
    from litert_torch.generative.export_hf import export as hf_export

    make_bundle_reproducible([SPECIALS.index("<eos>"), SPECIALS.index("<end_of_turn>")])

    hf_export.export(
        model=str(hf),
        output_dir=str(out_dir),
        prefill_lengths=PREFILL_LENGTHS,
        cache_length=CACHE_LENGTH,
        quantization_recipe="dynamic_wi8_afp32",
        use_jinja_template=True,
        bundle_litert_lm=True,
        export_vision_encoder=False,
        export_audio_encoder=False,
    )
    bundles = sorted(out_dir.glob("*.litertlm"))
    if len(bundles) != 1:
        sys.exit(f"expected one .litertlm in {out_dir}, found {[b.name for b in bundles]}")
    return bundles[0]


def main() -> None:
    # torch.export / MLIR lowering orders some constant buffers by iterating
    # string-keyed sets: with a random hash seed two RoPE tables swap places
    # between runs. A fixed seed makes the bundle byte-identical run to run.
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "PYTHONHASHSEED": "0"})
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/assets/tiny-gemma.litertlm")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        hf = Path(tmp) / "hf"
        build_hf(hf)
        bundle = convert(hf, Path(tmp) / "out")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bundle, target)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    print(
        f"tiny LiteRT-LM bundle written to {target} "
        f"({target.stat().st_size / 1024:.0f} KiB, sha256 {digest[:16]}…, {time.perf_counter() - start:.0f} s)"
    )


if __name__ == "__main__":
    main()
