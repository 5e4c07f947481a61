#!/usr/bin/env python
"""Build a tiny random-weight Llama as a GGUF file, the way llama.cpp writes one.

The test of ``enclave models add FILE.gguf`` needs a GGUF that converts in seconds:
a 2-layer Llama (hidden 64) with the byte-level BPE tokenizer of
``scripts/build_tiny_model.py`` (trained here on the same corpus), its weights from a
fixed seed, written with gguf-py's ``GGUFWriter`` in llama.cpp's layout (attn_q/attn_k
rows permuted for RoPE, tied embedding, ``tokenizer.ggml.*`` keys). Quantisation types
are mixed on purpose so that every path of the conversion runs:

* ``Q4_1`` for most projections, ``Q4_K``, ``Q5_0`` and ``Q6_K`` for one each, and
  ``Q8_0`` for the token embedding (= the output head): carried over exactly;
* ``F16`` for ``blk.1.attn_output``, and layer 1's q/k/v, which mix ``Q4_1`` with a
  ``Q8_0`` v (the builder fuses the three into one matrix): re-quantised to int4.

The k-quant blocks are random bytes with sane scales (gguf-py cannot quantise to
them); the weights are noise anyway.

``--base`` leaves out the chat template (a base model); ``--arch NAME`` writes another
architecture name into the header (for the refusal test). The output is byte-identical
run to run (~60 KB); it takes a few seconds. Needs the ``build`` extra.

    python scripts/build_tiny_gguf.py OUT.gguf [--base] [--arch qwen2]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path
from types import ModuleType

import numpy as np

HIDDEN, FFN, LAYERS, HEADS, KV_HEADS, CONTEXT = 64, 256, 2, 4, 2, 1024
#: Tensor types that are not Q4_1: the rest of the projections are.
SPECIAL_TYPES = {
    "blk.0.ffn_down.weight": "Q4_K",
    "blk.0.ffn_up.weight": "Q5_0",
    "blk.1.ffn_down.weight": "Q6_K",
    "blk.1.attn_v.weight": "Q8_0",
    "blk.1.attn_output.weight": "F16",
    "token_embd.weight": "Q8_0",
}
#: Random k-quant super-blocks: (bytes per 256 values, byte offsets of their fp16 scales, scale).
K_QUANTS = {"Q4_K": (144, (0, 2), 1e-3), "Q6_K": (210, (208,), 2e-4)}


def _tiny_model_script() -> ModuleType:
    """scripts/build_tiny_model.py, for its corpus and chat template (one source of both)."""
    path = Path(__file__).with_name("build_tiny_model.py")
    spec = importlib.util.spec_from_file_location("build_tiny_model", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tokenizer() -> tuple[list[str], list[str], list[int], dict[str, int]]:
    """(tokens by id, merges, token types, special token ids) of the tiny BPE tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tiny = _tiny_model_script()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tiny.CORPUS * 4, trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    vocab: dict[str, int] = model["vocab"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda item: item[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    types = [3 if t in specials else 1 for t in tokens]  # 3: control
    return tokens, merges, types, {s: vocab[s] for s in specials}


def permute(weight: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's row order for attn_q / attn_k (what transformers undoes when it loads)."""
    rows = weight.shape[0]
    return weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def weights(vocab: int, eos: int) -> dict[str, np.ndarray]:
    """Random float32 weights in GGUF names and shapes (``[out, in]``, as transformers has them)."""
    rng = np.random.default_rng(1234)

    def matrix(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * 0.2).astype(np.float32)

    head_dim = HIDDEN // HEADS
    out: dict[str, np.ndarray] = {}
    embedding = matrix(vocab, HIDDEN)
    # The end-of-turn row is zero, so greedy decoding never picks it (tests run answers to
    # their token limit, as with tests/assets/tiny-llama).
    embedding[eos] = 0.0
    out["token_embd.weight"] = embedding
    for layer in range(LAYERS):
        blk = f"blk.{layer}"
        out[f"{blk}.attn_norm.weight"] = np.ones(HIDDEN, dtype=np.float32)
        out[f"{blk}.attn_q.weight"] = permute(matrix(HEADS * head_dim, HIDDEN), HEADS)
        out[f"{blk}.attn_k.weight"] = permute(matrix(KV_HEADS * head_dim, HIDDEN), KV_HEADS)
        out[f"{blk}.attn_v.weight"] = matrix(KV_HEADS * head_dim, HIDDEN)
        out[f"{blk}.attn_output.weight"] = matrix(HIDDEN, HEADS * head_dim)
        out[f"{blk}.ffn_norm.weight"] = np.ones(HIDDEN, dtype=np.float32)
        out[f"{blk}.ffn_gate.weight"] = matrix(FFN, HIDDEN)
        out[f"{blk}.ffn_up.weight"] = matrix(FFN, HIDDEN)
        out[f"{blk}.ffn_down.weight"] = matrix(HIDDEN, FFN)
    out["output_norm.weight"] = np.ones(HIDDEN, dtype=np.float32)
    return out


def k_quant_rows(rows: int, cols: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Random rows of ``kind`` super-blocks whose fp16 scales are small and positive."""
    size, at_bytes, scale = K_QUANTS[kind]
    raw = rng.integers(0, 256, (rows, cols // 256, size)).astype(np.uint8)
    for at in at_bytes:
        value = (rng.random((rows, cols // 256)) * scale + scale / 2).astype(np.float16)
        raw[..., at : at + 2] = value[..., None].view(np.uint8)
    return raw.reshape(rows, -1)


def tensor_data(name: str, value: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """(data as GGUFWriter takes it, ggml type name) of one tensor."""
    import gguf

    kind = SPECIAL_TYPES.get(name, "Q4_1") if value.ndim == 2 else "F32"
    if kind == "F32":
        return value, kind
    if kind == "F16":
        return value.astype(np.float16), kind
    if kind in K_QUANTS:
        return k_quant_rows(*value.shape, kind, rng), kind
    return gguf.quants.quantize(value, gguf.GGMLQuantizationType[kind]), kind


def build(out: Path, *, base: bool = False, arch: str = "llama") -> Path:
    """Write the tiny GGUF to ``out`` and return it."""
    import gguf

    tokens, merges, types, special = tokenizer()
    writer = gguf.GGUFWriter(str(out), arch)
    writer.add_name("Tiny Llama Base" if base else "Tiny Llama Chat")
    writer.add_license("apache-2.0")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_1)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(special["<|im_start|>"])
    writer.add_eos_token_id(special["<|im_end|>"])
    writer.add_unk_token_id(special["<|endoftext|>"])
    writer.add_pad_token_id(special["<|im_end|>"])
    writer.add_add_bos_token(False)
    if not base:
        writer.add_chat_template(_tiny_model_script().CHATML)
    rng = np.random.default_rng(99)
    for name, value in weights(len(tokens), special["<|im_end|>"]).items():
        data, kind = tensor_data(name, value, rng)
        writer.add_tensor(name, data, raw_dtype=gguf.GGMLQuantizationType[kind])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--base", action="store_true", help="no chat template (a base model)")
    parser.add_argument("--arch", default="llama", help="architecture name written into the header")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    build(args.out, base=args.base, arch=args.arch)
    print(f"tiny GGUF written to {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
