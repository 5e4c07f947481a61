"""Power: where the machine draws power from, and what Enclave does about it.

``--power auto`` (the default) reads ``/sys/class/power_supply``: on battery it acts as
``saver``. Saver runs one inference thread — on SmolLM2 int4 (2 cores) one thread
decoded at 75 tok/s for 13.5 CPU-s per 1,000 tokens against 120 tok/s and 16.4 CPU-s
with two, 18 % less energy per token — and pauses background document indexing.
``performance`` leaves every choice to the engine. N-gram speculation is not a power
choice: measured, it saves CPU on answers that copy their documents and costs CPU on
free text, so the ``speculation`` setting turns it on for document answers whatever
the profile (docs/engine.md).

Energy: ``/sys/class/powercap/intel-rapl*`` counters (microjoules) are read where
they are readable (often root-only), to report joules per 1,000 tokens.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from assistant.core.settings import PowerMode, Settings

PowerSource = Literal["ac", "battery", "unknown"]
SYS = Path("/sys")


@dataclass(frozen=True)
class Battery:
    """One battery: its charge in percent and whether it is discharging."""

    name: str
    capacity_percent: int | None
    status: str


@dataclass(frozen=True)
class PowerState:
    """What ``/sys/class/power_supply`` says: the source and the batteries."""

    source: PowerSource
    batteries: tuple[Battery, ...]

    def as_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "batteries": [
                {"name": b.name, "capacity_percent": b.capacity_percent, "status": b.status} for b in self.batteries
            ],
        }


@dataclass(frozen=True)
class PowerProfile:
    """What the chosen power mode means for this run. The documents work reads
    ``pause_background_indexing``."""

    mode: PowerMode
    effective: Literal["saver", "performance"]
    state: PowerState
    threads: int  # 0: the engine's choice
    pause_background_indexing: bool

    @property
    def reason(self) -> str:
        if self.mode == "auto":
            return f"auto: {'on battery' if self.state.source == 'battery' else 'on mains power' if self.state.source == 'ac' else 'power source unknown'}"
        return f"chosen: {self.mode}"


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def power_state(sys_root: Path = SYS) -> PowerState:
    """The power source and batteries, from ``<sys_root>/class/power_supply``.

    On mains when any ``Mains``/``USB`` supply is online; on battery when a battery is
    discharging and no mains supply is online; unknown without any supply (a desktop
    or a container shows none)."""
    folder = sys_root / "class" / "power_supply"
    batteries: list[Battery] = []
    mains_online: bool | None = None
    if folder.is_dir():
        for supply in sorted(folder.iterdir()):
            kind = _read(supply / "type") or ""
            if kind == "Battery":
                capacity = _read(supply / "capacity")
                batteries.append(
                    Battery(
                        name=supply.name,
                        capacity_percent=int(capacity) if capacity and capacity.isdigit() else None,
                        status=_read(supply / "status") or "Unknown",
                    )
                )
            elif kind in ("Mains", "USB", "USB_C", "USB_PD"):
                online = _read(supply / "online") == "1"
                mains_online = bool(mains_online) or online
    if mains_online:
        source: PowerSource = "ac"
    elif any(b.status == "Discharging" for b in batteries) or (batteries and mains_online is False):
        source = "battery"
    elif batteries or mains_online is not None:
        source = "ac"
    else:
        source = "unknown"
    return PowerState(source, tuple(batteries))


def profile(settings: Settings, sys_root: Path = SYS) -> PowerProfile:
    """The power profile of ``settings.power`` on this machine now."""
    state = power_state(sys_root)
    mode: PowerMode = settings.power  # type: ignore[assignment]  # validated in Settings.load
    saver = mode == "saver" or (mode == "auto" and state.source == "battery")
    threads = settings.threads or (1 if saver else 0)  # an explicit --threads always wins
    return PowerProfile(
        mode=mode,
        effective="saver" if saver else "performance",
        state=state,
        threads=threads,
        pause_background_indexing=saver,
    )


def apply(settings: Settings, sys_root: Path = SYS) -> Settings:
    """``settings`` with the thread count the power profile chooses."""
    chosen = profile(settings, sys_root)
    return replace(settings, threads=chosen.threads) if chosen.threads != settings.threads else settings


# --------------------------------------------------------------------------- energy
def rapl_domains(sys_root: Path = SYS) -> list[Path]:
    """Readable package-level RAPL energy counters (``intel-rapl:N/energy_uj``)."""
    base = sys_root / "class" / "powercap"
    if not base.is_dir():
        return []
    found = []
    for zone in sorted(base.glob("intel-rapl:*")):
        counter = zone / "energy_uj"
        if zone.name.count(":") == 1 and os.access(counter, os.R_OK) and _read(counter) is not None:
            found.append(counter)
    return found


@dataclass
class Meter:
    """CPU seconds of this process (and its children) and joules of the CPU packages,
    between the start and end of a ``with measure()`` block. ``joules`` is None when no
    RAPL counter is readable (common: they are root-only since 2020)."""

    cpu_s: float = 0.0
    wall_s: float = 0.0
    joules: float | None = None


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _energy(counters: list[Path]) -> list[int]:
    return [int(_read(c) or 0) for c in counters]


@contextmanager
def measure(sys_root: Path = SYS) -> Iterator[Meter]:
    """Measure CPU time and, where readable, package energy of the block."""
    meter = Meter()
    counters = rapl_domains(sys_root)
    wraps = [int(_read(c.with_name("max_energy_range_uj")) or 0) for c in counters]
    start_energy = _energy(counters)
    start_cpu, start_wall = _cpu_seconds(), time.perf_counter()
    try:
        yield meter
    finally:
        meter.cpu_s = _cpu_seconds() - start_cpu
        meter.wall_s = time.perf_counter() - start_wall
        if counters:
            total = 0
            for before, after, wrap in zip(start_energy, _energy(counters), wraps, strict=True):
                total += after - before if after >= before else after + wrap - before  # the counter wrapped
            meter.joules = total / 1e6


def per_thousand(amount: float | None, tokens: int) -> float | None:
    """``amount`` per 1,000 tokens (None when unknown or no token was made)."""
    return None if amount is None or tokens <= 0 else amount * 1000.0 / tokens
