"""What a GGUF file says about itself, read without the build tools and without trusting it.

``enclave models add FILE.gguf`` reads the header first: the architecture, the chat
template, the stop tokens, the licence, the context length and the quantisation type
of every tensor — enough to refuse a file Enclave cannot convert (naming why) and to
say, before minutes of conversion, which tensors are carried over exactly and which
are re-quantised. Only the header is read (a few MB of a 100 MB–1 GB file).

The file is untrusted input: every length and count is checked against the file's size
before anything is allocated, tensor data must lie inside the file, and any
inconsistency is a :class:`~assistant.core.errors.ModelCorrupt` that names the problem
(a truncated download, a file that is not a GGUF). The format: a ``GGUF`` magic, a
version (2 or 3), tensor and key-value counts, the key-values (typed scalars, strings
and arrays), then one descriptor per tensor (name, shape, ggml type, offset into the
aligned data section) — see ggml's ``docs/gguf.md``.
"""

from __future__ import annotations

import mmap
import re
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assistant.core.errors import ModelCorrupt
from assistant.core.text import displayable, inline

#: ggml tensor types by id: (name, elements per block, bytes per block). The ones a
#: llama.cpp quantisation writes; an id outside this table is refused by name.
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 36),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
}

#: Architectures whose GGUF Enclave converts (transformers reads it, the onnxruntime-genai
#: builder builds it, and the transcoder knows its tensor names): Llama and its kin
#: (SmolLM, TinyLlama, Mistral written as llama) and Gemma 3.
SUPPORTED_ARCHITECTURES = ("llama", "gemma3")

#: Types of projection matrices whose blocks the transcoder carries into the ONNX graph
#: exactly (Q4_1, Q4_K as 4-bit blocks; Q8_0, Q5_0, Q6_K as 8-bit blocks).
EXACT_TYPES = ("Q4_1", "Q4_K", "Q8_0", "Q5_0", "Q6_K")
#: ... and of the output head: Q8_0 (shared with a tied embedding); an untied head also
#: as Q5_0 or Q6_K.
EXACT_HEAD_TYPES = ("Q8_0",)
EXACT_UNTIED_HEAD_TYPES = ("Q8_0", "Q5_0", "Q6_K")
#: Exact, but stored in 8 bits: larger in the ONNX model than in the GGUF.
WIDENED_TYPES = ("Q5_0", "Q6_K")

_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
#: Arrays decoded into Python values (every other array is skipped over): the vocabulary,
#: to name the stop tokens.
_DECODED_ARRAYS = ("tokenizer.ggml.tokens",)
_MAX_COUNT = 10_000_000
_PROJECTION = re.compile(r"^blk\.\d+\.(attn_q|attn_k|attn_v|attn_output|ffn_gate|ffn_up|ffn_down)\.weight$")


@dataclass(frozen=True)
class GgufTensor:
    """One tensor descriptor: name, shape (ggml order: fastest dimension first), type name."""

    name: str
    shape: tuple[int, ...]
    type: str


@dataclass(frozen=True)
class QuantPlan:
    """What the conversion does with each group of weights, decided from the tensor types."""

    #: "Q4_1" -> count of weight matrices carried over block for block.
    exact: dict[str, int]
    #: "Q6_K" -> count of weight matrices dequantised and re-quantised to int4 (round to nearest).
    requantised: dict[str, int]
    #: tensor names that are re-quantised (for the report: the first few).
    requantised_names: list[str]
    #: small float tensors (norms, biases) kept in float.
    kept_float: int
    #: where the token embedding ends up, in words.
    embedding: str

    def lines(self) -> list[str]:
        """The plan in plain sentences, for the user before conversion starts."""

        def counts(by_type: dict[str, int]) -> str:
            return ", ".join(f"{n} × {kind}" for kind, n in sorted(by_type.items()))

        def matrices(n: int) -> str:
            return f"{n} weight matri{'x' if n == 1 else 'ces'}"

        out = []
        if self.exact:
            widened = sorted(set(self.exact) & set(WIDENED_TYPES))
            note = f"; {' and '.join(widened)} as 8-bit blocks, larger than in the file" if widened else ""
            out.append(
                f"carried over exactly, block for block: {matrices(sum(self.exact.values()))} "
                f"({counts(self.exact)}{note})"
            )
        if self.requantised:
            names = ", ".join(self.requantised_names[:4]) + (" …" if len(self.requantised_names) > 4 else "")
            out.append(
                f"re-quantised to int4 (dequantised, then rounded to nearest in blocks of 32; some fidelity is lost): "
                f"{matrices(sum(self.requantised.values()))} ({counts(self.requantised)}: {names})"
            )
        out.append(f"token embedding: {self.embedding}")
        if self.kept_float:
            out.append(f"kept in float: {self.kept_float} norm/bias vectors")
        return out


