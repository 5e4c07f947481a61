"""Put the GGUF's own quantised weights into an onnxruntime-genai int4 build.

Why: the normal pipeline dequantises the GGUF to float32 and lets the genai
builder re-quantise with round-to-nearest. That second rounding of already
rounded weights costs a lot of fidelity (SmolLM2-135M: ~73 % greedy top-1
agreement with the float32 build at int4). Both formats are block-wise with
32-element blocks along K, so the GGUF blocks can be carried over *as they are*:

* ``Q4_1`` (``w = d*q + m``, q in 0..15) → ``MatMulNBits`` bits=4 in its fast
  symmetric form (``w = d*(q - 8)``) **plus** an exact correction
  ``x_blocksums @ (m + 8d)ᵀ`` (mode ``"split"``, the default). ORT can express
  Q4_1 directly with *float* zero points (``zp = -m/d``, mode ``"float_zp"``),
  but ORT 1.32's CPU kernel then takes a slow path at every accuracy_level (a
  1536x576 MatMul at batch 1: ~4 ms vs ~0.12 ms for the symmetric kernel at
  level 4), so that mode is kept only as a simple, obviously-exact reference.
* ``Q8_0`` (``w = d*q``, q int8) → ``MatMulNBits`` bits=8 with ``q + 128`` and the
  default zero point 128, shared with a bits=8 ``GatherBlockQuantized`` for the
  (tied) token embedding: both are exact.

Expected input: the folder written by::

    python -m onnxruntime_genai.models.builder -i HF_FP32_DIR -o OUT -e cpu -p int4 \
        --extra_options hf_token=false

(defaults: symmetric int4, block_size=32, fused qkv_proj, shared embeddings as
``GatherBlockQuantized`` + 4-bit lm_head). Un-fused q/k/v, fused gate_up, an int8
lm_head or an un-shared ``Gather`` embedding are handled too; anything that is not
recognised is left as the builder wrote it and listed in the report.

Only numpy is imported at module level; ``onnx`` and ``gguf`` (the ``build``
extra) are imported where they are used.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import onnx

QK = 32  # elements per block in Q4_1 / Q8_0 and the MatMulNBits block size we need
Q4_1_BYTES = 4 + QK // 2  # fp16 d, fp16 m, 16 bytes of nibbles
Q8_0_BYTES = 2 + QK  # fp16 d, 32 int8
Mode = Literal["split", "float_zp"]

# ONNX projection name -> GGUF tensors concatenated along N (output rows), in order.
_PROJ_TO_GGUF: dict[str, tuple[str, ...]] = {
    "q_proj": ("attn_q",),
    "k_proj": ("attn_k",),
    "v_proj": ("attn_v",),
    "qkv_proj": ("attn_q", "attn_k", "attn_v"),
    "o_proj": ("attn_output",),
    "gate_proj": ("ffn_gate",),
    "up_proj": ("ffn_up",),
    "gate_up_proj": ("ffn_gate", "ffn_up"),
    "down_proj": ("ffn_down",),
}
_LAYER_NODE = re.compile(r"^/model/layers\.(\d+)/(?:attn|mlp)/(\w+)/MatMul")
_LM_HEAD_NODE = re.compile(r"^/lm_head/MatMul")


# --------------------------------------------------------------------------- #
# Block layouts (pure numpy; unit-tested without a model)
# --------------------------------------------------------------------------- #


def unpack_q4_1(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split raw Q4_1 rows ``[rows, nb*20] uint8`` into ``d, m [rows, nb]`` (float32) and
    ``q [rows, nb, 32]`` (uint8, 0..15).

    ggml layout per block: fp16 d, fp16 m, then 16 bytes where byte j holds q[j] in
    the low nibble and q[j+16] in the high nibble.
    """
    rows = raw.shape[0]
    blocks = np.ascontiguousarray(raw, dtype=np.uint8).reshape(rows, -1, Q4_1_BYTES)
    d = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    m = blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
    qs = blocks[..., 4:]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1)
    return d, m, q


