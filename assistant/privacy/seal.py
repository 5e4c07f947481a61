"""The seal: a worker process that no library inside can take onto the network.

Native ML code (the engines, document parsing, the embedder) runs in a worker that
Enclave starts as ``python -S assistant/privacy/seal.py SERVICE``. This file is that
worker's first code: before ``site`` runs, before any thread exists and before any
native library is loaded, it seals the process, layer by layer, each layer on its own
so that a refusal names the step:

1. **user namespace** (``unshare(CLONE_NEWUSER)``, ``setgroups`` = deny, an identity
   uid/gid map: files the worker writes stay the user's), then
2. **network namespace** (``unshare(CLONE_NEWNET)``): the only interface is ``lo``,
   down, and there is no route, whatever a library tries;
3. **seccomp** with ``no_new_privs``, installed with ``TSYNC`` (every thread):
   ``socket()`` fails with ``EACCES`` for every family but ``AF_NETLINK`` (policy
   ``strict``: no ``AF_UNIX`` either, because a path-named host socket such as nscd or
   systemd-resolved would resolve names on the worker's behalf); ``io_uring_setup`` fails
   with ``ENOSYS`` (an io_uring socket op would bypass the filter); a foreign ABI
   (``int 0x80``, x32) kills the process. ``socketpair()`` stays allowed. Needs no
   privilege anywhere, so it holds where distributions refuse namespaces (Docker's
   default profile: ``EPERM``; ``user.max_user_namespaces=0``: ``ENOSPC``; AppArmor on
   Ubuntu >= 23.10: refused at the map write or at ``CLONE_NEWNET``).

Why a fresh interpreter and not ``preexec_fn``: ``preexec_fn`` runs Python in a forked
child of a threaded parent (the TUI), which can deadlock, and ``unshare(CLONE_NEWUSER)``
fails with ``EINVAL`` once a second thread exists. Measured (docs/privacy.md): the seal
itself takes ~1 ms; start-up to "ready" is the interpreter's ~100-220 ms either way.

What took effect is read back from the kernel (:func:`kernel_view`: ``/proc/self/status``
``Seccomp: 2`` and ``NoNewPrivs: 1``, ``/proc/net/dev`` only ``lo``, empty
``/proc/net/route``) and never trusted from the sealing code. Not ``/sys/class/net``: sysfs
shows the namespace it was mounted in (the host's), measured.

This module is stdlib-only and thread-free until the service starts.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000
_LD_ABS_W = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_RET_K = 0x06  # BPF_RET | BPF_K
#: Per machine: AUDIT_ARCH_*, __NR_socket, __NR_io_uring_setup, __NR_seccomp. aarch64 uses
#: the asm-generic numbers (from the kernel headers; not run here, this machine is x86_64).
#: i386 and 32-bit ARM multiplex sockets through socketcall(2): no filter there.
ARCHES: dict[str, tuple[int, int, int, int]] = {
    "x86_64": (0xC000003E, 41, 425, 317),
    "aarch64": (0xC00000B7, 198, 425, 277),
}
_NR_UNSHARE = {"x86_64": 272, "aarch64": 97}
#: Test-only, read by the worker before it seals: with ``1``, ``unshare`` is refused with
#: EPERM first (a seccomp filter, as Docker's default profile does), so that tests see
#: how Enclave reports a system that refuses namespaces. The real code path runs.
REFUSE_USERNS_ENV = "ENCLAVE_TEST_REFUSE_USERNS"
#: socket() families the worker may still create, per policy.
POLICIES: dict[str, tuple[int, ...]] = {
    "strict": (socket.AF_NETLINK,),
    "inet": (socket.AF_UNIX, socket.AF_NETLINK),
    "refuse-unshare": (),
}

LayerName = Literal["user namespace", "network namespace", "seccomp"]
LayerState = Literal["active", "refused", "off"]


@dataclass(frozen=True)
class Layer:
    """One layer of the seal, as the kernel reports it in the worker."""

    name: LayerName
    state: LayerState
    detail: str


@dataclass(frozen=True)
class KernelView:
    """What ``/proc`` says about the worker (read inside it, after sealing)."""

    seccomp_mode: int  # /proc/self/status Seccomp: 2 is a filter
    no_new_privs: bool
    netns: str  # /proc/self/ns/net, e.g. "net:[4026532211]"
    netns_new: bool  # differs from the front end's
    uid_map: str
    interfaces: tuple[str, ...]  # /proc/net/dev
    ipv4_routes: int  # entries of /proc/net/route
    ipv6_routes_off_lo: int  # entries of /proc/net/ipv6_route not on lo

    @property
    def only_loopback(self) -> bool:
        return self.interfaces == ("lo",) and self.ipv4_routes == 0 and self.ipv6_routes_off_lo == 0


@dataclass(frozen=True)
class Isolation:
    """Which layers hold around a sealed worker; sent by the worker when it is ready."""

    service: str
    pid: int
    policy: str
    layers: tuple[Layer, ...]
    view: KernelView
    seal_ms: float
    #: Offline switches not set in the worker's environment (empty when all hold).
    switches_missing: tuple[str, ...]
    #: Runtimes already imported when the switches were applied (empty by construction).
    runtimes_before_switches: tuple[str, ...]

    def layer(self, name: LayerName) -> Layer:
        return next(layer for layer in self.layers if layer.name == name)

    @property
    def network_sealed(self) -> bool:
        """The worker has its own network namespace with only ``lo`` and no route."""
        return self.layer("network namespace").state == "active"

    @property
    def seccomp_active(self) -> bool:
        return self.layer("seccomp").state == "active"

    @property
    def sealed(self) -> bool:
        """Every layer holds."""
        return all(layer.state == "active" for layer in self.layers)

    @property
    def warning(self) -> str | None:
        """One plain line when the network namespace did not take effect, else ``None``."""
        if self.network_sealed:
            return None
        netns = self.layer("network namespace")
        userns = self.layer("user namespace")
        why = userns.detail if userns.state != "active" else netns.detail
        others = "seccomp (no inet sockets)" if self.seccomp_active else "no seccomp either"
        return (
            f"privacy: this system refused Enclave's model process its own network namespace ({why}); "
            f"the other layers hold: {others}, the telemetry switches, the Python guard. "
            "`enclave doctor --privacy` has the details."
        )

    def summary(self) -> dict[str, Any]:
        """The state as a flat record (the audit log's ``privacy_state`` entry)."""
        return {
            "service": self.service,
            "policy": self.policy,
            **{layer.name.replace(" ", "_"): layer.state for layer in self.layers},
            "interfaces": list(self.view.interfaces),
            "switches_missing": list(self.switches_missing),
        }


# --------------------------------------------------------------------------- the seal
class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _libc() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def _errname(code: int) -> str:
    return errno.errorcode.get(code, str(code))


def bpf_program(policy: str, machine: str) -> list[tuple[int, int, int, int]]:
    """The filter as (code, jt, jf, k) instructions: 13 for ``strict`` on x86_64."""
    audit_arch, nr_socket, nr_io_uring, _ = ARCHES[machine]
    allowed = POLICIES[policy]
    # (label,) marks a place; (code, k, jt, jf) jumps to labels or by offsets.
    if policy == "refuse-unshare":  # the test-only filter of REFUSE_USERNS_ENV
        return _assemble(
            [
                (_LD_ABS_W, 0, 0, 0),
                (_JEQ_K, _NR_UNSHARE[machine], 0, "allow"),
                (_RET_K, SECCOMP_RET_ERRNO | errno.EPERM, 0, 0),
                ("allow",),
                (_RET_K, SECCOMP_RET_ALLOW, 0, 0),
            ]
        )
    program: list[tuple[Any, ...]] = [
        (_LD_ABS_W, 4, 0, 0),  # seccomp_data.arch
        (_JEQ_K, audit_arch, 0, "kill"),
        (_LD_ABS_W, 0, 0, 0),  # seccomp_data.nr
    ]
    if machine == "x86_64":
        program.append((_JGE_K, 0x40000000, "kill", 0))  # the x32 ABI
    program += [
        (_JEQ_K, nr_socket, "socket", 0),
        (_JEQ_K, nr_io_uring, "enosys", 0),
        (_RET_K, SECCOMP_RET_ALLOW, 0, 0),
        ("socket",),
        (_LD_ABS_W, 16, 0, 0),  # args[0], low 32 bits (little-endian): the family
        *[(_JEQ_K, family, "allow", 0) for family in allowed],
        (_RET_K, SECCOMP_RET_ERRNO | errno.EACCES, 0, 0),
        ("allow",),
        (_RET_K, SECCOMP_RET_ALLOW, 0, 0),
        ("enosys",),
        (_RET_K, SECCOMP_RET_ERRNO | errno.ENOSYS, 0, 0),
        ("kill",),
        (_RET_K, SECCOMP_RET_KILL_PROCESS, 0, 0),
    ]
    return _assemble(program)


def _assemble(program: list[tuple[Any, ...]]) -> list[tuple[int, int, int, int]]:
    """Resolve labels: ``(label,)`` marks a place; ``(code, k, jt, jf)`` jumps to a label or by an offset."""
    labels: dict[str, int] = {}
    pc = 0
    for item in program:
        if len(item) == 1:
            labels[item[0]] = pc
        else:
            pc += 1
    out: list[tuple[int, int, int, int]] = []
    for item in program:
        if len(item) == 1:
            continue
        code, k, jt, jf = item
        here = len(out)
        jt_off = labels[jt] - here - 1 if isinstance(jt, str) else jt
        jf_off = labels[jf] - here - 1 if isinstance(jf, str) else jf
        out.append((code, jt_off, jf_off, k))
    return out


def install_seccomp(policy: str = "strict") -> str:
    """Install the filter on every thread of this process: "" when done, else why not."""
    machine = platform.machine()
    if machine not in ARCHES:
        return f"not supported on {machine} (socketcall multiplexing on 32-bit ABIs)"
    code = bpf_program(policy, machine)
    filters = (_SockFilter * len(code))(*[_SockFilter(c, jt, jf, k) for c, jt, jf, k in code])
    prog = _SockFprog(len(code), filters)
    libc = _libc()
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return f"prctl(PR_SET_NO_NEW_PRIVS): {_errname(ctypes.get_errno())}"
    nr_seccomp = ARCHES[machine][3]
    flags = SECCOMP_FILTER_FLAG_TSYNC
    if libc.syscall(ctypes.c_long(nr_seccomp), SECCOMP_SET_MODE_FILTER, flags, ctypes.byref(prog)) != 0:
        return f"seccomp(SET_MODE_FILTER, TSYNC): {_errname(ctypes.get_errno())}"
    return ""


def _sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", *name.split(".")).read_text().strip()
    except OSError:
        return None


def refusal_reason(step: str, code: int) -> str:
    """Why the kernel refused ``step``, in the user's words (sysctls are read only to explain)."""
    apparmor = _sysctl("kernel.apparmor_restrict_unprivileged_userns")
    clone = _sysctl("kernel.unprivileged_userns_clone")
    limit = _sysctl("user.max_user_namespaces")
    where = f"{step}: {_errname(code)}"
    if code == errno.EINVAL and "NEWUSER" in step:
        return f"{where}, the process already runs threads"
    if code == errno.ENOSPC or limit == "0":
        return f"{where}, user.max_user_namespaces is {limit}"
    if clone == "0":
        return f"{where}, kernel.unprivileged_userns_clone is 0"
    if apparmor == "1":
        return (
            f"{where}, AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns=1)"
        )
    if code == errno.EPERM:
        return f"{where}, refused by a seccomp profile or a security module (inside a container?)"
    return where


def _write_once(path: str, text: str) -> int:
    """One write(2) (the kernel takes a uid/gid map in a single write); 0 or the errno."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError as exc:
        return exc.errno or errno.EIO
    try:
        os.write(fd, text.encode())
    except OSError as exc:
        return exc.errno or errno.EIO
    finally:
        os.close(fd)
    return 0


def enter_namespaces() -> dict[str, str]:
    """User namespace (identity map), then network namespace: what each step reported."""
    libc = _libc()
    uid, gid = os.geteuid(), os.getegid()
    out = {"user namespace": "", "network namespace": ""}
    if libc.unshare(CLONE_NEWUSER) != 0:
        out["user namespace"] = refusal_reason("unshare(CLONE_NEWUSER)", ctypes.get_errno())
        out["network namespace"] = "needs the user namespace"
        return out
    for path, text in (
        ("/proc/self/setgroups", "deny"),
        ("/proc/self/uid_map", f"{uid} {uid} 1\n"),
        ("/proc/self/gid_map", f"{gid} {gid} 1\n"),
    ):
        code = _write_once(path, text)
        if code and not (path.endswith("setgroups") and code == errno.ENOENT):
            out["user namespace"] = refusal_reason(f"write {path}", code)
            out["network namespace"] = "needs the user namespace"
            return out
    if libc.unshare(CLONE_NEWNET) != 0:
        out["network namespace"] = refusal_reason("unshare(CLONE_NEWNET)", ctypes.get_errno())
    return out


def seal(policy: str = "strict") -> tuple[dict[str, str], float]:
    """Apply every layer to this single-threaded process: each layer's refusal ("" when
    it went through), and the milliseconds it took. Linux only: elsewhere every layer is
    reported as not supported and the worker still runs (crash containment holds)."""
    started = time.perf_counter()
    if not sys.platform.startswith("linux"):
        missing = f"not supported on {sys.platform}"
        return dict.fromkeys(("user namespace", "network namespace", "seccomp"), missing), 0.0
    attempts = enter_namespaces()
    attempts["seccomp"] = install_seccomp(policy)
    return attempts, (time.perf_counter() - started) * 1000


# --------------------------------------------------------------------------- the kernel's view
def _status() -> dict[str, str]:
    lines = Path("/proc/self/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def interfaces() -> tuple[str, ...]:
    """Interfaces of this process's network namespace (``/proc/net/dev``)."""
    lines = Path("/proc/net/dev").read_text().splitlines()[2:]
    return tuple(sorted(line.split(":", 1)[0].strip() for line in lines))


