"""LiteRT-LM build helpers that need no model: chat-template planning (start token,
list-of-parts content) and the bundle metadata fix-up. Jinja2 renders here; the
runtime's MiniJinja was checked against the same preamble by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("jinja2")

from assistant.catalog.convert import litert

GEMMA = Path(__file__).parents[2] / "models" / "templates" / "gemma3.jinja"

# SmolLM2-Instruct's ChatML template (its GGUF declares <|im_start|> as BOS).
CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello"},
    {"role": "user", "content": "café 😀?"},
]
AS_PARTS = [dict(m, content=[{"type": "text", "text": m["content"]}]) for m in MESSAGES]


def test_chatml_gets_no_start_token_and_accepts_parts() -> None:
    plan = litert.plan_template(CHATML, "<|im_start|>")
    assert plan.start_token is None  # the runtime would otherwise add a second <|im_start|>
    expected = litert.render(CHATML, MESSAGES, "<|im_start|>")
    assert litert.render(plan.template, MESSAGES, "") == expected
    assert litert.render(plan.template, AS_PARTS, "") == expected


def test_gemma_literal_bos_becomes_the_start_token() -> None:
    template = GEMMA.read_text()
    assert "{{ '<bos>' }}" in template
    plan = litert.plan_template(template, "<bos>")
    assert plan.start_token == "<bos>"
    expected = litert.render(template, MESSAGES, "<bos>")
    assert expected.startswith("<bos><start_of_turn>user\nBe brief.\n\nHi")
    # The runtime renders bos_token as "" and prepends the start token: one BOS.
    assert "<bos>" + litert.render(plan.template, AS_PARTS, "") == expected
    assert "<bos>" + litert.render(plan.template, MESSAGES, "") == expected


def test_parts_keep_only_text_and_preamble_is_idempotent() -> None:
    once = litert.accept_content_parts("{{ messages[0]['content'] }}")
    assert litert.accept_content_parts(once) == once
    parts = [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image"}, {"type": "text", "text": "b"}]}
    ]
    assert litert.render(once, parts, "") == "ab"


def test_bos_used_mid_template_is_refused() -> None:
    with pytest.raises(ValueError):
        litert.plan_template("{{ messages[0]['content'] }}{{ bos_token }}", "<s>")


def test_fix_metadata_sets_exact_tokens() -> None:
    pb = pytest.importorskip("litert_lm_builder.runtime.proto.llm_metadata_pb2")
    meta = pb.LlmMetadata()
    meta.start_token.token_str = "<|im_start|>"
    for s in ("<|im_end|>", "!<|im_end|>"):
        meta.stop_tokens.add().token_str = s
    meta.prompt_templates.user.prefix = "x"
    litert.fix_metadata(meta, litert.BundleTemplate("T", None), [2])
    assert not meta.HasField("start_token")
    assert not meta.HasField("prompt_templates")
    assert [list(t.token_ids.ids) for t in meta.stop_tokens] == [[2]]
    assert meta.jinja_prompt_template == "T"
    litert.fix_metadata(meta, litert.BundleTemplate("T", "<bos>"), [1, 106])
    assert meta.start_token.token_str == "<bos>"
    assert [list(t.token_ids.ids) for t in meta.stop_tokens] == [[1], [106]]


def test_read_hf_folder(tmp_path: Path) -> None:
    (tmp_path / "tokenizer_config.json").write_text('{"bos_token": {"content": "<bos>"}, "chat_template": "A"}')
    (tmp_path / "generation_config.json").write_text('{"eos_token_id": [1, 106]}')
    assert litert.read_hf_folder(tmp_path) == ("A", "<bos>", [1, 106])
    (tmp_path / "chat_template.jinja").write_text("B")
    assert litert.read_hf_folder(tmp_path)[0] == "B"


def test_cli_defaults() -> None:
    args = litert.parse_args(["hf", "out.litertlm", "--stop-token-ids", "1,106"])
    assert args.prefill == [16, 64, 256] and args.cache_length == 2048
    assert args.quantization == "dynamic_wi8_afp32" and args.stop_token_ids == [1, 106]
    assert args.chat_template is None
