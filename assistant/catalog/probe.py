"""Try a model in a child process before Enclave itself touches it.

A model folder is untrusted input. Two of its parts run native code on load or on
every turn: the weights (ONNX, ``.litertlm``) and the chat template. The template is
rendered by the engine's own renderer — for onnxruntime-genai that is the native
``Tokenizer.apply_chat_template`` (a C++ Jinja implementation), so a template that
recurses without end overflows the native stack and **segfaults the process** (the
red team's recursive macro did exactly that to `ask`, `chat` and the TUI); for
LiteRT-LM bundles it is Python's Jinja2 sandbox, where a template can still loop for
hours. Neither can be made safe from inside the process, so both are tried here, in a
child with a time limit, an address-space limit and the default 8 MB stack:

* at ``models add`` (``load=True``): load the weights, render sample conversations
  with the template, encode them and generate one token — everything a first turn does;
* before a load whose template has not been checked with this renderer yet
  (``load=False``): render only (no weights loaded: ~0.5 s). The verdict is kept in
  the manifest with the template's sha256, so every later load costs nothing.

The child prints one JSON line; a signal, a timeout or a non-JSON answer is reported
as what it is. Run as ``python -m assistant.catalog.probe ENGINE PATH [--load]``.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from assistant.core.errors import ModelCorrupt

if TYPE_CHECKING:
    from assistant.engines.base import Engine

ProbeEngine = Literal["onnx", "litert"]

#: Seconds a render-only check may take (import ~0.5 s, render a few ms).
TEMPLATE_TIMEOUT_S = 30.0
#: Seconds a full probe may take: loading Phi-3-mini (2.3 GB int4) took ~8 s on 2 busy cores.
LOAD_TIMEOUT_S = 180.0
#: Seconds rendering the sample conversation may take, whatever loading took: real
#: templates render it in under 10 ms; 10 s is a thousand times that on a busy machine.
RENDER_TIMEOUT_S = 10.0
#: Characters a template may produce for the short sample conversation: real templates
#: add a few hundred characters of glue; 1 MB means it is generating text of its own.
MAX_RENDERED = 1_000_000
QUESTION = "Enclave probe: what is the capital of France?"
SAMPLES: list[list[dict[str, str]]] = [
    [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hello."},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": QUESTION},
    ],
    [{"role": "user", "content": QUESTION}],
]


@dataclass(frozen=True)
class ProbeResult:
    """What the child found: the template it checked (its sha256, or ``none``) and the renderer."""

    template_sha256: str
    renderer: str
    system_role: bool  #: the template accepts a system message


def template_sha256(template: str | None) -> str:
    # An empty template is no template: the engine falls back to its plain transcript.
    return hashlib.sha256(template.encode("utf-8")).hexdigest() if template else "none"


def renderer(engine: ProbeEngine) -> str:
    """The renderer's name and version: a check made with another version is made again."""
    from importlib.metadata import PackageNotFoundError, version

    package = "onnxruntime-genai" if engine == "onnx" else "litert-lm-api"
    try:
        return f"{package} {version(package)}" if engine == "onnx" else f"jinja2 {version('jinja2')}"
    except PackageNotFoundError:
        return f"{package} (unknown version)"


def probe(engine: ProbeEngine, path: Path, *, load: bool, size: int = 0) -> ProbeResult:
    """Run the checks in a child process; raises :class:`ModelCorrupt` with the reason."""
    memory = max(8 << 30, 4 * size)

    def limit() -> None:  # in the child, before exec
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash leaves no core file

    args = [sys.executable, "-m", "assistant.catalog.probe", engine, str(path)] + (["--load"] if load else [])
    env = dict(os.environ, ORT_DISABLE_TELEMETRY="1")
    what = "the model" if load else "its chat template"
    ran = _run_staged(args, env, limit, LOAD_TIMEOUT_S if load else TEMPLATE_TIMEOUT_S)
    if ran is None:
        timeout = LOAD_TIMEOUT_S if load else TEMPLATE_TIMEOUT_S
        raise ModelCorrupt(
            f"{path} was refused: trying {what} took longer than {timeout:.0f} s "
            "(a file that is not what it says, or a loader that never finishes).",
            "Check the model folder, or fetch it again; nothing was registered.",
        )
    if ran == "template-timeout":
        raise ModelCorrupt(
            f"{path} was refused: its chat template was still rendering a two-line conversation after "
            f"{RENDER_TIMEOUT_S:.0f} s (a template that loops; real templates take milliseconds).",
            "Fix or remove the model's chat template (chat_template.jinja or tokenizer_config.json); "
            "nothing was registered.",
        )
    proc = ran
    answer = _last_json(proc.stdout)
    stage = answer.get("stage") if answer else None
    if proc.returncode < 0:
        sig = -proc.returncode
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        cause = (
            "the chat template crashed the native renderer (a template that recurses without end does this)"
            if stage == "template" or not load
            else "the native loader crashed on it"
        )
        raise ModelCorrupt(
            f"{path} was refused: {cause} (signal {sig}, {name}) — in a separate process, so Enclave is fine.",
            "Fix or remove the model's chat template, or fetch the model again; nothing was registered.",
        )
    if answer is None or proc.returncode != 0 or not answer.get("ok"):
        reason = (answer or {}).get("error") or _last_line(proc.stderr) or f"exit status {proc.returncode}"
        raise ModelCorrupt(
            f"{path} was refused: {reason}",
            "Check that it is a complete model folder (or .litertlm bundle) and fetch it again if not; "
            "nothing was registered.",
        )
    return ProbeResult(str(answer["template_sha256"]), str(answer["renderer"]), bool(answer.get("system_role")))