def routes() -> tuple[int, int]:
    """IPv4 routes, and IPv6 routes not on ``lo``, of this process's namespace."""
    ipv4 = len(Path("/proc/net/route").read_text().splitlines()[1:])
    try:
        lines = Path("/proc/net/ipv6_route").read_text().splitlines()
    except OSError:  # IPv6 disabled
        lines = []
    return ipv4, sum(1 for line in lines if line.split() and line.split()[-1] != "lo")


def kernel_view(parent_netns: str = "") -> KernelView:
    """This process as the kernel reports it (empty figures where there is no ``/proc``)."""
    if not Path("/proc/self/status").exists():
        return KernelView(0, False, "", False, "", ("unknown",), -1, -1)
    status = _status()
    netns = os.readlink("/proc/self/ns/net")
    ipv4, ipv6 = routes()
    try:
        uid_map = " ".join(Path("/proc/self/uid_map").read_text().split())
    except OSError:
        uid_map = ""
    return KernelView(
        seccomp_mode=int(status.get("Seccomp", "0") or 0),
        no_new_privs=status.get("NoNewPrivs", "0") == "1",
        netns=netns,
        netns_new=bool(parent_netns) and netns != parent_netns,
        uid_map=uid_map,
        interfaces=interfaces(),
        ipv4_routes=ipv4,
        ipv6_routes_off_lo=ipv6,
    )


