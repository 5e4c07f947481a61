#!/usr/bin/env python
"""Benchmark a model: load time, TTFT, prefill/decode tok/s, peak RSS, turn-2 vs turn-10 TTFT.

The same as `enclave bench`; kept as a script so reports can cite one command.

    python scripts/bench_engine.py [--model NAME] [--runs 3] [--turns 10] [--json]
"""

from __future__ import annotations

import argparse
import json

from assistant.app.bench import run_bench
from assistant.cli.bench import report_text
from assistant.core.settings import Settings
from assistant.privacy.guard import install_network_guard


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--engine", default=None)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--background-load", type=int, default=0, help="CPU-bound processes meanwhile")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    install_network_guard()
    settings = Settings.load(threads=args.threads)
    report = run_bench(
        settings,
        args.model or settings.model,
        args.engine,
        runs=args.runs,
        turns=args.turns,
        background=args.background_load,
    )
    print(json.dumps(report) if args.json else report_text(report))


if __name__ == "__main__":
    main()
