"""The ASGI server under `smm-gateway serve`: uvicorn (the default) or granian.

`gateway.server` in the config chooses; `serve --server` wins over it. Both serve
the app of `gateway.ops.factory.app_factory` over HTTP/1.1 on uvloop, with its lifespan,
without their own access log (the gateway's is the `gateway.access` logger), and
answer SIGHUP with a live config reload (`gateway.edge.reload`), SIGTERM and
SIGINT with a graceful shutdown: no new connection is taken, requests in flight get
`GRACE_S` to finish (those left are then cancelled), then the app's lifespan
shutdown runs (Redis closed, the journal flushed).

uvicorn: the httptools protocol with the gateway's read timeouts
(`gateway.edge.timeouts`: `header_timeout_s` and `body_timeout_s`, a `408` JSON
answer and a warning line, new values on a reload); `--workers N` under
`gateway.ops.workers.Supervisor`.

granian (a Rust HTTP server): one worker is served in this process (granian's
embedded server); `--workers N` are granian's own worker processes under
`GranianSupervisor` (granian's, with SIGHUP relayed to the workers as a live
reload instead of granian's rolling restart, and the bounded shutdown above). What
differs from uvicorn:

- The head timeout is granian's own (`header_read_timeout`, from
  `gateway.header_timeout_s` at start): a client too slow is
  disconnected without an answer or a log line, and a reload does not change it.
- There is no body timeout: granian has no equivalent that we know of, so
  `gateway.body_timeout_s` is not applied (a client sending its body slowly holds
  its request until it is done, or until a shutdown cancels it).
- granian waits for requests in flight at shutdown without a limit of its own; the
  app is wrapped (`Tracked`) to cancel those left after `GRACE_S`, as uvicorn does.
- Backlog `BACKLOG`, as uvicorn's; at most `BACKLOG / workers` requests at once per
  worker (granian's backpressure; `gateway.max_in_flight` still applies below it).
- granian binds the port itself (each worker its own socket, on Linux): `listen()`
  checks the address first and lets it go just before granian takes it.

The address: `listen()` binds it before anything else starts (the embedded Redis,
the workers); an address it cannot take is `CannotListen`, one line naming it and
the option to change. A port in use is tried again for `BIND_WAIT_S`: the workers
of a serve killed a moment ago hold it for up to a second
(`gateway.ops.workers.end_with`). `serve` announces itself once the socket
listens (granian: once it has bound the port).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, MutableMapping
from multiprocessing.connection import wait
from typing import Any

from granian.constants import HTTPModes, Interfaces, Loops
from granian.errors import FatalError
from granian.http import HTTP1Settings
from granian.log import LogLevels
from granian.server.mp import MPServer

from gateway.config import Settings
from gateway.edge.reload import ENV_SUPERVISOR

log = logging.getLogger("gateway.server")

APP = "gateway.ops.factory:app_factory"
GRACE_S = 10.0  # SIGTERM: requests in flight get this long, then are cancelled
KILL_S = 10.0  # granian workers: after the grace, this long to exit, then killed
BACKLOG = 2048  # uvicorn's default
BIND_WAIT_S = 3.0  # a port in use: tried again this long (a killed serve's workers end)
CANCEL = signal.SIGUSR2  # to a granian worker: cancel the requests still in flight
# granian's own lines go to the root logger: JSON on stderr, as the gateway's
GRANIAN_LOGGING: dict[str, Any] = {"handlers": {}, "loggers": {
    "_granian": {"handlers": [], "propagate": True},
    "granian.access": {"handlers": [], "propagate": True}}}

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class CannotListen(Exception):
    """`serve` cannot listen on its address; the message names it and what to change."""


def listen(host: str, port: int, wait_s: float = BIND_WAIT_S) -> socket.socket:
    """A socket listening on `host:port`, bound as uvicorn binds (SO_REUSEADDR); a port
    in use is tried again for `wait_s`. `CannotListen` when it cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + wait_s
    while True:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(BACKLOG)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE and time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            raise CannotListen(_why(host, port, exc)) from exc
        sock.set_inheritable(True)
        return sock