def layers_from(attempts: dict[str, str], view: KernelView, policy: str) -> tuple[Layer, ...]:
    """Each layer's state: active only when the kernel's view confirms it."""
    userns_ok = not attempts["user namespace"] and view.uid_map != "0 0 4294967295"
    net_ok = view.netns_new and view.only_loopback
    seccomp_ok = view.seccomp_mode == 2 and view.no_new_privs
    families = "AF_NETLINK" if policy == "strict" else "AF_UNIX and AF_NETLINK"
    return (
        Layer(
            "user namespace",
            "active" if userns_ok else "refused",
            f"uid map {view.uid_map}" if userns_ok else attempts["user namespace"] or f"uid map {view.uid_map}",
        ),
        Layer(
            "network namespace",
            "active" if net_ok else "refused",
            f"{view.netns}: only lo, no IPv4 route, no IPv6 route off lo"
            if net_ok
            else attempts["network namespace"] or f"interfaces {', '.join(view.interfaces)} (not a private namespace)",
        ),
        Layer(
            "seccomp",
            "active" if seccomp_ok else "refused",
            f"filter mode 2, no_new_privs: socket() refused except {families}; io_uring refused"
            if seccomp_ok
            else attempts["seccomp"] or f"Seccomp: {view.seccomp_mode}",
        ),
    )


