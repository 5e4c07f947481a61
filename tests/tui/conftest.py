"""TUI fixtures: the real app on the real tiny engine, in a private Enclave home."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from assistant.core.settings import Settings


@pytest.fixture
def tui_settings(settings: Settings, tiny_installed: object) -> Settings:
    return replace(settings, model="tiny", max_tokens=24, context_window=512)


@pytest.fixture
def fresh_home_settings(enclave_home: Path) -> Settings:
    return Settings.load(model="tiny")
