"""The alert sink of a serving replica: `emit` queues, a background task sends.

    emit(alert) -> bounded queue -> claim in Redis (one replica wins, and it is
    listed among the recent alerts) -> POST to every webhook (`sender.Webhooks`)

`emit` never waits and never raises: a full queue drops the alert with a log
line. Deliveries run as their own tasks (at most DELIVERIES at once), so a slow
webhook retrying with backoff holds up neither requests nor the next alert.

An alert about Redis itself (`Alert.local`) skips the claim: this replica sends
it directly, and lists it once Redis answers again. Every payload is scrubbed of
the configured provider and client keys before it leaves, whatever its text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from gateway.alerts.sender import Webhooks
from gateway.clock import SYSTEM, Clock
from gateway.errors import StoreUnavailable
from gateway.events import Alert, AlertPayload
from gateway.state.alerts import AlertLog
from gateway.wire import ENCODER

log = logging.getLogger("gateway.alerts")

QUEUE_SIZE = 1000
DELIVERIES = 8  # webhook deliveries in flight at once
ONCE_TTL_S = 86400.0  # how long a one-off alert's claim is kept (replicas agree well within)
UNRECORDED = 32  # local alerts waiting for Redis to come back, to be listed
CLOSE_WAIT_S = 5.0  # at shutdown: how long queued alerts and deliveries may still take


def replica() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def line(alert: Alert) -> str:
    return f"[smm-gateway {alert.severity}] " + " ".join(alert.message.split())


class Alerter:
    def __init__(self, store: AlertLog, webhooks: Webhooks, secrets: Iterable[str] = (),
                 clock: Clock = SYSTEM, queue_size: int = QUEUE_SIZE) -> None:
        self._store = store
        self._webhooks = webhooks
        self._clock = clock
        # longest first: a key that contains another is scrubbed whole
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        # an alert; an identity to settle; None: list the unrecorded alerts
        self._queue: asyncio.Queue[Alert | str | None] = asyncio.Queue(queue_size)
        self._unrecorded: deque[bytes] = deque(maxlen=UNRECORDED)
        self._gate = asyncio.Semaphore(DELIVERIES)
        self._deliveries: set[asyncio.Task[Any]] = set()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0  # alerts lost to a full queue
        self._closed = False

    # --- the Events sink -------------------------------------------------------

    def emit(self, alert: Alert) -> None:
        if not alert.local:
            self._put(alert)
            return
        # about Redis itself: straight out, not behind alerts that wait on Redis
        body = self.encode(alert)
        self._raised(alert)
        self._deliver(body)
        self._unrecorded.append(body)
        self._put(None)  # listed by the worker once Redis answers

    def settle(self, identity: str) -> None:
        self._put(identity)

    def _put(self, item: Alert | str | None) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                log.error("alert queue full, alerts dropped", extra={"dropped": self.dropped})

    # --- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="alerts")

    async def drain(self) -> None:
        """Wait until everything emitted so far is claimed and delivered (tests, close)."""
        if self._task is not None:
            await self._queue.join()
        while self._deliveries:
            await asyncio.gather(*self._deliveries, return_exceptions=True)

    async def aclose(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_WAIT_S):
                await self.drain()
        self._closed = True  # from now on an alert is only logged
        for task in [*self._deliveries, *([self._task] if self._task else [])]:
            task.cancel()
        await asyncio.gather(*self._deliveries, *([self._task] if self._task else []),
                             return_exceptions=True)
        await self._webhooks.aclose()

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                if item is None:
                    await self._record_unrecorded()
                elif isinstance(item, str):
                    await self._store.forget(item)
                else:
                    await self._handle(item)
            except StoreUnavailable as exc:  # redis is away: its own alert says so
                log.warning("alert not sent: redis unavailable", extra={
                    "alert": item.kind if isinstance(item, Alert) else item,
                    "error": exc.message})
            except Exception:  # the loop must outlive any one alert
                log.exception("alert failed")
            finally:
                self._queue.task_done()

    # --- one alert -------------------------------------------------------------

    async def _handle(self, alert: Alert) -> None:
        body = self.encode(alert)
        await self._record_unrecorded()  # first: the recent list stays in order
        ttl = alert.repeat_s if alert.repeat_s is not None else ONCE_TTL_S
        if not await self._store.claim(alert.identity, ttl, body):
            return  # another replica took it (or this one, within repeat_s)
        self._raised(alert)
        self._deliver(body)

    def _raised(self, alert: Alert) -> None:
        log.info("alert raised", extra={"kind": alert.kind, "subject": alert.subject,
                                         "webhooks": len(self._webhooks.urls)})

    async def _record_unrecorded(self) -> None:
        """List the alerts sent while Redis was away, oldest first; kept if it still is."""
        with contextlib.suppress(StoreUnavailable):
            while self._unrecorded:
                await self._store.record(self._unrecorded[0])
                self._unrecorded.popleft()

    def encode(self, alert: Alert) -> bytes:
        """The webhook body: the payload as JSON, with every known key scrubbed."""
        at = datetime.fromtimestamp(self._clock.time(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        payload = AlertPayload(text=line(alert), kind=alert.kind, severity=alert.severity,
                               subject=alert.subject, message=alert.message,
                               details=dict(alert.details), at=at, gateway=replica())
        body = ENCODER.encode(payload)
        for secret in self._secrets:
            for form in (secret.encode(), ENCODER.encode(secret)[1:-1]):
                body = body.replace(form, b"***")
        return body

    def _deliver(self, body: bytes) -> None:
        if not self._webhooks.urls or self._closed:
            return

        async def run() -> None:
            async with self._gate:
                await self._webhooks.post(body)

        task = asyncio.create_task(run())
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)
