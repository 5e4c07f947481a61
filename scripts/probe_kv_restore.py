#!/usr/bin/env python
"""Can onnxruntime-genai's KV cache be saved to disk and restored into a new generator?

Exports the cache after a prefill (``get_output("present.N.key")`` works), feeds it
to a fresh generator through the only input hook the 0.18 API has
(``set_model_input("past_key_values.N.key", array)``), appends the last prompt
token and compares the logits with a full prefill. Prints the evidence; Enclave
re-prefills a resumed conversation once while this says "no".

    python scripts/probe_kv_restore.py [MODEL_DIR]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime_genai as og


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/assets/tiny-llama")
    layers = json.loads((folder / "genai_config.json").read_text())["model"]["decoder"]["num_hidden_layers"]
    model = og.Model(str(folder))
    tok = og.Tokenizer(model)
    ids = np.asarray(tok.encode("The pump must be isolated before service."), dtype=np.int32)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=128)

    full = og.Generator(model, params)
    full.append_tokens(ids)
    reference = np.array(full.get_logits()).copy()
    cache = {
        f"{x}.{n}": np.array(full.get_output(f"present.{n}.{x}")).copy()
        for n in range(layers)
        for x in ("key", "value")
    }
    print(f"export: {len(cache)} tensors, e.g. present.0.key {cache['key.0'].shape}")

    restored = og.Generator(model, params)
    try:
        for name, array in cache.items():
            kind, n = name.split(".")
            restored.set_model_input(f"past_key_values.{n}.{kind}", array)
        restored.append_tokens(ids[-1:])
    except Exception as exc:  # noqa: BLE001
        print(f"import: refused ({exc})")
        return
    diff = float(np.abs(np.array(restored.get_logits()) - reference).max())
    held = restored.token_count()
    ok = held == len(ids) and diff < 1e-3
    print(f"import: generator holds {held} tokens (expected {len(ids)}), max logit difference {diff:.4f}")
    print("restore works" if ok else "restore does NOT work: the cache input is ignored; re-prefill instead")


if __name__ == "__main__":
    main()
