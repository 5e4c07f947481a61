#!/usr/bin/env python
"""Rewrite a built onnxruntime-genai model folder to measure one engine lever.

Graph edits that the builder has no option for, each written to a copy of the
folder, then measured against the original with ``scripts/probe_engine_memory.py``::

    python scripts/graph_levers.py kv16 MODEL_DIR OUT_DIR
    python scripts/graph_levers.py offset-nodes RTN_DIR OUT_DIR
    python scripts/graph_levers.py reduce-blocksum|fuse-gate-up MODEL_DIR OUT_DIR
    python scripts/graph_levers.py fp32-activations MODEL_DIR OUT_DIR [--which body|head|all]
    python scripts/probe_engine_memory.py MODEL_DIR --variant kv16=OUT_DIR --rounds 2 --short --agreement

``kv16``: the KV cache and attention in fp16 inside an fp32 graph: the packed q/k/v
goes through a Cast to fp16 before each GroupQueryAttention, its output through a Cast
back, the rotary caches become fp16, and the past/present inputs and outputs are
declared fp16 (genai sizes its cache from them), which halves the preallocated cache.

``offset-nodes``: what the GGUF transcoder's extra nodes cost on their own. It adds to
a build *without* transcoding (the builder's round-to-nearest int4, whose
MatMulNBits carry their own zero points) the same block-sum MatMul, offset MatMul and
Add per projection that ``assistant/catalog/convert/transcode.py`` adds, with zero
offsets, so the answers do not change and only the extra work is measured.

``reduce-blocksum``: the transcoder's block-sum MatMuls (the input times a 0/1
indicator matrix) as a Reshape to blocks of 32 and a ReduceSum.

``fuse-gate-up``: each layer's gate and up projections, which read the same input, as
one MatMulNBits of twice the width with one offset MatMul and one Add, then a Split.

``fp32-activations [--which body|head|all]``: the MatMulNBits' ``accuracy_level`` set
to 1 (fp32 activations) instead of the build's 4 (int8), weights unchanged.

A measurement tool: nothing in Enclave uses these edits (docs/engine.md has the figures).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

import numpy as np

QK = 32


def _load(folder: Path) -> Any:
    import onnx

    return onnx.load(str(folder / "model.onnx"), load_external_data=True)


def _save(model: Any, src: Path, out: Path) -> None:
    import onnx

    shutil.copytree(src, out, dirs_exist_ok=True)
    for name in ("model.onnx", "model.onnx.data"):
        (out / name).unlink(missing_ok=True)
    used = {i for n in model.graph.node for i in n.input}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    onnx.save(model, str(out / "model.onnx"), save_as_external_data=True, location="model.onnx.data")


def kv16(src: Path, out: Path) -> int:
    """fp16 attention and KV cache; returns the number of attention nodes changed."""
    from onnx import TensorProto
    from onnx import helper as h
    from onnx import numpy_helper as nh

    model = _load(src)
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    halves: dict[str, str] = {}
    nodes = []
    changed = 0
    for node in graph.node:
        if node.op_type != "GroupQueryAttention":
            nodes.append(node)
            continue
        changed += 1
        packed = node.input[0]
        nodes.append(h.make_node("Cast", [packed], [packed + "/fp16"], to=TensorProto.FLOAT16, name=node.name + "/in"))
        node.input[0] = packed + "/fp16"
        for i in (7, 8):  # cos_cache, sin_cache
            name = node.input[i]
            if name in inits and name not in halves:
                halves[name] = name + "_fp16"
                graph.initializer.append(nh.from_array(nh.to_array(inits[name]).astype(np.float16), halves[name]))
            node.input[i] = halves.get(name, name)
        result = node.output[0]
        node.output[0] = result + "/fp16"
        nodes.append(node)
        nodes.append(h.make_node("Cast", [result + "/fp16"], [result], to=TensorProto.FLOAT, name=node.name + "/out"))
    del graph.node[:]
    graph.node.extend(nodes)
    for value in [*graph.input, *graph.output]:
        if value.name.startswith(("past_key_values.", "present.")):
            value.type.tensor_type.elem_type = TensorProto.FLOAT16
    _save(model, src, out)
    return changed


def offset_nodes(src: Path, out: Path) -> int:
    """The transcoder's block sums, offset MatMuls and Adds with zero offsets; returns nodes added."""
    from onnx import helper as h
    from onnx import numpy_helper as nh

    model = _load(src)
    graph = model.graph
    nodes = []
    blocksums: dict[str, str] = {}
    added = 0
    for node in graph.node:
        nodes.append(node)
        if node.op_type != "MatMulNBits" or "lm_head" in node.name:
            continue
        attrs = {a.name: h.get_attribute_value(a) for a in node.attribute}
        nb, n = attrs["K"] // QK, attrs["N"]
        x = node.input[0]
        if x not in blocksums:
            indicator = node.name + "/zero_offsets_E"
            graph.initializer.append(nh.from_array(np.repeat(np.eye(nb, dtype=np.float32), QK, axis=0), indicator))
            blocksums[x] = x + "/blocksum"
            nodes.append(h.make_node("MatMul", [x, indicator], [blocksums[x]], name=node.name + "/blocksum"))
            added += 1
        offsets = node.name + "/zero_offsets"
        graph.initializer.append(nh.from_array(np.zeros((nb, n), np.float32), offsets))
        y = node.output[0]
        node.output[0] = y + "/sym"
        nodes.append(h.make_node("MatMul", [blocksums[x], offsets], [y + "/offset"], name=node.name + "/offset"))
        nodes.append(h.make_node("Add", [y + "/sym", y + "/offset"], [y], name=node.name + "/add"))
        added += 2
    del graph.node[:]
    graph.node.extend(nodes)
    _save(model, src, out)
    return added


