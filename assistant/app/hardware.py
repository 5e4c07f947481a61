"""The hardware matrix of `enclave doctor --hardware`: what this machine has, and how
each installed model × engine fits it.

Read from the files the kernel exposes (``/proc/cpuinfo``, ``/proc/meminfo``,
``/sys/class/power_supply``, ``/dev/nvidia*``, the Vulkan ICD folders) and, when it is
on the PATH, ``nvidia-smi``; nothing is installed or probed by loading a driver. Every
reader takes the root folders as arguments, so tests run them on real files laid out
in a temporary folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from assistant.app.power import PowerState, power_state
from assistant.catalog.manifests import Catalog, InstalledModel
from assistant.core.errors import EnclaveError
from assistant.core.events import Usage
from assistant.core.settings import Settings
from assistant.storage.database import Store
from assistant.storage.releases import Releases

#: CPU flags that decide kernel speed, in the words of /proc/cpuinfo.
CPU_FEATURES = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "neon", "asimd", "sve")
#: Vulkan loader manifests (the ICDs) live in these folders (the loader's own search path).
VULKAN_ICD_DIRS = ("usr/share/vulkan/icd.d", "etc/vulkan/icd.d", "usr/local/share/vulkan/icd.d")
#: Memory a model needs beyond its file size: the KV cache at a 2048-token window plus
#: the runtime; SmolLM2 int4 (112 MiB of files) peaked at 446 MiB RSS, so 4× + 256 MiB.
RAM_FACTOR = 4.0
RAM_BASE_BYTES = 256 << 20
#: Prompt length of the TTFT budget (tokens).
BUDGET_PROMPT_TOKENS = 500
#: Fewest tokens a turn must prefill (decode) before its prefill (decode) speed is held
#: against a budget: a turn that reused its KV cache and prefilled 12 tokens, or a
#: 3-token answer, measures start-up costs, not the machine.
MIN_PREFILL_MEASURED = 64
MIN_DECODE_MEASURED = 16

Verdict = Literal["ok", "slow", "does-not-fit", "not-measured"]


@dataclass(frozen=True)
class Cpu:
    model: str
    cores: int
    features: tuple[str, ...]


@dataclass(frozen=True)
class Gpu:
    """Accelerators Enclave could use: NVIDIA devices and Vulkan drivers."""

    nvidia_devices: tuple[str, ...]
    nvidia_smi: tuple[str, ...]  # "name, memory" lines when nvidia-smi answers
    vulkan_icds: tuple[str, ...]

    @property
    def present(self) -> bool:
        return bool(self.nvidia_devices or self.nvidia_smi)


@dataclass(frozen=True)
class Machine:
    cpu: Cpu
    ram_bytes: int
    ram_available_bytes: int
    gpu: Gpu
    power: PowerState


@dataclass(frozen=True)
class ModelFit:
    """One installed model × engine against this machine and the latency budgets."""

    name: str
    engine: str
    size_bytes: int
    needs_bytes: int
    fits_in_ram: bool
    bench_at: str | None
    ttft_ms: float | None  # measured, the longest bench prompt
    ttft_500_ms: float | None  # estimated for a 500-token prompt from the measured prefill speed
    decode_tokens_per_s: float | None
    verdict: Verdict
    flags: tuple[str, ...] = field(default=())
    recommendation: str = ""


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def cpu_info(proc: Path = Path("/proc")) -> Cpu:
    """Model name, logical cores and the kernel-relevant flags from ``cpuinfo``."""
    text = _read(proc / "cpuinfo")
    flags: set[str] = set()
    model = ""
    processors = 0
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "processor":
            processors += 1
        elif key in ("flags", "features"):  # x86, ARM
            flags.update(value.split())
        elif key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
    found = tuple(f for f in CPU_FEATURES if f in flags)
    return Cpu(model=model or "unknown", cores=processors or (os.cpu_count() or 1), features=found)


def memory(proc: Path = Path("/proc")) -> tuple[int, int]:
    """Total and available RAM in bytes (``meminfo``)."""
    values: dict[str, int] = {}
    for line in _read(proc / "meminfo").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key] = int(parts[0]) * 1024
    total = values.get("MemTotal", 0)
    return total, values.get("MemAvailable", total)


def gpu_info(root: Path = Path("/"), run_smi: bool = True) -> Gpu:
    """NVIDIA device nodes, ``nvidia-smi``'s answer when installed, and Vulkan ICD files."""
    dev = root / "dev"
    nodes = tuple(sorted(p.name for p in dev.glob("nvidia[0-9]*"))) if dev.is_dir() else ()
    smi: tuple[str, ...] = ()
    if run_smi and shutil.which("nvidia-smi"):
        try:
            proc = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
                stdin=subprocess.DEVNULL,
            )
            if proc.returncode == 0:
                smi = tuple(line.strip() for line in proc.stdout.splitlines() if line.strip())
        except (OSError, subprocess.TimeoutExpired):
            smi = ()
    icds: list[str] = []
    for folder in VULKAN_ICD_DIRS:
        path = root / folder
        if path.is_dir():
            icds.extend(sorted(p.name for p in path.glob("*.json")))
    return Gpu(nvidia_devices=nodes, nvidia_smi=smi, vulkan_icds=tuple(icds))


