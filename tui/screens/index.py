"""Indexing documents from the TUI (`/docs add`, `/docs sync`, the palette): files, MiB,
time left and the file being read; Esc stops (what was indexed is kept)."""

from __future__ import annotations

import threading
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import ProgressBar, Static

from assistant.app.documents import Documents, IngestReport, Progress, report_line
from assistant.core.errors import EnclaveError
from tui.safety import displayable


class IndexScreen(ModalScreen[list[IngestReport] | None]):
    """Index ``paths`` into ``collection`` (or sync ``collections``), with progress; the
    reports when done (None when it failed or was stopped before anything finished)."""

    BINDINGS = [Binding("escape", "stop", "Stop"), Binding("enter", "close", "Close", show=False)]

    def __init__(
        self,
        documents: Documents,
        collection: str,
        paths: list[Path] | None = None,
        sync: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.documents = documents
        self.collection = collection
        self.paths = paths
        self.sync = sync or []
        self._cancel = threading.Event()
        self._working = True
        self.reports: list[IngestReport] = []

    def compose(self) -> ComposeResult:
        what = (
            f"Indexing {', '.join(str(p) for p in self.paths)} into {self.collection!r}"
            if self.paths
            else (f"Bringing {', '.join(self.sync)} up to date")
        )
        with Vertical(id="index-box"):
            yield Static(Text(what, style="bold"))
            yield ProgressBar(total=1, id="index-progress", show_eta=False)
            yield Static("Looking for files…", id="index-status")
            yield Static(id="index-current", classes="dim")
            yield Static("Esc = stop (what is indexed is kept; /docs sync continues)", id="index-keys", classes="dim")

    def on_mount(self) -> None:
        self.index()

    @property
    def working(self) -> bool:
        return self._working

    @work(thread=True, exclusive=True)
    def index(self) -> None:
        def progress(state: Progress) -> None:
            self.app.call_from_thread(self._progress, state)

        try:
            if self.paths is not None:
                self.reports.append(self.documents.add(self.paths, self.collection, progress, self._cancel))
            for name in self.sync:
                self.reports.append(self.documents.sync(name, progress, self._cancel))
        except EnclaveError as exc:
            self.app.call_from_thread(self._ended, f"{exc.message} {exc.hint}")
            return
        self.app.call_from_thread(self._ended, "")

    def _progress(self, state: Progress) -> None:
        self.query_one(ProgressBar).update(total=max(state.bytes_total, 1), progress=state.bytes_done)
        mb = f"{state.bytes_done / 2**20:.1f} of {state.bytes_total / 2**20:.1f} MiB"
        eta = (
            f", about {state.eta:.0f} s left" if state.eta is not None and state.files_done < state.files_total else ""
        )
        self.query_one("#index-status", Static).update(
            Text(f"{state.files_done} of {state.files_total} files, {mb}{eta}")
        )
        self.query_one("#index-current", Static).update(Text(displayable(Path(state.current).name)[-60:]))

    def _ended(self, problem: str) -> None:
        self._working = False
        lines = [report_line(r) for r in self.reports]
        for report in self.reports:
            shown = report.skipped[:5]
            lines += [f"  skipped {Path(path).name}: {why}" for path, why in shown]
            if len(report.skipped) > len(shown):
                lines.append(f"  … and {len(report.skipped) - len(shown)} more (enclave docs status lists them)")
        if problem:
            lines.append(problem)
        self.query_one("#index-status", Static).update(Text(displayable("\n".join(lines))))
        self.query_one("#index-current", Static).update("")
        self.query_one("#index-keys", Static).update("Enter or Esc = close")
        bar = self.query_one(ProgressBar)
        bar.update(total=1, progress=1)

    def action_stop(self) -> None:
        if self._working:
            self._cancel.set()
            self.query_one("#index-current", Static).update("stopping after this file…")
        else:
            self.action_close()

    def action_close(self) -> None:
        if not self._working:
            self.dismiss(self.reports or None)
