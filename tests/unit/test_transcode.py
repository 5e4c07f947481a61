"""GGUF → MatMulNBits transcoding: block layouts, the RoPE row order, and one tiny
end-to-end rewrite run through ONNX Runtime. Synthetic data only; no torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from assistant.catalog.convert import transcode as tc

RNG = np.random.default_rng(1234)


# ---- independent writers of the ggml byte layouts (what llama.cpp produces) ----


def make_q4_1(rows: int, k: int, zero_block: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Random Q4_1 rows and their float weights: block = fp16 d, fp16 m, then byte j =
    q[j] | q[j+16] << 4."""
    nb = k // 32
    d = (RNG.random((rows, nb)) * 0.02 + 0.001).astype(np.float16)
    m = (-RNG.random((rows, nb)) * 0.1).astype(np.float16)
    if zero_block:
        d[0, 0] = 0  # a constant block: w = m everywhere
    q = RNG.integers(0, 16, (rows, nb, 32)).astype(np.uint8)
    raw = np.empty((rows, nb, 20), dtype=np.uint8)
    raw[..., 0:2] = d[..., None].view(np.uint8)
    raw[..., 2:4] = m[..., None].view(np.uint8)
    raw[..., 4:] = q[..., :16] | (q[..., 16:] << 4)
    w = d.astype(np.float32)[..., None] * q + m.astype(np.float32)[..., None]
    return raw.reshape(rows, -1), w.reshape(rows, k)