def machine(root: Path = Path("/"), run_smi: bool = True) -> Machine:
    total, available = memory(root / "proc")
    return Machine(
        cpu=cpu_info(root / "proc"),
        ram_bytes=total,
        ram_available_bytes=available,
        gpu=gpu_info(root, run_smi),
        power=power_state(root / "sys"),
    )


def missed_budgets(usage: Usage, settings: Settings) -> list[str]:
    """The latency budgets one turn missed, measured on that turn (the status bar's check;
    ``doctor`` holds the last bench against the same settings). The TTFT budget is for a
    500-token prompt, so the turn's prefill speed is turned into that figure; speeds of
    turns too short to measure are not judged."""
    missed: list[str] = []
    if usage.prefilled_tokens >= MIN_PREFILL_MEASURED and usage.prefill_tokens_per_s > 0:
        ttft_500 = BUDGET_PROMPT_TOKENS / usage.prefill_tokens_per_s * 1000.0
        if ttft_500 > settings.budget_ttft_ms:
            missed.append(f"TTFT {ttft_500 / 1000:.1f} s per {BUDGET_PROMPT_TOKENS} tokens > {settings.budget_ttft_ms / 1000:.1f} s")
    decode = usage.decode_tokens_per_s
    if usage.completion_tokens >= MIN_DECODE_MEASURED and 0 < decode < settings.budget_decode_tokens_per_s:
        missed.append(f"decode {decode:.1f} < {settings.budget_decode_tokens_per_s:g} tok/s")
    return missed


def model_fit(model: InstalledModel, settings: Settings, ram_bytes: int, releases: Releases | None) -> ModelFit:
    """Does ``model`` fit in RAM, and does its last bench meet the budgets?"""
    needs = int(model.size * RAM_FACTOR + RAM_BASE_BYTES)
    fits = ram_bytes == 0 or needs <= ram_bytes
    bench = releases.last_bench(model.name, model.engine) if releases is not None else None
    ttft = ttft_500 = decode = None
    if bench is not None:
        prompts = bench.report.get("prompts") or []
        if prompts:
            longest = max(prompts, key=lambda p: p["prompt_tokens"])
            ttft = float(longest["ttft_ms"])
            prefill = float(longest.get("prefill_tokens_per_s") or 0)
            ttft_500 = BUDGET_PROMPT_TOKENS / prefill * 1000.0 if prefill > 0 else None
            decode = float(longest["decode_tokens_per_s"]) or None  # nothing decoded: not measured
    flags: list[str] = []
    if not fits:
        flags.append(f"needs ~{needs >> 20} MiB, the machine has {ram_bytes >> 20} MiB")
    if ttft_500 is not None and ttft_500 > settings.budget_ttft_ms:
        flags.append(
            f"TTFT for {BUDGET_PROMPT_TOKENS} tokens ~{ttft_500:.0f} ms > budget {settings.budget_ttft_ms:.0f} ms"
        )
    if decode is not None and decode < settings.budget_decode_tokens_per_s:
        flags.append(f"decode {decode:.1f} tok/s < budget {settings.budget_decode_tokens_per_s:.1f}")
    verdict: Verdict
    if not fits:
        verdict, advice = "does-not-fit", "choose a smaller model or close other programs"
    elif bench is None:
        verdict, advice = "not-measured", f"measure it: enclave bench -m {model.name} -e {model.engine}"
    elif flags:
        verdict, advice = "slow", "use --power performance, fewer background jobs, or a smaller model"
    else:
        verdict, advice = "ok", "good on this machine"
    return ModelFit(
        name=model.name,
        engine=model.engine,
        size_bytes=model.size,
        needs_bytes=needs,
        fits_in_ram=fits,
        bench_at=bench.at if bench else None,
        ttft_ms=ttft,
        ttft_500_ms=ttft_500,
        decode_tokens_per_s=decode,
        verdict=verdict,
        flags=tuple(flags),
        recommendation=advice,
    )


def matrix(settings: Settings, store: Store | None, root: Path = Path("/"), run_smi: bool = True) -> dict[str, Any]:
    """The whole hardware report, as `doctor --hardware --json` prints it."""
    here = machine(root, run_smi)
    releases = Releases(store) if store is not None else None
    fits = [
        model_fit(m, settings, here.ram_bytes, releases) for m in Catalog(settings).installed() if m.kind != "embedding"
    ]
    return {
        "cpu": asdict(here.cpu),
        "ram_bytes": here.ram_bytes,
        "ram_available_bytes": here.ram_available_bytes,
        "gpu": {**asdict(here.gpu), "present": here.gpu.present},
        "power": here.power.as_dict(),
        "budgets": {
            "ttft_ms_for_500_tokens": settings.budget_ttft_ms,
            "decode_tokens_per_s": settings.budget_decode_tokens_per_s,
        },
        "models": [asdict(f) for f in fits],
    }


def budget_flags(settings: Settings, store: Store | None, model: str, engine: str) -> list[str]:
    """The budgets the last bench of ``model`` on ``engine`` missed (empty: within budget or
    not measured). For a status bar: cheap, reads one row.

    TODO(tui): show these in the status bar (tui/app.py is being edited by the lead)."""
    if store is None:
        return []
    try:
        installed = Catalog(settings).find(model, engine)
    except EnclaveError:  # a status bar never fails on this
        return []
    return list(model_fit(installed, settings, 0, Releases(store)).flags)
