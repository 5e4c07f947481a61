#!/usr/bin/env python
"""Prototype of Enclave's sealed worker: does the seal hold, what does it cost?

Standalone (stdlib only for the seal and the checks; onnxruntime-genai and litert-lm
only for the model-loading steps), so that it runs with any Python 3.11, as any user:

    .venv/bin/python scripts/seal_probe.py                  # checks + measurements, table
    .venv/bin/python scripts/seal_probe.py --json
    .venv/bin/python scripts/seal_probe.py --quick          # checks only, no models, no timing
    setpriv --reuid=65534 --regid=65534 --clear-groups /usr/bin/python3 scripts/seal_probe.py --quick
    .venv/bin/python scripts/seal_probe.py --quick --simulate-refusal   # unshare -> EPERM, as in Docker

The seal (the part that becomes the adapter), layered, each layer detected on its own:

1. **user + network namespace**: ``unshare(CLONE_NEWUSER)`` through ctypes (Python 3.11
   has no ``os.unshare``), then ``/proc/self/setgroups`` = ``deny`` and an identity
   ``uid_map``/``gid_map`` (the worker keeps the user's uid, so the files it writes are
   the user's), then ``unshare(CLONE_NEWNET)``: the worker's only interface is ``lo``,
   which is down, and there is no route. Two calls, not one, so that a refusal says
   which step failed (AppArmor's restriction on Ubuntu >= 23.10 lets the user namespace
   be created but denies the capabilities the second step needs).
2. **seccomp-bpf** with ``no_new_privs``, installed with ``seccomp(2)`` +
   ``SECCOMP_FILTER_FLAG_TSYNC`` (every thread, not just the caller): ``socket()``
   fails with ``EACCES`` for every address family but the allowed ones (policy
   ``inet``: ``AF_UNIX`` and ``AF_NETLINK``; policy ``strict``: ``AF_NETLINK`` only, so
   the worker cannot reach a path-named Unix socket on the host either; ``socketpair``
   stays allowed), ``io_uring_setup`` fails with ``ENOSYS`` (an io_uring ``SOCKET`` op
   would bypass a ``socket()`` filter), and a system call of a foreign ABI (i386 through
   ``int 0x80``, x32) kills the process. Needs no privilege anywhere. x86_64 and
   aarch64 only: on i386 and 32-bit ARM ``socketcall(2)`` multiplexes sockets and the
   filter refuses to install.

Where the seal is applied (``--where``): ``self`` (the worker, a fresh ``python -S``,
seals itself before ``site`` runs and before any thread exists), or ``preexec``
(``subprocess``'s ``preexec_fn`` in the forked child, before ``exec``; unsafe when the
parent has threads, which the TUI has).
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import json
import os
import platform
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "tests" / "assets"

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_GET_SECCOMP = 21
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000
# BPF opcodes
LD_ABS_W = 0x20  # BPF_LD | BPF_W | BPF_ABS
JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
RET_K = 0x06  # BPF_RET | BPF_K
#: Per architecture: AUDIT_ARCH_*, __NR_socket, __NR_io_uring_setup, __NR_seccomp, __NR_unshare.
#: aarch64 uses the asm-generic numbers. The aarch64 row is from the kernel headers and was
#: not run here (this machine is x86_64).
ARCHES = {
    "x86_64": (0xC000003E, 41, 425, 317, 272),
    "aarch64": (0xC00000B7, 198, 425, 277, 97),
}
POLICIES = {"inet": (socket.AF_UNIX, socket.AF_NETLINK), "strict": (socket.AF_NETLINK,)}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _err(call: str) -> str:
    code = ctypes.get_errno()
    return f"{call}: {errno.errorcode.get(code, code)}"


# --------------------------------------------------------------------------- seccomp
class SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]


def assemble(program: list[tuple[Any, ...]]) -> list[tuple[int, int, int, int]]:
    """(label,) marks a place; (code, k, jt_label, jf_label) jumps there; offsets are relative."""
    labels, pc = {}, 0
    for item in program:
        if len(item) == 1:
            labels[item[0]] = pc
        else:
            pc += 1
    out, pc = [], 0
    for item in program:
        if len(item) == 1:
            continue
        code, k, jt, jf = item
        jt_off = labels[jt] - pc - 1 if isinstance(jt, str) else jt
        jf_off = labels[jf] - pc - 1 if isinstance(jf, str) else jf
        out.append((code, jt_off, jf_off, k))
        pc += 1
    return out


def seccomp_program(policy: str, arch: str, refuse_unshare: bool = False) -> list[tuple[int, int, int, int]]:
    audit_arch, nr_socket, nr_io_uring, _, nr_unshare = ARCHES[arch]
    allowed = POLICIES[policy]
    prog: list[tuple[Any, ...]] = [
        (LD_ABS_W, 4, 0, 0),  # seccomp_data.arch
        (JEQ_K, audit_arch, 0, "kill"),
        (LD_ABS_W, 0, 0, 0),  # seccomp_data.nr
    ]
    if arch == "x86_64":
        prog.append((JGE_K, 0x40000000, "kill", 0))  # x32 ABI
    prog += [
        (JEQ_K, nr_socket, "socket", 0),
        (JEQ_K, nr_io_uring, "enosys", 0),
    ]
    if refuse_unshare:  # what Docker's default profile does to an unprivileged unshare
        prog.append((JEQ_K, nr_unshare, "eperm", 0))
    prog += [
        (RET_K, SECCOMP_RET_ALLOW, 0, 0),
        ("socket",),
        (LD_ABS_W, 16, 0, 0),  # args[0] low 32 bits (little-endian): the domain, an int
    ]
    for family in allowed:
        prog.append((JEQ_K, family, "allow", 0))
    prog += [
        (RET_K, SECCOMP_RET_ERRNO | errno.EACCES, 0, 0),
        ("allow",),
        (RET_K, SECCOMP_RET_ALLOW, 0, 0),
        ("enosys",),
        (RET_K, SECCOMP_RET_ERRNO | errno.ENOSYS, 0, 0),
        ("eperm",),
        (RET_K, SECCOMP_RET_ERRNO | errno.EPERM, 0, 0),
        ("kill",),
        (RET_K, SECCOMP_RET_KILL_PROCESS, 0, 0),
    ]
    return assemble(prog)


def install_seccomp(policy: str = "inet", tsync: bool = True, refuse_unshare: bool = False) -> str:
    """Install the filter in this process; "active" or why not. Irreversible."""
    arch = platform.machine()
    if arch not in ARCHES:
        return f"refused: {arch} is not supported (socketcall multiplexing on 32-bit ABIs)"
    code = seccomp_program(policy, arch, refuse_unshare)
    filters = (SockFilter * len(code))(*[SockFilter(c, jt, jf, k) for c, jt, jf, k in code])
    prog = SockFprog(len(code), filters)
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return "refused: " + _err("prctl(PR_SET_NO_NEW_PRIVS)")
    if tsync:
        nr_seccomp = ARCHES[arch][3]
        flags = SECCOMP_FILTER_FLAG_TSYNC
        if _libc.syscall(ctypes.c_long(nr_seccomp), SECCOMP_SET_MODE_FILTER, flags, ctypes.byref(prog)) != 0:
            return "refused: " + _err("seccomp(SET_MODE_FILTER, TSYNC)")
    elif _libc.prctl(22, 2, ctypes.byref(prog), 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
        return "refused: " + _err("prctl(PR_SET_SECCOMP)")
    return "active"


# --------------------------------------------------------------------------- namespaces
def _write(path: str, text: str) -> str | None:
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError as exc:
        return f"open {path}: {errno.errorcode.get(exc.errno or 0, exc)}"
    try:
        os.write(fd, text.encode())  # one write(2): the kernel takes a map in a single write
    except OSError as exc:
        return f"write {path}: {errno.errorcode.get(exc.errno or 0, exc)}"
    finally:
        os.close(fd)
    return None


def _sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", *name.split(".")).read_text().strip()
    except OSError:
        return None


def refusal_hint(step: str, code: int) -> str:
    """Why the kernel refused, in the user's words (the sysctls are only read, to explain)."""
    apparmor = _sysctl("kernel.apparmor_restrict_unprivileged_userns")
    clone = _sysctl("kernel.unprivileged_userns_clone")
    maxns = _sysctl("user.max_user_namespaces")
    if code == errno.EINVAL and step == "unshare(CLONE_NEWUSER)":
        return "the process already runs threads (a user namespace needs a single-threaded caller)"
    if code == errno.ENOSPC or maxns == "0":
        return f"user.max_user_namespaces is {maxns} (namespaces are disabled or the limit is reached)"
    if clone == "0":
        return "kernel.unprivileged_userns_clone is 0 (Debian/Ubuntu switch)"
    if apparmor == "1":
        return "AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns=1)"
    if code == errno.EPERM and step == "unshare(CLONE_NEWUSER)":
        return "refused by a seccomp policy or an LSM (inside a container?)"
    return "refused by the kernel"


