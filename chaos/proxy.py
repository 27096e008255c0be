"""A TCP proxy on loopback that can cut connections, move to another server and
swallow replies: what a load balancer or a failover does to Redis clients.

It runs in the caller's event loop (`await proxy.start()`), or in a thread of its
own (`ThreadedProxy`) for code that is not async (the chaos suite).

- `cut()`: every open connection is closed at once, both sides (a proxy restart,
  a network partition healing, a failover behind a stable address).
- `target`: where new connections go; set it and `cut()` to fail over.
- `blackhole`: while set, nothing gets through either way and nothing is closed
  (a partition: a replica's link to its master goes quiet).
- `swallow_replies = n`: the next n replies a server sends are dropped, each
  closing its client's connection the moment it arrives: the command ran, its
  reply was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading


class TcpProxy:
    def __init__(self, target: tuple[str, int], host: str = "127.0.0.1") -> None:
        self.target = target
        self.host = host
        self.port = 0
        self.swallow_replies = 0
        self.blackhole = False
        self.accepted = 0  # connections taken since start
        self._server: asyncio.Server | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def aclose(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut(self) -> None:
        """Close every open connection, both ends."""
        for client, server in list(self._links):
            for w in (client, server):
                with contextlib.suppress(Exception):
                    w.transport.abort()
        self._links.clear()

    async def _serve(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter,
                     ) -> None:
        self.accepted += 1
        try:
            s_reader, s_writer = await asyncio.open_connection(*self.target)
        except OSError:
            c_writer.transport.abort()
            return
        link = (c_writer, s_writer)
        self._links.add(link)
        try:
            await asyncio.gather(self._pump(c_reader, s_writer, up=True),
                                 self._pump(s_reader, c_writer, up=False))
        finally:
            self._links.discard(link)
            for w in link:
                w.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    up: bool) -> None:
        try:
            while data := await reader.read(65536):
                if self.blackhole:
                    continue
                if not up and self.swallow_replies > 0:
                    self.swallow_replies -= 1
                    break  # the command ran; its reply never reaches the client
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            for w in self._link_of(writer):
                w.transport.abort()

    def _link_of(self, writer: asyncio.StreamWriter) -> tuple[asyncio.StreamWriter, ...]:
        for link in self._links:
            if writer in link:
                return link
        return (writer,)


class ThreadedProxy:
    """A TcpProxy in a thread of its own, driven from synchronous code."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._loop = asyncio.new_event_loop()
        self.proxy = TcpProxy(target)
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="tcp-proxy")
        self._thread.start()
        self._call(self.proxy.start())

    def _call(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)  # type: ignore[arg-type]

    @property
    def port(self) -> int:
        return self.proxy.port

    def fail_over(self, target: tuple[str, int]) -> None:
        """New connections go to `target`; the open ones are cut."""
        async def move() -> None:
            self.proxy.target = target
            self.proxy.cut()
        self._call(move())

    def cut(self) -> None:
        async def cut() -> None:
            self.proxy.cut()
        self._call(cut())

    def close(self) -> None:
        self._call(self.proxy.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
