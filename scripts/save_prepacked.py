"""Write a copy of an ONNX model folder whose weights are saved as MLAS prepacked them.

A memory lever measured for issue 14 (docs/engine.md, "Where the memory goes"): ORT
can serialise the packed form of constant weights
(``session.save_prepacked_constant_initializers``) so that a later load maps them
instead of packing a second copy on the heap. The copy is specific to the CPU it was
packed on (ORT warns so), which is why no Enclave build uses it.

    python scripts/save_prepacked.py MODEL_DIR OUT_DIR
    python scripts/probe_engine_memory.py MODEL_DIR --variant 'prepacked=OUT_DIR@{"_prefill_chunk":512}'
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()
    import onnxruntime as ort

    config = json.loads((args.model_dir / "genai_config.json").read_text())
    source = args.model_dir / config["model"]["decoder"]["filename"]
    args.out_dir.mkdir(parents=True, exist_ok=False)
    for item in args.model_dir.iterdir():
        if item.is_file() and not item.name.startswith(source.name):
            shutil.copy2(item, args.out_dir / item.name)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(args.out_dir / "model.opt.onnx")
    options.add_session_config_entry("session.save_prepacked_constant_initializers", "1")
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name", "model.opt.onnx.data")
    options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    config["model"]["decoder"]["filename"] = "model.opt.onnx"
    (args.out_dir / "genai_config.json").write_text(json.dumps(config, indent=1))
    print(f"wrote {args.out_dir / 'model.opt.onnx'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