def make_q8_0(rows: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Random Q8_0 rows and their float weights: block = fp16 d, then 32 int8."""
    nb = k // 32
    d = (RNG.random((rows, nb)) * 0.01 + 0.001).astype(np.float16)
    q = RNG.integers(-127, 128, (rows, nb, 32)).astype(np.int8)
    raw = np.empty((rows, nb, 34), dtype=np.uint8)
    raw[..., 0:2] = d[..., None].view(np.uint8)
    raw[..., 2:] = q.view(np.uint8)
    w = d.astype(np.float32)[..., None] * q
    return raw.reshape(rows, -1), w.reshape(rows, k)


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute (rows only)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# ---- pure numpy ----


def test_q4_1_layout_and_dequantisation() -> None:
    raw, w = make_q4_1(6, 64)
    np.testing.assert_array_equal(tc.dequantize_q4_1(raw), w)


def test_nibble_packing_is_low_nibble_first_and_reversible() -> None:
    q = RNG.integers(0, 16, (3, 2, 32)).astype(np.uint8)
    packed = tc.pack_nibbles(q)
    assert packed.shape == (3, 2, 16)
    assert packed[0, 0, 0] == q[0, 0, 0] | (q[0, 0, 1] << 4)
    np.testing.assert_array_equal(tc.unpack_nibbles(packed), q)


def test_split_form_reproduces_q4_1() -> None:
    raw, w = make_q4_1(8, 96, zero_block=True)
    b, scales, offsets = tc.q4_1_to_split(raw)
    got = tc.dequantize_nbits(b, scales, bits=4) + np.repeat(offsets, 32, axis=1)
    np.testing.assert_allclose(got, w, rtol=1e-6, atol=1e-7)


def test_float_zero_point_form_reproduces_q4_1() -> None:
    raw, w = make_q4_1(8, 96, zero_block=True)
    b, scales, zp = tc.q4_1_to_float_zp(raw)
    assert zp.shape == (8 * 3,) and np.isfinite(zp).all()
    np.testing.assert_allclose(tc.dequantize_nbits(b, scales, 4, zp), w, rtol=1e-5, atol=1e-6)


def test_q8_0_maps_to_bits8_with_default_zero_point() -> None:
    raw, w = make_q8_0(5, 64)
    b, scales = tc.q8_0_to_nbits(raw)
    assert b.dtype == np.uint8 and b.shape == (5, 2, 32)
    np.testing.assert_array_equal(tc.dequantize_nbits(b, scales, bits=8), w)


@pytest.mark.parametrize(("rows", "n_head"), [(64, 2), (192, 3), (576, 9)])
def test_reverse_permutation_undoes_llama_cpp(rows: int, n_head: int) -> None:
    w = np.arange(rows * 4, dtype=np.float32).reshape(rows, 4)
    np.testing.assert_array_equal(llama_cpp_permute(w, n_head)[tc.reverse_permute_rows(rows, n_head)], w)


# ---- a tiny builder-like graph, rewritten and run by ONNX Runtime ----

HIDDEN, N_HEAD, N_KV, VOCAB = 64, 2, 1, 48
HEAD = HIDDEN // N_HEAD


def rtn_sym4(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the builder would have written (symmetric int4 RTN), as MatMulNBits data."""
    blocks = w.reshape(w.shape[0], -1, 32)
    scales = np.abs(blocks).max(-1) / 7 + 1e-12
    q = np.clip(np.round(blocks / scales[..., None]) + 8, 0, 15).astype(np.uint8)
    return tc.pack_nibbles(q), scales.astype(np.float32)


def write_gguf(path: Path, tensors: dict[str, tuple[np.ndarray, str]]) -> None:
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_KV)
    for name, (raw, kind) in tensors.items():
        writer.add_tensor(name, raw, raw_dtype=gguf.GGMLQuantizationType[kind])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_builder_like_model(folder: Path, qkv: np.ndarray, emb: np.ndarray) -> None:
    """Shared 4-bit embedding/lm_head and a fused qkv_proj, named as the genai builder does."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    qkv_b, qkv_s = rtn_sym4(qkv)
    lm_b, lm_s = rtn_sym4(emb)
    f = TensorProto.FLOAT
    nodes = [
        helper.make_node(
            "Reshape", ["lm_head.MatMul.weight_Q4", "shape"], ["flat"], name="/model/embed_tokens/Reshape"
        ),
        helper.make_node(
            "GatherBlockQuantized",
            ["flat", "input_ids", "lm_head.MatMul.weight_scales"],
            ["h"],
            name="/model/embed_tokens/GatherBlockQuantized",
            domain="com.microsoft",
            bits=4,
            block_size=32,
            gather_axis=0,
            quantize_axis=1,
        ),
        helper.make_node(
            "MatMulNBits",
            ["h", "model.layers.0.attn.qkv_proj.MatMul.weight_Q4", "model.layers.0.attn.qkv_proj.MatMul.weight_scales"],
            ["qkv"],
            name="/model/layers.0/attn/qkv_proj/MatMul_Q4",
            domain="com.microsoft",
            K=HIDDEN,
            N=qkv.shape[0],
            bits=4,
            block_size=32,
            accuracy_level=4,
        ),
        helper.make_node(
            "MatMulNBits",
            ["h", "lm_head.MatMul.weight_Q4", "lm_head.MatMul.weight_scales"],
            ["logits"],
            name="/lm_head/MatMul_Q4",
            domain="com.microsoft",
            K=HIDDEN,
            N=VOCAB,
            bits=4,
            block_size=32,
            accuracy_level=4,
        ),
    ]
    inits = [
        numpy_helper.from_array(qkv_b, "model.layers.0.attn.qkv_proj.MatMul.weight_Q4"),
        numpy_helper.from_array(qkv_s, "model.layers.0.attn.qkv_proj.MatMul.weight_scales"),
        numpy_helper.from_array(lm_b, "lm_head.MatMul.weight_Q4"),
        numpy_helper.from_array(lm_s, "lm_head.MatMul.weight_scales"),
        numpy_helper.from_array(np.array([VOCAB, HIDDEN // 2], dtype=np.int64), "shape"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT32, [1, "S"])],
        [helper.make_tensor_value_info(n, f, None) for n in ("h", "qkv", "logits")],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    folder.mkdir()
    onnx.save(
        model,
        str(folder / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="model.onnx.data",
        size_threshold=0,
    )


@pytest.mark.parametrize("mode", ["split", "float_zp"])
def test_transcode_end_to_end(tmp_path: Path, mode: tc.Mode) -> None:
    pytest.importorskip("gguf")
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")

    q_raw, wq = make_q4_1(HIDDEN, HIDDEN)
    k_raw, wk = make_q4_1(HEAD * N_KV, HIDDEN)
    v_raw, wv = make_q4_1(HEAD * N_KV, HIDDEN)
    e_raw, we = make_q8_0(VOCAB, HIDDEN)
    # llama.cpp stores attn_q / attn_k with permuted rows; the GGUF must hold them so.
    q_perm = q_raw[np.argsort(tc.reverse_permute_rows(HIDDEN, N_HEAD))]
    k_perm = k_raw[np.argsort(tc.reverse_permute_rows(HEAD * N_KV, N_KV))]
    np.testing.assert_array_equal(tc.dequantize_q4_1(q_perm), llama_cpp_permute(wq, N_HEAD))
    write_gguf(
        tmp_path / "m.gguf",
        {
            "token_embd.weight": (e_raw, "Q8_0"),
            "blk.0.attn_q.weight": (q_perm, "Q4_1"),
            "blk.0.attn_k.weight": (k_perm, "Q4_1"),
            "blk.0.attn_v.weight": (v_raw, "Q4_1"),
        },
    )
    wqkv = np.concatenate([wq, wk, wv])
    folder = tmp_path / "onnx"
    write_builder_like_model(folder, wqkv, we)

    report = tc.transcode_gguf_weights(tmp_path / "m.gguf", folder, mode=mode, accuracy_level=1)
    assert report["transcoded"] == 2 and report["left_as_is"] == {}
    assert report["embedding"].startswith("GatherBlockQuantized bits=8")
    assert sorted(p.name for p in folder.iterdir()) == ["model.onnx", "model.onnx.data"]

    ids = np.array([[0, 7, VOCAB - 1]], dtype=np.int32)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    h, qkv, logits = session.run(None, {"input_ids": ids})
    np.testing.assert_array_equal(h[0], we[ids[0]])
    np.testing.assert_allclose(qkv[0], h[0] @ wqkv.T, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(logits[0], h[0] @ we.T, rtol=1e-4, atol=1e-5)
    for _name, w in tc.effective_weights(folder):
        assert w.shape in (wqkv.shape, we.shape)


# ---- k-quants and Q5_0, checked against gguf-py's own dequantisation ----


def _random_blocks(rows: int, n_blocks: int, size: int, fp16_at: tuple[int, ...]) -> np.ndarray:
    """Random ggml blocks whose fp16 fields (byte offsets ``fp16_at``) hold sane scales."""
    raw = RNG.integers(0, 256, (rows, n_blocks, size)).astype(np.uint8)
    for at in fp16_at:
        scale = (RNG.random((rows, n_blocks)) * 0.01 + 1e-4).astype(np.float16)
        raw[..., at : at + 2] = scale[..., None].view(np.uint8)
    return raw.reshape(rows, n_blocks * size)


@pytest.mark.parametrize(
    ("kind", "size", "fp16_at"), [("Q4_K", 144, (0, 2)), ("Q5_0", 22, (0,)), ("Q6_K", 210, (208,))]
)
def test_k_quant_and_q5_0_blocks_become_exactly_the_gguf_weight(kind: str, size: int, fp16_at: tuple[int, ...]) -> None:
    gguf = pytest.importorskip("gguf")
    rows, n_blocks = 6, 3
    raw = _random_blocks(rows, n_blocks, size, fp16_at)
    reference = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[kind]).astype(np.float32)
    if kind == "Q4_K":
        b, scales, offsets = tc.q4_1_to_split(raw, "Q4_K")
        ours = tc.dequantize_nbits(b, scales, 4) + np.repeat(offsets, 32, axis=1)
    else:
        convert, block = tc.TO_8BIT[kind]
        b8, scales8 = convert(raw)
        assert b8.shape[-1] == block
        ours = tc.dequantize_nbits(b8, scales8, 8)
    assert ours.shape == reference.shape
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-6 * float(np.abs(reference).max()))


def test_a_fused_projection_mixing_8bit_types_is_one_exact_8bit_weight() -> None:
    """Gemma 3's Q4_K_M GGUF fuses Q5_0 q/k with a Q8_0 v, and a Q6_K (blocks of 16) may join them."""
    gguf = pytest.importorskip("gguf")
    parts = [
        ("Q5_0", _random_blocks(4, 8, 22, (0,))),
        ("Q8_0", _random_blocks(2, 8, 34, (0,))),
        ("Q6_K", _random_blocks(3, 1, 210, (208,))),
    ]
    b, scales, block = tc.to_8bit(parts)
    assert block == 16 and b.shape == (9, 16, 16) and scales.shape == (9, 16)
    reference = np.concatenate(
        [gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[kind]) for kind, raw in parts], axis=0
    )
    np.testing.assert_allclose(tc.dequantize_nbits(b, scales, 8), reference, rtol=0, atol=1e-7)
