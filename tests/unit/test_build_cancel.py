"""A model build can be stopped while its converter is silent: the progress callback is
called every quarter second and an exception from it kills the child."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from assistant.app.models import build_model
from assistant.catalog.convert import recipes
from assistant.core.errors import BuildCancelled
from assistant.core.settings import Settings


def test_a_silent_child_is_killed_when_progress_raises(tmp_path: Path) -> None:
    calls: list[recipes.Step] = []

    def progress(step: recipes.Step) -> None:
        calls.append(step)
        if len(calls) >= 3:
            raise BuildCancelled()

    started = time.monotonic()
    with pytest.raises(BuildCancelled):
        recipes._run(
            [sys.executable, "-c", "import time; time.sleep(60)"],
            recipes.Step(3, 5, "Converting"),
            progress,
            tmp_path / "log.txt",
        )
    assert time.monotonic() - started < 10  # not the child's 60 s
    assert all(step.index == 3 and step.detail.startswith("working (") for step in calls)


def test_build_model_stops_on_cancel_and_builds_offline(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []

    def build(  # the build's own signature (assistant.catalog.convert.recipes.build)
        catalog: Any, name: str, engine: str = "onnx", progress: Any = None, force: bool = False, offline: bool = False
    ) -> Any:
        seen.append(offline)
        while True:
            progress(recipes.Step(1, 4, "Finding the source weights"))
            time.sleep(0.01)

    monkeypatch.setattr(recipes, "build", build)
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    with pytest.raises(BuildCancelled):
        build_model(settings, "smollm2-135m-instruct", "onnx", lambda step: None, cancel)
    assert seen == [True]