def _run_staged(
    args: list[str], env: dict[str, str], limit: Callable[[], None], timeout: float
) -> subprocess.CompletedProcess[str] | Literal["template-timeout"] | None:
    """Run the child; None when it overran ``timeout``, ``template-timeout`` when rendering
    overran :data:`RENDER_TIMEOUT_S` (the clock restarts when the child says it renders)."""
    import selectors

    proc = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, preexec_fn=limit
    )
    assert proc.stdout is not None and proc.stderr is not None
    out: list[bytes] = []
    err: list[bytes] = []
    deadline = time.monotonic() + timeout
    rendering = False
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ, out)
        selector.register(proc.stderr, selectors.EVENT_READ, err)
        open_streams = 2
        while open_streams:
            left = deadline - time.monotonic()
            if left <= 0:
                proc.kill()
                proc.wait()
                return "template-timeout" if rendering else None
            for key, _ in selector.select(min(left, 0.5)):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                    open_streams -= 1
                    continue
                key.data.append(chunk)
                if key.data is out and b'"stage": "template"' in chunk and not rendering:
                    rendering = True
                    deadline = min(deadline, time.monotonic() + RENDER_TIMEOUT_S)
                elif key.data is out and b'"stage": "generate"' in chunk:
                    rendering = False
                    deadline = time.monotonic() + timeout
    try:
        code = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None
    return subprocess.CompletedProcess(args, code, _text(out), _text(err))


def _text(parts: list[bytes]) -> str:
    return b"".join(parts).decode("utf-8", "replace")


def _last_json(text: str) -> dict[str, Any] | None:
    for line in reversed(text.strip().splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict):
            return data
    return None


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


# --------------------------------------------------------------------------- the child
def _say(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


class Refused(Exception):
    """The child's reason to refuse the model, in the user's words."""


def _check_rendered(text: object, question: str) -> str:
    if not isinstance(text, str):
        raise Refused(f"the chat template produced {type(text).__name__}, not text")
    if len(text) > MAX_RENDERED:
        raise Refused(f"the chat template produced {len(text)} characters for a two-line conversation")
    if question not in text:
        raise Refused("the chat template leaves out the user's message, so the model would never see it")
    return text


def _render_all(render: Any) -> bool:
    """Render every sample; True when a system message is accepted (some templates refuse it)."""
    system_ok = True
    for i, messages in enumerate(SAMPLES):
        try:
            _check_rendered(render(messages), QUESTION)
        except (Refused, RecursionError, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - whatever the renderer raises is the reason
            if i == 0:
                system_ok = False  # e.g. "System role not supported": try without it
                continue
            raise Refused(f"the chat template fails to render: {type(exc).__name__}: {exc}") from None
    return system_ok


def _child(engine: str, path: Path, load: bool) -> dict[str, Any]:
    from assistant.core.events import GenerationOptions

    _say({"stage": "load" if load else "template"})
    model: Engine | None = None
    render: Callable[[list[dict[str, str]]], str]
    if engine == "onnx":
        from assistant.engines.onnx_genai import OnnxGenaiEngine, read_chat_template

        template = read_chat_template(path)
        if load:
            model = OnnxGenaiEngine(path, "probe")
            render = model.tokenizer.render
        else:
            import onnxruntime_genai as og

            tokenizer = og.Tokenizer(str(path))

            def render_native(messages: list[dict[str, str]]) -> str:
                return str(
                    tokenizer.apply_chat_template(
                        json.dumps(messages), template_str=template, add_generation_prompt=True
                    )
                )

            render = render_native

    else:
        from assistant.engines.litert_lm import LitertEngine, LitertTokenizer, read_bundle_template

        template = read_bundle_template(path)
        if load:
            cache = tempfile.mkdtemp(prefix="enclave-probe-")
            model = LitertEngine(path, "probe", Path(cache), threads=1, max_tokens=256, verified=True)
            render = model.tokenizer.render
        else:

            class _NoEngine:
                bos_token_id = None

            render = LitertTokenizer(_NoEngine(), template).render
    _say({"stage": "template"})
    system_ok = _render_all(render) if template is not None else True
    if model is not None:
        _say({"stage": "generate"})
        tokens = model.tokenizer.encode(render(SAMPLES[1]))
        if not tokens:
            raise Refused("the tokenizer turns the prompt into no tokens at all")
        session = model.open_session(min(256, model.info.context_length))
        events = list(session.generate(tokens, GenerationOptions(max_tokens=1), messages=SAMPLES[1]))
        failures = [e for e in events if type(e).__name__ == "Error"]
        if failures:
            raise Refused(f"generating one token failed: {getattr(failures[0], 'error', failures[0])}")
        session.close()
        model.close()
    return {
        "ok": True,
        "template_sha256": template_sha256(template),
        "renderer": renderer("onnx" if engine == "onnx" else "litert"),
        "system_role": system_ok,
    }


def main(argv: list[str]) -> int:
    engine, path, load = argv[0], Path(argv[1]), "--load" in argv[2:]
    try:
        _say(_child(engine, path, load))
        return 0
    except RecursionError:
        _say({"ok": False, "error": "the chat template recurses without end"})
    except MemoryError:
        _say({"ok": False, "error": "it needs more memory than any model Enclave runs (a crafted file?)"})
    except Refused as exc:
        _say({"ok": False, "error": " ".join(str(exc).split())[:400]})
    except Exception as exc:  # noqa: BLE001 - the child reports anything as the reason
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        _say({"ok": False, "error": " ".join(str(message).split())[:400]})
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