# --------------------------------------------------------------------------- self-test
@dataclass(frozen=True)
class Check:
    """One self-test result."""

    name: str
    ok: bool
    detail: str


def _libc_connect(libc: Any, family: int, host: str, port: int) -> str:
    """socket() + connect() through libc, as native code does it (Python's socket unused)."""
    fd = libc.socket(family, socket.SOCK_STREAM, 0)
    if fd < 0:
        return f"blocked at socket(): {_errname(ctypes.get_errno())}"
    address = struct.pack("=H", family) + struct.pack("!H4s8x", port, socket.inet_aton(host))
    rc = libc.connect(fd, ctypes.c_char_p(address), len(address))
    code = ctypes.get_errno()
    libc.close(fd)
    return "CONNECTED" if rc == 0 else f"blocked at connect(): {_errname(code)}"


def self_test(port: int) -> list[Check]:
    """What the worker can see and reach, checked from inside; sends no packet anywhere.

    ``port`` is a loopback TCP port a listener outside the worker holds: the worker must
    not reach it (its ``lo`` is its own, and down). The outbound attempts are made only
    once a layer is verified, so that on an unsealed machine the test sends nothing.
    """
    out: list[Check] = []
    view = kernel_view()
    out.append(
        Check("only lo in the worker", view.interfaces == ("lo",), f"/proc/net/dev: {', '.join(view.interfaces)}")
    )
    out.append(Check("no IPv4 route", view.ipv4_routes == 0, f"/proc/net/route: {view.ipv4_routes} entries"))
    out.append(
        Check(
            "no IPv6 route off lo",
            view.ipv6_routes_off_lo == 0,
            f"/proc/net/ipv6_route: {view.ipv6_routes_off_lo} entries off lo",
        )
    )
    for family, label in ((socket.AF_INET, "AF_INET"), (socket.AF_INET6, "AF_INET6")):
        try:
            socket.socket(family, socket.SOCK_DGRAM).close()
            out.append(Check(f"socket({label}) refused", False, "a socket was created"))
        except OSError as exc:
            out.append(Check(f"socket({label}) refused", True, _errname(exc.errno or 0)))
    sealed = view.only_loopback or any(c.ok for c in out if c.name.startswith("socket("))
    if not sealed:
        out.append(Check("connect from the worker fails", False, "not attempted: no layer holds, it could leave"))
        return out
    libc = _libc()
    result = _libc_connect(libc, socket.AF_INET, "127.0.0.1", port)
    out.append(
        Check(
            "connect to a loopback listener outside the worker fails",
            not result.startswith("CONNECTED"),
            f"127.0.0.1:{port}: {result}",
        )
    )
    result = _libc_connect(libc, socket.AF_INET, "192.0.2.1", 53)
    out.append(Check("libc connect to 192.0.2.1:53 fails", not result.startswith("CONNECTED"), result))
    try:
        socket.getaddrinfo("example.com", 443)
        out.append(Check("DNS look-up fails", False, "example.com resolved"))
    except OSError as exc:
        out.append(Check("DNS look-up fails", True, f"{type(exc).__name__}: {exc}"[:80]))
    return out


