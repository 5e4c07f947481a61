"""Children that die with the process that started them.

A model build runs its converters as child processes (minutes of torch and ONNX work).
When Enclave itself is stopped — SIGTERM from a service manager, a closed terminal, a
SIGKILL — those children must not go on converting, writing into a folder nobody will
use, and holding a core of a laptop on battery. The parent names itself in the child's
environment (:data:`PARENT_ENV`); :func:`follow_parent` in the child then ends the child
when that parent is gone:

* on Linux the kernel does it at once: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``, which works
  even while the child is inside a long native call that holds the GIL;
* everywhere, a daemon thread checks ``os.getppid()`` every :data:`POLL_S` seconds (a
  child whose parent is gone is re-parented, so the id changes).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

#: The environment variable that carries the parent's process id to the child.
PARENT_ENV = "ENCLAVE_PARENT_PID"
#: Seconds between checks of the parent in the portable fallback.
POLL_S = 1.0
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def parent_env() -> dict[str, str]:
    """The entry to add to a child's environment so that it can follow this process."""
    return {PARENT_ENV: str(os.getpid())}


def follow_parent(environ: dict[str, str] | None = None) -> bool:
    """End this process when the parent named in :data:`PARENT_ENV` is gone.

    Does nothing (returns False) when the variable is absent or not a number; exits at
    once when the parent is already gone."""
    raw = (os.environ if environ is None else environ).get(PARENT_ENV, "")
    if not raw.isdigit():
        return False
    parent = int(raw)
    if parent == os.getpid():  # this child re-executed itself (os.execve): same parent
        parent = os.getppid()
    _kernel_death_signal()
    if os.getppid() != parent:  # it died before the death signal was armed
        os._exit(1)
    # A process this child starts follows this child, not its grandparent.
    os.environ[PARENT_ENV] = str(os.getpid())
    threading.Thread(target=_watch, args=(parent,), name="follow-parent", daemon=True).start()
    return True


def _kernel_death_signal() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        pass  # the polling thread still covers it


def _watch(parent: int) -> None:
    while True:
        time.sleep(POLL_S)
        if os.getppid() != parent:
            os._exit(1)