def unpack_q8_0(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split raw Q8_0 rows ``[rows, nb*34] uint8`` into ``d [rows, nb]`` (float32) and
    ``q [rows, nb, 32]`` (int8). ggml layout per block: fp16 d, then 32 int8."""
    rows = raw.shape[0]
    blocks = np.ascontiguousarray(raw, dtype=np.uint8).reshape(rows, -1, Q8_0_BYTES)
    d = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    q = blocks[..., 2:].copy().view(np.int8)
    return d, q


def unpack_q4_k(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split raw Q4_K rows ``[rows, ns*144] uint8`` into the same ``d, m [rows, nb]`` and
    ``q [rows, nb, 32]`` as :func:`unpack_q4_1` (``w = d*q + m`` per block of 32).

    ggml layout per 256-value super-block: fp16 d, fp16 dmin, 12 bytes packing eight
    6-bit scales and eight 6-bit minimums, then 128 bytes of nibbles: the 32 bytes of
    chunk c hold block 2c in their low nibbles and block 2c+1 in their high nibbles.
    Block j's weight is ``d*sc[j]*q - dmin*mn[j]``: Q4_1 with a float32 scale and
    minimum (both products are exact in float32: 11-bit mantissas times 6-bit integers).
    """
    rows = raw.shape[0]
    blocks = np.ascontiguousarray(raw, dtype=np.uint8).reshape(rows, -1, 144)
    ns = blocks.shape[1]
    d = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    dmin = blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
    packed = blocks[..., 4:16].reshape(rows, ns, 3, 4)
    lo, hi, mixed = packed[..., 0, :], packed[..., 1, :], packed[..., 2, :]
    sc = np.concatenate([lo & 0x3F, (mixed & 0x0F) | ((lo >> 2) & 0x30)], axis=-1).astype(np.float32)
    mn = np.concatenate([hi & 0x3F, (mixed >> 4) | ((hi >> 2) & 0x30)], axis=-1).astype(np.float32)
    qs = blocks[..., 16:].reshape(rows, ns, 4, 1, 32) >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 1, 2, 1)
    q = (qs & 0x0F).reshape(rows, ns * 8, 32).astype(np.uint8)
    scale = (d[..., None] * sc).reshape(rows, ns * 8)
    minimum = -(dmin[..., None] * mn).reshape(rows, ns * 8)
    return scale.astype(np.float32), minimum.astype(np.float32), q


def q5_0_to_nbits(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q5_0 rows ``[rows, nb*22]`` → (``B [N, nb, 32]`` uint8, ``scales [N, nb]``) for
    MatMulNBits bits=8 with its default zero point 128: exact.

    ggml layout per block: fp16 d, 4 bytes of high bits (bit j of the little-endian
    uint32 is element j's fifth bit), 16 bytes of nibbles (element j low, j+16 high);
    ``w = d*(q - 16)`` with q in 0..31, stored as ``q + 112`` so that ``B - 128 = q - 16``.
    """
    rows = raw.shape[0]
    blocks = np.ascontiguousarray(raw, dtype=np.uint8).reshape(rows, -1, 22)
    d = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    high = blocks[..., 2:6].copy().view("<u4")[..., 0]
    bits = ((high[..., None] >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8)
    qs = blocks[..., 6:]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1) | (bits << 4)
    return (q + np.uint8(112)).astype(np.uint8), d


def q6_k_to_nbits(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q6_K rows ``[rows, ns*210]`` → (``B [N, nb, 16]`` uint8, ``scales [N, nb]``) for
    MatMulNBits bits=8, **block size 16**, default zero point 128: exact.

    ggml layout per 256-value super-block: 128 bytes of low nibbles, 64 bytes of high
    2-bit pairs, 16 int8 block scales, fp16 d; ``w = d*sc[j]*(q - 32)`` with q in 0..63
    per block of 16, stored as ``q + 96`` (so ``B - 128 = q - 32``); ``d*sc[j]`` is exact
    in float32."""
    rows = raw.shape[0]
    blocks = np.ascontiguousarray(raw, dtype=np.uint8).reshape(rows, -1, 210)
    ns = blocks.shape[1]
    ql = blocks[..., :128].reshape(rows, ns, 2, 1, 64)
    qh = blocks[..., 128:192].reshape(rows, ns, 2, 1, 32)
    sc = blocks[..., 192:208].copy().view(np.int8).astype(np.float32)
    d = blocks[..., 208:210].copy().view(np.float16)[..., 0].astype(np.float32)
    low = (ql >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 1, 2, 1)) & 0x0F
    low = low.reshape(rows, ns, 2, 4, 32)  # half, quarter (low/high nibble of two byte runs), element
    high = (qh >> np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 1, 4, 1)) & 0x03
    q = (low | (high.reshape(rows, ns, 2, 4, 32) << 4)).reshape(rows, ns * 16, 16)
    return (q + np.uint8(96)).astype(np.uint8), (d[..., None] * sc).reshape(rows, ns * 16).astype(np.float32)


def dequantize_q4_1(raw: np.ndarray) -> np.ndarray:
    """Reference dequantisation, as ggml does it: ``w = d*q + m`` → ``[rows, K]``."""
    d, m, q = unpack_q4_1(raw)
    weights: np.ndarray = (d[..., None] * q + m[..., None]).reshape(raw.shape[0], -1)
    return weights


