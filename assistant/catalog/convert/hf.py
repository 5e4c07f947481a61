"""GGUF → Hugging Face folder (dequantised float32), the first step of every build.

Needs the ``build`` extra (torch, transformers, gguf, accelerate). Run in a child
process by :mod:`assistant.catalog.convert.recipes` so its memory (1–2.5 GiB) is returned
to the system when it ends.
"""

from __future__ import annotations

import sys
from pathlib import Path


def gguf_to_hf(gguf_path: Path, out_dir: Path, chat_template: str | None = None) -> None:
    """Dequantise ``gguf_path`` into a float32 transformers folder at ``out_dir``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # The weights are fully dequantised now; transformers still refuses to save a
    # model it believes is "gguf-quantised" unless the quantiser is detached.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if chat_template and not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = chat_template
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


if __name__ == "__main__":  # invoked as a child process by the build recipes
    template = Path(sys.argv[3]).read_text() if len(sys.argv) > 3 else None
    gguf_to_hf(Path(sys.argv[1]), Path(sys.argv[2]), template)