# --------------------------------------------------------------------------- the worker's start
#: The services a sealed worker can run: a closed list, each a module with ``serve``.
SERVICES: dict[str, str] = {
    "probe": "assistant.privacy.worker",
    "engine": "assistant.engines.worker",
    "embed": "assistant.retrieval.embed",
    "parse": "assistant.retrieval.worker",
}


def _arguments(argv: list[str]) -> dict[str, str]:
    if not argv or argv[0] not in SERVICES:
        raise SystemExit(f"usage: seal.py {{{','.join(SERVICES)}}} [--key value ...]")
    args = {"service": argv[0]}
    for key, value in zip(argv[1::2], argv[2::2], strict=False):
        args[key.removeprefix("--")] = value
    return args


def main(argv: list[str]) -> None:
    """The worker: seal, then move the pipe off fds 0/1, then ``site``, then the service."""
    args = _arguments(argv)
    # The front end decides what Ctrl-C means (cancel the turn); it never reaches here by
    # design (a session of its own), and is ignored if it does.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    policy = args.get("policy", "strict")
    if args.get("seal", "on") == "off":  # scripts/bench_seal.py measures the pipe without the seal
        attempts = {"user namespace": "not asked", "network namespace": "not asked", "seccomp": "not asked"}
        seal_ms = 0.0
    else:
        if os.environ.get(REFUSE_USERNS_ENV) == "1":
            install_seccomp("refuse-unshare")
        attempts, seal_ms = seal(policy)
    # The protocol gets its own descriptors; fd 1 becomes stderr, so a native library
    # that prints cannot corrupt a frame, and fd 0 reads nothing.
    proto_in, proto_out = os.dup(0), os.dup(1)
    os.dup2(2, 1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    memory_mb = int(args.get("memory-mb", "0"))
    if memory_mb > 0:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory_mb * 2**20, memory_mb * 2**20))
    import site  # started with -S: site-packages and .pth files only now, behind the seal

    site.main()
    root = str(Path(__file__).resolve().parents[2])  # holds the `assistant` package
    sys.path[:] = [root, *[p for p in sys.path if p not in (root, str(Path(__file__).resolve().parent))]]
    # The records must be this module's classes as the package knows them, not __main__'s.
    from assistant.privacy import seal as canonical

    canonical.serve(args, attempts, seal_ms, proto_in, proto_out)


