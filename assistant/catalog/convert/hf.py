"""GGUF → Hugging Face folder (dequantised float32), the first step of every build.

Needs the ``build`` extra (torch, transformers, gguf, accelerate). Run in a child
process by :mod:`assistant.catalog.convert.recipes` so its memory (1–2.5 GiB) is returned
to the system when it ends.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


class DamagedWeights(ValueError):
    """The GGUF's blocks dequantise to NaN or infinity (bit rot, a bad copy)."""


def not_finite(model: Any) -> list[tuple[str, int]]:
    """Each floating-point tensor of ``model`` that holds NaN or infinity, with how many.
    A GGUF has no checksums: a damaged scale (0xFFFF is NaN in float16) is only seen here."""
    import torch

    out = []
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                out.append((name, bad))
    return out


def gguf_to_hf(gguf_path: Path, out_dir: Path, chat_template: str | None = None) -> None:
    """Dequantise ``gguf_path`` into a float32 transformers folder at ``out_dir``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # The weights are fully dequantised now; transformers still refuses to save a
    # model it believes is "gguf-quantised" unless the quantiser is detached.
    damaged = not_finite(model)
    if damaged:
        shown = ", ".join(f"{name} ({count:,} values)" for name, count in damaged[:3])
        more = f" and {len(damaged) - 3} more" if len(damaged) > 3 else ""
        raise DamagedWeights(
            f"{name} is damaged: {len(damaged)} tensor(s) hold values that are not numbers (NaN or infinity) "
            f"once dequantised: {shown}{more}. The model would answer garbage; get a fresh copy of the file."
        )
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
    try:
        gguf_to_hf(Path(sys.argv[1]), Path(sys.argv[2]), template)
    except DamagedWeights as exc:  # the last line is what the build's error shows
        print(f"error: {exc}", flush=True)
        sys.exit(3)
