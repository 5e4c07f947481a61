#!/usr/bin/env python
"""How long one `enclave docs search` process takes, start to finish (issue 18: <= 0.5 s p95).

Runs the command ``--runs`` times over distinct questions of the seeded corpus's pool, in
the Enclave home ``--home`` (which must already hold indexed documents), and reports the
wall-clock p50/p95 of the whole process for the default (keywords + cheap static vectors,
no model load) and for ``--best`` (MiniLM too). Bytecode is written on the first run, as an
installed Enclave has it.

    PYTHONPATH=$PWD python scripts/bench_docs_cli.py --home ~/.local/share/..  [--runs 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.data.retrieval_corpus import DEFAULT_SEED, question_pool  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, required=True, help="ENCLAVE_HOME with indexed documents")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    env = dict(os.environ, ENCLAVE_HOME=str(args.home), ENCLAVE_DOCS_BACKGROUND="0")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    pool = question_pool()
    questions = [pool[i] for i in np.random.default_rng(DEFAULT_SEED).permutation(len(pool))[: args.runs]]
    cmd = [sys.executable, "-m", "assistant", "docs", "search", "-k", "5"]
    subprocess.run([*cmd, "warm-up"], env=env, capture_output=True, check=True)
    report: dict[str, dict[str, float]] = {}
    for label, extra in (("default (BM25 + static)", []), ("--best (MiniLM too)", ["--best"])):
        seconds, cpu = [], []
        for q in questions:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.monotonic()
            subprocess.run([*cmd, *extra, q], env=env, capture_output=True, check=True)
            seconds.append(time.monotonic() - started)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        report[label] = {
            "p50_s": float(np.percentile(seconds, 50)),
            "p95_s": float(np.percentile(seconds, 95)),
            # CPU seconds do not depend on how loaded the machine is; wall seconds do.
            "cpu_p50_s": float(np.percentile(cpu, 50)),
            "cpu_p95_s": float(np.percentile(cpu, 95)),
            "runs": len(seconds),
        }
    load = os.getloadavg()[0]
    if args.json:
        print(json.dumps({"load_average": load, **report}))
    else:
        for label, r in report.items():
            print(
                f"{label:<26} wall p50 {r['p50_s']:.2f} s  p95 {r['p95_s']:.2f} s · "
                f"CPU p50 {r['cpu_p50_s']:.2f} s  p95 {r['cpu_p95_s']:.2f} s  ({r['runs']} runs)"
            )
        print(f"load average at the end: {load:.1f} on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
