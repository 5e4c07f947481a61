"""The pip command that installs what is missing, for the way Enclave was installed.

In a checkout (an editable install beside ``pyproject.toml``) that is ``pip install -e
'.[build]'``. From a wheel there is no checkout, and ``pip install 'enclave[build]'``
would ask the package index for a project of that name, which is not this one; so the
command names the pinned requirements themselves, read from the installed package's
metadata.
"""

from __future__ import annotations

import re
import shlex
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "enclave"


def checkout() -> Path | None:
    """The source checkout this copy of Enclave runs from, if it runs from one."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "assistant").is_dir() else None


def _requirements() -> list[str]:
    try:
        return list(metadata.requires(DISTRIBUTION) or [])
    except metadata.PackageNotFoundError:
        return []


def extra_command(extra: str) -> str:
    """``pip install …`` for an optional part (``build``)."""
    root = checkout()
    if root is not None:
        return f"pip install -e '{root}[{extra}]'" if root != Path.cwd().resolve() else f"pip install -e '.[{extra}]'"
    wanted = [r.split(";")[0].strip() for r in _requirements() if re.search(rf"extra\s*==\s*['\"]{extra}['\"]", r)]
    if not wanted:
        return f"pip install '{DISTRIBUTION}[{extra}]'"
    return "pip install " + " ".join(shlex.quote(r) for r in wanted)


def requirement_command(project: str) -> str:
    """``pip install …`` for one runtime requirement (``onnxruntime-genai``), pinned as
    Enclave pins it."""
    key = re.sub(r"[-_.]+", "-", project).lower()
    for r in _requirements():
        if "extra" in r:
            continue
        name = re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0]
        if re.sub(r"[-_.]+", "-", name).lower() == key:
            return "pip install " + shlex.quote(r.split(";")[0].strip())
    return f"pip install {shlex.quote(project)}"
