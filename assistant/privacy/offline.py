"""The one list of offline and telemetry switches, applied before any runtime loads.

Native ML libraries read these from the environment once, when they initialise, so
they must be in ``os.environ`` before the first ``import onnxruntime`` (the Python
module creates its environment while being imported) and before the first
``og.Model`` (onnxruntime-genai reads it then): measured in docs/privacy.md, a 40-s
chat made 28 DNS attempts without ``ORT_DISABLE_TELEMETRY`` and 0 with it, while
``og.disable_telemetry_events()`` alone left all 28.

:func:`apply` runs when the ``assistant`` package is first imported (its
``__init__``), so every process that runs Enclave code has them before it can import
a runtime: the ``enclave`` command, the sealed workers (which also apply them before
``site`` runs), and any script or test. Children get them through :func:`child_env`.
This module is stdlib-only: the sealed worker imports it before anything else.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Switch:
    """One environment switch, the libraries that read it, and why Enclave sets it."""

    name: str
    value: str
    libraries: str
    why: str


#: Every switch, with the measurement behind it (docs/privacy.md, scripts/audit_native.py).
SWITCHES: tuple[Switch, ...] = (
    Switch(
        "ORT_DISABLE_TELEMETRY",
        "1",
        "onnxruntime, onnxruntime-genai",
        "Microsoft 1DS telemetry, on by default in the PyPI wheels: 28 DNS attempts in a 40-s chat and a "
        "device id in ~/.cache without it, 0 with it (values 1/true/yes/on; read at import / first og.Model)",
    ),
    Switch(
        "GOOGLE_SANDBOX_NO_NETWORK",
        "1",
        "litert-lm",
        "skips the unconnected socket(AF_INET, SOCK_DGRAM) probe its networking library makes at the first Engine()",
    ),
    Switch("HF_HUB_OFFLINE", "1", "huggingface_hub (build tools)", "no model hub look-ups"),
    Switch("TRANSFORMERS_OFFLINE", "1", "transformers (build tools)", "no model hub look-ups"),
    Switch("HF_DATASETS_OFFLINE", "1", "datasets", "no dataset hub look-ups"),
    Switch("HF_HUB_DISABLE_TELEMETRY", "1", "huggingface_hub", "no usage pings"),
    Switch("DO_NOT_TRACK", "1", "several (the consoledonottrack.com convention)", "no usage pings"),
    Switch("ANONYMIZED_TELEMETRY", "False", "chromadb-style libraries", "no usage pings"),
)

#: The switches as a mapping (name -> value).
OFFLINE_ENV: dict[str, str] = {s.name: s.value for s in SWITCHES}

#: Variables that make onnxruntime's telemetry go quiet by themselves (each read with
#: getenv by both ORT libraries, measured with an LD_PRELOAD shim). Enclave must not
#: rely on them, and the OS-level tests remove them from the child's environment so
#: that they measure what a user gets.
CI_SUPPRESSION: tuple[str, ...] = (
    "CI",
    "TF_BUILD",
    "GITHUB_ACTIONS",
    "GITLAB_CI",
    "CIRCLECI",
    "TRAVIS",
    "JENKINS_URL",
    "CODEBUILD_BUILD_ID",
    "BUILDKITE",
    "TEAMCITY_VERSION",
    "APPVEYOR",
    "BITBUCKET_BUILD_NUMBER",
    "SYSTEM_TEAMFOUNDATIONCOLLECTIONURI",
    "ORT_RUNNING_UNIT_TESTS",
)

#: Runtime modules that must never be imported before :func:`apply` has run.
RUNTIMES: tuple[str, ...] = ("onnxruntime", "onnxruntime_genai", "litert_lm")

#: For each runtime, whether it was already imported when the switches were first
#: applied in this process (a ``True`` means the switch came too late for it).
LATE: dict[str, bool] = {}


def apply(environ: MutableMapping[str, str] | None = None) -> None:
    """Set every switch in ``environ`` (this process's environment by default).

    Values are forced, not defaulted: ``ORT_DISABLE_TELEMETRY=0`` left in a user's
    shell would otherwise turn the telemetry back on.
    """
    target = os.environ if environ is None else environ
    if environ is None and not LATE:
        LATE.update({name: name in sys.modules for name in RUNTIMES})
    for name, value in OFFLINE_ENV.items():
        target[name] = value


def child_env(base: Mapping[str, str] | None = None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process: ``base`` (this process's by default),
    every switch, then ``extra``."""
    env = dict(os.environ if base is None else base)
    env.update(OFFLINE_ENV)
    env.update(extra or {})
    return env


def missing(environ: Mapping[str, str] | None = None) -> list[str]:
    """Switches not set to their value in ``environ`` (empty when all hold)."""
    env = os.environ if environ is None else environ
    return [name for name, value in OFFLINE_ENV.items() if env.get(name) != value]


def opt_out() -> list[str]:
    """Call the runtimes' own opt-out functions for those loaded in this process.

    On Linux neither ``onnxruntime.disable_telemetry_events()`` nor
    ``onnxruntime_genai.disable_telemetry_events()`` stops the uploader (measured:
    28 and 40 DNS attempts with them alone); the environment switch does. They are
    cheap and cover events not decoded here, so they are called anyway. Returns the
    functions called.
    """
    called = []
    for name in ("onnxruntime", "onnxruntime_genai"):
        module = sys.modules.get(name)
        function = getattr(module, "disable_telemetry_events", None)
        if callable(function):
            function()
            called.append(f"{name}.disable_telemetry_events()")
    return called
