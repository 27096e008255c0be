"""Both transports over a real socket, against a server that fails after the
request was sent: a read timeout, a reset, a truncated answer are `Ambiguous` (an
add may have been placed: never re-sent); only a connection never made is
`Unreachable`. The server is in the test's loop and signals when it has read the
whole request, so "after sending" is a fact, not a timing guess."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from gateway.errors import Ambiguous, Unreachable
from gateway.upstream.transport import make_transport

pytestmark = pytest.mark.anyio
TRANSPORTS = pytest.mark.parametrize("name", ["aiohttp", "httpx"])
BODY = b"key=k&action=add&service=1&link=https%3A%2F%2Ft.co%2Fx&quantity=100"

Behaviour = Callable[[asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def server(behaviour: Behaviour) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A one-route HTTP server: reads a whole request, records its body, then
    behaves as told."""
    bodies: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        bodies.append(await reader.readexactly(length))
        try:
            await behaviour(writer)
        finally:
            writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/api/v2", bodies
    finally:
        srv.close()


async def never_answers(writer: asyncio.StreamWriter) -> None:
    await asyncio.Event().wait()  # until the client gives up and the server closes


async def resets(writer: asyncio.StreamWriter) -> None:
    writer.transport.abort()  # RST: the connection dies with the request read


async def truncates(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100\r\n\r\n{\"order\": 12")
    await writer.drain()


async def answers(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 14\r\n\r\n{\"order\": 123}")
    await writer.drain()


@TRANSPORTS
async def test_a_whole_answer_comes_back(name: str) -> None:
    async with server(answers) as (url, bodies):
        transport = make_transport(name, url, timeout_s=5, max_connections=2)
        try:
            answer = await transport.post_form(BODY)
        finally:
            await transport.aclose()
    assert (answer.status, answer.body) == (200, b'{"order": 123}')
    assert bodies == [BODY]


@TRANSPORTS
@pytest.mark.parametrize("behaviour", [never_answers, resets, truncates],
                         ids=["read-timeout", "reset", "truncated"])
async def test_a_failure_after_sending_is_ambiguous(name: str, behaviour: Behaviour) -> None:
    async with server(behaviour) as (url, bodies):
        transport = make_transport(name, url, timeout_s=0.3, max_connections=2)
        try:
            with pytest.raises(Ambiguous):
                await transport.post_form(BODY)
        finally:
            await transport.aclose()
    assert bodies == [BODY], "the provider had the whole request"


@TRANSPORTS
async def test_a_connection_never_made_is_unreachable(name: str) -> None:
    with socket.socket() as probe:  # a port just freed: nothing listens on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    transport = make_transport(name, f"http://127.0.0.1:{port}/api/v2", timeout_s=5,
                               max_connections=2)
    try:
        with pytest.raises(Unreachable):
            await transport.post_form(BODY)
    finally:
        await transport.aclose()
