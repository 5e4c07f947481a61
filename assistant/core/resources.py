"""The files Enclave ships beside its code: personas, model manifests, chat templates.

They live at the top of a checkout (``prompts/``, ``models/``), where they are edited
in place, and inside the wheel as the data packages ``assistant.prompts`` and
``assistant.manifests`` (mapped in ``pyproject.toml``). Both are read through
:mod:`importlib.resources`, so an installed Enclave never looks for a source tree.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable

PROMPTS = "assistant.prompts"
MANIFESTS = "assistant.manifests"


def prompts() -> Traversable:
    """The shipped personas (``*.md``) and the document-answer prompt."""
    return files(PROMPTS)


def manifests() -> Traversable:
    """The shipped model manifests (``*.toml``); chat templates under ``templates/``."""
    return files(MANIFESTS)


def read_text(root: Traversable, name: str) -> str:
    """The text of ``name`` under ``root`` (UTF-8)."""
    return root.joinpath(name).read_text(encoding="utf-8")