def dequantize_q8_0(raw: np.ndarray) -> np.ndarray:
    """Reference dequantisation, as ggml does it: ``w = d*q`` → ``[rows, K]``."""
    d, q = unpack_q8_0(raw)
    weights: np.ndarray = (d[..., None] * q).reshape(raw.shape[0], -1)
    return weights


def pack_nibbles(q: np.ndarray) -> np.ndarray:
    """MatMulNBits bits=4 packing: ``[N, nb, 32]`` 0..15 → ``[N, nb, 16]`` uint8, element
    2i in the low nibble and 2i+1 in the high nibble (unlike ggml's j / j+16)."""
    q = q.astype(np.uint8)
    packed: np.ndarray = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)
    return packed


def unpack_nibbles(packed: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_nibbles`."""
    out = np.empty((*packed.shape[:-1], packed.shape[-1] * 2), dtype=np.uint8)
    out[..., 0::2] = packed & 0x0F
    out[..., 1::2] = packed >> 4
    return out


def q4_1_to_split(raw: np.ndarray, kind: str = "Q4_1") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q4_1 rows → (``B [N, nb, 16]``, ``scales [N, nb]``, ``offsets [N, nb]``) with
    ``w = scales*(q - 8) + offsets`` exactly the GGUF weight.

    The first term is what symmetric MatMulNBits (no zero-point input, implicit zp 8)
    computes; the block offset ``m + 8d`` is added by a tiny float MatMul on the
    per-block sums of the activations. A block with d == 0 (constant block) needs no
    special case: its q term vanishes and the offset is m. ``kind`` ``"Q4_K"`` reads
    Q4_K rows, whose blocks of 32 have the same form.
    """
    d, m, q = UNPACK_4BIT[kind](raw)
    return pack_nibbles(q), d, (m + np.float32(8.0) * d).astype(np.float32)


def q4_1_to_float_zp(raw: np.ndarray, kind: str = "Q4_1") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q4_1 rows → (``B [N, nb, 16]``, ``scales [N, nb]``, ``zero_points [N*nb]`` float32)
    with ``w = scales*(q - zp)``, ``zp = -m/d``.

    Blocks with d == 0 are constant (w = m): they are rewritten as q = 0, scale = m,
    zp = -1 so that no infinity reaches the kernel.
    """
    d, m, q = UNPACK_4BIT[kind](raw)
    q = q.copy()
    scale = d.copy()
    zp = np.zeros_like(d)
    flat = d == 0
    nz = ~flat
    zp[nz] = -m[nz] / d[nz]
    q[flat] = 0
    scale[flat] = m[flat]
    zp[flat & (m != 0)] = -1.0
    return pack_nibbles(q), scale, zp.reshape(-1)


#: The 4-bit GGUF types whose blocks of 32 are ``w = d*q + m`` (q in 0..15).
UNPACK_4BIT = {"Q4_1": unpack_q4_1, "Q4_K": unpack_q4_k}


def q8_0_to_nbits(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q8_0 rows → (``B [N, nb, 32]`` uint8 = q + 128, ``scales [N, nb]``) for MatMulNBits
    bits=8 / GatherBlockQuantized bits=8, whose default zero point is 128."""
    d, q = unpack_q8_0(raw)
    return (q.view(np.uint8) ^ np.uint8(0x80)).astype(np.uint8), d


def dequantize_nbits(b: np.ndarray, scales: np.ndarray, bits: int, zero_points: np.ndarray | None = None) -> np.ndarray:
    """What MatMulNBits computes as its weight, ``[N, K]`` (block size from ``b``).

    ``zero_points``: absent (symmetric, 2**(bits-1)), float ``[N*nb]``, or uint8 as the
    builder writes them (bits=4: two per byte, low nibble first, rows padded).
    """
    n, nb = b.shape[0], b.shape[1]
    q = (unpack_nibbles(b) if bits == 4 else b).astype(np.float32)
    if zero_points is None:
        zp = np.full((n, nb), 2.0 ** (bits - 1), dtype=np.float32)
    elif zero_points.dtype == np.uint8:
        packed = zero_points.reshape(n, -1)
        zp = (unpack_nibbles(packed)[:, :nb] if bits == 4 else packed).astype(np.float32)
    else:
        zp = zero_points.astype(np.float32).reshape(n, nb)
    weights: np.ndarray = (scales.reshape(n, nb)[..., None] * (q - zp[..., None])).reshape(n, -1)
    return weights


def reverse_permute_rows(rows: int, n_head: int) -> np.ndarray:
    """Row order that undoes llama.cpp's RoPE permutation of attn_q / attn_k.

    Mirrors transformers' ``LlamaTensorProcessor._reverse_permute_weights``
    (``reshape(n_head, dim, 2, ...).swapaxes(1, 2)``). It moves whole rows, so the
    32-element K-blocks inside each row stay intact and can be moved as raw bytes:
    ``unpermuted = raw[reverse_permute_rows(...)]``.
    """
    dim = rows // n_head // 2
    return np.arange(rows).reshape(n_head, dim, 2).swapaxes(1, 2).reshape(rows)


# --------------------------------------------------------------------------- #
# GGUF access
# --------------------------------------------------------------------------- #


class _Gguf:
    """Raw block rows of a llama-architecture GGUF, with attn_q/attn_k un-permuted."""

    def __init__(self, path: Path) -> None:
        from gguf import GGUFReader

        self.reader = GGUFReader(str(path))
        self.tensors = {t.name: t for t in self.reader.tensors}
        arch = self._field("general.architecture")
        if arch not in ("llama", "gemma3"):
            raise ValueError(f"only llama- and gemma3-architecture GGUFs are supported, not {arch!r}")
        # llama.cpp permutes attn_q/attn_k rows for RoPE in llama GGUFs only.
        self.permuted = arch == "llama"
        self.n_head = int(self._field(f"{arch}.attention.head_count"))
        self.n_head_kv = int(self._field(f"{arch}.attention.head_count_kv"))

    def _field(self, key: str) -> Any:
        field = self.reader.fields[key]
        value = field.parts[field.data[0]]
        if value.dtype == np.uint8:
            return bytes(value).decode()
        return value[0]

    def rows(self, name: str) -> tuple[str, np.ndarray]:
        """(ggml type name, raw uint8 rows ``[N, bytes]``) in transformers' row order."""
        tensor = self.tensors[name]
        raw = np.asarray(tensor.data)
        if not self.permuted:
            pass
        elif ".attn_q." in name:
            raw = raw[reverse_permute_rows(raw.shape[0], self.n_head)]
        elif ".attn_k." in name:
            raw = raw[reverse_permute_rows(raw.shape[0], self.n_head_kv)]
        return tensor.tensor_type.name, raw


# --------------------------------------------------------------------------- #
# Graph rewriting
# --------------------------------------------------------------------------- #


def _attr(node: onnx.NodeProto, name: str) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return None


def _set_attr(node: onnx.NodeProto, name: str, value: int) -> None:
    import onnx

    for a in list(node.attribute):
        if a.name == name:
            node.attribute.remove(a)
    node.attribute.append(onnx.helper.make_attribute(name, value))


class _Rewriter:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.graph = model.graph
        self.inits = {i.name: i for i in self.graph.initializer}

    def array(self, name: str) -> np.ndarray:
        from onnx import numpy_helper

        return numpy_helper.to_array(self.inits[name])

    def put(self, name: str, value: np.ndarray) -> str:
        """Add or replace an initializer."""
        from onnx import numpy_helper

        tensor = numpy_helper.from_array(np.ascontiguousarray(value), name)
        if name in self.inits:
            self.inits[name].CopyFrom(tensor)
        else:
            self.graph.initializer.append(tensor)
            self.inits[name] = self.graph.initializer[-1]
        return name

    def prune(self) -> None:
        """Drop initializers no node reads any more (old RTN weights)."""
        used = {i for n in self.graph.node for i in n.input}
        used |= {o.name for o in self.graph.output}
        for init in list(self.graph.initializer):
            if init.name not in used:
                self.graph.initializer.remove(init)
                del self.inits[init.name]


def _gguf_names(node_name: str, tied: bool = True) -> list[str] | None:
    match = _LAYER_NODE.match(node_name)
    if match:
        layer, proj = match.groups()
        parts = _PROJ_TO_GGUF.get(proj)
        return [f"blk.{layer}.{p}.weight" for p in parts] if parts else None
    if _LM_HEAD_NODE.match(node_name):
        # Tied (SmolLM2): no separate output.weight, the head is the token embedding.
        return ["token_embd.weight" if tied else "output.weight"]
    return None


def _check_close(new: np.ndarray, old: np.ndarray, what: str, tolerance: float) -> float:
    """Relative error of the builder's RTN weight against the exact GGUF weight.

    A wrong mapping (row order, q/k/v order, transposition) gives errors near 1.4;
    RTN noise stays around 0.1. This catches mistakes without needing the fp32 model.
    """
    err = float(np.linalg.norm(new - old)) / max(float(np.linalg.norm(new)), 1e-30)
    if err > tolerance:
        raise ValueError(f"{what}: GGUF weight differs from the builder's by {err:.3f} (mapping wrong?)")
    return err


def _transcode_body(
    rw: _Rewriter,
    node: onnx.NodeProto,
    raw: np.ndarray,
    mode: Mode,
    new_nodes: list[onnx.NodeProto],
    blocksums: dict[str, str],
    kind: str = "Q4_1",
) -> None:
    """Replace one body MatMulNBits with the exact Q4_1 (or Q4_K) weight."""
    import onnx

    k = _attr(node, "K")
    base = node.input[1].rsplit("_Q", 1)[0]
    if mode == "float_zp":
        b, scales, zp = q4_1_to_float_zp(raw, kind)
        inputs = [
            node.input[0],
            rw.put(base + "_Q4", b),
            rw.put(base + "_scales", scales),
            rw.put(base + "_zero_points_f", zp),
        ]
        del node.input[:]
        node.input.extend(inputs)
    else:
        b, scales, offsets = q4_1_to_split(raw, kind)
        x = node.input[0]
        inputs = [x, rw.put(base + "_Q4", b), rw.put(base + "_scales", scales)]
        del node.input[:]
        node.input.extend(inputs)
        # y = MatMulNBits_sym(x) + blocksum(x) @ offsetsᵀ. blocksum(x) = x @ E with E the
        # [K, nb] block indicator; one per distinct activation (gate/up share theirs).
        nb = k // QK
        if x not in blocksums:
            indicator = np.repeat(np.eye(nb, dtype=np.float32), QK, axis=0)
            e_name = rw.put(f"transcode.blocksum.K{k}", indicator)
            blocksums[x] = f"{x}/transcode_blocksum"
            new_nodes.append(
                onnx.helper.make_node("MatMul", [x, e_name], [blocksums[x]], name=f"{node.name}/transcode_blocksum")
            )
        y = node.output[0]
        main = f"{y}/transcode_sym"
        node.output[0] = main
        corr = f"{y}/transcode_offset"
        offsets_t = rw.put(base + "_block_offsets", np.ascontiguousarray(offsets.T))  # [nb, N]
        new_nodes.append(
            onnx.helper.make_node("MatMul", [blocksums[x], offsets_t], [corr], name=f"{node.name}/transcode_offset")
        )
        new_nodes.append(onnx.helper.make_node("Add", [main, corr], [y], name=f"{node.name}/transcode_add"))
    _set_attr(node, "bits", 4)
    _set_attr(node, "block_size", QK)


def _transcode_lm_head(rw: _Rewriter, node: onnx.NodeProto, raw: np.ndarray) -> tuple[str, str]:
    """Replace the lm_head with the exact Q8_0 weight (bits=8, default zero point)."""
    b, scales = q8_0_to_nbits(raw)
    inputs = [node.input[0], rw.put("lm_head.MatMul.weight_Q8", b), rw.put("lm_head.MatMul.weight_scales", scales)]
    del node.input[:]
    node.input.extend(inputs)
    _set_attr(node, "bits", 8)
    _set_attr(node, "block_size", QK)
    node.name = "/lm_head/MatMul_Q8"
    return inputs[1], inputs[2]


#: The GGUF types carried over as 8-bit MatMulNBits (zero point 128): (B, scales) and block size.
TO_8BIT: dict[str, tuple[Any, int]] = {
    "Q8_0": (q8_0_to_nbits, QK),
    "Q5_0": (q5_0_to_nbits, QK),
    "Q6_K": (q6_k_to_nbits, 16),
}


def to_8bit(parts: Sequence[tuple[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, int]:
    """GGUF row blocks of 8-bit-representable types, concatenated along N (a fused q/k/v
    may mix Q5_0 and Q8_0, or Q6_K): (``B [N, nb, block]``, ``scales [N, nb]``, block).

    Blocks of 32 are split into two blocks of 16 with the same scale when any part is
    Q6_K (blocks of 16), which is exact."""
    block = 16 if any(kind == "Q6_K" for kind, _ in parts) else QK
    bs, ss = [], []
    for kind, raw in parts:
        b, scales = TO_8BIT[kind][0](raw)
        if b.shape[-1] != block:  # 32 -> two blocks of 16
            b = b.reshape(b.shape[0], -1, block)
            scales = np.repeat(scales, QK // block, axis=1)
        bs.append(b)
        ss.append(scales)
    return np.concatenate(bs, axis=0), np.concatenate(ss, axis=0), block


def _transcode_body_q8(rw: _Rewriter, node: onnx.NodeProto, b: np.ndarray, scales: np.ndarray, block: int) -> None:
    """Replace one body MatMulNBits with exact 8-bit blocks (from Q8_0, Q5_0 or Q6_K;
    default zero point 128)."""
    base = node.input[1].rsplit("_Q", 1)[0]
    inputs = [node.input[0], rw.put(base + "_Q8", b), rw.put(base + "_scales", scales)]
    del node.input[:]
    node.input.extend(inputs)
    _set_attr(node, "bits", 8)
    _set_attr(node, "block_size", block)


def _share_embedding(rw: _Rewriter, weight: str, scales: str, n: int, k: int) -> bool:
    """Point the token embedding at the lm_head's Q8_0 data (bits=8 GatherBlockQuantized).

    Replaces either the builder's (4-bit) GatherBlockQuantized, with its Reshape, or a
    plain float Gather of ``model.embed_tokens.weight``. Returns False when no
    embedding lookup was recognised (then it is left alone).
    """
    import onnx

    graph = rw.graph
    lookup = next(
        (
            nd
            for nd in graph.node
            if nd.name.startswith("/model/embed_tokens/") and nd.op_type in ("GatherBlockQuantized", "Gather")
        ),
        None,
    )
    if lookup is None:
        return False
    ids = lookup.input[1]
    out = lookup.output[0]
    producers = {o: nd for nd in graph.node for o in nd.output}
    stale = [lookup]
    src = producers.get(lookup.input[0])
    if src is not None and src.op_type == "Reshape" and src.name.startswith("/model/embed_tokens/"):
        stale.append(src)
    for nd in stale:
        graph.node.remove(nd)
    shape = rw.put("transcode.embed_tokens.shape", np.array([n, k], dtype=np.int64))
    flat = "/model/embed_tokens/transcode_Reshape/output_0"
    graph.node.extend(
        [
            onnx.helper.make_node("Reshape", [weight, shape], [flat], name="/model/embed_tokens/transcode_Reshape"),
            onnx.helper.make_node(
                "GatherBlockQuantized",
                [flat, ids, scales],
                [out],
                name="/model/embed_tokens/GatherBlockQuantized",
                domain="com.microsoft",
                bits=8,
                block_size=QK,
                gather_axis=0,
                quantize_axis=1,
            ),
        ]
    )  # placed by _toposort
    return True


def _toposort(graph: onnx.GraphProto) -> None:
    """Re-establish topological order after inserting nodes (ONNX requires it)."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        rest = []
        for nd in pending:
            if all(i in available for i in nd.input):
                ordered.append(nd)
                available.update(nd.output)
            else:
                rest.append(nd)
        if len(rest) == len(pending):
            raise ValueError(f"graph has unresolved inputs, e.g. node {rest[0].name}: {list(rest[0].input)}")
        pending = rest
    copies = [type(nd)() for nd in ordered]
    for c, nd in zip(copies, ordered, strict=True):
        c.CopyFrom(nd)
    del graph.node[:]
    graph.node.extend(copies)


def _save(model: onnx.ModelProto, onnx_dir: Path, filename: str) -> None:
    """Save with all weights in ``<filename>.data``, replacing the old files atomically.

    onnx appends to an existing external-data file, so we write into a fresh
    temporary folder and move both files over the old ones.
    """
    import onnx

    with tempfile.TemporaryDirectory(dir=onnx_dir, prefix=".transcode-") as tmp:
        onnx.save(
            model,
            os.path.join(tmp, filename),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=f"{filename}.data",
            size_threshold=1024,
        )
        for name in (filename, f"{filename}.data"):
            target = onnx_dir / name
            mode = target.stat().st_mode & 0o777 if target.exists() else 0o644
            os.chmod(os.path.join(tmp, name), mode)  # tempfile folders are 0700-private
            os.replace(os.path.join(tmp, name), target)


def transcode_gguf_weights(
    gguf_path: Path,
    onnx_dir: Path,
    *,
    mode: Mode = "split",
    accuracy_level: int | None = None,
    lm_head_accuracy_level: int | None = None,
    check_tolerance: float = 0.5,
    filename: str = "model.onnx",
    types: Iterable[str] | None = None,
    head: bool = True,
) -> dict[str, Any]:
    """Replace every recognised MatMulNBits weight (and the lm_head / embedding) in a
    genai-builder output folder with the GGUF's own quantised blocks, in place.

    ``types``: only matrices whose GGUF types are all among these (default: every type
    the transcoder knows); ``head=False`` leaves the output head (and a tied embedding)
    as the builder wrote it. Both exist to measure what each part costs.

    ``mode``: ``"split"`` (fast symmetric kernel + exact offset term, default) or
    ``"float_zp"`` (single MatMulNBits with float zero points; exact but slow on CPU).
    ``accuracy_level``: overrides the MatMulNBits attribute on every node when given.
    ``lm_head_accuracy_level``: the same for the lm_head alone. Level 4 quantises the
    activations to int8 (the only remaining loss); measured on SmolLM2, level 1 on the
    bits=8 lm_head gains little and makes ORT 1.32 ~20x slower (no fast fp32 8-bit path).
    ``check_tolerance``: max relative difference allowed between the builder's RTN
    weight and the GGUF weight it replaces (guards against a wrong mapping).

    Returns a report: ``transcoded`` (count), ``left_as_is`` (MatMulNBits node names
    not replaced, with reasons), ``embedding`` (how the token embedding ended up),
    ``max_rtn_diff`` (largest relative RTN-vs-GGUF difference seen) and ``mode``.
    """
    import onnx

    gguf = _Gguf(gguf_path)
    model = onnx.load(str(onnx_dir / filename), load_external_data=True)
    rw = _Rewriter(model)
    state = _State(tied="output.weight" not in gguf.tensors, types=set(types) if types else None, head=head)
    for node in list(model.graph.node):
        if node.op_type == "MatMulNBits":
            _transcode_node(rw, gguf, node, mode, check_tolerance, state)
    for node in model.graph.node:
        if node.name in state.transcoded:
            level = lm_head_accuracy_level if _LM_HEAD_NODE.match(node.name) else None
            level = level if level is not None else accuracy_level
            if level is not None:
                _set_attr(node, "accuracy_level", level)

    embedding = "left as built"
    # Only a tied head is the embedding: an untied model keeps the builder's own lookup.
    if state.lm_head is not None and state.tied and _share_embedding(rw, *state.lm_head):
        embedding = "GatherBlockQuantized bits=8 sharing the Q8_0 lm_head"
    model.graph.node.extend(state.new_nodes)
    _toposort(model.graph)
    rw.prune()
    _save(model, onnx_dir, filename)
    return {
        "mode": mode,
        "transcoded": len(state.transcoded),
        "transcoded_nodes": state.transcoded,
        "left_as_is": state.left,
        "embedding": embedding,
        "max_rtn_diff": round(state.max_diff, 4),
    }


@dataclass
class _State:
    """What one transcoding pass has done so far."""

    tied: bool
    new_nodes: list[onnx.NodeProto] = field(default_factory=list)
    blocksums: dict[str, str] = field(default_factory=dict)
    left: dict[str, str] = field(default_factory=dict)
    transcoded: list[str] = field(default_factory=list)
    max_diff: float = 0.0
    lm_head: tuple[str, str, int, int] | None = None
    types: set[str] | None = None
    head: bool = True


def _transcode_node(
    rw: _Rewriter, gguf: _Gguf, node: onnx.NodeProto, mode: Mode, tolerance: float, state: _State
) -> None:
    """Replace one MatMulNBits' weight with the GGUF's blocks when their type is exact here
    (Q4_1 or Q8_0 in the body, Q8_0 in the head); else record why it is left as built."""
    names = _gguf_names(node.name, state.tied)
    if names is None or any(n not in gguf.tensors for n in names):
        state.left[node.name] = "no matching GGUF tensor"
        return
    if _attr(node, "block_size") != QK or any(node.input[4:]):
        state.left[node.name] = "unexpected block_size or g_idx/bias inputs"
        return
    parts = [gguf.rows(n) for n in names]
    kinds = {kind for kind, _ in parts}
    if (state.types is not None and not kinds <= state.types) or (not state.head and _LM_HEAD_NODE.match(node.name)):
        state.left[node.name] = "not asked for"
        return
    head = bool(_LM_HEAD_NODE.match(node.name))
    kind = next(iter(kinds)) if len(kinds) == 1 else ""
    # One type: the rows concatenate as raw blocks; mixed 8-bit types only after conversion.
    raw = np.concatenate([r for _, r in parts], axis=0) if kind else np.empty((0, 0), dtype=np.uint8)
    eight: tuple[np.ndarray, np.ndarray, int] | None = None
    if kind in UNPACK_4BIT and not head:
        d, m, q = UNPACK_4BIT[kind](raw)
        exact = (d[..., None] * q + m[..., None]).reshape(raw.shape[0], -1)
    elif kinds <= set(TO_8BIT) and (not head or kind == "Q8_0" or not state.tied):
        eight = to_8bit(parts)
        exact = dequantize_nbits(eight[0], eight[1], 8)
    else:
        state.left[node.name] = f"GGUF type {sorted(kinds)} not supported here"
        return
    n, k = _attr(node, "N"), _attr(node, "K")
    if exact.shape != (n, k):
        state.left[node.name] = f"shape {exact.shape} != {(n, k)}"
        return
    zp = node.input[3] if len(node.input) > 3 and node.input[3] else None
    builder_w = dequantize_nbits(
        rw.array(node.input[1]), rw.array(node.input[2]), _attr(node, "bits"), rw.array(zp) if zp else None
    )
    state.max_diff = max(state.max_diff, _check_close(exact, builder_w, node.name, tolerance))
    if head and kind == "Q8_0":
        weight, scales = _transcode_lm_head(rw, node, raw)
        state.lm_head = (weight, scales, n, k)
    elif eight is not None:
        _transcode_body_q8(rw, node, *eight)
    else:
        _transcode_body(rw, node, raw, mode, state.new_nodes, state.blocksums, kind)
    state.transcoded.append(node.name)


# --------------------------------------------------------------------------- #
# Verification against the float32 transformers folder
# --------------------------------------------------------------------------- #

_HF_PROJ: dict[str, tuple[str, ...]] = {
    "q_proj": ("self_attn.q_proj",),
    "k_proj": ("self_attn.k_proj",),
    "v_proj": ("self_attn.v_proj",),
    "qkv_proj": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "o_proj": ("self_attn.o_proj",),
    "gate_proj": ("mlp.gate_proj",),
    "up_proj": ("mlp.up_proj",),
    "gate_up_proj": ("mlp.gate_proj", "mlp.up_proj"),
    "down_proj": ("mlp.down_proj",),
}


def effective_weights(onnx_dir: Path, filename: str = "model.onnx") -> Iterable[tuple[str, np.ndarray]]:
    """(node name, ``[N, K]`` weight the graph really applies) for every MatMulNBits,
    including the ``split`` offset term."""
    import onnx

    model = onnx.load(str(onnx_dir / filename), load_external_data=True)
    rw = _Rewriter(model)
    add_by_input = {i: nd for nd in model.graph.node if nd.op_type == "Add" for i in nd.input}
    producer = {o: nd for nd in model.graph.node for o in nd.output}
    for node in model.graph.node:
        if node.op_type != "MatMulNBits":
            continue
        zp = None
        if len(node.input) > 3 and node.input[3]:
            zp = rw.array(node.input[3])
        w = dequantize_nbits(rw.array(node.input[1]), rw.array(node.input[2]), _attr(node, "bits"), zp)
        add = add_by_input.get(node.output[0])
        if add is not None and node.output[0].endswith("/transcode_sym"):
            corr = next(i for i in add.input if i != node.output[0])
            offsets = rw.array(producer[corr].input[1]).T  # [N, nb]
            w = w + np.repeat(offsets, QK, axis=1)
        yield node.name, w


def verify_against_hf(
    onnx_dir: Path, hf_dir: Path, filename: str = "model.onnx", only: Iterable[str] | None = None
) -> dict[str, float]:
    """Max relative error (per node) between the graph's weights and the fp32 safetensors
    (of the nodes in ``only``, when given: those the transcoder replaced)."""
    wanted = set(only) if only is not None else None
    from safetensors.numpy import load_file

    tensors: dict[str, np.ndarray] = {}
    for f in sorted(hf_dir.glob("*.safetensors")):
        tensors.update(load_file(str(f)))
    errors: dict[str, float] = {}
    for name, w in effective_weights(onnx_dir, filename):
        if wanted is not None and name not in wanted:
            continue
        match = _LAYER_NODE.match(name)
        if match:
            layer, proj = match.groups()
            ref = np.concatenate([tensors[f"model.layers.{layer}.{p}.weight"] for p in _HF_PROJ[proj]], axis=0)
        elif _LM_HEAD_NODE.match(name):
            ref = tensors.get("lm_head.weight", tensors["model.embed_tokens.weight"])
        else:
            continue
        errors[name] = float(np.abs(w - ref).max() / max(float(np.abs(ref).max()), 1e-30))
    return errors


def _main(argv: Sequence[str] | None = None) -> None:
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("gguf", type=Path)
    parser.add_argument("onnx_dir", type=Path, help="genai builder output folder, rewritten in place")
    parser.add_argument("--mode", choices=["split", "float_zp"], default="split")
    parser.add_argument("--accuracy-level", type=int, default=None)
    parser.add_argument("--lm-head-accuracy-level", type=int, default=None)
    parser.add_argument("--verify-hf", type=Path, default=None, help="fp32 transformers folder to compare against")
    parser.add_argument("--types", default="", help="only these GGUF types, comma-separated (default: all known)")
    parser.add_argument("--no-head", action="store_true", help="leave the output head as the builder wrote it")
    args = parser.parse_args(argv)
    report = transcode_gguf_weights(
        args.gguf,
        args.onnx_dir,
        mode=args.mode,
        accuracy_level=args.accuracy_level,
        lm_head_accuracy_level=args.lm_head_accuracy_level,
        types=[t for t in args.types.split(",") if t] or None,
        head=not args.no_head,
    )
    if args.verify_hf is not None:
        errors = verify_against_hf(args.onnx_dir, args.verify_hf, only=report["transcoded_nodes"])
        report["verify_max_rel_err"] = max(errors.values()) if errors else None
        report["verified_nodes"] = len(errors)
    print(json.dumps(report, indent=2))
    worst = report.get("verify_max_rel_err")
    if args.verify_hf is not None and report["transcoded"] and (worst is None or worst > 1e-5):
        raise SystemExit(f"the transcoded weights do not match the dequantised GGUF (max relative error {worst})")


if __name__ == "__main__":
    _main()
