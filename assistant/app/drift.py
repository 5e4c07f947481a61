"""Drift: does a model build still answer as it did?

The golden set (``models/drift/golden.toml``, shipped) holds greedy prompts per persona.
For a model build Enclave stores, once, the first 16 answer tokens of each prompt and
the perplexity on a shipped text (``models/drift/reference.txt``, first 256 tokens),
keyed by model sha256 and engine build (the runtime's version and the device). The
reference comes from the model's own first install or build; `enclave models check`
measures again and compares, and `enclave models install` compares a new version
against the current one before switching.

Judged by two figures, with thresholds in the settings:

* **perplexity rise** — the fidelity measure that matters (SmolLM2's int4 transcode
  and llama.cpp differ by 0.2 %, 19.83 vs 19.87; a re-quantisation that rambles moves
  it by tens of percent);
* **greedy agreement** — the mean share of the 16 tokens before the first difference.
  Greedy text is fragile (6 of 16 prompts stayed identical over 64 tokens between two
  faithful builds of one 135M model), so its default threshold is low (0.25).

Message-level engines (LiteRT-LM) report no token ids and no logits: their answers are
compared as the model's own tokenizer encodes them, and perplexity is not measured.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal

from assistant.core import resources
from assistant.core.events import GenerationOptions, TextDelta
from assistant.core.settings import Settings
from assistant.engines import ENGINE_DISTRIBUTIONS
from assistant.engines.base import Engine

Verdict = Literal["same", "changed", "drift"]


@dataclass(frozen=True)
class GoldenPrompt:
    id: str
    persona: str
    text: str


@dataclass(frozen=True)
class GoldenSet:
    prompts: tuple[GoldenPrompt, ...]
    tokens: int
    perplexity_tokens: int
    text: str


def golden_set() -> GoldenSet:
    """The shipped golden prompts and reference text."""
    root = resources.manifests().joinpath("drift")
    data = tomllib.loads(root.joinpath("golden.toml").read_text(encoding="utf-8"))
    prompts = tuple(GoldenPrompt(str(p["id"]), str(p["persona"]), str(p["text"])) for p in data["prompt"])
    return GoldenSet(
        prompts=prompts,
        tokens=int(data.get("tokens", 16)),
        perplexity_tokens=int(data.get("perplexity_tokens", 256)),
        text=root.joinpath("reference.txt").read_text(encoding="utf-8"),
    )


def engine_build(engine: str, device: str = "cpu") -> str:
    """The runtime that produced a set of figures, e.g. ``onnxruntime-genai 0.18.0, onnxruntime 1.32.0 on cpu``."""
    parts = []
    for dist in ENGINE_DISTRIBUTIONS.get(engine, ()):
        try:
            parts.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            parts.append(f"{dist} (not installed)")
    return f"{', '.join(parts) or engine} on {device}"


@dataclass(frozen=True)
class Figures:
    """What one build produced on the golden set."""

    engine_build: str
    answers: dict[str, list[int]]  # golden prompt id -> the first answer tokens
    perplexity: float | None
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "engine_build": self.engine_build,
            "answers": self.answers,
            "perplexity": self.perplexity,
            "seconds": round(self.seconds, 2),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Figures:
        return cls(
            engine_build=str(data["engine_build"]),
            answers={str(k): [int(t) for t in v] for k, v in data["answers"].items()},
            perplexity=float(data["perplexity"]) if data.get("perplexity") is not None else None,
            seconds=float(data.get("seconds", 0.0)),
        )


def _persona_text(name: str) -> str:
    """The shipped persona (never the user's override: the reference must not move with it)."""
    return resources.read_text(resources.prompts(), f"{name}.md").strip()


def measure(engine: Engine, build: str, golden: GoldenSet | None = None) -> Figures:
    """Run the golden set on a loaded ``engine`` (greedy), and perplexity where it can score."""
    import math
    import time

    golden = golden or golden_set()
    started = time.perf_counter()
    tok = engine.tokenizer
    answers: dict[str, list[int]] = {}
    options = GenerationOptions(max_tokens=golden.tokens, temperature=0.0)
    for prompt in golden.prompts:
        messages = [
            {"role": "system", "content": _persona_text(prompt.persona)},
            {"role": "user", "content": prompt.text},
        ]
        ids = tok.encode(tok.render(messages, add_generation_prompt=True))
        session = engine.open_session(min(engine.info.context_length, len(ids) + golden.tokens + 8))
        try:
            held_before = len(ids)
            text = ""
            for event in session.generate(ids, options, messages=messages):
                if isinstance(event, TextDelta):
                    text += event.text
            if engine.capabilities.token_level:
                answers[prompt.id] = session.tokens[held_before:][: golden.tokens]
            else:
                answers[prompt.id] = tok.encode(text)[: golden.tokens]
        finally:
            session.close()
    perplexity = None
    if engine.capabilities.logprobs:
        ids = tok.encode(golden.text)[: golden.perplexity_tokens]
        session = engine.open_session(len(ids) + 1)
        try:
            logprobs = session.score(ids)
        finally:
            session.close()
        if logprobs:
            perplexity = math.exp(-sum(logprobs) / len(logprobs))
    return Figures(build, answers, perplexity, time.perf_counter() - started)


@dataclass(frozen=True)
class PromptDrift:
    id: str
    agreement: float  # share of the reference tokens before the first difference
    first_difference: int | None  # token index, None when identical


@dataclass(frozen=True)
class DriftReport:
    """``candidate`` against ``reference``, with the verdict under the settings' thresholds."""

    reference_build: str
    candidate_build: str
    prompts: tuple[PromptDrift, ...]
    perplexity_reference: float | None
    perplexity_candidate: float | None
    max_perplexity_rise: float
    min_agreement: float
    reasons: tuple[str, ...] = field(default=())

    @property
    def identical(self) -> int:
        return sum(1 for p in self.prompts if p.first_difference is None)

    @property
    def agreement(self) -> float:
        return sum(p.agreement for p in self.prompts) / len(self.prompts) if self.prompts else 1.0

    @property
    def perplexity_rise(self) -> float | None:
        ref, new = self.perplexity_reference, self.perplexity_candidate
        return None if ref is None or new is None or ref <= 0 else (new - ref) / ref

    @property
    def verdict(self) -> Verdict:
        if self.reasons:
            return "drift"
        same_ppl = self.perplexity_rise is None or abs(self.perplexity_rise) < 1e-6
        return "same" if self.identical == len(self.prompts) and same_ppl else "changed"

    @property
    def blocking(self) -> bool:
        return self.verdict == "drift"

    def summary(self) -> str:
        ppl = ""
        if self.perplexity_rise is not None:
            ppl = (
                f"; perplexity {self.perplexity_reference:.2f} → {self.perplexity_candidate:.2f} "
                f"({self.perplexity_rise:+.1%})"
            )
        return (
            f"{self.verdict}: {self.identical}/{len(self.prompts)} golden answers identical, "
            f"agreement {self.agreement:.0%}{ppl}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "blocking": self.blocking,
            "summary": self.summary(),
            "reasons": list(self.reasons),
            "reference_build": self.reference_build,
            "candidate_build": self.candidate_build,
            "identical": self.identical,
            "prompts": len(self.prompts),
            "agreement": round(self.agreement, 4),
            "perplexity_reference": self.perplexity_reference,
            "perplexity_candidate": self.perplexity_candidate,
            "perplexity_rise": None if self.perplexity_rise is None else round(self.perplexity_rise, 4),
            "thresholds": {"max_perplexity_rise": self.max_perplexity_rise, "min_agreement": self.min_agreement},
            "per_prompt": [
                {"id": p.id, "agreement": round(p.agreement, 4), "first_difference": p.first_difference}
                for p in self.prompts
            ],
        }


def compare(reference: Figures, candidate: Figures, settings: Settings) -> DriftReport:
    """How far ``candidate`` moved from ``reference``, judged by the settings' thresholds."""
    prompts = []
    for pid, ref in sorted(reference.answers.items()):
        new = candidate.answers.get(pid, [])
        first = next((i for i, (a, b) in enumerate(zip(ref, new, strict=False)) if a != b), None)
        if first is None and len(ref) != len(new):
            first = min(len(ref), len(new))
        agreement = 1.0 if first is None else first / max(len(ref), 1)
        prompts.append(PromptDrift(pid, agreement, first))
    report = DriftReport(
        reference_build=reference.engine_build,
        candidate_build=candidate.engine_build,
        prompts=tuple(prompts),
        perplexity_reference=reference.perplexity,
        perplexity_candidate=candidate.perplexity,
        max_perplexity_rise=settings.drift_max_perplexity_rise,
        min_agreement=settings.drift_min_agreement,
    )
    reasons = []
    rise = report.perplexity_rise
    if rise is not None and rise > settings.drift_max_perplexity_rise:
        reasons.append(f"perplexity rose {rise:.1%} (limit {settings.drift_max_perplexity_rise:.0%})")
    if report.agreement < settings.drift_min_agreement:
        reasons.append(f"greedy agreement {report.agreement:.0%} (limit {settings.drift_min_agreement:.0%})")
    return DriftReport(**{**report.__dict__, "reasons": tuple(reasons)})
