"""First run: the model is not built yet. Say what building it takes, ask, then build
with progress and a key that stops it."""

from __future__ import annotations

import threading
from typing import Literal

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import ProgressBar, Static

from assistant.app.models import BuildPlan, Step, build_model, build_plan
from assistant.core.errors import BuildCancelled, EnclaveError
from assistant.core.settings import Settings
from tui.safety import displayable

#: What the screen ends with: the model is built, the user wants to pick an installed
#: model instead, or to leave.
Outcome = Literal["built", "pick", "quit"]


class BuildScreen(Screen[Outcome]):
    """Asks before building (Enter builds, Esc quits, m picks an installed model), then
    shows the steps; Esc stops a running build (finished steps are reused next time)."""

    BINDINGS = [
        Binding("enter,b", "build", "Build", show=False),
        Binding("escape", "stop", "Stop / quit", show=False),
        Binding("r", "recheck", "Check again", show=False),
        Binding("m", "pick", "Choose an installed model", show=False),
    ]

    def __init__(self, settings: Settings, name: str, engine: str = "onnx", others: int = 0) -> None:
        super().__init__()
        self.settings = settings
        self.model_name = name
        self.engine = engine
        self.others = others  # installed chat models the user could pick instead
        self._cancel = threading.Event()
        self._working = False
        self.plan: BuildPlan | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="build-box"):
            yield Static(id="build-question")
            yield Static(id="build-keys", classes="dim")
            yield Static(id="build-step")
            yield ProgressBar(total=1, id="build-progress", show_eta=False)
            yield Static(id="build-detail", classes="dim")

    def on_mount(self) -> None:
        self.query_one(ProgressBar).display = False
        self.action_recheck()

    @property
    def working(self) -> bool:
        """A build is running."""
        return self._working

    def _keys(self, *keys: str) -> None:
        self.query_one("#build-keys", Static).update(Text(" · ".join(keys)))

    def action_recheck(self) -> None:
        if self._working:
            return
        try:
            self.plan = build_plan(self.settings, self.model_name, self.engine)
        except EnclaveError as exc:
            self.plan = None
            self.query_one("#build-question", Static).update(Text(f"{exc.message}\n{exc.hint}"))
            self._keys(*(["m = choose an installed model"] if self.others else []), "Esc = quit")
            return
        self.query_one("#build-question", Static).update(Text(self.plan.explain()))
        pick = ["m = choose an installed model instead"] if self.others else []
        if self.plan.ready:
            self._keys("Enter = build it now", *pick, "Esc = quit")
        else:
            self._keys("r = check again after installing", *pick, "Esc = quit")

    def action_pick(self) -> None:
        if not self._working and self.others:
            self.dismiss("pick")

    def action_build(self) -> None:
        if self._working or self.plan is None or not self.plan.ready:
            return
        self._working = True
        self._cancel.clear()
        self._keys("Esc = stop (finished steps are kept for the next try)")
        self.query_one(ProgressBar).display = True
        self.build()

    def action_stop(self) -> None:
        if self._working:
            self._cancel.set()
            self.query_one("#build-detail", Static).update(Text("stopping…"))
        else:
            self.dismiss("quit")

    @work(thread=True, exclusive=True)
    def build(self) -> None:
        def progress(step: Step) -> None:
            self.app.call_from_thread(self._progress, step)

        try:
            build_model(self.settings, self.model_name, self.engine, progress, self._cancel)
        except BuildCancelled as exc:
            self.app.call_from_thread(self._ended, exc, "Stopped.")
            return
        except EnclaveError as exc:
            self.app.call_from_thread(self._ended, exc, "The build failed:")
            return
        self.app.call_from_thread(self.dismiss, "built")

    def _progress(self, step: Step) -> None:
        # The bar counts steps: step i of n starts at i-1 and fills by its fraction.
        bar = self.query_one(ProgressBar)
        bar.update(total=step.total, progress=step.index - 1 + (step.fraction or 0))
        self.query_one("#build-step", Static).update(Text(f"Step {step.index} of {step.total}: {step.label}"))
        if step.detail:
            self.query_one("#build-detail", Static).update(Text(displayable(step.detail)[-100:]))

    def _ended(self, exc: EnclaveError, what: str) -> None:
        self._working = False
        self.query_one("#build-step", Static).update(Text(f"{what} {exc.message}\n{exc.hint}"))
        self.query_one("#build-detail", Static).update("")
        self.action_recheck_keys()

    def action_recheck_keys(self) -> None:
        pick = ["m = choose an installed model"] if self.others else []
        self._keys("Enter = try again", *pick, "Esc = quit")
