"""The I/O seam under the provider client: POST one form body, get one answer back.

A transport knows sockets and nothing about SMM; the provider client above it
knows SMM and nothing about sockets. Library exceptions are translated here,
once, into the two that matter for money:

- `Unreachable`: the request provably never left (connect refused or timed out,
  DNS failure, no pooled connection in time). Safe to send again or elsewhere.
- `Ambiguous`: anything after the first byte may have been written. A write
  (`add`, `refill`, `cancel`) that ends here is never sent again.

Two implementations, chosen by `gateway.transport` (see docs/performance.md):
`aiohttp` (default: ~4x less CPU per call than httpx's default transport on this
machine) and `httpx`. The `httpx-aiohttp` bridge is accepted as a name but runs
the plain aiohttp transport: the bridge maps a server disconnect after sending to
`httpx.ConnectTimeout`, which would make an ambiguous add look safe to re-send.

Tests swap the I/O, not the policy: `HttpxTransport(..., mock=handler)` runs the
real client, retries and error mapping over `httpx.MockTransport(handler)`.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from typing import NamedTuple, Protocol

import aiohttp
import httpx
import yarl

from gateway.errors import Ambiguous, Unreachable

USER_AGENT = "smm-gateway"
FORM_HEADERS = {
    "Content-Type": "application/x-www-form-urlencoded",
    "Accept": "application/json",
    "User-Agent": USER_AGENT,
}
CONNECT_TIMEOUT_S = 5.0


class RawAnswer(NamedTuple):
    status: int
    headers: Mapping[str, str]
    body: bytes


class Transport(Protocol):
    async def post_form(self, body: bytes) -> RawAnswer: ...

    def release_idle(self) -> None:
        """Close the keep-alive connections no request is using (after a burst)."""

    async def aclose(self) -> None: ...


class AiohttpTransport:
    def __init__(self, url: str, timeout_s: float, max_connections: int) -> None:
        self._url = yarl.URL(url)  # parsed once, not per call
        self._timeout = aiohttp.ClientTimeout(
            total=timeout_s, connect=min(CONNECT_TIMEOUT_S, timeout_s))
        connector = aiohttp.TCPConnector(limit=max_connections, keepalive_timeout=15)
        self._session = aiohttp.ClientSession(
            connector=connector, headers=FORM_HEADERS, auto_decompress=True)

    async def post_form(self, body: bytes) -> RawAnswer:
        try:
            async with self._session.post(
                self._url, data=body, timeout=self._timeout, allow_redirects=False
            ) as resp:
                data = await resp.read()
                return RawAnswer(resp.status, resp.headers, data)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise Unreachable(f"connect failed: {type(exc).__name__}") from exc
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise Ambiguous(f"transport error after connect: {type(exc).__name__}") from exc

    def release_idle(self) -> None:
        # aiohttp has no public call for this: its connector's cleanup closes the
        # connections idle for longer than keepalive_timeout, so it runs with zero
        connector = self._session.connector
        cleanup = getattr(connector, "_cleanup", None)
        if connector is None or cleanup is None or not hasattr(connector, "_keepalive_timeout"):
            return
        keep = connector._keepalive_timeout
        connector._keepalive_timeout = 0.0
        try:
            cleanup()
        finally:
            connector._keepalive_timeout = keep

    async def aclose(self) -> None:
        await self._session.close()


MockHandler = (Callable[[httpx.Request], httpx.Response]
               | Callable[[httpx.Request], Coroutine[None, None, httpx.Response]])


class HttpxTransport:
    def __init__(self, url: str, timeout_s: float, max_connections: int,
                 mock: MockHandler | None = None) -> None:
        self._url = url
        self._client = httpx.AsyncClient(
            transport=httpx.MockTransport(mock) if mock is not None else None,
            headers=FORM_HEADERS,
            timeout=httpx.Timeout(timeout_s, connect=min(CONNECT_TIMEOUT_S, timeout_s)),
            limits=httpx.Limits(max_connections=max_connections,
                                max_keepalive_connections=max_connections),
            follow_redirects=False,
        )

    async def post_form(self, body: bytes) -> RawAnswer:
        try:
            resp = await self._client.post(self._url, content=body)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise Unreachable(f"connect failed: {type(exc).__name__}") from exc
        except httpx.HTTPError as exc:
            raise Ambiguous(f"transport error after connect: {type(exc).__name__}") from exc
        return RawAnswer(resp.status_code, resp.headers, resp.content)

    def release_idle(self) -> None:
        pass  # httpx closes idle connections on its own keep-alive expiry

    async def aclose(self) -> None:
        await self._client.aclose()


def make_transport(name: str, url: str, timeout_s: float, max_connections: int) -> Transport:
    if name == "httpx":
        return HttpxTransport(url, timeout_s, max_connections)
    return AiohttpTransport(url, timeout_s, max_connections)
