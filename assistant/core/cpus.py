"""How many inference threads this process should use when nobody chose a number.

onnxruntime-genai 0.18 does not size its thread pool to the machine: a model loaded
without ``intra_op_num_threads`` runs one thread. On a 2-core machine that made
every answer's prefill 1.9× and its decode 1.5× slower than ``--threads 2``
(``enclave ask --docs … --answer-mode free``: 3.5 s vs 1.85 s for 1,036 prompt tokens,
45 vs 69 tok/s). The default is therefore the physical cores this process may run
on: the CPUs of its affinity mask (a container's cpuset, ``taskset``), counted once
per core (hyperthread siblings share one core's arithmetic units, and int4 matrix
kernels gain nothing from the second one), and no more than its cgroup CPU quota
(``docker --cpus 2``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

SYS_CPU = Path("/sys/devices/system/cpu")
CGROUP = Path("/sys/fs/cgroup")


def _affinity() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - macOS, Windows
        return list(range(os.cpu_count() or 1))


def _core_of(cpu: int, sys_cpu: Path) -> tuple[str, str] | None:
    topology = sys_cpu / f"cpu{cpu}" / "topology"
    try:
        return (
            (topology / "physical_package_id").read_text().strip(),
            (topology / "core_id").read_text().strip(),
        )
    except OSError:
        return None


def _quota(cgroup: Path) -> int | None:
    """The cgroup v2 CPU quota in whole CPUs (rounded up), or None when unlimited/unknown."""
    try:
        fields = (cgroup / "cpu.max").read_text().split()
    except OSError:
        return None
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    return max(1, math.ceil(quota / period)) if quota > 0 and period > 0 else None


def inference_threads(cpus: list[int] | None = None, sys_cpu: Path = SYS_CPU, cgroup: Path = CGROUP) -> int:
    """Physical cores among the CPUs this process may use, capped by its CPU quota; at least 1."""
    cpus = _affinity() if cpus is None else cpus
    cores = {_core_of(cpu, sys_cpu) for cpu in cpus}
    # Without topology files (some containers, other systems) every CPU counts as a core.
    count = len(cpus) if None in cores else len(cores)
    quota = _quota(cgroup)
    if quota is not None:
        count = min(count, quota)
    return max(1, count)