def enter_namespaces() -> dict[str, str]:
    """User namespace (identity map) then network namespace; each step's outcome."""
    uid, gid = os.geteuid(), os.getegid()
    out = {"userns": "off", "netns": "off"}
    if _libc.unshare(CLONE_NEWUSER) != 0:
        code = ctypes.get_errno()
        out["userns"] = f"refused: {_err('unshare(CLONE_NEWUSER)')} ({refusal_hint('unshare(CLONE_NEWUSER)', code)})"
        if uid == 0 and _libc.unshare(CLONE_NEWNET) == 0:  # root without a user namespace
            out["netns"] = "active (root, no user namespace)"
        return out
    for path, text in (("/proc/self/setgroups", "deny"), ("/proc/self/uid_map", f"{uid} {uid} 1\n")):
        problem = _write(path, text)
        if problem and not (path.endswith("setgroups") and "ENOENT" in problem):
            out["userns"] = f"unusable: {problem} ({refusal_hint('map', errno.EPERM)})"
            return out
    problem = _write("/proc/self/gid_map", f"{gid} {gid} 1\n")
    if problem:
        out["userns"] = f"unusable: {problem} ({refusal_hint('map', errno.EPERM)})"
        return out
    out["userns"] = "active"
    if _libc.unshare(CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        out["netns"] = f"refused: {_err('unshare(CLONE_NEWNET)')} ({refusal_hint('unshare(CLONE_NEWNET)', code)})"
        return out
    out["netns"] = "active"
    return out


def seal(layers: str = "both", policy: str = "inet", refuse_unshare: bool = False) -> dict[str, Any]:
    """Apply the layers to this (single-threaded) process and say which took effect."""
    started = time.perf_counter()
    report: dict[str, Any] = {"userns": "off", "netns": "off", "seccomp": "off"}
    if refuse_unshare:
        # Test aid: make unshare fail with EPERM first, as Docker's default seccomp profile does.
        report["simulated_refusal"] = install_seccomp(policy, refuse_unshare=True)
    if layers in ("both", "netns"):
        report.update(enter_namespaces())
    if layers in ("both", "seccomp"):
        report["seccomp"] = install_seccomp(policy) + f" (policy {policy})"
    report["seal_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return report


# --------------------------------------------------------------------------- checks (inside)
def _libc_connect(host: str, port: int, kind: int = socket.SOCK_STREAM) -> str:
    """socket()+connect() through libc, as native code would do it (Python's socket is not used)."""
    fd = _libc.socket(socket.AF_INET, kind, 0)
    if fd < 0:
        return "blocked at " + _err("socket")
    address = struct.pack("=H", socket.AF_INET) + struct.pack("!H4s8x", port, socket.inet_aton(host))
    rc = _libc.connect(fd, ctypes.c_char_p(address), len(address))
    result = "CONNECTED" if rc == 0 else "blocked at " + _err("connect")
    _libc.close(fd)
    return result


def _py_connect(family: int, address: Any, kind: int = socket.SOCK_STREAM) -> str:
    try:
        s = socket.socket(family, kind)
    except OSError as exc:
        return f"blocked at socket: {errno.errorcode.get(exc.errno or 0, exc)}"
    try:
        s.settimeout(2)
        s.connect(address)
        return "CONNECTED"
    except OSError as exc:
        return f"blocked at connect: {errno.errorcode.get(exc.errno or 0, exc)}"
    finally:
        s.close()


def interfaces() -> list[str]:
    """Interfaces of this process's network namespace (/proc/net/dev)."""
    lines = Path("/proc/net/dev").read_text().splitlines()[2:]
    return sorted(line.split(":", 1)[0].strip() for line in lines)


def _up_interfaces() -> set[str]:
    """Interfaces with an IPv4 or IPv6 address route, a proxy for "up" that needs no socket."""
    up = set()
    for line in Path("/proc/net/route").read_text().splitlines()[1:]:
        up.add(line.split()[0])
    try:
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            up.add(line.split()[-1])
    except OSError:
        pass
    return up


def detect_layers(parent_netns: str) -> dict[str, Any]:
    """What the kernel says this process is under (verified, not trusted from the sealer)."""
    status = dict(line.split(":\t", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":\t" in line)
    netns = os.readlink("/proc/self/ns/net")
    uid_map = Path("/proc/self/uid_map").read_text().split()
    return {
        "netns_is_new": netns != parent_netns,
        "interfaces": interfaces(),
        "userns_uid_map": uid_map,
        "seccomp_filter": status.get("Seccomp", "?").strip() == "2",
        "no_new_privs": status.get("NoNewPrivs", "?").strip() == "1",
    }


def inside_checks(args: argparse.Namespace, layers: dict[str, Any]) -> dict[str, Any]:
    """What the worker can see and reach. Outbound attempts only once a layer is verified."""
    checks: dict[str, Any] = {}
    # /proc/net is the reader's network namespace; /sys/class/net is the one sysfs was
    # mounted in (the host's, unless the worker also remounts /sys in a mount namespace).
    net = interfaces()
    checks["interfaces"] = net
    checks["sys_class_net"] = sorted(os.listdir("/sys/class/net"))
    checks["lo_up"] = "lo" in _up_interfaces()
    routes = Path("/proc/net/route").read_text().splitlines()[1:]
    try:
        routes6 = [r for r in Path("/proc/net/ipv6_route").read_text().splitlines() if r.split()[-1] != "lo"]
    except OSError:  # IPv6 disabled
        routes6 = []
    checks["ipv4_routes"] = len(routes)
    checks["ipv6_routes_off_lo"] = len(routes6)
    try:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.close()
        checks["socket_af_inet"] = "ALLOWED"
    except OSError as exc:
        checks["socket_af_inet"] = f"refused: {errno.errorcode.get(exc.errno or 0, exc)}"
    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        probe.close()
        checks["socket_af_inet6"] = "ALLOWED"
    except OSError as exc:
        checks["socket_af_inet6"] = f"refused: {errno.errorcode.get(exc.errno or 0, exc)}"
    netns_verified = net == ["lo"] and checks["ipv4_routes"] == 0 and checks["ipv6_routes_off_lo"] == 0
    seccomp_verified = checks["socket_af_inet"].startswith("refused")
    checks["verified"] = {"netns": netns_verified, "seccomp": seccomp_verified}
    if netns_verified or seccomp_verified:
        checks["tcp_to_outside_loopback_listener"] = _py_connect(socket.AF_INET, ("127.0.0.1", args.port))
        checks["libc_tcp_192.0.2.1:53"] = _libc_connect("192.0.2.1", 53)
        checks["libc_tcp_8.8.8.8:53"] = _libc_connect("8.8.8.8", 53)
        checks["libc_udp_8.8.8.8:53"] = _libc_connect("8.8.8.8", 53, socket.SOCK_DGRAM)
        try:
            socket.getaddrinfo("example.com", 443)
            checks["dns_example.com"] = "RESOLVED"
        except OSError as exc:
            checks["dns_example.com"] = f"failed: {type(exc).__name__} {exc.errno}"
    else:
        checks["outbound"] = "not attempted: no layer verified, an attempt could leave the machine"
    checks["abstract_unix_outside"] = _py_connect(socket.AF_UNIX, "\0" + args.abstract)
    checks["path_unix_outside"] = _py_connect(socket.AF_UNIX, args.unix_path)
    try:
        a, b = socket.socketpair()
        a.sendall(b"x")
        checks["socketpair"] = "works" if b.recv(1) == b"x" else "broken"
        a.close()
        b.close()
    except OSError as exc:
        checks["socketpair"] = f"refused: {exc}"
    params = ctypes.create_string_buffer(120)
    nr_io_uring = ARCHES.get(platform.machine(), (0, 0, 425))[2]
    fd = _libc.syscall(ctypes.c_long(nr_io_uring), 1, params)
    checks["io_uring_setup"] = "ALLOWED" if fd >= 0 else "refused: " + _err("io_uring_setup")
    if fd >= 0:
        os.close(fd)
    # Python's own uses: user name look-up (glibc may try nscd over AF_UNIX), localhost.
    try:
        import getpass

        checks["getpass.getuser"] = getpass.getuser()
    except Exception as exc:  # noqa: BLE001 - reported
        checks["getpass.getuser"] = f"failed: {exc}"
    try:
        checks["resolve_localhost"] = socket.getaddrinfo("localhost", 80)[0][4][0]
    except OSError as exc:
        checks["resolve_localhost"] = f"failed: {exc}"
    # a grandchild (a model build, a probe-load) inherits every layer
    code = "import socket\ntry:\n socket.socket(); print('ALLOWED')\nexcept OSError as e: print('refused', e.errno)"
    grandchild = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True)
    checks["grandchild_socket_af_inet"] = grandchild.stdout.strip() or grandchild.stderr.strip()[-100:]
    checks["grandchild_interfaces"] = subprocess.run(
        [sys.executable, "-S", "-c", "import os; print(os.listdir('/sys/class/net'))"], capture_output=True, text=True
    ).stdout.strip()
    checks["no_new_privs"] = _libc.prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)
    checks["seccomp_mode"] = _libc.prctl(PR_GET_SECCOMP, 0, 0, 0, 0)
    checks["uid_inside"] = os.getuid()
    checks["uid_map"] = Path("/proc/self/uid_map").read_text().split()
    return checks


def models_under_seal(assets: Path) -> dict[str, Any]:
    """Load and run both engines inside the seal: does anything break?"""
    out: dict[str, Any] = {}
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    try:
        t = time.perf_counter()
        import onnxruntime_genai as og

        out["genai_import_ms"] = round((time.perf_counter() - t) * 1000, 1)
        t = time.perf_counter()
        model = og.Model(str(assets / "tiny-llama"))
        tokenizer = og.Tokenizer(model)
        out["genai_load_ms"] = round((time.perf_counter() - t) * 1000, 1)
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=32)
        generator = og.Generator(model, params)
        generator.append_tokens(tokenizer.encode("How do I reset the pump?"))
        n = 0
        while not generator.is_done():
            generator.generate_next_token()
            n += 1
        out["genai_generated_tokens"] = n
    except Exception as exc:  # noqa: BLE001 - reported
        out["genai_error"] = f"{type(exc).__name__}: {exc}"[:300]
    try:
        import litert_lm

        litert_lm.set_min_log_severity(litert_lm.LogSeverity.FATAL)
        cache = Path(tempfile.mkdtemp(prefix="seal-litert-"))
        t = time.perf_counter()
        engine = litert_lm.Engine(
            str(assets / "tiny-gemma.litertlm"),
            backend=litert_lm.Backend.CPU(thread_count=1),
            max_num_tokens=128,
            cache_dir=str(cache),
        )
        out["litert_load_ms"] = round((time.perf_counter() - t) * 1000, 1)
        conversation = engine.create_conversation(max_output_tokens=8)
        reply = conversation.send_message("How do I reset the pump?")
        out["litert_reply_chars"] = len(str(reply))
    except Exception as exc:  # noqa: BLE001 - reported
        out["litert_error"] = f"{type(exc).__name__}: {exc}"[:300]
    return out


