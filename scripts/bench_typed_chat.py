#!/usr/bin/env python
"""Peak RSS and per-turn latency of `enclave chat --json` as a person types it.

    python scripts/bench_typed_chat.py [--turns 20] [--kv-cache grow|window|auto] [--pause 1.5]

Runs the real CLI on the default model (or ``--model``) with a pseudo-terminal on stdin,
one turn at a time with ``--pause`` seconds after each answer (the user reading), under
``/usr/bin/time -f %M`` (the peak resident set of the process tree's largest member: the
model worker). CI variables are removed from the child's environment. Prints one JSON
object: peak RSS, the cache size at the end, the turns that re-read the conversation, and
TTFT median / max. The home is ENCLAVE_HOME (a built model must be there). A benchmark,
never a test: compare settings side by side in one session.
"""

from __future__ import annotations

import argparse
import json
import os
import pty
import subprocess
import sys
import termios
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--kv-cache", default="auto", choices=["auto", "grow", "window"])
    parser.add_argument("--pause", type=float, default=1.5, help="seconds after each answer")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--model")
    args = parser.parse_args(argv)
    env = {k: v for k, v in os.environ.items() if k != "CI" and not k.startswith("ENCLAVE_KV")}
    env["ENCLAVE_KV_CACHE"] = args.kv_cache
    cmd = ["/usr/bin/time", "-f", "%M", sys.executable, "-m", "assistant", "chat", "--json", "--no-save"]
    cmd += ["--max-tokens", str(args.max_tokens), "--ctx", str(args.ctx)] + (["-m", args.model] if args.model else [])
    leader, follower = pty.openpty()
    attrs = termios.tcgetattr(follower)
    attrs[3] &= ~termios.ECHO
    termios.tcsetattr(follower, termios.TCSANOW, attrs)
    proc = subprocess.Popen(cmd, stdin=follower, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    os.close(follower)
    assert proc.stdout is not None and proc.stderr is not None
    rows = []
    for i in range(args.turns):
        line = f"Turn {i}: the pump on line {i} showed {i * 3} bar at noon; note it and say one short thing.\n"
        os.write(leader, line.encode())
        out = proc.stdout.readline()
        if not out:
            proc.kill()
            print(proc.stderr.read(), file=sys.stderr)
            return 1
        rows.append(json.loads(out)["usage"])
        time.sleep(args.pause)
    os.write(leader, b"/bye\n")
    err = proc.stderr.read()
    proc.wait()
    os.close(leader)
    ttft = sorted(r["ttft_ms"] for r in rows)
    result = {
        "kv_cache": args.kv_cache,
        "turns": args.turns,
        "peak_rss_mib": round(int(err.split()[-1]) / 1024),
        "prompt_tokens_last": rows[-1]["prompt_tokens"],
        "cache_tokens_last": rows[-1]["cache_tokens"],
        "reread_turns": [i for i, r in enumerate(rows) if i and r["prefilled_tokens"] >= r["prompt_tokens"]],
        "ttft_median_ms": ttft[len(ttft) // 2],
        "ttft_max_ms": ttft[-1],
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