@dataclass(frozen=True)
class GgufInfo:
    """The metadata of one GGUF file that Enclave uses."""

    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: list[GgufTensor] = field(default_factory=list)

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    @property
    def architecture(self) -> str:
        return str(self.get("general.architecture", ""))

    @property
    def name(self) -> str | None:
        value = self.get("general.name")
        return value.strip() if isinstance(value, str) and value.strip() else None

    @property
    def licence(self) -> str | None:
        value = self.get("general.license")
        return displayable(value.strip())[:80] if isinstance(value, str) and value.strip() else None

    @property
    def chat_template(self) -> str | None:
        value = self.get("tokenizer.chat_template")
        return value if isinstance(value, str) and value.strip() else None

    @property
    def context_length(self) -> int | None:
        value = self.get(f"{self.architecture}.context_length")
        return int(value) if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None

    @property
    def stop_token_ids(self) -> list[int]:
        """End of sequence, and end of turn / of message where the file names them."""
        ids: list[int] = []
        for key in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"):
            value = self.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0 and value not in ids:
                ids.append(value)
        return ids

    def token_id(self, piece: str) -> int | None:
        """The id of a vocabulary piece (``<end_of_turn>``), or None."""
        tokens = self.get("tokenizer.ggml.tokens")
        if isinstance(tokens, list):
            try:
                return tokens.index(piece)
            except ValueError:
                return None
        return None

    def token(self, token_id: int) -> str:
        tokens = self.get("tokenizer.ggml.tokens")
        if isinstance(tokens, list) and 0 <= token_id < len(tokens):
            return inline(str(tokens[token_id]))
        return "?"

    @property
    def types(self) -> Counter[str]:
        return Counter(t.type for t in self.tensors)

    def quant_plan(self) -> QuantPlan:
        """Which weight matrices the recipe carries over exactly and which it re-quantises.

        The transcoder (``catalog/convert/transcode.py``) writes Q4_1/Q4_K (4-bit) and
        Q8_0/Q5_0/Q6_K (8-bit) blocks of the projections, and a Q8_0 output head, into the
        graph exactly; a fused q/k/v must share one type or be all 8-bit types; every
        other weight matrix goes through the builder's round-to-nearest int4."""
        by_name = {t.name: t for t in self.tensors}
        tied = "output.weight" not in by_name
        exact: Counter[str] = Counter()
        requantised: Counter[str] = Counter()
        names: list[str] = []
        kept = 0
        fused = _fused_qkv_types(by_name)
        for tensor in self.tensors:
            head = tensor.name == "output.weight" or (tied and tensor.name == "token_embd.weight")
            if _PROJECTION.match(tensor.name) or head:
                allowed = EXACT_TYPES if not head else EXACT_HEAD_TYPES if tied else EXACT_UNTIED_HEAD_TYPES
                if tensor.type in allowed and _fusable(fused.get(tensor.name)):
                    exact[tensor.type] += 1
                else:
                    requantised[tensor.type] += 1
                    names.append(tensor.name)
            elif tensor.name != "token_embd.weight" and len(tensor.shape) == 1:
                kept += 1
        embd = by_name.get("token_embd.weight")
        if embd is None:
            embedding = "none found"
        elif not tied:
            embedding = f"{embd.type}, dequantised exactly to float32 (the output head is a separate tensor)"
        elif embd.type == "Q8_0":
            embedding = "Q8_0, shared exactly with the output head"
        else:
            embedding = f"{embd.type}, re-quantised to int4 and shared with the output head"
        return QuantPlan(dict(exact), dict(requantised), names, kept, embedding)


#: Types that become 8-bit blocks, which one fused matrix may mix.
_EIGHT_BIT = {"Q8_0", "Q5_0", "Q6_K"}


def _fused_qkv_types(by_name: dict[str, GgufTensor]) -> dict[str, set[str]]:
    """attn_q/k/v name -> the types of its layer's three, which the builder fuses into one
    qkv matrix: the transcoder carries them only together."""
    out: dict[str, set[str]] = {}
    for name in by_name:
        match = re.match(r"^(blk\.\d+)\.attn_q\.weight$", name)
        if match:
            names = [f"{match.group(1)}.attn_{p}.weight" for p in "qkv"]
            kinds = {by_name[n].type for n in names if n in by_name}
            out.update({n: kinds for n in names})
    return out


def _fusable(kinds: set[str] | None) -> bool:
    """A fused q/k/v is exact when its parts share one type, or all become 8-bit blocks."""
    return kinds is None or len(kinds) == 1 or kinds <= _EIGHT_BIT


