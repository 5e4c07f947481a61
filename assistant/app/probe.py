"""Probe-load a model in a child process, and measure its golden figures there.

A model that has not run on this machine yet — a staged bundle, a build — is loaded
first in a child with a memory and time limit: a crafted ``.litertlm`` aborts the whole
process inside LiteRT-LM's loader (SIGABRT, measured), and in a child that is a message,
not a dead Enclave. The same child runs the drift golden set (:mod:`assistant.app.drift`)
and hands the figures back as JSON in a file (stdout stays free for native logs).

Run as ``python -m assistant.app.probe REQUEST.json RESULT.json``.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assistant.core.errors import EnclaveError, ModelCorrupt

#: Address-space cap of the child: SmolLM2 int4 peaks at ~0.5 GiB, Gemma 270M LiteRT at ~0.9 GiB.
PROBE_MEMORY_BYTES = 8 << 30
#: A tiny model probes in ~1.5 s, SmolLM2 with the golden set in ~6 s on 2 busy cores.
PROBE_TIMEOUT_S = 300.0
#: Telemetry switches set before the runtimes load (onnxruntime's 1DS telemetry is on by default).
OFFLINE_ENV = {"ORT_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1"}


@dataclass(frozen=True)
class ProbeRequest:
    """What to load: a model folder (or a folder holding ``file``) for ``engine``."""

    name: str
    engine: str
    path: str
    file: str | None = None
    context_length: int = 2048
    device: str = "cpu"
    threads: int = 0
    golden: bool = True

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ProbeResult:
    """The child's answer: it loaded (in ``load_s``), and the golden figures when asked."""

    load_s: float
    figures: dict[str, Any] | None
    device: str


def probe(request: ProbeRequest, timeout: float = PROBE_TIMEOUT_S) -> ProbeResult:
    """Load ``request`` in a child process; raise :class:`ModelCorrupt` with the reason when it cannot."""

    def limit() -> None:  # in the child, before exec
        # CUDA reserves huge virtual ranges, so the address-space cap is for the CPU only.
        if request.device != "gpu":
            resource.setrlimit(resource.RLIMIT_AS, (PROBE_MEMORY_BYTES, PROBE_MEMORY_BYTES))

    with tempfile.TemporaryDirectory(prefix="enclave-probe-") as tmp:
        req, out = Path(tmp) / "request.json", Path(tmp) / "result.json"
        req.write_text(json.dumps(request.as_dict()), encoding="utf-8")
        env = {**os.environ, **OFFLINE_ENV}
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "assistant.app.probe", str(req), str(out)],
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                preexec_fn=limit,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        except subprocess.TimeoutExpired as exc:
            raise ModelCorrupt(
                f"{request.name} ({request.engine}) did not load within {timeout:.0f} s in a test process.",
                "The model may be damaged or too large for this machine.",
            ) from exc
        answer: dict[str, Any] = {}
        if out.is_file():
            try:
                answer = json.loads(out.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                answer = {}
    if proc.returncode == 0 and answer.get("ok"):
        return ProbeResult(float(answer["load_s"]), answer.get("figures"), str(answer.get("device", request.device)))
    if answer.get("message"):
        raise ModelCorrupt(
            f"{request.name} ({request.engine}) does not load: {answer['message']}", answer.get("hint", "")
        )
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    reason = lines[-1][:300] if lines else f"exit {proc.returncode}"
    if proc.returncode < 0:
        reason = f"the engine crashed the test process (signal {-proc.returncode})"
    raise ModelCorrupt(
        f"{request.name} ({request.engine}) does not load: {reason}.",
        "Nothing was changed; the version in use stays as it is.",
    )


def _child(request_path: Path, result_path: Path) -> int:
    """The child's side: load, optionally measure, write the answer."""
    from assistant.privacy.guard import install_network_guard

    install_network_guard()
    request = ProbeRequest(**json.loads(request_path.read_text(encoding="utf-8")))
    try:
        from dataclasses import replace

        from assistant.app import drift
        from assistant.catalog.manifests import InstalledModel
        from assistant.core.settings import Settings
        from assistant.engines import load_engine

        settings = replace(Settings.load(), threads=request.threads, context_window=request.context_length)
        manifest: dict[str, Any] = {"context_length": request.context_length}
        if request.file:
            manifest["file"] = request.file
        model = InstalledModel(request.name, request.engine, Path(request.path), Path(), manifest)
        started = time.perf_counter()
        engine = load_engine(model, settings, request.device)
        load_s = time.perf_counter() - started
        try:
            figures = (
                drift.measure(engine, drift.engine_build(request.engine, request.device)) if request.golden else None
            )
        finally:
            engine.close()
        answer: dict[str, Any] = {
            "ok": True,
            "load_s": load_s,
            "device": request.device,
            "figures": figures.as_dict() if figures else None,
        }
        code = 0
    except EnclaveError as exc:
        answer, code = {"ok": False, "message": exc.message, "hint": exc.hint}, 3
    result_path.write_text(json.dumps(answer), encoding="utf-8")
    return code


if __name__ == "__main__":  # pragma: no cover - run as a child process
    sys.exit(_child(Path(sys.argv[1]), Path(sys.argv[2])))
