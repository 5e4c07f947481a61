"""Progress on stderr for long work: model builds (steps) and document indexing."""

from __future__ import annotations

import sys
import time
from typing import Any

from assistant.cli.common import _err


class BuildProgress:
    """Draws build steps on stderr: a rich progress bar on a terminal, plain lines otherwise."""

    def __init__(self, console: Any = None) -> None:
        self._console = console
        self._tty = console is not None or sys.stderr.isatty()
        self._last = ""
        self._started = time.monotonic()
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> BuildProgress:
        if self._tty:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[detail]}", style="dim", markup=False),
                console=self._console or Console(stderr=True),
                transient=False,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task("starting", total=None, detail="")
        return self

    def __call__(self, step: Any) -> None:
        label = f"[{step.index}/{step.total}] {step.label}"
        if self._progress is not None:
            self._progress.update(
                self._task,
                description=label,
                total=1.0 if step.fraction is not None else None,
                completed=step.fraction or 0,
                detail=step.detail[-60:],
            )
        elif label != self._last:
            self._last = label
            _err(f"{label} (+{time.monotonic() - self._started:.0f}s)")

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
