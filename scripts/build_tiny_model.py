#!/usr/bin/env python
"""Build the tiny random-weight test model for the onnxruntime-genai engine.

A 2-layer Llama (hidden 64) with a byte-level BPE tokenizer trained here on a
fixed corpus (~320 tokens), so multi-byte characters really are split across
tokens. Weights come from a fixed seed and the builder is deterministic, so the
output is byte-identical run to run (about 300 KB; committed under
``tests/assets/tiny-llama``). Needs the ``build`` extra; takes ~15 s.

The model emits noise. Its end-of-turn token's output row is zeroed so greedy
decoding never picks it (the largest of ~300 random logits is positive), which
lets tests rely on answers running to their token limit.

    python scripts/build_tiny_model.py tests/assets/tiny-llama
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = [
    "The capital of France is Paris. The pump must be isolated before service.",
    "Check the pressure gauge, close the valve, and record the reading in the log.",
    "The agreement may be terminated by either party with thirty days written notice.",
    "Hello, how are you today? I am fine, thank you. What is the weather like?",
    "Voilà: café, naïve, façade, Ærø, smörgåsbord, Straße, Ελληνικά, русский язык.",
    "日本語のテキストと中文文本, 한국어 텍스트, עברית, العربية, emoji 😀🚀🔧⚠️✅.",
    "def main():\n    print('hello world')\n    return 0\n",
    "1 2 3 4 5 6 7 8 9 10 100 1000 3.14159 2.71828 -42 +7 = % $ € £ ¥",
]


def build_hf(out: Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|im_end|>",
    )
    fast.chat_template = CHATML

    torch.manual_seed(1234)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        initializer_range=0.2,
        tie_word_embeddings=False,
        bos_token_id=fast.convert_tokens_to_ids("<|im_start|>"),
        eos_token_id=fast.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=fast.convert_tokens_to_ids("<|im_end|>"),
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight[config.eos_token_id].zero_()
    model.save_pretrained(out)
    fast.save_pretrained(out)


def main() -> None:
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/assets/tiny-llama")
    with tempfile.TemporaryDirectory() as tmp:
        hf = Path(tmp) / "hf"
        build_hf(hf)
        onnx = Path(tmp) / "onnx"
        proc = subprocess.run(
            [
                sys.executable, "-m", "onnxruntime_genai.models.builder",
                "-i", str(hf), "-o", str(onnx), "-p", "int4", "-e", "cpu", "-c", str(Path(tmp) / "cache"),
                "--extra_options", "hf_token=false", "accuracy_level=1",
            ],
            capture_output=True,
            text=True,
        )  # fmt: skip
        if proc.returncode != 0:
            sys.exit(f"the onnxruntime-genai builder failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        if not (onnx / "chat_template.jinja").exists():
            (onnx / "chat_template.jinja").write_text(CHATML)
        # Keep the folder deterministic: drop timestamps the builder may write.
        config = json.loads((onnx / "genai_config.json").read_text())
        (onnx / "genai_config.json").write_text(json.dumps(config, indent=4, sort_keys=True) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(onnx, target)
    size = sum(p.stat().st_size for p in target.iterdir())
    print(f"tiny model written to {target} ({size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
