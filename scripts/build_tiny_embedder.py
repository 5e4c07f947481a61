#!/usr/bin/env python
"""Build the tiny random-weight sentence encoder the tests use in place of all-MiniLM-L6-v2.

A 2-layer BERT (hidden 32) with a WordPiece vocabulary trained here on a fixed
text, saved as a sentence-transformers folder and converted by the same code as
the real model (:func:`assistant.catalog.convert.embedder.export`), so the output has the
real layout: model.onnx, tokenizer.json, embedder.json, enclave-manifest.json.
Weights come from a fixed seed and the manifest carries no times, so two runs are
byte-identical (about 170 KB; committed under ``tests/assets/tiny-embedder``).
Needs the ``build`` extra; takes ~10 s.

    python scripts/build_tiny_embedder.py tests/assets/tiny-embedder
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from assistant.catalog.convert.embedder import export  # noqa: E402
from assistant.catalog.manifests import MANIFEST_NAME, combined_sha256, sha256_file  # noqa: E402

CORPUS = [
    "To reset the pressure of the pump, hold the red button for five seconds.",
    "Check the pressure gauge, close the valve, and record the reading in the log.",
    "The pump must be isolated and drained before any service on the impeller.",
    "Either party may terminate this agreement with thirty days written notice.",
    "The supplier shall deliver the goods within ten business days of the order.",
    "Hello, how are you today? I am fine, thank you. What is the weather like?",
    "Café, naïve, façade, Straße, smörgåsbord, Ελληνικά, русский язык, 日本語.",
    "1 2 3 4 5 6 7 8 9 10 100 1000 3.14 -42 + = % $ € £",
]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SUFFIXES = ["##s", "##ed", "##ing", "##er", "##ly"]
MAX_SEQ_LENGTH = 64


def write_tokenizer(path: Path) -> int:
    """A lower-casing BERT WordPiece tokenizer whose vocabulary comes from CORPUS; returns its size.

    tokenizers' WordPieceTrainer breaks ties in hash-map order, so two trainings of
    this corpus gave different vocabularies. The vocabulary is therefore derived
    here, in sorted order, with the tokenizer's own normaliser and pre-tokeniser:
    every character (word-initial and ``##`` continuation), a few suffixes, and every
    word of the corpus; other words split into pieces as in the real model.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words = {w for text in CORPUS for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))}
    chars = {c for w in words for c in w}
    pieces = sorted(chars) + sorted(f"##{c}" for c in chars) + SUFFIXES + sorted(w for w in words if len(w) > 1)
    vocab = {token: i for i, token in enumerate(dict.fromkeys(SPECIALS + pieces))}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tok.save(str(path))
    return len(vocab)


def write_source(folder: Path) -> None:
    """A sentence-transformers folder: random BERT weights, tokenizer, pooling config."""
    import torch
    from transformers import BertConfig, BertModel

    folder.mkdir(parents=True)
    vocab = write_tokenizer(folder / "tokenizer.json")
    config = BertConfig(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    BertModel(config).eval().save_pretrained(folder)
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": MAX_SEQ_LENGTH}))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True})
    )


def write_manifest(folder: Path) -> None:
    """The installed-manifest layout, without times (so the file is reproducible)."""
    files = {
        p.name: {"size": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != MANIFEST_NAME
    }
    manifest = {
        "name": "tiny-embedder",
        "engine": "onnx",
        "kind": "embedding",
        "chat": False,
        "licence": "Apache-2.0",
        "context_length": MAX_SEQ_LENGTH,
        "source": {"package": "scripts/build_tiny_embedder.py"},
        "files": files,
        "sha256": combined_sha256(files),
    }
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def main(target: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "tiny-minilm"
        write_source(source)
        built = Path(tmp) / "out"
        export(source, built, "fp32", "tiny-embedder", {"package": "scripts/build_tiny_embedder.py"})
        write_manifest(built)
        shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(built, target)
    size = sum(p.stat().st_size for p in target.iterdir())
    print(f"wrote {target} ({size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "tests" / "assets" / "tiny-embedder")
