"""The hardware and power readers on real files laid out as the kernel lays them out
(a laptop on battery, one on mains, a desktop with an NVIDIA card, an ARM board), the
power profile each one gets, and the drift comparison's thresholds."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from assistant.app import drift, hardware, power
from assistant.core.settings import Settings

X86_CPUINFO = """processor\t: 0
model name\t: Intel(R) Core(TM) i5-8250U CPU @ 1.60GHz
flags\t\t: fpu sse sse2 avx avx2 fma f16c
processor\t: 1
model name\t: Intel(R) Core(TM) i5-8250U CPU @ 1.60GHz
flags\t\t: fpu sse sse2 avx avx2 fma f16c
"""
ARM_CPUINFO = """processor\t: 0
Features\t: fp asimd evtstrm aes crc32
processor\t: 1
Features\t: fp asimd evtstrm aes crc32
Hardware\t: BCM2835
"""
MEMINFO = "MemTotal:        8048576 kB\nMemFree:  100 kB\nMemAvailable:    4024288 kB\n"


def laptop(root: Path, *, on_battery: bool, capacity: int = 57) -> Path:
    supply = root / "sys" / "class" / "power_supply"
    (supply / "BAT0").mkdir(parents=True)
    (supply / "BAT0" / "type").write_text("Battery\n")
    (supply / "BAT0" / "capacity").write_text(f"{capacity}\n")
    (supply / "BAT0" / "status").write_text("Discharging\n" if on_battery else "Charging\n")
    (supply / "AC").mkdir()
    (supply / "AC" / "type").write_text("Mains\n")
    (supply / "AC" / "online").write_text("0\n" if on_battery else "1\n")
    (root / "proc").mkdir()
    (root / "proc" / "cpuinfo").write_text(X86_CPUINFO)
    (root / "proc" / "meminfo").write_text(MEMINFO)
    return root


def test_a_laptop_on_battery_gets_the_saver_profile(tmp_path: Path, settings: Settings) -> None:
    root = laptop(tmp_path, on_battery=True)
    state = power.power_state(root / "sys")
    assert state.source == "battery"
    assert state.batteries[0].capacity_percent == 57 and state.batteries[0].status == "Discharging"
    chosen = power.profile(replace(settings, power="auto", threads=0), root / "sys")
    assert (chosen.effective, chosen.threads, chosen.pause_background_indexing) == ("saver", 1, True)
    assert chosen.reason == "auto: on battery"
    # An explicit --threads wins over the profile; performance leaves the engine's choice.
    assert power.profile(replace(settings, power="auto", threads=2), root / "sys").threads == 2
    assert power.profile(replace(settings, power="performance"), root / "sys").threads == 0
    assert power.apply(replace(settings, power="auto", threads=0), root / "sys").threads == 1


def test_on_mains_auto_means_performance(tmp_path: Path, settings: Settings) -> None:
    root = laptop(tmp_path, on_battery=False)
    assert power.power_state(root / "sys").source == "ac"
    chosen = power.profile(replace(settings, power="auto"), root / "sys")
    assert (chosen.effective, chosen.pause_background_indexing) == ("performance", False)
    assert power.profile(replace(settings, power="saver"), root / "sys").effective == "saver"


def test_no_power_supply_is_unknown_and_auto_stays_fast(tmp_path: Path, settings: Settings) -> None:
    assert power.power_state(tmp_path).source == "unknown"
    assert power.profile(replace(settings, power="auto"), tmp_path).effective == "performance"


def test_machine_reads_cpu_flags_memory_nvidia_and_vulkan(tmp_path: Path) -> None:
    root = laptop(tmp_path, on_battery=False)
    (root / "dev").mkdir()
    for node in ("nvidia0", "nvidiactl", "nvidia-uvm"):
        (root / "dev" / node).write_text("")
    icd = root / "usr" / "share" / "vulkan" / "icd.d"
    icd.mkdir(parents=True)
    (icd / "nvidia_icd.json").write_text("{}")
    here = hardware.machine(root, run_smi=False)
    assert here.cpu.cores == 2 and here.cpu.features == ("avx", "avx2", "fma", "f16c")
    assert here.cpu.model.startswith("Intel(R) Core(TM) i5")
    assert (here.ram_bytes, here.ram_available_bytes) == (8048576 * 1024, 4024288 * 1024)
    assert here.gpu.nvidia_devices == ("nvidia0",) and here.gpu.present
    assert here.gpu.vulkan_icds == ("nvidia_icd.json",)


def test_an_arm_board_reports_neon_as_asimd(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "cpuinfo").write_text(ARM_CPUINFO)
    cpu = hardware.cpu_info(tmp_path / "proc")
    assert cpu.features == ("asimd",) and cpu.model == "BCM2835" and cpu.cores == 2


def test_rapl_energy_is_read_where_readable(tmp_path: Path) -> None:
    zone = tmp_path / "class" / "powercap" / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "energy_uj").write_text("1000000\n")
    (zone / "max_energy_range_uj").write_text("262143328850\n")
    with power.measure(tmp_path) as meter:
        (zone / "energy_uj").write_text("3500000\n")  # 2.5 J later
        sum(i * i for i in range(200_000))
    assert meter.joules == 2.5 and meter.cpu_s > 0
    assert power.per_thousand(meter.joules, 500) == 5.0
    assert power.per_thousand(None, 500) is None
    with power.measure(tmp_path / "none") as unreadable:
        pass
    assert unreadable.joules is None


def _figures(answers: dict[str, list[int]], ppl: float | None) -> drift.Figures:
    return drift.Figures("onnxruntime-genai 0.18.0 on cpu", answers, ppl, 0.1)


def test_drift_thresholds(settings: Settings) -> None:
    ref = _figures({"a": list(range(16)), "b": list(range(16))}, 20.0)
    same = drift.compare(ref, _figures({"a": list(range(16)), "b": list(range(16))}, 20.0), settings)
    assert (same.verdict, same.blocking, same.identical) == ("same", False, 2)
    # b differs from token 8, perplexity +0.2 %: changed, within the thresholds.
    moved = drift.compare(ref, _figures({"a": list(range(16)), "b": [*range(8), 99, *range(9, 16)]}, 20.04), settings)
    assert (moved.verdict, moved.blocking) == ("changed", False)
    assert moved.agreement == (1.0 + 0.5) / 2 and moved.prompts[1].first_difference == 8
    worse = drift.compare(ref, _figures({"a": list(range(16)), "b": list(range(16))}, 23.0), settings)
    assert worse.blocking and worse.reasons == ("perplexity rose 15.0% (limit 10%)",)
    noisy = drift.compare(ref, _figures({"a": [99] * 16, "b": [98] * 16}, None), settings)
    assert noisy.blocking and noisy.reasons == ("greedy agreement 0% (limit 25%)",)


def test_the_golden_set_is_shipped() -> None:
    golden = drift.golden_set()
    assert {p.persona for p in golden.prompts} == {"general", "technician", "legal"}
    assert golden.tokens == 16 and len(golden.text) > 1000


def test_a_turn_is_held_against_the_budgets_only_when_long_enough_to_measure() -> None:
    from assistant.app.hardware import missed_budgets
    from assistant.core.events import Usage
    from assistant.core.settings import Settings

    settings = Settings(budget_ttft_ms=3000.0, budget_decode_tokens_per_s=10.0)
    # 600 tokens prefilled in 1.2 s: 500 would take 1.0 s; 41 tokens decoded in 8 s: 5 tok/s.
    slow = Usage(prompt_tokens=600, prefilled_tokens=600, completion_tokens=41, ttft_ms=1200, prefill_ms=1200, decode_ms=8000)
    assert missed_budgets(slow, settings) == ["decode 5.0 < 10 tok/s"]
    # 200 tokens in 2 s: 500 would take 5 s, over the 3 s budget.
    slow_prefill = Usage(200, 200, 41, 2000, 2000, 1000)
    assert missed_budgets(slow_prefill, settings) == ["TTFT 5.0 s per 500 tokens > 3.0 s"]
    # A turn that reused its cache (12 tokens prefilled) and a 3-token answer are not judged.
    short = Usage(prompt_tokens=900, prefilled_tokens=12, completion_tokens=3, ttft_ms=900, prefill_ms=900, decode_ms=900)
    assert missed_budgets(short, settings) == []