def _why(host: str, port: int, exc: OSError) -> str:
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return (f"serve: {where} is already in use by another process: stop it, or choose "
                f"another port with --port")
    if exc.errno == errno.EACCES:
        return (f"serve: cannot listen on {where}: permission denied (ports below 1024 "
                f"need privileges): choose another port with --port")
    if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
        return (f"serve: cannot listen on {where}: {exc.strerror or exc}: choose another "
                f"address with --host")
    return f"serve: cannot listen on {where}: {exc.strerror or exc}"


def run(server: str, settings: Settings, sock: socket.socket, workers: int,
        config_path: str, announce: Callable[[], None]) -> None:
    """Serve on `sock` (from `listen`) until SIGTERM/SIGINT; `config_path`: the file a
    SIGHUP reloads; `announce()` once the server listens."""
    if workers > 1:
        os.environ[ENV_SUPERVISOR] = str(os.getpid())  # a reload over HTTP asks it
        from gateway.ops import logs

        logs.setup(settings.gateway.log_level)
    if server == "granian":
        host, port = sock.getsockname()[:2]
        sock.close()  # granian binds the address itself
        run_granian(settings, host, port, workers, config_path, announce)
    else:
        run_uvicorn(sock, workers, config_path, announce)


# --- uvicorn -----------------------------------------------------------------------

WORKER_APP = "gateway.ops.workers:worker_factory"  # APP, in a worker that ends with us


def uvicorn_options(host: str, port: int) -> dict[str, Any]:
    """`host` and `port` name the socket in uvicorn's lines; it is bound by `listen`."""
    from gateway.edge.timeouts import TimedHttpToolsProtocol

    return dict(factory=True, host=host, port=port, loop="uvloop", http=TimedHttpToolsProtocol,
                backlog=BACKLOG, lifespan="on", access_log=False, log_config=None,
                proxy_headers=False, server_header=False,
                timeout_graceful_shutdown=int(GRACE_S))


def run_uvicorn(sock: socket.socket, workers: int, config_path: str,
                announce: Callable[[], None]) -> None:
    import uvicorn

    from gateway.ops.workers import Supervisor

    options = uvicorn_options(*sock.getsockname()[:2])
    announce()  # the socket listens: connections wait in its backlog until the app is up
    if workers <= 1:
        server = uvicorn.Server(uvicorn.Config(APP, **options))
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:
            pass
        if not server.started:
            raise SystemExit(3)  # uvicorn's exit when the app does not start
        return
    # SIGHUP: a live reload of every worker, not uvicorn's rolling restart
    config = uvicorn.Config(WORKER_APP, workers=workers, **options)
    Supervisor(config, config_path, sock).run()


# --- granian -----------------------------------------------------------------------

def granian_options(settings: Settings, host: str, port: int) -> dict[str, Any]:
    """What the embedded server and the multi-process one share."""
    head_ms = max(1, round(settings.gateway.header_timeout_s * 1000))  # > 0: checked
    return dict(address=host, port=port, interface=Interfaces.ASGI, http=HTTPModes.http1,
                websockets=False, backlog=BACKLOG, log_access=False,
                log_level=LogLevels.notset, log_dictconfig=GRANIAN_LOGGING,
                http1_settings=HTTP1Settings(header_read_timeout=head_ms, keep_alive=True))


def run_granian(settings: Settings, host: str, port: int, workers: int,
                config_path: str, announce: Callable[[], None]) -> None:
    from gateway.ops import logs
    from gateway.ops.workers import end_forks_with_me

    if workers > 1:
        supervisor = GranianSupervisor(APP, workers=workers, loop=Loops.uvloop,
                                       respawn_failed_workers=True,
                                       **granian_options(settings, host, port))
        supervisor.config_path = config_path
        supervisor.on_startup(announce)  # called once its socket is bound
        end_forks_with_me()  # granian forks its workers
        logs.setup(settings.gateway.log_level)  # granian set up logging again
        supervisor.serve(target_loader=worker_app, wrap_loader=False)
        return
    import uvloop
    from granian.server.embed import Server

    tracked = Tracked()
    server = Server(tracked.build, factory=True, **granian_options(settings, host, port))
    server.on_startup(announce)  # called once its socket is bound
    logs.setup(settings.gateway.log_level)  # granian set up logging again
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    failed = False
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_serve_embedded(server, tracked))
    except FatalError:  # the app's lifespan startup failed (granian logged it)
        failed = True
    finally:
        for signum, handler in previous.items():  # the loop's are gone with it
            if handler is not None:
                signal.signal(signum, handler)
    if failed or server.interrupt_children:  # its worker ended by itself
        raise SystemExit(3)  # as uvicorn when the app does not start


