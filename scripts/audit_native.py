#!/usr/bin/env python
"""Audit the native libraries Enclave loads at run time for ways to reach the network.

Standalone on purpose (imports nothing from ``assistant``), so that it can be
re-run after any dependency upgrade, against any environment's interpreter:

    .venv/bin/python scripts/audit_native.py                 # static scan, table on stdout
    .venv/bin/python scripts/audit_native.py --runtime       # + strace'd runs, >= 35 s each
    .venv/bin/python scripts/audit_native.py --runtime --json > audit.json
    python3 scripts/audit_native.py --python /other/venv/bin/python --only onnxruntime_genai

What it does, per library (a "target": the import Enclave makes, e.g. ``litert_lm``):

1. **Discovery.** A child process imports the library and exercises it once (loads
   the tiny test model from ``tests/assets``), then reports every shared object
   mapped into it (``/proc/self/maps``) and every ``.so`` its distribution ships.
   The child runs with the privacy switches ON, a clean environment, a temporary
   ``HOME``, and (where the kernel allows) in its own network namespace, so the
   audit itself never leaves a device id behind or sends anything.
2. **Static scan** of each of those ``.so`` files, like ``strings``: (a) URLs and
   host names, split into known telemetry collectors / reference links (docs,
   specs) / internal short links / other; (b) environment-variable names that look
   like telemetry or offline switches, and the CI variable names that libraries read
   to go quiet on CI; (c) the network functions the ELF imports or *defines itself*
   (a library that defines ``socket`` makes the system call without libc).
3. **Runtime** (``--runtime``): each target runs under
   ``strace -f`` (network calls, opens, mkdirs) for ``--hold`` seconds (default 35 s:
   onnxruntime's 1DS uploader first resolves its host ~9.5 s after start), twice:
   ``bare`` (every CI variable and every switch REMOVED, which is how a user runs
   it) and ``fixed`` (the switches Enclave sets, and the libraries' opt-out calls).
   It counts sockets per address family, connect attempts to non-loopback addresses,
   DNS attempts (port 53, nscd, systemd-resolved), and files written outside the
   child's own data folder (``HOME`` is an empty temporary folder; what appears in it
   is listed). A positive control (``control``: a ``connect()`` to 192.0.2.1:53
   through ``ctypes``) must be seen, or the audit reports itself broken (exit 3).
   Runs are sealed in a user + network namespace (``unshare -rn``; only ``lo``,
   which is down), so what a library tries cannot leave the machine; without
   ``unshare`` the audit refuses to run them unless ``--no-seal`` is given.

Exit status: 0 when done; 1 when ``--check`` is given and a ``fixed`` run still
opened an inet socket towards a non-loopback address, resolved a name, or wrote
outside its folder; 2 on a usage/environment error; 3 when the positive control
was not seen. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ASSETS = REPO / "tests" / "assets"

#: CI variables that make onnxruntime (1.32) and onnxruntime-genai (0.18) silence their
#: telemetry (the list is in their binaries next to the event field names), plus the
#: usual names other tools read. The runtime audit removes all of them (and any
#: variable with one of CI_PREFIXES) from the child's environment.
CI_VARIABLES = (
    "CI",
    "CONTINUOUS_INTEGRATION",
    "TF_BUILD",
    "GITHUB_ACTIONS",
    "GITLAB_CI",
    "CIRCLECI",
    "TRAVIS",
    "JENKINS_URL",
    "JENKINS_HOME",
    "CODEBUILD_BUILD_ID",
    "BUILDKITE",
    "TEAMCITY_VERSION",
    "APPVEYOR",
    "BITBUCKET_BUILD_NUMBER",
    "SYSTEM_TEAMFOUNDATIONCOLLECTIONURI",
    "ORT_RUNNING_UNIT_TESTS",
    "BUILD_ID",
    "BUILD_NUMBER",
    "RUN_ID",
    "DRONE",
    "SEMAPHORE",
)
CI_PREFIXES = ("GITHUB_", "RUNNER_", "CI_", "BUILDKITE_", "CIRCLE_", "TRAVIS_", "GITLAB_", "JENKINS_", "BITBUCKET_")

#: The switches Enclave sets (the ``fixed`` configuration). ORT_DISABLE_TELEMETRY must be
#: in the environment before ``import onnxruntime`` (its module init reads it) and before
#: onnxruntime-genai creates its first model; GOOGLE_SANDBOX_NO_NETWORK makes
#: liblitert-lm.so skip its load-time ``socket(AF_INET)`` probe (docs/privacy.md).
def _enclave_switches() -> dict[str, str]:
    """Enclave's one list (assistant/privacy/offline.py, stdlib-only), read from the file so
    that this script still imports nothing from the package."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_enclave_offline", REPO / "assistant" / "privacy" / "offline.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the module by name
    spec.loader.exec_module(module)
    return dict(module.OFFLINE_ENV)


FIXED_ENV = _enclave_switches()
#: Variables kept from the parent's environment; everything else is dropped.
KEEP_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TERM", "TZ", "LD_LIBRARY_PATH")