def thread_demo() -> dict[str, str]:
    """prctl(PR_SET_SECCOMP) filters the calling thread only; seccomp(TSYNC) filters all.

    In a forked child, a thread that already runs tries socket(AF_INET) after the main
    thread installed the filter one way or the other.
    """
    out = {}
    for tsync in (False, True):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            _thread_demo_child(tsync, w)
        os.close(w)
        text = os.read(r, 1000).decode()
        os.waitpid(pid, 0)
        os.close(r)
        out["seccomp(TSYNC)" if tsync else "prctl(PR_SET_SECCOMP)"] = text
    return out


def _thread_demo_child(tsync: bool, w: int) -> None:
    go, done, result = threading.Event(), threading.Event(), {}

    def other() -> None:
        go.wait()
        try:
            socket.socket().close()
            result["r"] = "ALLOWED"
        except OSError as exc:
            result["r"] = f"refused {errno.errorcode.get(exc.errno or 0)}"
        done.set()

    threading.Thread(target=other).start()
    state = install_seccomp("inet", tsync=tsync)
    go.set()
    done.wait(5)
    os.write(w, f"filter {state}; the other thread's socket(AF_INET): {result.get('r')}".encode())
    os._exit(0)


# --------------------------------------------------------------------------- worker
def worker_main(args: argparse.Namespace) -> None:
    """The sealed process: seal (unless the parent did), check, answer over the pipe."""
    t0 = time.perf_counter()
    layers: dict[str, Any] = {}
    if args.where == "self":
        layers = seal(args.layers, args.policy, args.simulate_refusal)
        import site  # started with -S: .pth files run only now, behind the seal

        site.main()
    out = sys.stdout
    report: dict[str, Any] = {"type": "ready", "layers": layers, "pid": os.getpid()}
    report["verified"] = detect_layers(args.parent_netns)
    if args.checks:
        report["checks"] = inside_checks(args, layers)
    if args.models:
        report["models"] = models_under_seal(Path(args.assets))
    report["worker_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    import resource

    report["max_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    out.write(json.dumps(report) + "\n")
    out.flush()
    # Then serve: "stream N" sends N token-sized JSON messages (pipe: stdout; pair: fd).
    for line in sys.stdin:
        command = line.split()
        if not command:
            continue
        if command[0] == "stream":
            n = int(command[1])
            channel = out if len(command) < 3 else os.fdopen(int(command[2]), "w", closefd=False)
            for i in range(n):
                channel.write(json.dumps({"type": "delta", "text": " tok", "i": i}) + "\n")
                channel.flush()  # a token goes out when it is made
            channel.write(json.dumps({"type": "done"}) + "\n")
            channel.flush()
        elif command[0] == "quit":
            break


# --------------------------------------------------------------------------- parent
class Outside:
    """Listeners held by the parent, outside the worker: the worker must reach none."""

    def __init__(self) -> None:
        self.tcp = socket.socket()
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen()
        self.port = self.tcp.getsockname()[1]
        self.abstract = f"enclave-seal-probe-{os.getpid()}"
        self.abs_sock = socket.socket(socket.AF_UNIX)
        self.abs_sock.bind("\0" + self.abstract)
        self.abs_sock.listen()
        self.dir = tempfile.mkdtemp(prefix="seal-probe-")
        os.chmod(self.dir, 0o755)
        self.unix_path = os.path.join(self.dir, "outside.sock")
        self.path_sock = socket.socket(socket.AF_UNIX)
        self.path_sock.bind(self.unix_path)
        os.chmod(self.unix_path, 0o777)
        self.path_sock.listen()

    def argv(self) -> list[str]:
        return ["--port", str(self.port), "--abstract", self.abstract, "--unix-path", self.unix_path]


@dataclass
class Worker:
    proc: subprocess.Popen[str]
    report: dict[str, Any]
    ready_ms: float
    pair: socket.socket


def start_worker(
    args: argparse.Namespace, outside: Outside, where: str, layers: str, checks: bool, models: bool
) -> Worker:
    """Start one worker and wait for its 'ready' line (the start-up time is until then)."""
    me = str(Path(__file__).resolve())
    command = [sys.executable, "-S" if where == "self" else "-I", me, "--worker", "--where", where]
    command += ["--layers", layers, "--policy", args.policy, "--assets", str(args.assets), *outside.argv()]
    command += ["--parent-netns", os.readlink("/proc/self/ns/net")]
    command += ["--checks"] * checks + ["--models"] * models + ["--simulate-refusal"] * args.simulate_refusal
    parent_end, child_end = socket.socketpair()
    env = dict(os.environ)
    preexec = None
    if where == "preexec":

        def preexec() -> None:
            # the outcome is not sent back: the worker reports what the kernel says (verified)
            seal(layers, args.policy, args.simulate_refusal)

    started = time.perf_counter()
    proc = subprocess.Popen(
        command + ["--pair-fd", str(child_end.fileno())],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        pass_fds=(child_end.fileno(),),
        preexec_fn=preexec,
    )
    child_end.close()
    assert proc.stdout is not None
    line = proc.stdout.readline()
    ms = (time.perf_counter() - started) * 1000
    if not line:
        proc.wait()
        return Worker(proc, {"error": f"worker exited {proc.returncode} before ready"}, ms, parent_end)
    return Worker(proc, json.loads(line), ms, parent_end)


def stop(worker: Worker) -> None:
    proc = worker.proc
    worker.pair.close()
    if proc.poll() is None and proc.stdin:
        proc.stdin.write("quit\n")
        proc.stdin.flush()
        proc.stdin.close()
    proc.wait(10)


def stream_cost(worker: Worker, n: int, over_pair: bool) -> float:
    """Microseconds per message, child -> parent, including json dumps/loads and a flush each."""
    proc = worker.proc
    assert proc.stdin and proc.stdout
    reader = worker.pair.makefile("r") if over_pair else proc.stdout
    started = time.perf_counter()
    proc.stdin.write(f"stream {n}" + (" 3\n" if over_pair else "\n"))
    proc.stdin.flush()
    count = 0
    for line in reader:
        message = json.loads(line)
        if message["type"] == "done":
            break
        count += 1
    elapsed = time.perf_counter() - started
    assert count == n, count
    return elapsed / n * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--policy", choices=sorted(POLICIES), default="strict", help="strict: no socket(AF_UNIX) either"
    )
    parser.add_argument("--assets", type=Path, default=ASSETS)
    parser.add_argument("--quick", action="store_true", help="checks only: no models, no timing")
    parser.add_argument("--runs", type=int, default=10, help="start-ups timed per configuration")
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--simulate-refusal", action="store_true", help="make unshare fail with EPERM (Docker-like)")
    parser.add_argument("--json", action="store_true")
    # worker side (internal)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--where", default="self", help=argparse.SUPPRESS)
    parser.add_argument("--layers", default="both", help=argparse.SUPPRESS)
    parser.add_argument("--checks", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--models", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--abstract", default="", help=argparse.SUPPRESS)
    parser.add_argument("--unix-path", default="", help=argparse.SUPPRESS)
    parser.add_argument("--pair-fd", type=int, default=-1, help=argparse.SUPPRESS)
    parser.add_argument("--parent-netns", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        if args.pair_fd >= 0 and args.pair_fd != 3:
            os.dup2(args.pair_fd, 3)  # "stream N 3" writes to the inherited socketpair
        worker_main(args)
        return 0
    outside = Outside()
    result: dict[str, Any] = {
        "python": sys.executable,
        "uid": os.getuid(),
        "kernel": platform.release(),
        "arch": platform.machine(),
        "policy": args.policy,
        "sysctls": {
            n: _sysctl(n)
            for n in (
                "user.max_user_namespaces",
                "kernel.unprivileged_userns_clone",
                "kernel.apparmor_restrict_unprivileged_userns",
            )
        },
        "configs": {},
    }
    configs = [("self", "both"), ("self", "netns"), ("self", "seccomp"), ("preexec", "both")]
    for where, layers in configs:
        print(f"[seal] checks: seal in {where}, layers {layers}", file=sys.stderr)
        worker = start_worker(args, outside, where, layers, checks=True, models=False)
        stop(worker)
        result["configs"][f"{where}/{layers}"] = worker.report
    if not args.quick:
        print("[seal] models under the seal", file=sys.stderr)
        worker = start_worker(args, outside, "self", "both", checks=False, models=True)
        stop(worker)
        result["models_sealed"] = worker.report
        result["thread_demo"] = thread_demo()
        print("[seal] timing start-ups", file=sys.stderr)
        timing: dict[str, Any] = {}
        kinds = (
            ("plain interpreter, no seal", "none", "none", False),
            ("sealed interpreter (self)", "self", "both", False),
            ("sealed interpreter (preexec)", "preexec", "both", False),
            ("plain + load both tiny models", "none", "none", True),
            ("sealed (self) + load both tiny models", "self", "both", True),
            ("sealed (preexec) + load both tiny models", "preexec", "both", True),
        )
        samples: dict[str, list[float]] = {k[0]: [] for k in kinds}
        seal_ms: dict[str, list[float]] = {k[0]: [] for k in kinds}
        rss: dict[str, list[float]] = {k[0]: [] for k in kinds}
        for _ in range(args.runs):  # interleaved, so that drift in machine load hits all alike
            for label, where, layers, models in kinds:
                worker = start_worker(args, outside, where, layers, checks=False, models=models)
                stop(worker)
                samples[label].append(worker.ready_ms)
                seal_ms[label].append(worker.report.get("layers", {}).get("seal_ms", 0.0))
                rss[label].append(worker.report.get("max_rss_mib", 0.0))
        for label, values in samples.items():
            timing[label] = {
                "median_ms": round(statistics.median(values), 1),
                "min_ms": round(min(values), 1),
                "max_ms": round(max(values), 1),
                "seal_ms_median": round(statistics.median(seal_ms[label]), 2),
                "max_rss_mib": round(statistics.median(rss[label]), 1),
            }
        result["startup"] = timing
        print("[seal] timing the stream", file=sys.stderr)
        stream: dict[str, Any] = {}
        for label, where, layers in (("plain", "none", "none"), ("sealed", "self", "both")):
            worker = start_worker(args, outside, where, layers, checks=False, models=False)
            stream_cost(worker, 1000, False)  # warm-up
            for over_pair in (False, True):
                per = [stream_cost(worker, args.messages, over_pair) for _ in range(3)]
                key = f"{label}, {'socketpair' if over_pair else 'stdout pipe'}"
                stream[key] = round(statistics.median(per), 2)
            stop(worker)
        result["stream_us_per_message"] = stream
    if args.json:
        json.dump(result, sys.stdout, indent=1)
        print()
    else:
        print_report(result)
    return 0


def print_report(result: dict[str, Any]) -> None:
    print(
        f"uid {result['uid']}, kernel {result['kernel']} {result['arch']}, policy {result['policy']}, "
        f"sysctls {result['sysctls']}"
    )
    keys = [
        "interfaces",
        "sys_class_net",
        "lo_up",
        "ipv6_routes_off_lo",
        "ipv4_routes",
        "socket_af_inet",
        "tcp_to_outside_loopback_listener",
        "libc_tcp_192.0.2.1:53",
        "libc_tcp_8.8.8.8:53",
        "libc_udp_8.8.8.8:53",
        "dns_example.com",
        "abstract_unix_outside",
        "path_unix_outside",
        "socketpair",
        "io_uring_setup",
        "getpass.getuser",
        "resolve_localhost",
        "grandchild_socket_af_inet",
        "grandchild_interfaces",
        "no_new_privs",
        "uid_inside",
    ]
    for name, report in result["configs"].items():
        layers = report.get("layers", {})
        print(f"\n== {name}: " + ", ".join(f"{k}={v}" for k, v in layers.items()))
        print(f"   verified by the kernel: {report.get('verified')}")
        checks = report.get("checks", {})
        if "error" in report:
            print(f"   {report['error']}")
        for key in keys:
            if key in checks:
                print(f"   {key:36} {checks[key]}")
        if "outbound" in checks:
            print(f"   {'outbound':36} {checks['outbound']}")
    if "models_sealed" in result:
        print(f"\nmodels under the seal: {result['models_sealed'].get('models')}")
        print(f"threads: {result['thread_demo']}")
        print("\nstart-up (Popen -> 'ready' line), ms:")
        for label, t in result["startup"].items():
            print(
                f"   {label:44} median {t['median_ms']:8.1f}  [{t['min_ms']}-{t['max_ms']}]  "
                f"seal {t['seal_ms_median']}  rss {t['max_rss_mib']} MiB"
            )
        print("\nstreaming, µs per JSON message child -> parent (flush each):")
        for label, us in result["stream_us_per_message"].items():
            print(f"   {label:36} {us}")


if __name__ == "__main__":
    sys.exit(main())