def reduce_blocksum(src: Path, out: Path) -> int:
    """The transcoder's block-sum MatMuls (x times a 0/1 indicator) as Reshape + ReduceSum;
    returns the number of MatMuls replaced."""
    from onnx import helper as h
    from onnx import numpy_helper as nh

    model = _load(src)
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    nodes = []
    shapes: set[int] = set()
    changed = 0
    for node in graph.node:
        weight = node.input[1] if node.op_type == "MatMul" and len(node.input) > 1 else ""
        if not weight.startswith("transcode.blocksum."):
            nodes.append(node)
            continue
        nb = int(inits[weight].dims[1])
        shape = f"reduce_blocksum.shape.{nb}"
        if nb not in shapes:
            shapes.add(nb)
            graph.initializer.append(nh.from_array(np.array([0, 0, nb, QK], np.int64), shape))
        x, y = node.input[0], node.output[0]
        nodes.append(h.make_node("Reshape", [x, shape], [y + "/blocks"], name=node.name + "/reshape"))
        nodes.append(h.make_node("ReduceSum", [y + "/blocks", "reduce_blocksum.axis"], [y], keepdims=0, name=node.name))
        changed += 1
    graph.initializer.append(nh.from_array(np.array([-1], np.int64), "reduce_blocksum.axis"))
    del graph.node[:]
    graph.node.extend(nodes)
    _save(model, src, out)
    return changed


