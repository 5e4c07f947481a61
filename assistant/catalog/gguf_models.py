"""A GGUF the user already has, converted by Enclave's own recipe and registered.

``enclave models add FILE.gguf`` runs in two steps so that the user reads what will
happen before minutes of conversion:

1. :func:`plan_gguf` reads the header (:mod:`assistant.catalog.ggufinfo`, no build
   tools needed) and refuses what cannot work, naming why: not a GGUF, truncated, an
   architecture the recipe does not build, a name already taken. It says what the
   conversion carries over exactly (Q4_1, Q4_K, Q8_0, Q5_0, Q6_K blocks) and what it re-quantises, and
   whether the model is instruction-tuned (a chat template) or a base model.
2. :func:`add_gguf` converts it with the recipe of its family (GGUF → float32
   transformers folder → onnxruntime-genai int4 → the GGUF's own blocks transcoded
   in), with the file's chat template and stop tokens, tries the result in a child
   process, and moves it into the models folder in one rename, manifest included: an
   interrupted or failed conversion registers nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assistant.catalog.convert.recipes import Progress, Step, build_lock, build_onnx, missing_build_tools
from assistant.catalog.ggufinfo import SUPPORTED_ARCHITECTURES, GgufInfo, QuantPlan, read_gguf
from assistant.catalog.manifests import NAME_PATTERN, Catalog, InstalledModel, Recipe, sha256_file, slug
from assistant.core.errors import BuildError, EnclaveError
from assistant.core.install import extra_command
from assistant.core.records import PLAIN_TEMPLATE
from assistant.core.text import inline

#: How each architecture is built, as Enclave's own recipe builds that family: int4 with
#: the GGUF's own blocks transcoded in and the lm_head pruned to the last position
#: (models/smollm2-135m-instruct.toml); Gemma 3 as models/gemma3-270m.toml, with the
#: accuracy level its recipe measured.
ONNX_BUILDS: dict[str, dict[str, Any]] = {
    "llama": {"precision": "int4", "transcode": "split", "options": {"prune_lm_head": "true"}},
    "gemma3": {"precision": "int4", "transcode": "split", "options": {"prune_lm_head": "true", "accuracy_level": "4"}},
}
#: The default model's build (the llama family's), for callers that name no architecture.
ONNX_BUILD = ONNX_BUILDS["llama"]
#: End-of-turn pieces a chat model of the family stops on besides end of sequence, when
#: the file's metadata names only <eos> (Gemma 3's GGUFs do).
TURN_END_PIECES: dict[str, tuple[str, ...]] = {"gemma3": ("<end_of_turn>",)}


@dataclass(frozen=True)
class GgufPlan:
    """What ``models add FILE.gguf`` will do, decided before anything is converted."""

    path: Path
    info: GgufInfo
    name: str
    title: str
    chat: bool
    licence: str
    context_length: int
    stop_token_ids: list[int]
    quant: QuantPlan

    @property
    def warnings(self) -> list[str]:
        """What the user must know (a base model is not an assistant)."""
        if self.chat:
            return []
        return [
            f"{self.path.name} has no chat template, so it is a base model: it is registered as base, "
            "is not offered as a chat model, and continues text rather than answering questions."
        ]

    def lines(self) -> list[str]:
        """The plan in plain sentences (the front end prints them before converting)."""
        stops = ", ".join(f"{self.info.token(t)} ({t})" for t in self.stop_token_ids) or "none named"
        kind = "chat (instruction-tuned: the file has a chat template)" if self.chat else "base (no chat template)"
        return [
            f"{self.path.name}: {self.info.architecture}, {len(self.info.tensors)} tensors, "
            f"{self.context_length:,}-token context, licence {self.licence}",
            f"kind: {kind}; stops on {stops}",
            *self.quant.lines(),
        ]


def plan_gguf(catalog: Catalog, path: Path, name: str | None = None) -> GgufPlan:
    """Read and check ``path`` and choose the name; raises an :class:`EnclaveError` that
    names the problem (nothing is written)."""
    info = read_gguf(path)
    arch = info.architecture
    if arch not in SUPPORTED_ARCHITECTURES:
        raise EnclaveError(
            f"{inline(path.name)} is a {inline(arch or 'unnamed')!r}-architecture model; Enclave converts "
            f"{', '.join(SUPPORTED_ARCHITECTURES)} GGUFs (Llama, SmolLM, TinyLlama, Mistral-as-llama …). "
            "Nothing was registered.",
            "Convert it to onnxruntime-genai yourself (python -m onnxruntime_genai.models.builder) and add "
            "the folder with `enclave models add FOLDER`, or choose a GGUF of one of those architectures.",
        )
    missing_tensors = [
        t for t in ("token_embd.weight", "blk.0.attn_q.weight") if t not in {x.name for x in info.tensors}
    ]
    if missing_tensors:
        raise EnclaveError(
            f"{inline(path.name)} says it is a {arch} model but has no {missing_tensors[0]} tensor.",
            "The file is damaged or was written by an unusual converter; fetch it again. Nothing was registered.",
        )
    chosen = name if name is not None else slug(path.stem if path.suffix.lower() == ".gguf" else path.name)
    _check_name(catalog, chosen)
    return GgufPlan(
        path=path,
        info=info,
        name=chosen,
        title=info.name or path.stem,
        chat=info.chat_template is not None,
        licence=info.licence or "unknown",
        context_length=info.context_length or 2048,
        stop_token_ids=_stop_tokens(info),
        quant=info.quant_plan(),
    )


def prompt_template(info: GgufInfo) -> str:
    """The template the converted model renders prompts with ("" for the engine's plain one).

    A file that says ``tokenizer.ggml.add_bos_token`` (Gemma) needs its start token in
    front of every prompt: llama.cpp's tokenizer adds it, onnxruntime-genai's does not
    (measured: Gemma 3 270M without it answers "France. France. France."; with it,
    "Paris"). So a template that does not write it itself gets ``{{ bos_token }}`` in
    front, and a base model gets the plain transcript template with it."""
    template = info.chat_template
    if info.get("tokenizer.ggml.add_bos_token") is not True:
        return template or ""
    if template is None:
        return "{{ bos_token }}" + PLAIN_TEMPLATE
    bos_id = info.get("tokenizer.ggml.bos_token_id")
    bos_piece = info.token(bos_id) if isinstance(bos_id, int) else "?"
    if "bos_token" in template or (bos_piece != "?" and bos_piece in template):
        return template
    return "{{ bos_token }}" + template


def _stop_tokens(info: GgufInfo) -> list[int]:
    """The file's stop tokens, and for a chat model the family's end-of-turn piece."""
    ids = list(info.stop_token_ids)
    if info.chat_template is not None:
        for piece in TURN_END_PIECES.get(info.architecture or "", ()):
            found = info.token_id(piece)
            if found is not None and found not in ids:
                ids.append(found)
    return ids


def _check_name(catalog: Catalog, name: str) -> None:
    if not NAME_PATTERN.fullmatch(name):
        raise EnclaveError(
            f"{inline(name)!r} cannot be a model name.",
            "Use letters, digits, '.', '_' and '-' (at most 100), starting with a letter or digit.",
        )
    if name in catalog.recipes:
        raise EnclaveError(
            f"{name!r} is the name of a model Enclave builds itself.",
            "Choose another name with --name.",
        )
    if any(m.name == name for m in catalog.installed()) or any(b.name == name for b in catalog.broken()):
        raise EnclaveError(
            f"A model called {name!r} is already installed.",
            "Choose another with --name, or remove the old one first.",
        )


def add_gguf(catalog: Catalog, plan: GgufPlan, progress: Progress) -> InstalledModel:
    """Convert ``plan.path`` by the default model's recipe and register it as ``plan.name``.

    An exception raised by ``progress`` (a cancel) or by a step stops the conversion;
    nothing is registered until the last rename."""
    missing = missing_build_tools()
    if missing:
        raise BuildError(
            f"Converting a GGUF needs the model build tools, which are not installed (missing: {', '.join(missing)}).",
            f"Install them with `{extra_command('build')}`.",
        )
    with build_lock(catalog, plan.name, "onnx"):
        _check_name(catalog, plan.name)  # a second `add` may have taken it meanwhile
        progress(Step(1, 5, "Finding the source weights", None, f"sha256 of {plan.path.name}"))
        # The file's own template (none: a base model, Enclave's plain transcript template).
        build = ONNX_BUILDS.get(plan.info.architecture or "", ONNX_BUILD)
        options = {**build, "chat_template": prompt_template(plan.info)}
        if plan.stop_token_ids:
            options["eos_token_id"] = list(plan.stop_token_ids)
        recipe = Recipe(
            name=plan.name,
            title=plan.title,
            chat=plan.chat,
            licence=plan.licence,
            context_length=plan.context_length,
            description=f"Converted by Enclave from {plan.path.name}.",
            source={
                "package": "user",
                "path": str(plan.path),
                "file": plan.path.name,
                "sha256": sha256_file(plan.path),
            },
            build={"onnx": options},
        )
        return build_onnx(catalog, recipe, progress, offline=True, check=_probe)


def _probe(folder: Path) -> dict[str, object]:
    """Load the converted model, render its template and answer one token in a child process."""
    from assistant.catalog import probe

    size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    result = probe.probe("onnx", folder, load=True, size=size)
    return {"template_check": {"sha256": result.template_sha256, "renderer": result.renderer}}
