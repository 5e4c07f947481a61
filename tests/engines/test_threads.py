"""The inference threads a model runs when nobody chose a number: the machine's physical
cores (onnxruntime-genai's own default is one thread), counted from outside the engine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from assistant.core.cpus import inference_threads

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "tests" / "assets" / "tiny-llama"

# Loads the tiny model in a fresh interpreter and reports how many OS threads the load
# started (onnxruntime's intra-op pool starts threads - 1 of them at session creation).
PROBE = """
import json, os, sys
from pathlib import Path
from assistant.engines.onnx_genai import OnnxGenaiEngine
before = len(os.listdir("/proc/self/task"))
threads = None if sys.argv[2] == "default" else int(sys.argv[2])
engine = OnnxGenaiEngine(Path(sys.argv[1]), "tiny", threads=threads)
print(json.dumps({"started": len(os.listdir("/proc/self/task")) - before, "threads": engine.threads}))
"""


def _load(threads: str) -> dict[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(TINY), threads], capture_output=True, text=True, timeout=120, check=True
    )
    result: dict[str, int] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc to count threads")
def test_a_model_loaded_without_a_thread_count_runs_one_thread_per_physical_core() -> None:
    cores = inference_threads()
    if cores < 2:
        pytest.skip("this machine offers one physical core: one thread is the right default")
    default, one = _load("default"), _load("1")
    assert default["threads"] == cores
    # The pool the kernel sees: one thread per core beside the caller's own.
    assert default["started"] - one["started"] == cores - 1


def test_an_explicit_thread_count_is_kept() -> None:
    assert _load("1")["threads"] == 1


def _topology(root: Path, cpus: dict[int, tuple[int, int]]) -> Path:
    for cpu, (package, core) in cpus.items():
        folder = root / f"cpu{cpu}" / "topology"
        folder.mkdir(parents=True)
        (folder / "physical_package_id").write_text(f"{package}\n")
        (folder / "core_id").write_text(f"{core}\n")
    return root


def test_hyperthread_siblings_count_as_one_core(tmp_path: Path) -> None:
    # 4 cores with 2 threads each, as a laptop's 8 "CPUs".
    sys_cpu = _topology(tmp_path / "cpu", {i: (0, i % 4) for i in range(8)})
    assert inference_threads(list(range(8)), sys_cpu, tmp_path / "cgroup") == 4
    # A cpuset of the two threads of one core, and of two sockets' core 0.
    assert inference_threads([0, 4], sys_cpu, tmp_path / "cgroup") == 1
    two_sockets = _topology(tmp_path / "cpu2", {0: (0, 0), 1: (1, 0)})
    assert inference_threads([0, 1], two_sockets, tmp_path / "cgroup") == 2


def test_a_cgroup_quota_caps_the_count_and_missing_topology_counts_every_cpu(tmp_path: Path) -> None:
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    no_topology = tmp_path / "none"
    assert inference_threads(list(range(6)), no_topology, cgroup) == 6
    (cgroup / "cpu.max").write_text("150000 100000\n")  # docker --cpus 1.5
    assert inference_threads(list(range(6)), no_topology, cgroup) == 2
    (cgroup / "cpu.max").write_text("max 100000\n")
    assert inference_threads(list(range(6)), no_topology, cgroup) == 6
    (cgroup / "cpu.max").write_text("garbage\n")
    assert inference_threads([0], no_topology, cgroup) == 1
