"""POSTing an alert to the operator's webhooks: one pooled client, retries with backoff.

Each webhook gets the same JSON body; a failed POST (a transport error, a timeout,
408, 425, 429 or a 5xx) is retried with exponential backoff up to `attempts`
times; any other answer is final. httpx's errors are translated here and go no
further: `post` says which webhooks took the alert. A webhook URL is never
logged whole (its path is often its secret): only its scheme and host.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlsplit

import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

log = logging.getLogger("gateway.alerts")

BACKOFF_S = 1.0  # the first wait; each next one doubles
MAX_BACKOFF_S = 30.0
RETRYABLE = frozenset({408, 425, 429})

Sleep = Callable[[float], Awaitable[None]]


class _Failed(Exception):
    """One POST that may succeed if tried again."""


class _Refused(Exception):
    """A webhook that answered an error no retry will change (a 4xx)."""


def where(url: str) -> str:
    """What a log may say about a webhook: its scheme and host, never path or query."""
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.hostname}"
    except ValueError:
        return "(a webhook)"


class Webhooks:
    def __init__(self, urls: Sequence[str], timeout_s: float, attempts: int, *,
                 transport: httpx.AsyncBaseTransport | None = None,
                 sleep: Sleep = asyncio.sleep) -> None:
        self.urls = list(urls)
        self._attempts = attempts
        self._sleep = sleep
        self._client = httpx.AsyncClient(timeout=timeout_s, transport=transport,
                                         follow_redirects=False)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def post(self, body: bytes) -> list[bool]:
        """POST `body` to every webhook at once; whether each one took it."""
        return list(await asyncio.gather(*(self._deliver(url, body) for url in self.urls)))

    async def _deliver(self, url: str, body: bytes) -> bool:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential(multiplier=BACKOFF_S, max=MAX_BACKOFF_S),
            retry=retry_if_exception_type(_Failed), sleep=self._sleep, reraise=True)
        try:
            async for attempt in retrying:
                with attempt:
                    await self._post_once(url, body)
        except (_Failed, _Refused) as exc:
            log.error("alert not delivered", extra={"webhook": where(url), "error": str(exc),
                                                    "attempts": self._attempts})
            return False
        return True

    async def _post_once(self, url: str, body: bytes) -> None:
        try:
            r = await self._client.post(url, content=body,
                                        headers={"Content-Type": "application/json"})
        except httpx.HTTPError as exc:
            log.warning("alert webhook failed", extra={"webhook": where(url),
                                                       "error": type(exc).__name__})
            raise _Failed(type(exc).__name__) from exc
        if r.is_success:
            return
        log.warning("alert webhook failed", extra={"webhook": where(url),
                                                   "status": r.status_code})
        if r.status_code in RETRYABLE or r.status_code >= 500:
            raise _Failed(f"HTTP {r.status_code}")
        raise _Refused(f"HTTP {r.status_code}")
