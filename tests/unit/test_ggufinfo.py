"""The GGUF header reader: what `models add FILE.gguf` learns before converting, and
the clear refusals of files that are damaged or not GGUFs (tiny GGUFs written by
scripts/build_tiny_gguf.py with gguf-py's writer)."""

from __future__ import annotations

from pathlib import Path

import pytest

from assistant.catalog.ggufinfo import read_gguf
from assistant.core.errors import ModelCorrupt


def test_the_header_names_template_stops_licence_context_and_types(tiny_ggufs: dict[str, Path]) -> None:
    info = read_gguf(tiny_ggufs["chat"])
    assert info.architecture == "llama"
    assert info.name == "Tiny Llama Chat" and info.licence == "apache-2.0"
    assert info.context_length == 1024
    assert info.chat_template is not None and "<|im_start|>" in info.chat_template
    assert [info.token(t) for t in info.stop_token_ids] == ["<|im_end|>"]
    assert info.types == {"Q4_1": 9, "Q4_K": 1, "Q5_0": 1, "Q6_K": 1, "Q8_0": 2, "F16": 1, "F32": 5}
    assert read_gguf(tiny_ggufs["base"]).chat_template is None


def test_the_plan_says_what_is_exact_and_what_is_requantised(tiny_ggufs: dict[str, Path]) -> None:
    plan = read_gguf(tiny_ggufs["chat"]).quant_plan()
    assert plan.exact == {"Q4_1": 7, "Q4_K": 1, "Q5_0": 1, "Q6_K": 1, "Q8_0": 1}  # Q8_0: the tied head
    # Layer 1's q/k/v mix Q4_1 with a Q8_0 v: the builder fuses them, so all three are re-quantised.
    assert plan.requantised == {"F16": 1, "Q4_1": 2, "Q8_0": 1}
    assert plan.requantised_names == [f"blk.1.{n}.weight" for n in ("attn_q", "attn_k", "attn_v", "attn_output")]
    assert plan.embedding == "Q8_0, shared exactly with the output head"
    text = "\n".join(plan.lines())
    assert (
        "carried over exactly, block for block: 11 weight matrices (7 × Q4_1, 1 × Q4_K, 1 × Q5_0, 1 × Q6_K, "
        "1 × Q8_0; Q5_0 and Q6_K as 8-bit blocks, larger than in the file)"
    ) in text
    assert "re-quantised to int4" in text and "4 weight matrices (1 × F16, 2 × Q4_1, 1 × Q8_0: blk.1.attn_q" in text


@pytest.mark.parametrize(
    ("cut", "expected"),
    [(16, "too short to be a GGUF"), (2000, "truncated"), (-100, "truncated download")],
)
def test_a_truncated_file_is_refused_naming_why(
    tiny_ggufs: dict[str, Path], tmp_path: Path, cut: int, expected: str
) -> None:
    data = tiny_ggufs["chat"].read_bytes()
    damaged = tmp_path / "damaged.gguf"
    damaged.write_bytes(data[:cut])
    with pytest.raises(ModelCorrupt) as caught:
        read_gguf(damaged)
    assert expected in caught.value.message
    assert "fetch it again" in caught.value.hint


def test_a_file_that_is_not_a_gguf_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "model.gguf"
    other.write_bytes(b"PK\x03\x04" + bytes(200))
    with pytest.raises(ModelCorrupt, match="does not start with the GGUF signature"):
        read_gguf(other)


def test_a_huge_claimed_string_is_refused_without_allocating_it(tiny_ggufs: dict[str, Path], tmp_path: Path) -> None:
    data = bytearray(tiny_ggufs["chat"].read_bytes())
    data[24:32] = (2**62).to_bytes(8, "little")  # the first key's length
    crafted = tmp_path / "crafted.gguf"
    crafted.write_bytes(bytes(data))
    with pytest.raises(ModelCorrupt, match="does not fit in the file"):
        read_gguf(crafted)


def test_a_file_that_asks_for_a_start_token_gets_it_in_front_of_every_prompt(tmp_path: Path) -> None:
    from assistant.catalog.gguf_models import prompt_template
    from assistant.catalog.ggufinfo import GgufInfo
    from assistant.core.records import PLAIN_TEMPLATE

    vocab = {"tokenizer.ggml.tokens": ["<pad>", "<eos>", "<bos>"], "tokenizer.ggml.bos_token_id": 2}

    def info(add_bos: bool, template: str | None) -> GgufInfo:
        meta: dict[str, object] = {**vocab, "tokenizer.ggml.add_bos_token": add_bos}
        if template is not None:
            meta["tokenizer.chat_template"] = template
        return GgufInfo(tmp_path / "m.gguf", 3, meta)

    # Gemma's base GGUF: add_bos_token, no template -> the plain transcript after <bos>.
    assert prompt_template(info(True, None)) == "{{ bos_token }}" + PLAIN_TEMPLATE
    # A template that writes the start token itself (either way) is kept as written.
    assert prompt_template(info(True, "{{ bos_token }}{{ messages }}")) == "{{ bos_token }}{{ messages }}"
    assert prompt_template(info(True, "<bos>{{ messages }}")) == "<bos>{{ messages }}"
    assert prompt_template(info(True, "{{ messages }}")) == "{{ bos_token }}{{ messages }}"
    # SmolLM2's GGUF says add_bos_token = false: its template, or the engine's plain one.
    assert prompt_template(info(False, "{{ messages }}")) == "{{ messages }}"
    assert prompt_template(info(False, None)) == ""