def serve(args: dict[str, str], attempts: dict[str, str], seal_ms: float, proto_in: int, proto_out: int) -> None:
    """The rest of the worker's start, once ``site`` ran: switches, sandbox, report, service."""
    from assistant.privacy import offline  # importing `assistant` applied the switches already

    offline.apply()
    policy = args.get("policy", "strict")
    sandbox = args.get("home")
    if sandbox:
        # A library that writes to ~/.cache or $TMPDIR writes inside Enclave's own folder.
        for name, sub in (("HOME", "home"), ("TMPDIR", "tmp")):
            path = Path(sandbox, sub)
            path.mkdir(parents=True, exist_ok=True)
            os.environ[name] = str(path)
        for name in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME"):
            os.environ.pop(name, None)
    view = kernel_view(args.get("parent-netns", ""))
    isolation = Isolation(
        service=args["service"],
        pid=os.getpid(),
        policy=policy,
        layers=layers_from(attempts, view, policy),
        view=view,
        seal_ms=round(seal_ms, 3),
        switches_missing=tuple(offline.missing()),
        runtimes_before_switches=tuple(name for name, late in offline.LATE.items() if late),
    )
    from assistant.privacy.worker import Server

    server = Server(os.fdopen(proto_in, "rb"), os.fdopen(proto_out, "wb"), isolation)
    module = __import__(SERVICES[args["service"]], fromlist=["serve"])
    module.serve(server)


if __name__ == "__main__":
    main(sys.argv[1:])