async def _serve_embedded(server: Any, tracked: Tracked) -> None:
    """granian's embedded server installs no signal handler: SIGTERM and SIGINT stop
    it here; SIGHUP is the app's own (`Reloader.listen`, at its lifespan startup)."""
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.TimerHandle] = []

    def stop() -> None:
        if not stopping:
            server.stop()
            stopping.append(loop.call_later(GRACE_S, tracked.cancel))

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop)
    try:
        await server.serve()
    finally:
        for timer in stopping:
            timer.cancel()


class Tracked:
    """The app under granian, with the tasks of its HTTP requests in flight, so that
    `cancel()` can end those a shutdown has waited `GRACE_S` for (granian would wait
    as long as they take); the lifespan shutdown then follows."""

    def __init__(self) -> None:
        self.app: ASGIApp | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self.cancelled = False
        self.on_signal = False  # a worker process: `CANCEL` from the supervisor cancels

    def build(self) -> Tracked:
        """granian's factory: the gateway's app, wrapped."""
        from gateway.ops.factory import app_factory

        self.app = app_factory()
        return self

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None
        if scope["type"] != "http":
            if scope["type"] == "lifespan" and self.on_signal:
                asyncio.get_running_loop().add_signal_handler(CANCEL, self.cancel)
            await self.app(scope, receive, send)
            return
        task = asyncio.current_task()
        if task is None:  # not run as a task: nothing to cancel it by
            await self.app(scope, receive, send)
            return
        self.tasks.add(task)
        try:
            await self.app(scope, receive, send)
        except asyncio.CancelledError:
            if not self.cancelled:
                raise
        finally:
            self.tasks.discard(task)

    def cancel(self) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        if self.tasks:
            log.warning("shutdown: requests still in flight cancelled",
                        extra={"requests": len(self.tasks), "grace_s": GRACE_S})
        for task in list(self.tasks):
            task.cancel()


def worker_app() -> Tracked:
    """The app of one `GranianSupervisor` worker (a forked process)."""
    from gateway.ops.workers import in_worker

    signal.signal(CANCEL, signal.SIG_IGN)  # until the app listens for it
    in_worker()
    tracked = Tracked()
    tracked.on_signal = True
    return tracked.build()


class GranianSupervisor(MPServer):
    """granian's supervisor of worker processes, with SIGHUP relayed to the workers as
    a live reload (`gateway.ops.workers.relay_reload`), and a shutdown that gives the
    requests in flight `GRACE_S`, then has the workers cancel them (`CANCEL`) and run
    their lifespan shutdown; a worker still there `KILL_S` later is killed. The rest
    (SIGTERM, SIGINT, a dead worker replaced) is granian's."""

    config_path = ""

    def _reload(self, spawn_target: Any, target_loader: Any) -> None:
        from gateway.ops.workers import relay_reload

        self.reload_signal = False
        self.main_loop_interrupt.clear()
        # a worker still starting ignores it, and reads the file as it starts
        relay_reload(self.config_path, lambda: [
            w.inner.pid for w in self._workers() if w.is_alive() and w.inner.pid is not None])

    def _workers(self) -> list[Any]:
        return list(self.wrks)  # granian's WorkerProcess is not typed

    def _stop_workers(self) -> None:
        workers = self._workers()
        for wrk in workers:
            wrk.terminate()
        deadline = time.monotonic() + GRACE_S
        late = [w for w in workers if not _ended(w, max(0.0, deadline - time.monotonic()))]
        for wrk in late:
            try:
                os.kill(wrk.inner.pid, CANCEL)
            except ProcessLookupError:
                continue
        for wrk in late:
            if not _ended(wrk, KILL_S):
                log.warning("shutdown: a worker did not exit: killed",
                            extra={"pid": wrk.inner.pid, "waited_s": GRACE_S + KILL_S})
                wrk.kill()
                _ended(wrk, None)
        self.wrks.clear()


def _ended(worker: Any, timeout: float | None) -> bool:
    """Whether a worker process has ended (within `timeout`). Its sentinel says so,
    where `is_alive()` can be wrong for a moment: granian's watcher thread reaps it."""
    return bool(wait([worker.inner.sentinel], timeout))