def fuse_gate_up(src: Path, out: Path) -> int:
    """Each layer's gate and up projections (same input) as one MatMulNBits of twice the
    width, one offset MatMul and one Add, then a Split; returns the layers fused."""
    from onnx import helper as h
    from onnx import numpy_helper as nh

    model = _load(src)
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    adds = {i: n for n in graph.node if n.op_type == "Add" for i in n.input}
    projections = {n.name: n for n in graph.node if n.op_type == "MatMulNBits"}

    def tail(mnb: Any) -> tuple[Any, Any]:
        """The transcoder's Add(sym, offset) after a projection, and the offset MatMul."""
        add = adds[mnb.output[0]]
        return add, producer[next(i for i in add.input if i != mnb.output[0])]

    def cat(a: str, b: str, axis: int, name: str) -> str:
        graph.initializer.append(
            nh.from_array(np.concatenate([nh.to_array(inits[a]), nh.to_array(inits[b])], axis=axis), name)
        )
        return name

    drop: set[int] = set()
    fused: dict[int, list[Any]] = {}
    for name, gate in projections.items():
        if "/mlp/gate_proj/" not in name:
            continue
        up = projections[name.replace("gate_proj", "up_proj")]
        (g_add, g_off), (u_add, u_off) = tail(gate), tail(up)
        attrs = {a.name: h.get_attribute_value(a) for a in gate.attribute}
        n = int(attrs["N"])
        attrs["N"] = 2 * n
        base = name.replace("gate_proj", "gate_up_proj")
        w = cat(gate.input[1], up.input[1], 0, base + ".weight_Q4")
        sc = cat(gate.input[2], up.input[2], 0, base + ".weight_scales")
        of = cat(g_off.input[1], u_off.input[1], 1, base + ".weight_block_offsets")
        graph.initializer.append(nh.from_array(np.array([n, n], np.int64), base + "/split"))
        # placed where the up projection's Add was, the last of the six: its inputs exist by then
        fused[id(u_add)] = [
            h.make_node(
                "MatMulNBits", [gate.input[0], w, sc], [base + "/sym"], domain="com.microsoft", name=base, **attrs
            ),
            h.make_node("MatMul", [g_off.input[0], of], [base + "/offset"], name=base + "/offset"),
            h.make_node("Add", [base + "/sym", base + "/offset"], [base + "/out"], name=base + "/add"),
            h.make_node(
                "Split",
                [base + "/out", base + "/split"],
                [g_add.output[0], u_add.output[0]],
                axis=-1,
                name=base + "/split",
            ),
        ]
        drop.update(id(node) for node in (gate, up, g_add, u_add, g_off, u_off))
    nodes = []
    for node in graph.node:
        nodes.extend(fused.get(id(node), []))
        if id(node) not in drop:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    _save(model, src, out)
    return len(fused)


def fp32_activations(src: Path, out: Path, which: str) -> int:
    """``accuracy_level`` 1 (fp32 activations) on the 4-bit body, the 8-bit head, or every
    MatMulNBits; the weights are untouched. Returns the number of nodes changed."""
    from onnx import helper as h

    model = _load(src)
    changed = 0
    for node in model.graph.node:
        if node.op_type != "MatMulNBits":
            continue
        attrs = {a.name: a for a in node.attribute}
        head = h.get_attribute_value(attrs["bits"]) == 8
        if which == "all" or (which == "head") == head:
            attrs["accuracy_level"].i = 1
            changed += 1
    _save(model, src, out)
    return changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "lever", choices=("kv16", "offset-nodes", "reduce-blocksum", "fuse-gate-up", "fp32-activations")
    )
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument(
        "--which", choices=("body", "head", "all"), default="body", help="fp32-activations: which MatMulNBits"
    )
    args = parser.parse_args()
    src, out = args.model_dir, args.out_dir
    done = {
        "kv16": lambda: f"{kv16(src, out)} attention nodes in fp16",
        "offset-nodes": lambda: f"{offset_nodes(src, out)} nodes added",
        "reduce-blocksum": lambda: f"{reduce_blocksum(src, out)} block-sum MatMuls replaced",
        "fuse-gate-up": lambda: f"{fuse_gate_up(src, out)} layers fused",
        "fp32-activations": lambda: f"{fp32_activations(src, out, args.which)} MatMulNBits at accuracy_level 1",
    }[args.lever]()
    print(f"{done} → {out}")


if __name__ == "__main__":
    main()
