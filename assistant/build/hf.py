"""GGUF → Hugging Face folder (dequantised float32), the first step of every build.

Needs the ``build`` extra (torch, transformers, gguf, accelerate). Run in a child
process by :mod:`assistant.build.recipes` so its memory (1–2.5 GiB) is returned
to the system when it ends.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _flatten_rope(config: dict[str, Any]) -> None:
    """Flatten transformers-5 per-layer-type rope settings for the genai builder.

    transformers 5 writes ``rope_parameters = {"full_attention": {...},
    "sliding_attention": {...}}`` for Gemma 3; the onnxruntime-genai 0.18 builder
    reads ``rope_theta``/``rope_scaling`` (else ``KeyError: 'rope_type'``).
    """
    params = config.get("rope_parameters")
    if not isinstance(params, dict):
        return
    full = params.get("full_attention", params)
    local = params.get("sliding_attention")
    if isinstance(full, dict) and "rope_theta" in full:
        config["rope_theta"] = full["rope_theta"]
        if full.get("rope_type", "default") not in ("default", None):
            config["rope_scaling"] = {k: v for k, v in full.items() if k != "rope_theta"}
        else:
            config["rope_scaling"] = None
    if isinstance(local, dict) and "rope_theta" in local:
        config["rope_local_base_freq"] = local["rope_theta"]
    config.pop("rope_parameters", None)


def gguf_to_hf(gguf_path: Path, out_dir: Path, chat_template: str | None = None) -> None:
    """Dequantise ``gguf_path`` into a float32 transformers folder at ``out_dir``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # The weights are fully dequantised now; transformers still refuses to save a
    # model it believes is "gguf-quantised" unless the quantiser is detached.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if chat_template and not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = chat_template
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)

    config_path = out_dir / "config.json"
    config = json.loads(config_path.read_text())
    _flatten_rope(config)
    config_path.write_text(json.dumps(config, indent=2))


if __name__ == "__main__":  # invoked as a child process by the build recipes
    template = Path(sys.argv[3]).read_text() if len(sys.argv) > 3 else None
    gguf_to_hf(Path(sys.argv[1]), Path(sys.argv[2]), template)
