"""Requests to the in-process app from a chosen peer address (a direct client or a
proxy), over httpx's ASGI transport, run in the app's event loop."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from inprocess import App


def post_from(app: App, peer: str, headers: dict[str, str] | None = None,
              key: str | None = None, **fields: Any) -> httpx.Response:
    """POST /api/v2 as if `peer` had connected; `headers` may carry X-Forwarded-For."""
    data = {k: str(v) for k, v in fields.items()}
    if key is not None:
        data["key"] = key
    target = app.http.app

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=target, client=(peer, 40123))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
            return await c.post("/api/v2", data=data, headers=headers or {})

    return app.in_app(send)


def send_from(app: App, peer: str, *requests: httpx.Request) -> list[httpx.Response]:
    """`requests` sent all at once (one asyncio.gather in the app's loop) as if `peer`
    had connected; their answers in the same order. URLs are relative to
    http://gateway."""
    target = app.http.app

    async def send() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=target, client=(peer, 40123))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
            return list(await asyncio.gather(*(c.send(r) for r in requests)))

    return app.in_app(send)
