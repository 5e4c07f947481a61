"""What `enclave bench` counts as Enclave's CPU time: this process and its children,
never the --background-load processes (real busy processes, read from the kernel)."""

from __future__ import annotations

import time

from assistant.app.bench import BackgroundLoad, _cpu_now


def test_the_background_load_is_not_counted_as_enclaves_cpu_time() -> None:
    """Found by a tester: --background-load 1 took CPU-s per 1,000 tokens from 30 to 56
    for the same work, because the load processes are children of the bench too."""
    with BackgroundLoad(1) as load:
        time.sleep(0.3)  # the child has started spinning
        counted, everything = _cpu_now(load.pids), _cpu_now()
        time.sleep(1.0)
        counted_after, everything_after = _cpu_now(load.pids), _cpu_now()
    # The spinning child is seen when it is not skipped (it gets a good share of a core
    # even on a busy 2-core machine), and not at all when it is.
    assert everything_after - everything > 0.3
    assert counted_after - counted < 0.1
