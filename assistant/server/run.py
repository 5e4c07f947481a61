"""Running the API on uvicorn: in the foreground for ``enclave serve``, or in a thread
(:class:`BackgroundServer`) for tests and benchmarks, always on a socket bound here first
(so port 0 gives a free port whose number is known before the first request)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass, replace
from types import TracebackType

import uvicorn

from assistant.app.access import Binding, ServerToken, TokenKeeper, binding
from assistant.app.serving import ModelServer
from assistant.core.errors import EnclaveError
from assistant.core.settings import Settings
from assistant.server.app import create_app

log = logging.getLogger(__name__)

#: Seconds running answers get to finish on Ctrl-C before they are cut.
GRACEFUL_SHUTDOWN_S = 5


@dataclass
class Prepared:
    """Everything a server needs, ready before it starts listening."""

    where: Binding
    keeper: TokenKeeper
    models: ModelServer
    server: uvicorn.Server
    sock: socket.socket

    closed: bool = False

    @property
    def token(self) -> ServerToken:
        return self.keeper.token

    def close(self) -> None:
        """Stop listening and release the models (once)."""
        if not self.closed:
            self.closed = True
            self.sock.close()
            self.models.close()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named explicitly: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose
    # proto says TCP, and accepted sockets inherit the listener's. With proto 0 the first chunk
    # after the headers waited for the client's delayed ACK: +40-54 ms on every streamed TTFT.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise EnclaveError(
            f"Cannot listen on {host}:{port}: {exc.strerror or exc}.",
            "Another program may hold the port: pick another with --port N (0 picks a free one).",
        ) from exc
    sock.listen(128)
    return sock


def prepare(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int | None = None,
    *,
    understood: bool = False,
    models: ModelServer | None = None,
) -> Prepared:
    """Check where to listen, load (or create) the token, bind the socket, build the app."""
    where = binding(host, settings.serve_port if port is None else port, understood=understood)
    keeper = TokenKeeper(settings)
    sock = _bind(where.host, where.port)
    where = replace(where, port=int(sock.getsockname()[1]))
    model_server = models or ModelServer(settings)
    try:
        app = create_app(model_server, keeper, where)
    except BaseException:
        sock.close()
        raise
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        # Not behind a proxy: X-Forwarded-* from a client must not change who it appears to be.
        proxy_headers=False,
        server_header=False,
        lifespan="off",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    model_server.started(where, keeper.token, token_created=keeper.created)
    return Prepared(where, keeper, model_server, uvicorn.Server(config), sock)


def serve(prepared: Prepared) -> None:
    """Serve in this thread until Ctrl-C or SIGTERM; then stop the models."""
    try:
        prepared.server.run(sockets=[prepared.sock])
    finally:
        prepared.close()


class BackgroundServer:
    """The API in a thread of this process, on an ephemeral loopback port (tests, benchmarks)."""

    def __init__(self, settings: Settings, *, models: ModelServer | None = None) -> None:
        self.prepared = prepare(settings, "127.0.0.1", 0, models=models)
        self._thread = threading.Thread(target=self._run, name="enclave-serve", daemon=True)

    def _run(self) -> None:
        self.prepared.server.run(sockets=[self.prepared.sock])

    @property
    def base_url(self) -> str:
        return self.prepared.where.base_url

    @property
    def token(self) -> str:
        return self.prepared.keeper.current().secret

    @property
    def models(self) -> ModelServer:
        return self.prepared.models

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.prepared.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise EnclaveError("The API server did not start.", "Run with ENCLAVE_LOG=debug for the details.")
            time.sleep(0.01)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.prepared.server.should_exit = True
        self._thread.join(timeout=GRACEFUL_SHUTDOWN_S + 5)
        self.prepared.close()
