"""What protects this session from the network, layer by layer, in words and as data.

Used by ``enclave doctor --privacy``, the start-up notice, and the audit log's
``privacy_state`` entry (written when a model loads). Every state is read back where
it holds: the worker's layers from the kernel inside the worker
(:class:`~assistant.privacy.seal.Isolation`), the front end's from this process.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from assistant.privacy import offline
from assistant.privacy.seal import Isolation

State = Literal["active", "refused", "off"]


@dataclass(frozen=True)
class LayerStatus:
    """One protection and whether it holds now."""

    name: str
    state: State
    detail: str
    where: Literal["front end", "worker"] = "front end"


#: The switches grouped by the library that reads them, as doctor names them.
_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("onnxruntime, onnxruntime-genai telemetry", ("ORT_DISABLE_TELEMETRY",)),
    ("litert-lm network probe", ("GOOGLE_SANDBOX_NO_NETWORK",)),
    ("Hugging Face hub (build tools)", ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")),
    ("usage pings", ("HF_HUB_DISABLE_TELEMETRY", "DO_NOT_TRACK", "ANONYMIZED_TELEMETRY")),
)


def switch_layers(
    environ: dict[str, str] | None = None, where: Literal["front end", "worker"] = "front end"
) -> list[LayerStatus]:
    """One line per library: its switches and whether each is set."""
    env = dict(os.environ if environ is None else environ)
    out = []
    for label, names in _GROUPS:
        wrong = [n for n in names if env.get(n) != offline.OFFLINE_ENV[n]]
        detail = ", ".join(f"{n}={env.get(n, '(unset)')}" for n in names)
        out.append(LayerStatus(f"switch: {label}", "off" if wrong else "active", detail, where))
    return out


def front_end_layers() -> list[LayerStatus]:
    """The front end's own layers: switches, runtimes kept out, the Python guard."""
    from assistant.privacy.guard import GUARD

    out = switch_layers()
    late = [name for name, was in offline.LATE.items() if was]
    if late:
        out.append(LayerStatus("switches set before the runtimes loaded", "off", f"too late for {', '.join(late)}"))
    loaded = [name for name in offline.RUNTIMES if name in sys.modules]
    out.append(
        LayerStatus(
            "no native runtime in the front end",
            "off" if loaded else "active",
            f"loaded here: {', '.join(loaded)}"
            if loaded
            else f"{', '.join(offline.RUNTIMES)} run only in sealed workers",
        )
    )
    out.append(
        LayerStatus(
            "Python egress guard",
            "active" if GUARD.installed else "off",
            "socket connect/connect_ex/sendto/getaddrinfo allow loopback only"
            + (f" and {', '.join(sorted(GUARD.allowed_hosts))}" if GUARD.allowed_hosts else "")
            if GUARD.installed
            else "not installed in this process",
        )
    )
    return out


def worker_layers(isolation: Isolation) -> list[LayerStatus]:
    """A sealed worker's layers, as its kernel reported them, and its switches."""
    out = [
        LayerStatus("sealed worker process", "active", f"pid {isolation.pid}, service {isolation.service}", "worker")
    ]
    out += [LayerStatus(layer.name, layer.state, layer.detail, "worker") for layer in isolation.layers]
    missing = list(isolation.switches_missing)
    out.append(
        LayerStatus(
            "switches in the worker",
            "off" if missing else "active",
            f"missing: {', '.join(missing)}"
            if missing
            else f"all {len(offline.OFFLINE_ENV)} set before site and any import",
            "worker",
        )
    )
    return out


def privacy_state(isolation: Isolation | None) -> dict[str, Any]:
    """The audit log's ``privacy_state`` entry: the worker's layers and the front end's."""
    from assistant.privacy.guard import GUARD

    front = {
        "front_end_guard": GUARD.installed,
        "front_end_switches_missing": offline.missing(),
        "front_end_runtimes_loaded": [name for name in offline.RUNTIMES if name in sys.modules],
    }
    if isolation is None:
        return {"engine_process": "in-process", **front}
    return {"engine_process": "sealed worker", **isolation.summary(), **front}


@dataclass(frozen=True)
class SelfCheck:
    """One self-test result; ``needs`` names the layer it depends on (a check of a layer
    the system refused is a warning, not a failure, unless the seal is required)."""

    name: str
    ok: bool
    detail: str
    where: Literal["front end", "worker"]
    needs: str = ""


@dataclass(frozen=True)
class PrivacyReport:
    """Everything ``enclave doctor --privacy`` shows."""

    layers: list[LayerStatus]
    checks: list[SelfCheck]
    warning: str | None
    required: bool
    worker_ms: float

    def failed(self, item: LayerStatus | SelfCheck) -> bool:
        """Whether ``item`` is a failure (as opposed to fine, or a warning)."""
        if isinstance(item, LayerStatus):
            if item.state == "active":
                return False
            return item.where == "front end" or self.required or item.name.startswith("switches")
        if item.ok:
            return False
        return not item.needs or self.required or self._layer_active(item.needs)

    def _layer_active(self, name: str) -> bool:
        return any(layer.name == name and layer.state == "active" for layer in self.layers)

    @property
    def ok(self) -> bool:
        items: list[LayerStatus | SelfCheck] = [*self.layers, *self.checks]
        return not any(self.failed(x) for x in items)

    def as_dict(self) -> dict[str, Any]:
        def mark(item: LayerStatus | SelfCheck) -> str:
            good = item.state == "active" if isinstance(item, LayerStatus) else item.ok
            return "ok" if good else ("fail" if self.failed(item) else "warn")

        return {
            "ok": self.ok,
            "seal_required": self.required,
            "warning": self.warning,
            "worker_start_ms": round(self.worker_ms, 1),
            "layers": [{**asdict(x), "status": mark(x)} for x in self.layers],
            "self_test": [{**asdict(x), "status": mark(x)} for x in self.checks],
        }


#: The layer each worker self-test depends on.
_NEEDS = {
    "only lo in the worker": "network namespace",
    "no IPv4 route": "network namespace",
    "no IPv6 route off lo": "network namespace",
    "socket(AF_INET) refused": "seccomp",
    "socket(AF_INET6) refused": "seccomp",
}


def check(required: bool, home: Path | None = None) -> PrivacyReport:
    """Start a sealed probe worker (no native library in it) and run the self-test inside
    it against a loopback listener held here; then the front end's own checks. Sends no
    packet anywhere: the worker's attempts fail inside it, and the guard's before any
    socket call."""
    import socket

    from assistant.privacy import guard
    from assistant.privacy.wire import Codec
    from assistant.privacy.worker import COMMON, SealedProcess, SelfTest, SelfTestResult

    layers = front_end_layers()
    checks: list[SelfCheck] = []
    process = SealedProcess("probe", Codec(COMMON), home=home)
    try:
        isolation = process.isolation
        layers += worker_layers(isolation)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            reply, _ = process.call(SelfTest(listener.getsockname()[1]))
        if isinstance(reply, SelfTestResult):
            checks += [SelfCheck(c.name, c.ok, c.detail, "worker", _NEEDS.get(c.name, "")) for c in reply.checks]
        else:
            checks.append(SelfCheck("worker self-test", False, f"the probe answered {type(reply).__name__}", "worker"))
    finally:
        process.close()
    for name, passed, detail in guard.self_test():
        checks.append(SelfCheck(name, passed, detail, "front end"))
    return PrivacyReport(layers, checks, isolation.warning, required, process.ready_ms)
