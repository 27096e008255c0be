"""Read timeouts: a client must send its request head within `gateway.header_timeout_s`
and its body within `gateway.body_timeout_s`, or it is cut off.

uvicorn has no such limits (a client that connects and sends nothing, or sends
one byte a second, holds a connection and a slot for ever). `TimedHttpToolsProtocol`
is uvicorn's httptools protocol with one timer per connection:

- armed when the connection is made, and when a new request's first byte arrives
  on a kept-alive connection, until its head is complete (`header_timeout_s`);
- then re-armed until its body is complete (`body_timeout_s`);
- off while the gateway works on the request and answers (uvicorn's keep-alive
  timeout covers the idle time between requests).

When it fires, the client gets `408 {"error": "Request timeout"}` if it had started
a request and no answer was begun, the connection is closed, a request in flight
sees a disconnect, and one warning line names the client's address (no traceback).

Use it as `uvicorn.run(..., http=TimedHttpToolsProtocol)`. The timeouts are read
from the app (`create_app` puts them on `app.state.read_timeouts`), so every worker
process uses its own config; without them the config defaults apply.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal, NamedTuple

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

log = logging.getLogger("gateway.edge")

Phase = Literal["head", "body"]
_BODY = b'{"error":"Request timeout"}'
_408 = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(_BODY)).encode() + b"\r\nconnection: close\r\n\r\n"
        + _BODY)


class ReadTimeouts(NamedTuple):
    head_s: float = 10.0
    body_s: float = 30.0


def timeouts_of(app: Any) -> ReadTimeouts:
    """The `read_timeouts` of an ASGI app, looked up through uvicorn's wrappers."""
    for _ in range(8):
        if app is None:
            break
        found = getattr(getattr(app, "state", None), "read_timeouts", None)
        if isinstance(found, ReadTimeouts):
            return found
        app = getattr(app, "app", None)
    return ReadTimeouts()


class Counter:
    """Slow clients cut off by this process (reported in each log line)."""

    cut_off = 0


class TimedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.read_timeouts = timeouts_of(self.app)
        self._read_timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0  # loop time the pending timer fires at
        self._deadline = 0.0  # loop time the current phase must be over by
        self._phase: Phase | None = None
        self._began = False  # a byte of the current request has arrived

    # --- the timer ------------------------------------------------------------

    def _arm(self, phase: Phase) -> None:
        """Start `phase`'s deadline. The timer is lazy: a pending one that fires no
        later than the new deadline is kept (when it fires early it re-arms for what
        is left), so a request that arrives whole costs no timer at all."""
        seconds = self.read_timeouts.head_s if phase == "head" else self.read_timeouts.body_s
        if seconds <= 0:
            self._phase = None
            return
        self._phase = phase
        self._deadline = self.loop.time() + seconds
        if self._read_timer is not None and self._timer_at <= self._deadline:
            return
        self._set_timer()

    def _set_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
        self._timer_at = self._deadline
        self._read_timer = self.loop.call_at(self._deadline, self._fire)

    def _disarm(self) -> None:
        """End the current phase; a pending timer is left to fire into nothing."""
        self._phase = None

    def _cancel_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _fire(self) -> None:
        self._read_timer = None
        if self._phase is None:
            return
        if self.loop.time() < self._deadline:  # the phase started after this timer
            self._set_timer()
            return
        self._timed_out()

    def _timed_out(self) -> None:
        phase, self._phase = self._phase, None
        if phase is None or self.transport is None or self.transport.is_closing():
            return
        Counter.cut_off += 1
        seconds = self.read_timeouts.head_s if phase == "head" else self.read_timeouts.body_s
        log.warning("slow client cut off", extra={
            "address": self.client[0] if self.client else "-", "phase": phase,
            "timeout_s": seconds, "cut_off_total": Counter.cut_off})
        cycle = self.cycle
        answer = self._began
        if cycle is not None and not cycle.response_complete:
            answer = answer and not cycle.response_started
            cycle.disconnected = True  # the app's send() is a no-op, receive() a disconnect
            cycle.message_event.set()
        if answer:
            self.transport.write(_408)
        self.transport.close()

    # --- uvicorn's hooks ----------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm("head")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._cancel_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._began = True
        if self._phase != "head":  # not re-armed for the first request of a connection
            self._arm("head")

    def on_headers_complete(self) -> None:
        if self.parser.should_upgrade():
            self._disarm()
        else:
            self._arm("body")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        self._began = False
        super().on_message_complete()
