"""The simulator's HTTP/1.1 server: asyncio + ``httptools``.

Keep-alive, pipelining, Content-Length and chunked request bodies, and
``Expect: 100-continue``. It is its own small server rather than a framework so that
it is never the bottleneck of a benchmark, and so that it can misbehave on purpose:
delay an answer, never answer, drop the connection, or send extra headers (the
``Retry-After`` of a 429/503 fault). Answers on one connection go
out in order; once one has to wait, those behind it queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections import deque

import httptools

from gateway.sim.codec import ENCODE, SimResponse
from gateway.sim.options import SimOptions
from gateway.sim.simulator import Simulator

MAX_BODY = 16 * 1024 * 1024
HANG_SECONDS = 3600.0

_REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
_HEADS: dict[tuple[int, str], bytes] = {}
_KEEP = b"\r\nConnection: keep-alive\r\n\r\n"
_CLOSE = b"\r\nConnection: close\r\n\r\n"


def _render(
    status: int,
    content_type: str,
    body: bytes,
    keep_alive: bool,
    headers: tuple[tuple[str, str], ...] = (),
) -> bytes:
    head = _HEADS.get((status, content_type))
    if head is None:
        reason = _REASONS.get(status, "Unknown")
        head = (
            f"HTTP/1.1 {status} {reason}\r\nServer: smm-simulator\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: "
        ).encode("latin-1")
        _HEADS[(status, content_type)] = head
    end = _KEEP if keep_alive else _CLOSE
    if headers:  # only faulted answers carry extra headers (Retry-After)
        extra = "".join(f"\r\n{name}: {value}" for name, value in headers)
        return b"".join((head, b"%d" % len(body), extra.encode("latin-1"), end, body))
    return b"".join((head, b"%d" % len(body), end, body))


class _HttpProtocol(asyncio.Protocol):
    """One client connection: parse with httptools, answer via the Simulator."""

    __slots__ = (
        "body",
        "body_len",
        "closed",
        "conns",
        "headers",
        "parser",
        "queue",
        "sim",
        "task",
        "transport",
        "url",
    )

    def __init__(self, sim: Simulator, conns: set[_HttpProtocol]) -> None:
        self.sim = sim
        self.conns = conns
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.body_len = 0
        self.queue: deque[tuple[SimResponse, bool]] = deque()
        self.task: asyncio.Task[None] | None = None
        self.closed = False

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.conns.discard(self)
        self.transport = None
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            # A bug in the simulator: answer 500 and let asyncio log the traceback.
            self._fail(500)
            raise
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self._fail(400)

    def _fail(self, status: int) -> None:
        if self.transport is not None and not self.closed:
            body = ENCODE({"error": _REASONS.get(status, "Error")})
            self.transport.write(_render(status, "application/json", body, False))
            self.transport.close()
        self.closed = True

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if self.task is not None and not self.task.done():
            self.task.cancel()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = {}
        self.body = []
        self.body_len = 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        expect = self.headers.get("expect")
        if expect is not None and expect.lower() == "100-continue" and self.transport:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self.closed:
            return
        self.body_len += len(body)
        if self.body_len > MAX_BODY:
            self._fail(413)
            return
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.closed:
            return
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        method = self.parser.get_method().decode("latin-1")
        keep_alive = self.parser.should_keep_alive()
        resp = self.sim.handle(self.url.decode("latin-1"), method, self.headers, body)
        if self.task is None and not resp.delay and resp.fault is None:
            self._write(resp, keep_alive)
            return
        self.queue.append((resp, keep_alive))
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._drain())

    def _write(self, resp: SimResponse, keep_alive: bool) -> None:
        transport = self.transport
        if transport is None:
            return
        transport.write(
            _render(resp.status, resp.content_type, resp.body, keep_alive, resp.headers)
        )
        if not keep_alive:
            transport.close()
            self.closed = True

    async def _drain(self) -> None:
        try:
            while self.queue and not self.closed:
                resp, keep_alive = self.queue.popleft()
                if resp.delay:
                    await asyncio.sleep(resp.delay)
                if resp.fault == "hang":
                    await asyncio.sleep(HANG_SECONDS)
                    if self.transport is not None:
                        self.transport.abort()
                    return
                if resp.fault == "drop":
                    if self.transport is not None:
                        self.transport.abort()
                    self.closed = True
                    return
                self._write(resp, keep_alive)
        except asyncio.CancelledError:
            pass
        finally:
            self.task = None


async def _start(
    options: SimOptions, host: str, port: int
) -> tuple[asyncio.AbstractServer, set[_HttpProtocol]]:
    sim = Simulator(options)
    conns: set[_HttpProtocol] = set()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _HttpProtocol(sim, conns), host, port, reuse_address=True, backlog=1024
    )
    return server, conns


async def start_server(options: SimOptions, host: str, port: int) -> asyncio.AbstractServer:
    """Start a simulator on the running loop; ``port=0`` picks a free port."""
    server, _ = await _start(options, host, port)
    return server


async def _serve(options: SimOptions, host: str, port: int) -> None:
    server, conns = await _start(options, host, port)
    sockets = getattr(server, "sockets", None) or []
    if sockets:
        port = sockets[0].getsockname()[1]
    print(f"simulator ({options.dialect}) listening on http://{host}:{port}/api/v2", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # non-unix
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    for conn in list(conns):
        conn.close()
    await server.wait_closed()


def serve(options: SimOptions, host: str = "127.0.0.1", port: int = 9001) -> None:
    """Run a simulator until SIGINT/SIGTERM (blocking)."""
    Simulator(options)  # validate before binding
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        pass
    else:
        uvloop.install()
    asyncio.run(_serve(options, host, port))