class _Reader:
    """Bounds-checked little-endian reads from a memory map."""

    def __init__(self, data: mmap.mmap, path: Path) -> None:
        self.data = data
        self.pos = 0
        self.path = path

    def fail(self, what: str) -> ModelCorrupt:
        return ModelCorrupt(
            f"{inline(str(self.path))} is not a readable GGUF file: {what}.",
            "The download is incomplete or the file is not a GGUF model; fetch it again. Nothing was registered.",
        )

    def take(self, size: int) -> memoryview:
        if size < 0 or self.pos + size > len(self.data):
            raise self.fail(f"it ends at byte {len(self.data):,}, inside the header (truncated?)")
        view = memoryview(self.data)[self.pos : self.pos + size]
        self.pos += size
        return view

    def scalar(self, kind: int) -> Any:
        fmt = _SCALAR[kind]
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        size = self.scalar(10)
        if size > len(self.data) - self.pos:
            raise self.fail(f"a string of {size:,} bytes does not fit in the file (truncated?)")
        try:
            return bytes(self.take(size)).decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"a string at byte {self.pos:,} is not UTF-8") from None

    def value(self, kind: int, decode: bool = True) -> Any:
        if kind in _SCALAR:
            return self.scalar(kind)
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            inner, count = self.scalar(4), self.scalar(10)
            if inner not in _SCALAR and inner != _STRING:
                raise self.fail(f"an array of type {inner} is not a GGUF value type")
            if count > len(self.data) - self.pos or count > _MAX_COUNT:
                raise self.fail(f"an array of {count:,} values does not fit in the file (truncated?)")
            if inner in _SCALAR and not decode:
                self.take(count * struct.calcsize(_SCALAR[inner]))
                return None
            values = [self.value(inner) for _ in range(count)]
            return values if decode else None
        raise self.fail(f"value type {kind} is not a GGUF value type")


def read_gguf(path: Path) -> GgufInfo:
    """Read and check the header of the GGUF at ``path``; raise :class:`ModelCorrupt` naming
    what is wrong with it."""
    from assistant.catalog.manifests import open_regular

    with open_regular(path) as handle:
        size = handle.seek(0, 2)
        if size < 24:
            raise ModelCorrupt(
                f"{inline(str(path))} is {size} bytes long: too short to be a GGUF model.",
                "The download is incomplete or the file is not a GGUF model; fetch it again. Nothing was registered.",
            )
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _parse(_Reader(data, path), path, size)


def _parse(reader: _Reader, path: Path, size: int) -> GgufInfo:
    if bytes(reader.take(4)) != b"GGUF":
        raise ModelCorrupt(
            f"{inline(str(path))} is not a GGUF file (it does not start with the GGUF signature).",
            "Give a .gguf model file (for example one made by llama.cpp's convert_hf_to_gguf.py). Nothing was registered.",
        )
    version = reader.scalar(4)
    if version not in (2, 3):
        raise reader.fail(f"GGUF version {version} (Enclave reads versions 2 and 3)")
    n_tensors, n_kv = reader.scalar(10), reader.scalar(10)
    if n_tensors > 1_000_000 or n_kv > 1_000_000:
        raise reader.fail(f"it claims {n_tensors:,} tensors and {n_kv:,} metadata entries")
    metadata: dict[str, Any] = {}
    for _ in range(n_kv):
        key = reader.string()
        kind = reader.scalar(4)
        wanted = kind != _ARRAY or key in _DECODED_ARRAYS
        metadata[key] = reader.value(kind, decode=wanted)
    descriptors = [_descriptor(reader) for _ in range(n_tensors)]
    alignment = metadata.get("general.alignment", 32)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise reader.fail(f"general.alignment = {alignment!r} is not a power of two")
    start = -(-reader.pos // alignment) * alignment
    tensors = []
    for name, shape, kind, offset in descriptors:
        type_name, block, block_bytes = GGML_TYPES[kind]
        elements = 1
        for dim in shape:
            elements *= dim
        if shape and shape[0] % block:
            raise reader.fail(f"tensor {inline(name)} has rows of {shape[0]} values, not whole {type_name} blocks")
        end = start + offset + elements // block * block_bytes
        if end > size:
            raise reader.fail(
                f"tensor {inline(name)} ends at byte {end:,} but the file has {size:,} (truncated download?)"
            )
        tensors.append(GgufTensor(name, shape, type_name))
    return GgufInfo(path, version, metadata, tensors)


def _descriptor(reader: _Reader) -> tuple[str, tuple[int, ...], int, int]:
    name = reader.string()
    dims = reader.scalar(4)
    if not 1 <= dims <= 4:
        raise reader.fail(f"tensor {inline(name)} has {dims} dimensions")
    shape = tuple(reader.scalar(10) for _ in range(dims))
    kind, offset = reader.scalar(4), reader.scalar(10)
    if kind not in GGML_TYPES:
        raise reader.fail(f"tensor {inline(name)} has ggml type {kind}, which Enclave does not know")
    return name, shape, kind, offset
