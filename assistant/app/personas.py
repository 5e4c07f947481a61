"""Personas: named system prompts, shipped with Enclave or written by the user.

The user's own ``*.md`` files in ``<config>/prompts`` come first and may replace a
shipped one of the same name.
"""

from __future__ import annotations

from importlib.resources.abc import Traversable
from pathlib import Path

from assistant.core import resources
from assistant.core.errors import EnclaveError
from assistant.core.settings import Settings

#: Shipped prompts that are not personas.
NOT_PERSONAS = {"retrieval", "retrieval-quote"}


def user_dir(settings: Settings) -> Path:
    """Where the user's own personas live."""
    return settings.locations.config / "prompts"


def list_personas(settings: Settings) -> dict[str, Traversable]:
    """Every persona by name: shipped ones, then the user's (which win)."""
    found: dict[str, Traversable] = {}
    shipped = [e for e in resources.prompts().iterdir() if e.name.endswith(".md") and e.is_file()]
    mine = sorted(user_dir(settings).glob("*.md")) if user_dir(settings).is_dir() else []
    for entry in sorted(shipped, key=lambda e: e.name):
        name = entry.name.removesuffix(".md")
        if name not in NOT_PERSONAS:
            found[name] = entry
    for path in mine:
        found[path.stem] = path
    return dict(sorted(found.items()))


def load_persona(settings: Settings, name: str) -> str:
    """The system prompt of persona ``name``."""
    personas = list_personas(settings)
    if name not in personas:
        raise EnclaveError(
            f"No persona is called {name!r}.",
            f"Personas: {', '.join(personas)}. Add your own as a .md file in {user_dir(settings)}.",
        )
    return personas[name].read_text(encoding="utf-8").strip()
