#!/usr/bin/env python
"""What an Enclave session tries on the network and writes outside its home, as the kernel sees it.

Runs one session of Enclave as a user would (no CI variable, none of Enclave's switches
in the environment: Enclave must set them itself; ``HOME`` and ``TMPDIR`` empty
temporary folders, ``XDG_*`` unset) under ``strace -f`` (every process and thread, native
code included), by default inside ``unshare -rn`` so that whatever it tries cannot leave
this machine, and counts:

- ``dns``: connects or sends to port 53, or to the host's resolver sockets (nscd,
  systemd-resolved);
- ``remote_connects``: ``connect()`` to an address that is not loopback (attempts, whatever
  their result);
- ``inet_sockets_ok`` / ``inet_socket_attempts``: ``socket(AF_INET|AF_INET6)`` calls that
  succeeded / were made;
- ``sealed_workers_traced``: sealed worker processes started under the trace (proof that
  the trace followed them);
- ``files_outside_home``: files left in ``HOME`` and ``TMPDIR`` (everything Enclave writes
  belongs in ``ENCLAVE_HOME``); ``library_files``: files a library left in the sealed
  workers' own ``HOME``/``TMPDIR`` inside ``ENCLAVE_HOME`` (none, when the switches hold).

Usage (``--json`` for a machine-readable report)::

    .venv/bin/python scripts/egress_check.py                         # a 40-s chat on the tiny model
    .venv/bin/python scripts/egress_check.py --mode tui --seconds 35
    .venv/bin/python scripts/egress_check.py --model ~/.cache/enclave-test-models/data/models/smollm2-135m-instruct/onnx
    .venv/bin/python scripts/egress_check.py --checkout /path/to/other/checkout   # before / after
    .venv/bin/python scripts/egress_check.py --mode control          # positive control (see below)

``--mode control`` asks the sealed engine worker (with ``ENCLAVE_TEST_HOOKS=1``) to make a
native ``socket(AF_INET)`` + ``connect(192.0.2.1:53)`` through libc: the counts must show
it (an attempt, refused), or the zeros of the other modes would mean nothing.
``--mode control-unsealed`` does the same from an unsealed worker (UDP: a ``connect`` sends
no packet): ``inet_sockets_ok`` must then be 1, proving a successful native socket is seen.
Needs ``strace`` (and ``unshare`` unless ``--no-unshare``). Exit status 0 when done.
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "assets" / "tiny-llama"


def _offline_module() -> Any:
    """This checkout's list of switches and CI names, read from the file (stdlib-only)."""
    spec = importlib.util.spec_from_file_location("_enclave_offline", REPO / "assistant" / "privacy" / "offline.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


OFFLINE = _offline_module()

TUI_SESSION = """
import asyncio, sys, time
from assistant.core.settings import Settings
from tui.app import EnclaveApp
from tui.widgets.prompt import PromptArea

async def main(seconds: float, every: float) -> None:
    app = EnclaveApp(Settings.load(model="m", max_tokens=8))
    async with app.run_test(size=(100, 30)) as pilot:
        started = time.monotonic()
        while app.conv is None and time.monotonic() - started < 120:
            await pilot.pause(0.1)
        n = 0
        while time.monotonic() - started < seconds:
            app.query_one("#prompt", PromptArea).value = f"Question {n}: how do I reset the pump?"
            await pilot.press("enter")
            n += 1
            await pilot.pause(every)
        print(f"turns {n}")

asyncio.run(main(float(sys.argv[1]), float(sys.argv[2])))
"""

CONTROL = """
import sys
from assistant.app.turns import Assistant
from assistant.core.settings import Settings
if sys.argv[1] == "control":
    assistant = Assistant(Settings.load(model="m"))
    _, engine = assistant.load("m")
    print(engine.test_hook("connect"))
    assistant.close()
else:
    from assistant.privacy.wire import Codec
    from assistant.privacy.worker import COMMON, SealedProcess, TestHook
    process = SealedProcess("probe", Codec(COMMON), sealed=False)
    print(process.call(TestHook("connect"))[0])
    process.close()
"""


def clean_env(root: Path, checkout: Path, extra: dict[str, str]) -> dict[str, str]:
    """A user's environment: no CI variable, no Enclave switch, empty HOME and TMPDIR."""
    drop = set(OFFLINE.CI_SUPPRESSION) | set(OFFLINE.OFFLINE_ENV)
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith(("XDG_", "ENCLAVE_"))}
    for sub in ("home", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    env.update(
        HOME=str(root / "home"),
        TMPDIR=str(root / "tmp"),
        ENCLAVE_HOME=str(root / "enclave"),
        PYTHONPATH=str(checkout),
        PYTHONDONTWRITEBYTECODE="1",
        TERM="xterm-256color",
        **extra,
    )
    return env


# --------------------------------------------------------------------------- the trace
_LINE = re.compile(r"^(\d+)\s+(?:[\d:.]+\s+)?(.*)$")
_RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>(.*)$")
_RESULT = re.compile(r"\)\s+=\s+(-?\d+)")
_INET = re.compile(
    r'sa_family=AF_INET6?, sin6?_port=htons\((\d+)\), (?:sin_addr=inet_addr\("([^"]+)"\)|.*?inet_pton\(AF_INET6, "([^"]+)")'
)


def calls(trace: Path) -> list[tuple[int, str]]:
    """(pid, whole system call line), joining ``<unfinished ...>`` with its ``resumed`` part."""
    pending: dict[int, str] = {}
    out: list[tuple[int, str]] = []
    for raw in trace.read_text(errors="replace").splitlines():
        match = _LINE.match(raw)
        if not match:
            continue
        pid, text = int(match.group(1)), match.group(2)
        resumed = _RESUMED.match(text)
        if resumed:
            text = pending.pop(pid, resumed.group(1) + "(") + resumed.group(2)
        if text.endswith("<unfinished ...>"):
            pending[pid] = text[: -len("<unfinished ...>")]
            continue
        out.append((pid, text))
    return out


def count(trace: Path) -> dict[str, Any]:
    """The figures of one traced session."""
    found: dict[str, list[str]] = defaultdict(list)
    pids = set()
    workers = 0
    for pid, text in calls(trace):
        pids.add(pid)
        name = text.split("(", 1)[0]
        if name == "execve" and "seal.py" in text and "= 0" in text:
            workers += 1
        result = _RESULT.search(text)
        ok = result is not None and int(result.group(1)) >= 0
        if name == "socket" and re.match(r"socket\((AF|PF)_INET6?\b", text):
            found["inet_socket_attempts"].append(f"{pid} {text}")
            if ok:
                found["inet_sockets_ok"].append(f"{pid} {text}")
        if name in ("connect", "sendto", "sendmsg", "sendmmsg"):
            if "htons(53)" in text or re.search(r'sun_path="[^"]*(nscd|resolve)', text):
                found["dns"].append(f"{pid} {text}")
            address = _INET.search(text)
            if name == "connect" and address:
                host = address.group(2) or address.group(3) or ""
                try:
                    loopback = ipaddress.ip_address(host).is_loopback
                except ValueError:
                    loopback = False
                if not loopback:
                    found["remote_connects"].append(f"{pid} {text}")
    keys = ("dns", "remote_connects", "inet_sockets_ok", "inet_socket_attempts")
    report: dict[str, Any] = {key: len(found[key]) for key in keys}
    report["examples"] = {key: found[key][:3] for key in keys if found[key]}
    report["processes"] = len(pids)
    report["sealed_workers_traced"] = workers
    return report


def files_under(*roots: Path) -> list[str]:
    return sorted(str(p) for root in roots if root.exists() for p in root.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- the session
def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="enclave-egress-"))
    checkout = Path(args.checkout).resolve()
    extra = {"ENCLAVE_TEST_HOOKS": "1"} if args.mode.startswith("control") else {}
    env = clean_env(root, checkout, extra)
    py = [args.python, "-m", "assistant"]
    added = subprocess.run(
        [*py, "models", "add", str(args.model), "--name", "m"], env=env, cwd=root, capture_output=True, text=True
    )
    if added.returncode != 0:
        raise SystemExit(f"models add failed: {added.stderr.strip()[-500:]}")
    trace = root / "trace"
    prefix = ["strace", "-f", "-qq", "-s", "256", "-e", "trace=network,execve", "-o", str(trace)]
    if not args.no_unshare:
        prefix = ["unshare", "-rn", *prefix]
    started = time.monotonic()
    turns = 0
    if args.mode == "chat":
        proc = subprocess.Popen(
            [*prefix, *py, "chat", "-m", "m", "--max-tokens", str(args.max_tokens)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=root, text=True,
        )  # fmt: skip
        assert proc.stdin is not None
        while time.monotonic() - started < args.seconds:
            proc.stdin.write(f"Question {turns}: how do I reset the pump?\n")
            proc.stdin.flush()
            turns += 1
            time.sleep(args.every)
        stdout, stderr = proc.communicate(timeout=600)
        code = proc.returncode
    elif args.mode == "tui":
        done = subprocess.run(
            [*prefix, args.python, "-c", TUI_SESSION, str(args.seconds), str(args.every)],
            env=env, cwd=root, capture_output=True, text=True, timeout=args.seconds + 600,
        )  # fmt: skip
        stdout, stderr, code = done.stdout, done.stderr, done.returncode
        turns = int(re.findall(r"turns (\d+)", stdout)[-1]) if "turns" in stdout else 0
    else:
        done = subprocess.run(
            [*prefix, args.python, "-c", CONTROL, args.mode], env=env, cwd=root, capture_output=True, text=True,
            timeout=600,
        )  # fmt: skip
        stdout, stderr, code = done.stdout, done.stderr, done.returncode
    if code != 0:
        raise SystemExit(f"the session failed (exit {code}): {stderr.strip()[-1500:]}")
    report: dict[str, Any] = {
        "mode": args.mode,
        "checkout": str(checkout),
        "seconds": round(time.monotonic() - started, 1),
    }
    report["turns"] = turns
    report.update(count(trace))
    report["files_outside_home"] = files_under(root / "home", root / "tmp")
    workers = root / "enclave" / "cache" / "worker"
    report["library_files"] = files_under(workers / "home", workers / "tmp")
    report["unshare"] = not args.no_unshare
    if args.mode.startswith("control"):
        report["control_output"] = stdout.strip()[-500:]
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    else:
        report["root"] = str(root)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["chat", "tui", "control", "control-unsealed"], default="chat")
    parser.add_argument("--seconds", type=float, default=40.0, help="how long the session stays open (default 40)")
    parser.add_argument("--every", type=float, default=2.0, help="seconds between questions")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--model", type=Path, default=TINY, help="an onnxruntime-genai model folder (default: tiny)")
    parser.add_argument("--checkout", default=str(REPO), help="the Enclave checkout to run (default: this one)")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--no-unshare", action="store_true", help="run without the outer network namespace")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (trace, homes)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    for tool in ["strace"] + ([] if args.no_unshare else ["unshare"]):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed")
    report = run(args)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        for key, value in report.items():
            print(f"{key:22} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
