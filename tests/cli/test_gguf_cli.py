"""`enclave models add FILE.gguf`, run as a user runs it, on the tiny GGUFs of
scripts/build_tiny_gguf.py: converted by the real recipe (transformers, the
onnxruntime-genai builder, the transcoder; ~25 s each), registered, listed, answering;
the base variant flagged; damaged files and other architectures refused before any
conversion, with nothing registered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from assistant.core.settings import Settings
from tests.cli.test_cli import enclave

pytest.importorskip("torch")
pytest.importorskip("onnxruntime_genai")


def _installed(home: Path) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = json.loads(enclave("models", "list", "--json", home=home).stdout)["installed"]
    return rows


def test_a_chat_gguf_is_converted_registered_listed_and_answers(
    enclave_home: Path, tiny_ggufs: dict[str, Path]
) -> None:
    proc = enclave("models", "add", str(tiny_ggufs["chat"]), home=enclave_home, timeout=600)
    # The plan comes first, on stderr: what is exact and what is re-quantised, and the stops.
    assert "kind: chat (instruction-tuned: the file has a chat template); stops on <|im_end|> (2)" in proc.stderr
    assert "carried over exactly, block for block: 11 weight matrices (7 × Q4_1, 1 × Q4_K" in proc.stderr
    assert "re-quantised to int4" in proc.stderr and "blk.1.attn_output.weight" in proc.stderr
    assert "[5/5] Hashing and installing" in proc.stderr  # the build's progress
    assert proc.stdout.startswith("Added tiny-chat (onnx, chat, ")
    (row,) = _installed(enclave_home)
    assert row["name"] == "tiny-chat" and row["chat"] is True and row["licence"] == "apache-2.0"
    assert row["context_length"] == 1024 and row["source"] == "user"
    folder = enclave_home / "data" / "models" / "tiny-chat" / "onnx"
    assert (folder / "chat_template.jinja").read_text() == _template(tiny_ggufs["chat"])
    assert json.loads((folder / "genai_config.json").read_text())["model"]["eos_token_id"] == [2]
    assert _weights(folder) == {
        "/model/layers.0/attn/qkv_proj": (4, 32, True),  # Q4_1: 4-bit + the exact block offsets
        "/model/layers.0/attn/o_proj": (4, 32, True),
        "/model/layers.0/mlp/gate_proj": (4, 32, True),
        "/model/layers.0/mlp/up_proj": (8, 32, False),  # Q5_0 as 8-bit blocks
        "/model/layers.0/mlp/down_proj": (4, 32, True),  # Q4_K: blocks of 32 with float scale and minimum
        "/model/layers.1/attn/qkv_proj": (4, 32, False),  # mixed types: the builder's round-to-nearest
        "/model/layers.1/attn/o_proj": (4, 32, False),  # F16: the builder's round-to-nearest
        "/model/layers.1/mlp/gate_proj": (4, 32, True),
        "/model/layers.1/mlp/up_proj": (4, 32, True),
        "/model/layers.1/mlp/down_proj": (8, 16, False),  # Q6_K: 8-bit blocks of 16
        "/lm_head": (8, 32, False),  # Q8_0, shared with the embedding lookup
    }
    assert "tiny-chat" in enclave("models", "list", home=enclave_home).stdout.splitlines()[1]
    assert enclave("models", "verify", home=enclave_home).stdout.startswith("ok   tiny-chat (onnx)")

    answer = json.loads(
        enclave("ask", "-m", "tiny-chat", "--json", "--max-tokens", "6", "hello", home=enclave_home).stdout
    )
    assert answer["model"] == "tiny-chat" and answer["usage"]["completion_tokens"] == 6
    assert answer["usage"]["prompt_tokens"] > 6  # the chat template wrapped the question


def _weights(folder: Path) -> dict[str, tuple[int, int, bool]]:
    """Each MatMulNBits of the built graph: (bits, block size, has the transcoder's offset term)."""
    import onnx

    graph = onnx.load(str(folder / "model.onnx"), load_external_data=False).graph
    offsets = {n.name.rsplit("/", 1)[0] for n in graph.node if n.name.endswith("/transcode_offset")}
    found = {}
    for node in graph.node:
        if node.op_type == "MatMulNBits":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            found[node.name.rsplit("/", 1)[0]] = (attrs["bits"], attrs["block_size"], node.name in offsets)
    return found


def _template(gguf: Path) -> str:
    from assistant.catalog.ggufinfo import read_gguf

    template = read_gguf(gguf).chat_template
    assert template is not None
    return template


def test_a_base_gguf_is_registered_as_base_with_a_warning(enclave_home: Path, tiny_ggufs: dict[str, Path]) -> None:
    proc = enclave("models", "add", str(tiny_ggufs["base"]), "--name", "plain", home=enclave_home, timeout=600)
    assert "warning: tiny-base.gguf has no chat template, so it is a base model" in proc.stderr
    assert proc.stdout.startswith("Added plain (onnx, base, ")
    (row,) = _installed(enclave_home)
    assert row["chat"] is False
    listing = enclave("models", "list", home=enclave_home).stdout.splitlines()
    assert listing[1].split()[0] == "plain" and listing[1].endswith("base (not for chat)")
    assert not (enclave_home / "data" / "models" / "plain" / "onnx" / "chat_template.jinja").exists()
    # It runs as plain completion, and says so.
    asked = enclave("ask", "-m", "plain", "--max-tokens", "4", "--json", "The pump", home=enclave_home)
    assert "note: plain is a base model: it continues text rather than answering questions." in asked.stderr
    # The text itself is the prompt: no persona, no "Question:/Answer:" frame around it.
    bare = json.loads(asked.stdout)["usage"]["prompt_tokens"]
    framed = enclave("ask", "-m", "plain", "--max-tokens", "4", "--json", "-s", "Pumps and valves.", "The pump", home=enclave_home)
    assert json.loads(framed.stdout)["usage"]["prompt_tokens"] > bare
    assert bare <= len("The pump") + 1  # the text's own tokens (and a start token), nothing around them
    listed = json.loads(enclave("models", "list", "--json", home=enclave_home).stdout)
    assert [(m["name"], m["kind"], m["chat"]) for m in listed["installed"]] == [("plain", "base", False)]
    # /persona in the chat changes nothing on it, and says why instead of "Persona: …".
    chatted = enclave("chat", "-m", "plain", "--max-tokens", "2", home=enclave_home, stdin="/persona technician\n")
    assert "plain is a base model, so it takes no persona" in chatted.stderr
    assert "Persona: technician" not in chatted.stderr


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda data: data[:3000], "is not a readable GGUF file"),
        (lambda data: data[:-500], "truncated download?"),
        (lambda data: b"not a model at all" * 10, "is not a GGUF file"),
    ],
    ids=["header-cut", "data-cut", "not-gguf"],
)
def test_a_damaged_gguf_is_refused_and_nothing_is_registered(
    enclave_home: Path, tiny_ggufs: dict[str, Path], tmp_path: Path, damage: object, expected: str
) -> None:
    assert callable(damage)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(damage(tiny_ggufs["chat"].read_bytes()))
    proc = enclave("models", "add", str(bad), home=enclave_home, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert expected in proc.stderr and "Nothing was registered" in proc.stderr
    assert _installed(enclave_home) == []
    assert not (enclave_home / "data" / "models").exists() or not any((enclave_home / "data" / "models").iterdir())


def test_another_architecture_is_refused_naming_it(enclave_home: Path, tiny_ggufs: dict[str, Path]) -> None:
    proc = enclave("models", "add", str(tiny_ggufs["qwen2"]), home=enclave_home, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "is a 'qwen2'-architecture model; Enclave converts llama, gemma3 GGUFs" in proc.stderr
    assert "enclave models add FOLDER" in proc.stderr
    assert _installed(enclave_home) == []


def test_a_taken_or_reserved_name_is_refused_before_converting(enclave_home: Path, tiny_ggufs: dict[str, Path]) -> None:
    proc = enclave(
        "models", "add", str(tiny_ggufs["chat"]), "--name", "smollm2-135m-instruct", home=enclave_home, check=False
    )
    assert proc.returncode == 1 and "is the name of a model Enclave builds itself" in proc.stderr
    proc = enclave("models", "add", str(tiny_ggufs["chat"]), "--name", "../x", home=enclave_home, check=False)
    assert proc.returncode == 1 and "cannot be a model name" in proc.stderr


def test_a_cancelled_conversion_registers_nothing(settings: Settings, tiny_ggufs: dict[str, Path]) -> None:
    """Stopped when the ONNX builder starts (the TUI's cancel, Ctrl-C): no model appears."""
    from assistant.app.models import Step, add_model, gguf_plan, inventory
    from assistant.core.errors import BuildCancelled

    seen: list[str] = []

    def progress(step: Step) -> None:
        seen.append(step.label)
        if step.index == 3:
            raise BuildCancelled()

    plan = gguf_plan(settings, tiny_ggufs["chat"], "stopped")
    with pytest.raises(BuildCancelled):
        add_model(settings, tiny_ggufs["chat"], "stopped", progress, plan)
    assert seen[-1].startswith("Building the ONNX model") and "Converting GGUF to a transformers folder" in seen
    assert inventory(settings).installed == [] and inventory(settings).broken == []
    assert not (settings.locations.models / "stopped").exists()


def test_a_folder_without_a_template_is_base_and_its_card_gives_the_licence(enclave_home: Path, tiny_dir: Path) -> None:
    (tiny_dir / "chat_template.jinja").unlink()
    (tiny_dir / "README.md").write_text("---\nlicense: mit\npipeline_tag: text-generation\n---\n# A model\n")
    proc = enclave("models", "add", str(tiny_dir), "--name", "plainfolder", home=enclave_home)
    assert "warning: plainfolder has no chat template, so it is registered as a base model" in proc.stderr
    assert proc.stdout.startswith("Added plainfolder (onnx, base, ")
    (row,) = _installed(enclave_home)
    assert row["chat"] is False and row["licence"] == "mit"


def test_a_folder_with_a_template_stays_chat_without_a_warning(enclave_home: Path, tiny_dir: Path) -> None:
    proc = enclave("models", "add", str(tiny_dir), "--name", "chatfolder", home=enclave_home)
    assert "warning" not in proc.stderr
    (row,) = _installed(enclave_home)
    assert row["chat"] is True and row["licence"] == "unknown"


def test_a_gguf_whose_blocks_are_not_numbers_is_refused(
    enclave_home: Path, tiny_ggufs: dict[str, Path], tmp_path: Path
) -> None:
    """Found by a tester: 0xFF over the data of some tensors (NaN scales, as bit rot
    leaves them) converted, registered, and answered "\\ufffd". A GGUF has no checksums;
    the dequantised weights are checked instead."""
    import gguf

    data = bytearray(tiny_ggufs["chat"].read_bytes())
    reader = gguf.GGUFReader(str(tiny_ggufs["chat"]))
    tensor = next(t for t in reader.tensors if t.name.startswith("blk.0."))
    start = int(tensor.data_offset)
    data[start : start + 64] = b"\xff" * 64
    bad = tmp_path / "rotten.gguf"
    bad.write_bytes(bytes(data))
    proc = enclave("models", "add", str(bad), "--name", "rotten", home=enclave_home, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "is damaged" in proc.stderr and "not numbers (NaN or infinity)" in proc.stderr, proc.stderr
    assert "model.layers.0" in proc.stderr and "Loading weights" not in proc.stderr  # which tensor, no progress bars
    assert "Nothing was registered" in proc.stderr
    assert _installed(enclave_home) == []
