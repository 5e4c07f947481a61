"""Run onnxruntime-genai's model builder with the fixes Enclave's models need.

``python -m assistant.catalog.convert.genai_builder ARGS`` takes the same arguments as
``python -m onnxruntime_genai.models.builder``. The one fix today: transformers 5
stores Gemma 3's RoPE settings per layer type (``rope_parameters =
{"full_attention": {...}, "sliding_attention": {...}}``) while the 0.18 builder
expects one flat dict (else ``KeyError: 'rope_type'``). The config is flattened
after transformers loads it, in this child process only.
"""

from __future__ import annotations

import runpy
import sys
from typing import Any


def flatten_rope(config: Any) -> Any:
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict) and "rope_type" not in params:
        full = params.get("full_attention")
        local = params.get("sliding_attention")
        if isinstance(full, dict):
            config.rope_parameters = dict(full)
            if "rope_theta" in full:
                config.rope_theta = full["rope_theta"]
        if isinstance(local, dict) and "rope_theta" in local:
            config.rope_local_base_freq = local["rope_theta"]
    return config


def main() -> None:
    import transformers

    original = transformers.AutoConfig.from_pretrained

    def from_pretrained(*args: Any, **kwargs: Any) -> Any:
        return flatten_rope(original(*args, **kwargs))

    transformers.AutoConfig.from_pretrained = from_pretrained  # type: ignore[method-assign]
    sys.argv[0] = "onnxruntime_genai.models.builder"
    runpy.run_module("onnxruntime_genai.models.builder", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