#: Collectors that exist to receive telemetry / crash reports / analytics.
TELEMETRY_HOSTS = (
    "events.data.microsoft.com",
    "vortex.data.microsoft.com",
    "settings-win.data.microsoft.com",
    "dc.services.visualstudio.com",
    "applicationinsights.azure.com",
    "google-analytics.com",
    "analytics.google.com",
    "firebaselogging-pa.googleapis.com",
    "firebaselogging.googleapis.com",
    "app-measurement.com",
    "crashlytics.com",
    "play.googleapis.com/log",
    "clientservices.googleapis.com",
    "sentry.io",
    "api.segment.io",
    "mixpanel.com",
    "amplitude.com",
    "datadoghq.com",
    "bugsnag.com",
    "posthog.com",
    "scarf.sh",
    "telemetry.",
)
#: Hosts of documentation, papers and specifications that binaries quote in error texts.
REFERENCE_HOSTS = (
    "arxiv.org",
    "github.com",
    "github.io",
    "wikipedia.org",
    "json-schema.org",
    "numpy.org",
    "scipy.org",
    "pytorch.org",
    "tensorflow.org",
    "onnx.ai",
    "ieeexplore.ieee.org",
    "papers.nips.cc",
    "nvidia.com",
    "microsoft.com/en-us/research",
    "opencompute.org",
    "huggingface.co/blog",
    "tinyurl.com",
    "python.org",
    "gnu.org",
    "unicode.org",
    "w3.org",
    "ietf.org",
    "openssl.org",
    "sqlite.org",
    "zlib.net",
    "winimage.com",
    "apache.org",
    "mozilla.org",
    "llvm.org",
    "intel.com",
    "openblas",
    "netlib.org",
    "readthedocs.io",
    "khronos.org",
    "gpuweb",
)
#: Words that make an environment-variable name worth a look (a name in a binary is not
#: proof that it is read: the table says "found", docs/privacy.md says what was verified).
#: ANALYTICS only after DISABLE/NO: liblitert-lm.so holds dozens of SEARCHANALYTICS_* enum names.
SWITCH_WORDS = (
    b"TELEMETRY",
    b"OPT_OUT",
    b"OPTOUT",
    b"DO_NOT_TRACK",
    b"NO_TRACK",
    b"DISABLE_ANALYTICS",
    b"NO_ANALYTICS",
    b"USAGE_STATS",
    b"CRASH_REPORT",
    b"OFFLINE",
    b"NO_NETWORK",
    b"PHONE_HOME",
)
_TOKEN = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_WORD = frozenset(b"abcdefghijklmnopqrstuvwxyz") | _TOKEN
URL_PATTERN = re.compile(rb"https?://[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=%-]{2,}")
HOST_PATTERN = re.compile(r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$")
#: ELF dynamic symbols that mean "can talk to a network" (imported from libc, or defined
#: inside the library itself), and getenv (reads switches).
NET_SYMBOLS = (
    "socket",
    "connect",
    "sendto",
    "sendmsg",
    "sendmmsg",
    "getaddrinfo",
    "gethostbyname",
    "gethostbyname_r",
    "getifaddrs",
    "res_query",
    "res_nquery",
    "res_search",
    "curl_easy_init",
    "curl_easy_perform",
    "SSL_connect",
)
ENV_SYMBOLS = ("getenv", "secure_getenv")


#: An LD_PRELOAD shim that logs every getenv/secure_getenv name with the shared object
#: that asked (dladdr of the return address): the switches a library *really* reads,
#: not just names found in its strings. Built with the system C compiler when present.
GETENV_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
extern char **environ;
static int log_fd = -1;
static char *(*real_getenv)(const char *);
static char *(*real_secure_getenv)(const char *);
__attribute__((constructor)) static void init(void) {
    real_getenv = dlsym(RTLD_NEXT, "getenv");
    real_secure_getenv = dlsym(RTLD_NEXT, "secure_getenv");
    for (char **e = environ; e && *e; e++)
        if (strncmp(*e, "AUDIT_GETENV_LOG=", 17) == 0)
            log_fd = open(*e + 17, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
}
static void note(const char *name, void *caller) {
    Dl_info info;
    char line[1024];
    if (log_fd < 0 || !name) return;
    const char *who = (dladdr(caller, &info) && info.dli_fname) ? info.dli_fname : "?";
    size_t a = strlen(who), b = strnlen(name, 200);
    if (a + b + 2 > sizeof line) a = sizeof line - b - 2;
    memcpy(line, who, a); line[a] = '\t'; memcpy(line + a + 1, name, b); line[a + b + 1] = '\n';
    (void)!write(log_fd, line, a + b + 2);
}
char *getenv(const char *name) {
    note(name, __builtin_return_address(0));
    return real_getenv ? real_getenv(name) : NULL;
}
char *secure_getenv(const char *name) {
    note(name, __builtin_return_address(0));
    return real_secure_getenv ? real_secure_getenv(name) : NULL;
}
"""
GETENV_LOG = ".getenv.log"


# --------------------------------------------------------------------------- targets
@dataclass(frozen=True)
class Target:
    """One library as Enclave imports it."""

    name: str
    dists: tuple[str, ...]
    role: str  # "runtime" (loaded by Enclave) or "build" (model conversion only)
    note: str = ""


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("onnxruntime", ("onnxruntime",), "runtime", "the embedder (documents)"),
        Target("onnxruntime_genai", ("onnxruntime-genai",), "runtime", "the ONNX chat engine"),
        Target("litert_lm", ("litert-lm-api",), "runtime", "the LiteRT-LM chat engine"),
        Target("ai_edge_litert", ("ai-edge-litert",), "build", "pulled in by litert-torch (conversion)"),
        Target("tokenizers", ("tokenizers",), "runtime", "the embedder's tokenizer"),
        Target("sentencepiece", ("sentencepiece",), "runtime", "a declared dependency"),
        Target("sqlcipher3", ("sqlcipher3",), "runtime", "encryption at rest"),
        Target("numpy", ("numpy",), "runtime", ""),
        Target("pypdf", ("pypdf",), "runtime", "document parsing"),
        Target("keyring", ("keyring", "SecretStorage", "jeepney"), "runtime", "the cloud API key, database key"),
        Target("cryptography", ("cryptography", "cffi"), "runtime", "via SecretStorage"),
        Target("psutil", ("psutil",), "runtime", ""),
        Target("ui", ("textual", "rich", "markupsafe", "jinja2", "click", "sqlite-utils"), "runtime", "front end"),
    )
}
CONTROL = "control"


# --------------------------------------------------------------------------- child side
def _tflite_from_bundle(bundle: Path) -> bytes:
    """The first TFLite flatbuffer inside a ``.litertlm`` bundle ('TFL3' at offset 4)."""
    data = bundle.read_bytes()
    at = data.find(b"TFL3")
    if at < 4:
        raise RuntimeError(f"no TFLite model inside {bundle}")
    return data[at - 4 :]


def _minimal_pdf() -> bytes:
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        None,
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    stream = b"BT /F1 12 Tf 20 100 Td (Pump pressure 4 bar) Tj ET"
    objects[3] = b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream)
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def _exercise(name: str, assets: Path, work: Path, opt_out_apis: bool) -> Callable[[], object]:
    """Import and use one library the way Enclave does; return a callable that uses it again."""
    use = _EXERCISES.get(name)
    if use is None:
        raise SystemExit(f"unknown target {name}")
    return use(assets, work, opt_out_apis)


def _use_onnxruntime(assets: Path, _work: Path, opt_out_apis: bool) -> Callable[[], object]:
    import numpy as np
    import onnxruntime as ort

    if opt_out_apis:
        ort.disable_telemetry_events()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        str(assets / "tiny-embedder" / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )
    ids = np.array([[1, 5, 7, 9, 2]], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    return lambda: session.run(None, feeds)


def _use_onnxruntime_genai(assets: Path, _work: Path, opt_out_apis: bool) -> Callable[[], object]:
    import onnxruntime_genai as og

    if opt_out_apis:
        og.disable_telemetry_events()
    model = og.Model(str(assets / "tiny-llama"))
    tokenizer = og.Tokenizer(model)
    prompt = tokenizer.encode("How do I reset the pump pressure?")

    def generate() -> None:
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=48)
        generator = og.Generator(model, params)
        generator.append_tokens(prompt)
        while not generator.is_done():
            generator.generate_next_token()

    generate()
    return generate


def _use_litert_lm(assets: Path, work: Path, _opt_out_apis: bool) -> Callable[[], object]:
    import litert_lm

    litert_lm.set_min_log_severity(litert_lm.LogSeverity.ERROR)
    cache = work / "litert-cache"
    cache.mkdir(exist_ok=True)
    engine = litert_lm.Engine(
        str(assets / "tiny-gemma.litertlm"),
        backend=litert_lm.Backend.CPU(thread_count=1),
        max_num_tokens=128,
        cache_dir=str(cache),
    )

    def chat() -> None:
        conversation = engine.create_conversation(max_output_tokens=16)
        conversation.send_message("How do I reset the pump pressure?")

    chat()
    return chat


def _use_ai_edge_litert(assets: Path, _work: Path, _opt_out_apis: bool) -> Callable[[], object]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=_tflite_from_bundle(assets / "tiny-gemma.litertlm"))
    interpreter.allocate_tensors()
    return interpreter.allocate_tensors


def _use_tokenizers(assets: Path, _work: Path, _opt_out_apis: bool) -> Callable[[], object]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(assets / "tiny-llama" / "tokenizer.json"))
    return lambda: tokenizer.encode_batch(["How do I reset the pump pressure?"] * 8)


def _use_sentencepiece(_assets: Path, work: Path, _opt_out_apis: bool) -> Callable[[], object]:
    import sentencepiece as spm

    corpus = work / "corpus.txt"
    corpus.write_text("\n".join(f"the pump pressure is {i} bar and the valve is open" for i in range(200)))
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(work / "sp"), vocab_size=40, minloglevel=2, num_threads=1
    )
    processor = spm.SentencePieceProcessor(model_file=str(work / "sp.model"))
    return lambda: processor.encode("reset the pump pressure")


def _use_sqlcipher3(_assets: Path, work: Path, _opt_out_apis: bool) -> Callable[[], object]:
    from sqlcipher3 import dbapi2

    db = dbapi2.connect(str(work / "store.db"))
    db.execute("PRAGMA key = 'audit-key'")
    db.execute("CREATE TABLE IF NOT EXISTS t (x TEXT)")

    def write() -> None:
        with db:
            db.execute("INSERT INTO t VALUES ('pump')")
        db.execute("SELECT count(*) FROM t").fetchone()

    write()
    return write


def _use_numpy(_assets: Path, _work: Path, _opt_out_apis: bool) -> Callable[[], object]:
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((64, 64)).astype(np.float32)
    return lambda: (np.linalg.svd(a @ a.T), np.fft.rfft(a))


def _use_pypdf(_assets: Path, _work: Path, _opt_out_apis: bool) -> Callable[[], object]:
    import io

    import pypdf

    data = _minimal_pdf()
    return lambda: [page.extract_text() for page in pypdf.PdfReader(io.BytesIO(data)).pages]


def _use_keyring(_assets: Path, _work: Path, _opt_out_apis: bool) -> Callable[[], object]:
    import keyring

    def look_up() -> None:
        try:
            keyring.get_password("enclave-audit", "probe")
        except Exception:  # noqa: BLE001 - no backend on a headless machine is fine
            pass

    look_up()
    return look_up


def _use_cryptography(_assets: Path, _work: Path, _opt_out_apis: bool) -> Callable[[], object]:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key = AESGCM.generate_key(bit_length=256)
    return lambda: AESGCM(key).encrypt(b"\0" * 12, b"pump", None)


def _use_psutil(_assets: Path, _work: Path, _opt_out_apis: bool) -> Callable[[], object]:
    import psutil

    process = psutil.Process()
    return lambda: (process.memory_info(), psutil.virtual_memory(), psutil.cpu_percent(interval=None))


def _use_ui(_assets: Path, _work: Path, _opt_out_apis: bool) -> Callable[[], object]:
    import io

    import click  # noqa: F401
    import jinja2
    import markupsafe
    import rich.console
    import sqlite_utils
    import textual.app  # noqa: F401

    console = rich.console.Console(file=io.StringIO(), force_terminal=True)
    template = jinja2.Template("{{ x }}")
    db = sqlite_utils.Database(memory=True)
    return lambda: (
        console.print("[b]pump[/b]"),
        template.render(x=markupsafe.escape("<b>")),
        db["t"].insert({"x": 1}),
    )


def _use_control(_assets: Path, _work: Path, _opt_out_apis: bool) -> Callable[[], object]:
    import ctypes
    import socket as pysocket

    libc = ctypes.CDLL(None, use_errno=True)

    def connect() -> None:
        fd = libc.socket(pysocket.AF_INET, pysocket.SOCK_DGRAM, 0)
        if fd >= 0:
            # struct sockaddr_in: family in host order, port and address in network order;
            # TEST-NET-1 (RFC 5737), port 9 (discard): a remote connect, not a DNS query
            address = struct.pack("=H", pysocket.AF_INET) + struct.pack("!H4s8x", 9, pysocket.inet_aton("192.0.2.1"))
            libc.connect(fd, ctypes.c_char_p(address), len(address))
            libc.close(fd)

    connect()
    return connect


# What each target's child does with its library: (assets, work folder, opt out of the
# library's telemetry APIs) -> a callable that uses it again.
_EXERCISES: dict[str, Callable[[Path, Path, bool], Callable[[], object]]] = {
    "onnxruntime": _use_onnxruntime,
    "onnxruntime_genai": _use_onnxruntime_genai,
    "litert_lm": _use_litert_lm,
    "ai_edge_litert": _use_ai_edge_litert,
    "tokenizers": _use_tokenizers,
    "sentencepiece": _use_sentencepiece,
    "sqlcipher3": _use_sqlcipher3,
    "numpy": _use_numpy,
    "pypdf": _use_pypdf,
    "keyring": _use_keyring,
    "cryptography": _use_cryptography,
    "psutil": _use_psutil,
    "ui": _use_ui,
    CONTROL: _use_control,
}


def _mapped_files() -> list[str]:
    paths = set()
    with open("/proc/self/maps") as maps:
        for line in maps:
            parts = line.split(None, 5)
            if len(parts) == 6 and parts[5].startswith("/") and ".so" in parts[5]:
                paths.add(parts[5].strip())
    return sorted(paths)


def _dist_info(dists: tuple[str, ...]) -> dict[str, Any]:
    import importlib.metadata as metadata

    out: dict[str, Any] = {}
    for dist in dists:
        try:
            distribution = metadata.distribution(dist)
        except metadata.PackageNotFoundError:
            out[dist] = {"version": None, "native": []}
            continue
        native = [
            str(Path(str(distribution.locate_file(f))).resolve())
            for f in distribution.files or []
            if f.name.endswith(".so") or ".so." in f.name
        ]
        out[dist] = {"version": distribution.version, "native": sorted(native)}
    return out


def child_main(args: argparse.Namespace) -> int:
    """Run inside the audited process: exercise, hold, report JSON on stdout."""
    started = time.monotonic()
    work = Path(args.work)
    report: dict[str, Any] = {"target": args.child, "ok": True, "error": None, "iterations": 0}
    try:
        again = _exercise(args.child, Path(args.assets), work, args.opt_out_apis)
        report["iterations"] = 1
        while time.monotonic() - started < args.hold:
            time.sleep(0.5)
            again()
            report["iterations"] += 1
    except Exception as exc:  # noqa: BLE001 - reported, not raised: the parent tabulates it
        report.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:500])
    report["elapsed_s"] = round(time.monotonic() - started, 2)
    report["mapped"] = _mapped_files()
    if args.child in TARGETS:
        report["dists"] = _dist_info(TARGETS[args.child].dists)
    report["sys_prefix"] = sys.prefix
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    os._exit(0)  # skip native destructors: their crashes are not the audit's subject


# --------------------------------------------------------------------------- ELF
@dataclass
class ElfInfo:
    machine: str = "?"
    needed: list[str] = field(default_factory=list)
    imports: list[str] = field(default_factory=list)
    defines: list[str] = field(default_factory=list)
    reads_env: bool = False


def read_elf(path: Path) -> ElfInfo | None:
    """Dynamic symbols and DT_NEEDED of a 64-bit little-endian ELF (None if it is not one)."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
            return None
        machine = {62: "x86_64", 183: "aarch64"}.get(struct.unpack_from("<H", head, 18)[0], "other")
        shoff = struct.unpack_from("<Q", head, 40)[0]
        shentsize, shnum = struct.unpack_from("<HH", head, 58)
        f.seek(shoff)
        table = f.read(shentsize * shnum)
        sections = [struct.unpack_from("<IIQQQQIIQQ", table, i * shentsize) for i in range(shnum)]

        def read(index: int) -> bytes:
            _, _, _, _, offset, size, *_ = sections[index]
            f.seek(offset)
            return f.read(size)

        info = ElfInfo(machine=machine)
        wanted = set(NET_SYMBOLS) | set(ENV_SYMBOLS)
        for sh in sections:
            kind, link, offset, size, entsize = sh[1], sh[6], sh[4], sh[5], sh[9]
            if kind == 11 and entsize:  # SHT_DYNSYM
                strings = read(link)
                f.seek(offset)
                symbols = f.read(size)
                for i in range(size // entsize):
                    name_at, st_info, _, shndx = struct.unpack_from("<IBBH", symbols, i * entsize)
                    end = strings.find(b"\0", name_at)
                    name = strings[name_at:end].decode(errors="replace").split("@")[0]
                    if name in wanted and (st_info & 0xF) == 2:  # STT_FUNC
                        if name in ENV_SYMBOLS:
                            info.reads_env = True
                        elif shndx == 0:
                            info.imports.append(name)
                        else:
                            info.defines.append(name)
            elif kind == 6 and entsize:  # SHT_DYNAMIC
                strings = read(link)
                f.seek(offset)
                dynamic = f.read(size)
                for i in range(size // entsize):
                    tag, value = struct.unpack_from("<qQ", dynamic, i * entsize)
                    if tag == 1:  # DT_NEEDED
                        info.needed.append(strings[value : strings.find(b"\0", value)].decode(errors="replace"))
        info.imports = sorted(set(info.imports))
        info.defines = sorted(set(info.defines))
        return info


# --------------------------------------------------------------------------- static scan
@dataclass
class FileScan:
    path: str
    size: int
    telemetry_urls: list[str] = field(default_factory=list)
    telemetry_hosts: list[str] = field(default_factory=list)
    other_hosts: list[str] = field(default_factory=list)
    reference_hosts: int = 0
    internal_links: int = 0
    switches: list[str] = field(default_factory=list)
    disable_switches: list[str] = field(default_factory=list)
    ci_variables: list[str] = field(default_factory=list)
    elf: dict[str, Any] | None = None


def _classify_host(url: str) -> tuple[str, str]:
    rest = url.split("://", 1)[1]
    host = re.split(r"[/?#:]", rest, maxsplit=1)[0].lower()
    if any(t in url.lower() for t in TELEMETRY_HOSTS):
        return "telemetry", host
    if "." not in host or host.endswith(".corp.google.com") or host.endswith(".googleplex.com"):
        return "internal", host
    if not HOST_PATTERN.match(host):
        return "template", host
    if any(r in url.lower() for r in REFERENCE_HOSTS):
        return "reference", host
    return "other", host


def _names_around(data: bytes, literal: bytes) -> set[str]:
    """The environment-variable-like names (``[A-Z][A-Z0-9_]+``, not part of a longer
    identifier) that contain ``literal``; bytes.find, not a regex: 130 MB in well under 1 s."""
    names = set()
    at = data.find(literal)
    while at >= 0:
        start, end = at, at + len(literal)
        while start > 0 and data[start - 1] in _TOKEN:
            start -= 1
        while end < len(data) and data[end] in _TOKEN:
            end += 1
        before = data[start - 1] if start else 0
        after = data[end] if end < len(data) else 0
        token = data[start:end]
        if before not in _WORD and after not in _WORD and token[:1].isalpha() and (len(token) > 2 or token == b"CI"):
            names.add(token.decode())
        at = data.find(literal, end)
    return names


def scan_file(path: Path) -> FileScan:
    data = path.read_bytes()
    scan = FileScan(path=str(path), size=len(data))
    telemetry_urls, telemetry_hosts, other, reference, internal = set(), set(), set(), set(), set()
    for match in URL_PATTERN.finditer(data):
        url = match.group().decode("ascii", "replace").rstrip(".,;)'")
        kind, host = _classify_host(url)
        if kind == "telemetry":
            telemetry_urls.add(url[:120])
            telemetry_hosts.add(host)
        elif kind == "other":
            other.add(host)
        elif kind == "reference":
            reference.add(url)
        elif kind == "internal":
            internal.add(url)
    lowered = data.lower()
    for host in TELEMETRY_HOSTS:  # a host written without a scheme (built at run time)
        if host.endswith(".") or host.encode() not in lowered:
            continue
        if not any(host in t for t in telemetry_hosts):
            telemetry_hosts.add(host + " (no scheme)")
    scan.telemetry_urls = sorted(telemetry_urls)
    scan.telemetry_hosts = sorted(telemetry_hosts)
    scan.other_hosts = sorted(other)
    scan.reference_hosts = len(reference)
    scan.internal_links = len(internal)
    scan.switches = sorted({t for word in SWITCH_WORDS for t in _names_around(data, word)})
    disable = {t for word in (b"DISABLE_", b"_DISABLE") for t in _names_around(data, word)}
    scan.disable_switches = sorted(disable - set(scan.switches))
    # "CI" alone only as a whole NUL-terminated string: as a token it is everywhere
    found = [name for name in CI_VARIABLES[1:] if name in _names_around(data, name.encode())]
    found = (["CI"] if b"\0CI\0" in data else []) + found
    scan.ci_variables = found
    elf = read_elf(path)
    scan.elf = asdict(elf) if elf else None
    return scan


# --------------------------------------------------------------------------- strace parsing
@dataclass
class Traffic:
    sockets: dict[str, int] = field(default_factory=dict)
    sockets_refused: int = 0
    connects_loopback: int = 0
    connects_unix: list[str] = field(default_factory=list)
    connects_remote: list[str] = field(default_factory=list)
    connects_remote_count: int = 0
    dns: int = 0
    sends_remote: int = 0
    files_written: list[str] = field(default_factory=list)
    tmp_files: list[str] = field(default_factory=list)
    home_files: list[str] = field(default_factory=list)
    first_remote_s: float | None = None


_SYSCALL = re.compile(r"^(\d+)\s+([\d.]+)\s+(\w+)\((.*)$")
_RESUMED = re.compile(r"^(\d+)\s+([\d.]+)\s+<\.\.\. (\w+) resumed>(.*)$")
_INET = re.compile(r'sa_family=AF_INET, sin_port=htons\((\d+)\), sin_addr=inet_addr\("([^"]+)"\)')
_INET6 = re.compile(r'sa_family=AF_INET6, sin6_port=htons\((\d+)\).*?inet_pton\(AF_INET6, "([^"]+)"')
_UNIX = re.compile(r'sa_family=AF_UNIX, sun_path=(@?"[^"]*")')
_DNS_UNIX = ("/var/run/nscd/socket", "/run/nscd/socket", "/run/systemd/resolve/io.systemd.Resolve")
_IGNORED_WRITES = ("/dev/", "/proc/", "/sys/")


def _is_loopback(address: str) -> bool:
    return address.startswith("127.") or address in ("::1", "::ffff:127.0.0.1") or address.startswith("::ffff:127.")


def parse_strace(text: str, allowed: Path, home: Path, tmp: Path) -> Traffic:
    """Count what one traced run tried; ``allowed`` is the child's own data folder,
    ``tmp`` its TMPDIR (temporary files are listed apart from the others)."""
    traffic = Traffic()
    started: float | None = None
    for line in _whole_calls(text):
        m = _SYSCALL.match(line)
        if not m:
            continue
        when, call, rest = float(m.group(2)), m.group(3), m.group(4)
        started = when if started is None else started
        result = rest.rsplit(" = ", 1)[-1] if " = " in rest else ""
        failed = result.startswith("-1")
        if call == "socket":
            _count_socket(traffic, rest, result, failed)
        elif call in ("connect", "sendto", "sendmsg", "sendmmsg"):
            _count_send(traffic, call, rest, result, when - started)
        elif call in ("openat", "open", "creat"):
            _count_open(traffic, call, rest, failed, allowed)
        elif call in ("mkdir", "mkdirat"):
            _count_mkdir(traffic, rest, failed, allowed)
    _tidy(traffic, home, tmp)
    return traffic


def _whole_calls(text: str) -> Iterator[str]:
    """The lines of ``text``, a call strace split in two ("<unfinished ...>", then
    "<... resumed>" on the same thread) joined into one line, where it resumes."""
    pending: dict[str, str] = {}
    for raw in text.splitlines():
        if raw.endswith("<unfinished ...>"):
            m = _SYSCALL.match(raw)
            if m:
                pending[m.group(1)] = raw[: -len("<unfinished ...>")]
            continue
        resumed = _RESUMED.match(raw)
        if resumed:
            yield pending.pop(resumed.group(1), "") + resumed.group(4)
        else:
            yield raw


def _count_socket(traffic: Traffic, rest: str, result: str, failed: bool) -> None:
    family = rest.split(",", 1)[0]
    traffic.sockets[family] = traffic.sockets.get(family, 0) + 1
    if failed and ("EACCES" in result or "EPERM" in result or "EAFNOSUPPORT" in result):
        traffic.sockets_refused += 1


def _count_send(traffic: Traffic, call: str, rest: str, result: str, elapsed: float) -> None:
    """A connect or send: loopback, remote (DNS on port 53) or to a UNIX socket (the resolvers' count as DNS)."""
    inet = _INET.search(rest) or _INET6.search(rest)
    unix = _UNIX.search(rest)
    if inet:
        port, address = int(inet.group(1)), inet.group(2)
        if _is_loopback(address):
            traffic.connects_loopback += call == "connect"
            return
        if port == 53:
            traffic.dns += 1
        if call == "connect":
            traffic.connects_remote.append(f"{address}:{port} -> {result}")
            traffic.connects_remote_count += 1
        else:
            traffic.sends_remote += 1
        if traffic.first_remote_s is None:
            traffic.first_remote_s = round(elapsed, 1)
    elif unix and call == "connect":
        path = unix.group(1)
        if any(p in path for p in _DNS_UNIX):
            traffic.dns += 1
        traffic.connects_unix.append(f"{path} -> {result}")


def _count_open(traffic: Traffic, call: str, rest: str, failed: bool, allowed: Path) -> None:
    """A file opened for writing outside ``allowed`` (devices, /proc and /sys aside)."""
    quoted = re.search(r'"([^"]*)"', rest)
    if not quoted or failed:
        return
    path = quoted.group(1)
    writes = call == "creat" or re.search(r"O_WRONLY|O_RDWR|O_CREAT", rest)
    if writes and path.startswith("/") and not path.startswith(_IGNORED_WRITES):
        if not Path(path).resolve().is_relative_to(allowed):
            traffic.files_written.append(path)


def _count_mkdir(traffic: Traffic, rest: str, failed: bool, allowed: Path) -> None:
    quoted = re.search(r'"([^"]*)"', rest)
    if quoted and not failed and quoted.group(1).startswith("/"):
        if not Path(quoted.group(1)).resolve().is_relative_to(allowed):
            traffic.files_written.append(quoted.group(1) + "/")


def _tidy(traffic: Traffic, home: Path, tmp: Path) -> None:
    """Sort and de-duplicate the lists, set temporary files apart, cap the remote connects
    at 20 and list the files the run left in ``home``."""
    written = sorted(set(traffic.files_written))
    traffic.tmp_files = [p for p in written if Path(p).resolve().is_relative_to(tmp)]
    traffic.files_written = [p for p in written if p not in traffic.tmp_files]
    traffic.connects_remote = traffic.connects_remote[:20] + (
        [f"... {len(traffic.connects_remote) - 20} more"] if len(traffic.connects_remote) > 20 else []
    )
    traffic.connects_unix = sorted(set(traffic.connects_unix))
    traffic.home_files = sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- parent side
def progress(message: str) -> None:
    print(f"[audit] {message}", file=sys.stderr, flush=True)


def build_shim(where: Path) -> Path | None:
    """Compile GETENV_SHIM (None without a C compiler, or if it does not build)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        return None
    source, shim = where / "getenv_log.c", where / "getenv_log.so"
    source.write_text(GETENV_SHIM)
    built = subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-o", str(shim), str(source), "-ldl"], capture_output=True
    )
    return shim if built.returncode == 0 else None


def env_reads(log: Path) -> dict[str, list[str]]:
    """{shared object: sorted names it read}, leaving out the interpreter and libc."""
    reads: dict[str, set[str]] = {}
    if not log.is_file():
        return {}
    for line in log.read_text(errors="replace").splitlines():
        who, _, name = line.partition("\t")
        base = Path(who).name
        if base.startswith(("libpython", "python", "libc.so", "ld-linux", "unshare")) or who == "?":
            continue
        reads.setdefault(str(Path(who).resolve()), set()).add(name)
    return {k: sorted(v) for k, v in sorted(reads.items())}


def child_env(work: Path, fixed: bool) -> tuple[dict[str, str], list[str]]:
    """A clean environment for one child, and the names of the CI variables it dropped."""
    env = {k: v for k, v in os.environ.items() if k in KEEP_ENV}
    dropped = sorted(k for k in os.environ if k in CI_VARIABLES or k.startswith(CI_PREFIXES))
    home, tmp = work / "home", work / "tmp"
    home.mkdir(parents=True, exist_ok=True)
    tmp.mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(home), TMPDIR=str(tmp), PYTHONDONTWRITEBYTECODE="1", PYTHONNOUSERSITE="1")
    if fixed:
        env.update(FIXED_ENV)
    return env, dropped


def seal_prefix(no_seal: bool) -> list[str]:
    """``unshare -rn`` when the kernel allows it (checked by running it once)."""
    unshare = shutil.which("unshare")
    if unshare:
        probe = subprocess.run([unshare, "-rn", "true"], capture_output=True, text=True)
        if probe.returncode == 0:
            return [unshare, "-rn", "--"]
        reason = probe.stderr.strip()
    else:
        reason = "unshare(1) is not installed"
    if no_seal:
        progress(f"WARNING: runs are NOT sealed ({reason}); what a library sends can leave this machine")
        return []
    raise SystemExit(f"cannot seal the audited processes ({reason}); pass --no-seal to run them anyway")


def run_child(
    python: str, target: str, args: argparse.Namespace, fixed: bool, seal: list[str], trace: bool
) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"audit-{target}-", dir=args.workdir))
    app = work / "app"
    app.mkdir()
    env, dropped = child_env(work, fixed)
    if args.shim:
        env.update(LD_PRELOAD=str(args.shim), AUDIT_GETENV_LOG=str(app / GETENV_LOG))
    command = [python, str(Path(__file__).resolve()), "--child", target, "--work", str(app)]
    command += ["--assets", str(args.assets), "--hold", str(args.hold if trace else 0)]
    if fixed:
        command.append("--opt-out-apis")
    log = work / "strace.log"
    if trace:
        calls = "trace=%network,openat,open,creat,mkdir,mkdirat"
        command = ["strace", "-f", "-qq", "-ttt", "-s", "200", "-e", calls, "-o", str(log), *seal, *command]
    else:
        command = [*seal, *command]
    started = time.monotonic()
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.hold + 300)
    wall = round(time.monotonic() - started, 1)
    report: dict[str, Any] = {"ok": False, "error": None}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            report = json.loads(line)
            break
    else:
        tail = proc.stderr.strip().splitlines()[-3:]
        report["error"] = f"child exited {proc.returncode}: {' | '.join(tail)}"[:500]
    report["wall_s"] = wall
    report["ci_variables_removed"] = dropped
    report["env_read"] = env_reads(app / GETENV_LOG)
    if trace:
        traffic = parse_strace(
            log.read_text(errors="replace"), app.resolve(), (work / "home").resolve(), (work / "tmp").resolve()
        )
        report["traffic"] = asdict(traffic)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        report["workdir"] = str(work)
    return report


def audit(args: argparse.Namespace) -> dict[str, Any]:
    python = args.python
    names = [n for n in TARGETS if not args.only or n in args.only]
    seal = seal_prefix(args.no_seal)
    args.shim = (
        None if args.no_env_reads else build_shim(Path(tempfile.mkdtemp(prefix="audit-shim-", dir=args.workdir)))
    )
    if not args.no_env_reads and not args.shim:
        progress("no C compiler: environment reads are not logged (names found in the binaries are still listed)")
    if args.runtime and not shutil.which("strace"):
        raise SystemExit("--runtime needs strace (apt-get install strace)")
    result: dict[str, Any] = {
        "python": python,
        "sealed": bool(seal),
        "hold_s": args.hold,
        "fixed_env": FIXED_ENV,
        "env_reads_logged": bool(args.shim),
        "libraries": {},
    }
    progress(f"discovering {len(names)} libraries with {python}")
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        found = dict(zip(names, pool.map(lambda n: run_child(python, n, args, True, seal, False), names), strict=True))
    scans: dict[str, FileScan] = {}
    for name in names:
        report = found[name]
        mapped = set(report.get("mapped", []))
        shipped: set[str] = set()
        versions = {}
        for dist, info in (report.get("dists") or {}).items():
            versions[dist] = info["version"]
            shipped.update(info["native"])
        own = shipped | {m for m in mapped if _belongs(m, shipped)}
        # every shared object of a Python package mapped in the child is scanned too
        # (pypdf pulls in Pillow, genai loads onnxruntime's libonnxruntime.so)
        files = sorted(own | {m for m in mapped if "-packages/" in m})
        entry: dict[str, Any] = {
            "role": TARGETS[name].role,
            "note": TARGETS[name].note,
            "versions": versions,
            "exercised": report.get("ok", False),
            "error": report.get("error"),
            "shipped": len(shipped),
            "loaded": sorted(m for m in mapped if m in shipped),
            # shared objects of other packages that this one pulls in (genai -> libonnxruntime.so)
            "also_loaded": sorted(m for m in mapped if m not in own and "-packages/" in m),
            "system_loaded": sorted(m for m in mapped if m not in own and "-packages/" not in m),
            "files": [],
            # names read through getenv during discovery (switches on), per shared object
            "env_read": report.get("env_read", {}),
        }
        for path in files:
            if path not in scans:
                progress(f"scanning {path} ({os.path.getsize(path) // 1024} KiB)")
                scans[path] = scan_file(Path(path))
            entry["files"].append(dict(asdict(scans[path]), loaded=path in mapped, own=path in own))
        result["libraries"][name] = entry
    if args.runtime:
        jobs = [(n, fixed) for n in [*names, CONTROL] for fixed in (False, True)]
        if args.config != "both":
            jobs = [(n, f) for n, f in jobs if f == (args.config == "fixed")]
        progress(f"runtime: {len(jobs)} traced runs of {args.hold:.0f} s, {args.jobs} at a time")

        def one(job: tuple[str, bool]) -> tuple[str, bool, dict[str, Any]]:
            name, fixed = job
            report = run_child(python, name, args, fixed, seal, True)
            t = report.get("traffic", {})
            progress(
                f"{name} [{'fixed' if fixed else 'bare'}]: {sum(t.get('sockets', {}).values())} sockets, "
                f"{t.get('connects_remote_count', 0)} remote connects, {t.get('dns', 0)} DNS, "
                f"{len(t.get('files_written', []))} files written outside"
            )
            return name, fixed, report

        with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
            for name, fixed, report in pool.map(one, jobs):
                report.pop("mapped", None)
                report.pop("dists", None)
                key = "fixed" if fixed else "bare"
                if name == CONTROL:
                    result.setdefault("control", {})[key] = report
                else:
                    result["libraries"][name].setdefault("runtime", {})[key] = report
    return result


def _belongs(mapped: str, shipped: set[str]) -> bool:
    return any(Path(mapped).parent == Path(s).parent for s in shipped)


# --------------------------------------------------------------------------- output
def _cell(items: list[str], limit: int = 3) -> str:
    if not items:
        return "-"
    shown = ", ".join(items[:limit])
    return shown + (f" +{len(items) - limit}" if len(items) > limit else "")


def _traffic_cell(run: dict[str, Any] | None) -> str:
    if not run:
        return "-"
    if not run.get("ok"):
        return f"ERROR {run.get('error', '')[:40]}"
    t = run["traffic"]
    inet = t["sockets"].get("AF_INET", 0) + t["sockets"].get("AF_INET6", 0)
    outside = len(t["files_written"]) + len(t["home_files"])
    tmp = f" (+{len(t['tmp_files'])} in TMPDIR)" if t.get("tmp_files") else ""
    return f"inet {inet} / remote {t['connects_remote_count']} / dns {t['dns']} / files {outside}{tmp}"


_PROXY_VARIABLES = (
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "https_proxy",
    "http_proxy",
    "all_proxy",
    "no_proxy",
)
_PLACE_VARIABLES = ("HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "TMPDIR", "SQLITE_TMPDIR")


def _reads(entry: dict[str, Any]) -> set[str]:
    """Every name the library's processes read through getenv (discovery and runtime runs)."""
    names = {n for ns in entry.get("env_read", {}).values() for n in ns}
    for run in entry.get("runtime", {}).values():
        names |= {n for ns in (run.get("env_read") or {}).values() for n in ns}
    return names


def _summarize_reads(names: set[str]) -> list[str]:
    words = tuple(w.decode() for w in SWITCH_WORDS)
    out = sorted(n for n in names if any(w in n for w in words) or n == "GOOGLE_SANDBOX_NO_NETWORK")
    ci = [n for n in names if n in CI_VARIABLES]
    if ci:
        out.append(f"CI vars x{len(ci)}")
    if any(n in _PROXY_VARIABLES for n in names):
        out.append("proxy vars")
    out += sorted(n for n in names if n in _PLACE_VARIABLES)
    return out


def print_table(result: dict[str, Any]) -> None:
    reads_logged = bool(result.get("env_reads_logged"))
    rows = [
        (
            "library",
            "version",
            ".so loaded/shipped",
            "telemetry hosts",
            "switches read (getenv)" if reads_logged else "switches read",
            "switch names in binaries",
            "net functions",
        )
    ]
    runtime = any("runtime" in e for e in result["libraries"].values())
    for name, entry in result["libraries"].items():
        rows.append(_library_row(name, entry, reads_logged))
    _print_rows(rows)
    if runtime:
        _print_runtime_table(result)
    print()
    owner = {f["path"]: name for name, e in result["libraries"].items() for f in e["files"] if f["own"]}
    for name, entry in result["libraries"].items():
        details = _file_details(entry, owner)
        if reads_logged:
            words = _summarize_reads(_reads(entry))
            if words:
                details.append(f"  reads: {', '.join(words)}")
        details += _runtime_details(entry)
        if entry.get("also_loaded"):
            others = [f"{Path(p).name}" + (f" ({owner[p]})" if p in owner else "") for p in entry["also_loaded"]]
            details.append(f"  also loads: {_cell(others, 6)}")
        if entry.get("error"):
            details.append(f"  not exercised: {entry['error']}")
        if details:
            print(name)
            print("\n".join(details))


def _library_row(name: str, entry: dict[str, Any], reads_logged: bool) -> tuple[str, ...]:
    """One library's row of the static table."""
    files = entry["files"]
    own = [f for f in files if f["own"]]
    hosts = sorted({h for f in files if f["loaded"] or f["own"] for h in f["telemetry_hosts"]})
    switches = sorted({s for f in own for s in f["switches"]})
    ci = sorted({s for f in own for s in f["ci_variables"]})
    if ci:
        switches.append(f"CI vars x{len(ci)}")
    imports = sorted({s for f in own if f["elf"] for s in f["elf"]["imports"]})
    defines = sorted({s for f in own if f["elf"] for s in f["elf"]["defines"]})
    net = _cell(imports, 3) + (f"; DEFINES {_cell(defines, 2)}" if defines else "")
    version = ",".join(v or "missing" for v in entry["versions"].values())
    loaded = f"{len(entry['loaded'])}/{entry['shipped']}"
    role = "" if entry["role"] == "runtime" else f" ({entry['role']})"
    read = _cell(_summarize_reads(_reads(entry)), 4) if reads_logged else "not logged"
    return (name + role, version, loaded, _cell(hosts, 2), read, _cell(switches, 3), net)


def _print_runtime_table(result: dict[str, Any]) -> None:
    """The traced runs, bare and fixed, of every library and of the positive control."""
    print()
    print(
        f"runtime: {result['hold_s']:.0f} s each, CI variables removed, sealed={result['sealed']}; "
        "inet = AF_INET/AF_INET6 sockets, remote = non-loopback connects, files = written outside the child's folder"
    )
    rows = [("library", "bare (no switches)", "fixed (Enclave's switches)")]
    for name, entry in result["libraries"].items():
        r = entry.get("runtime", {})
        rows.append((name, _traffic_cell(r.get("bare")), _traffic_cell(r.get("fixed"))))
    c = result.get("control", {})
    rows.append(("control (ctypes connect)", _traffic_cell(c.get("bare")), _traffic_cell(c.get("fixed"))))
    _print_rows(rows)


def _file_details(entry: dict[str, Any], owner: dict[str, str]) -> list[str]:
    """A line for each of the library's files (its own, or loaded and nobody's) that names
    telemetry, other hosts, switches or network functions it defines."""
    details = []
    for f in entry["files"]:
        if not f["own"] and (f["path"] in owner or not f["loaded"]):
            continue
        if f["telemetry_urls"] or f["other_hosts"] or f["switches"] or (f["elf"] and f["elf"]["defines"]):
            details.append(
                f"  {Path(f['path']).name}{'' if f['loaded'] else ' (not loaded)'}"
                f"{'' if f['own'] else ' (another package)'}: "
                f"telemetry {_cell(f['telemetry_urls'], 2)}; other hosts {_cell(f['other_hosts'], 6)}; "
                f"switch names {_cell(f['switches'], 6)}; CI {_cell(f['ci_variables'], 14)}"
                + (f"; defines {', '.join(f['elf']['defines'])}" if f["elf"] and f["elf"]["defines"] else "")
            )
    return details


def _runtime_details(entry: dict[str, Any]) -> list[str]:
    """A line for each traced run that reached out or left files behind."""
    details = []
    for key, run in entry.get("runtime", {}).items():
        t = run.get("traffic") or {}
        if t.get("connects_remote") or t.get("files_written") or t.get("home_files") or t.get("tmp_files"):
            details.append(
                f"  runtime {key}: remote {_cell(t['connects_remote'], 2)}; unix {_cell(t['connects_unix'], 2)}; "
                f"first remote at +{t['first_remote_s']} s; written {_cell(t['files_written'], 3)}; "
                f"TMPDIR {_cell([Path(p).name for p in t.get('tmp_files', [])], 3)}; "
                f"HOME {_cell(t['home_files'], 3)}"
            )
    return details


def _print_rows(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def failures(result: dict[str, Any]) -> list[str]:
    """What a ``fixed`` run still did that Enclave promises never happens."""
    out = []
    for name, entry in result["libraries"].items():
        run = entry.get("runtime", {}).get("fixed")
        if not run or not run.get("traffic"):
            continue
        t = run["traffic"]
        if t["connects_remote_count"] or t["dns"] or t["sends_remote"]:
            out.append(f"{name}: {t['connects_remote_count']} remote connects, {t['dns']} DNS")
        if t["home_files"] or t["files_written"]:
            out.append(f"{name}: wrote {_cell(t['home_files'] + t['files_written'], 4)}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=sys.executable, help="interpreter of the environment to audit")
    parser.add_argument(
        "--assets", type=Path, default=DEFAULT_ASSETS, help="folder with tiny-llama, tiny-gemma.litertlm"
    )
    parser.add_argument("--only", nargs="*", choices=sorted(TARGETS), help="audit these libraries only")
    parser.add_argument("--runtime", action="store_true", help="also run each library under strace")
    parser.add_argument("--config", choices=("both", "bare", "fixed"), default="both", help="runtime configurations")
    parser.add_argument("--hold", type=float, default=35.0, help="seconds each traced process keeps working")
    parser.add_argument("--jobs", type=int, default=4, help="children run at a time")
    parser.add_argument("--no-seal", action="store_true", help="run even where no network namespace can be made")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--check", action="store_true", help="exit 1 if a fixed run reached out or wrote outside")
    parser.add_argument("--from-json", metavar="FILE", help="print the table of an earlier --json run")
    parser.add_argument("--keep", action="store_true", help="keep each child's work folder (and strace log)")
    parser.add_argument("--no-env-reads", action="store_true", help="do not log getenv calls (LD_PRELOAD shim)")
    parser.add_argument("--workdir", default=None, help="where the children's temporary folders go")
    # child side (internal)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--opt-out-apis", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args)
    if not sys.platform.startswith("linux"):
        parser.error("this audit reads /proc and uses strace: Linux only")
    args.assets = args.assets.resolve()
    if args.from_json:
        result = json.loads(Path(args.from_json).read_text())
    else:
        result = audit(args)
    if args.json:
        json.dump(result, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print_table(result)
    control = result.get("control", {})
    if args.runtime and control:
        seen = [r for r in control.values() if r.get("traffic", {}).get("connects_remote_count")]
        if not seen:
            progress("POSITIVE CONTROL NOT SEEN: the runtime audit cannot see native connects; its zeros mean nothing")
            return 3
    if args.check:
        problems = failures(result)
        for problem in problems:
            progress(f"FAIL {problem}")
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
