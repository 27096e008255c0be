"""Live config: `SIGHUP`, the dashboard's "Reload config" button or
`POST /admin/api/reload` reads the config file again and, when it is valid, swaps
it in without dropping a request.

- The file is read and checked by the loader `serve` and `check-config` use
  (`gateway.config.check_file`). An invalid file is refused: every error is logged
  (one JSON line, `errors`), recorded in the admin audit list, and the running config
  stays.
- A valid file builds a new `Generation` (`gateway.wiring.open_config` and
  `Actions`: providers, catalog, balances, breakers, alerts; the config's clients
  imported into Redis) over what lasts for the process (`gateway.wiring.Lasting`:
  the Redis client, the journal and its recovery, the order-id block). Then, in one
  step of the event loop, new API requests get the new generation; each request
  keeps the generation it started with (`Generation.enter`), so requests in flight
  finish on the old one, which is closed when they are done (at most
  `drain_s(settings)`; its dispatches in flight are always waited for). A new
  provider whose service list cannot be fetched (within its `timeout_s`) makes the
  reload fail like an invalid file, with nothing written: `services` must keep
  answering.
- The edge's own settings follow at once (`apply_settings`): `error_status`,
  `max_in_flight`, `trusted_proxies`, the read timeouts (for new connections),
  `log_level`. `RESTART_ONLY` settings (`admin_key`: the dashboard is mounted when
  the app is built) keep their running value; the result says which changed.

With several workers (`serve --workers N`) each worker reloads on its own SIGHUP;
the supervisor (`gateway.ops.workers`) checks the file and relays the signal, and
a reload asked of one worker over HTTP goes through the supervisor too (`requested`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from litestar.datastructures import State

from gateway.actions import Actions
from gateway.config import Changes, ReloadResult, Settings, check_file, diff
from gateway.edge.peers import parse_networks
from gateway.edge.timeouts import ReadTimeouts
from gateway.errors import ConfigError, StoreUnavailable
from gateway.state.admin import AdminStore
from gateway.wiring import Lasting, Resources, TransportFactory, WebhookTransport, open_config

log = logging.getLogger("gateway.reload")

DRAIN_S = 60.0  # the longest the old config waits for its requests in flight
RELAY_S = 30.0  # a reload asked over HTTP with several workers: the longest wait for it
ENV_SUPERVISOR = "SMM_GATEWAY_SUPERVISOR"  # the pid of `serve --workers N`'s supervisor
_DETAIL_MAX = 2000


def drain_s(settings: Settings) -> float:
    """How long an old config waits for its requests: past the slowest provider's
    retries, whatever DRAIN_S says."""
    slowest = max((p.timeout_s for p in settings.providers), default=0.0)
    return max(DRAIN_S, 4 * slowest)


def apply_settings(state: State, settings: Settings, previous: Settings | None = None) -> None:
    """The settings the edge reads from the app's state, at build time and on reload
    (`previous`: the config running until now)."""
    g = settings.gateway
    state.always_200 = g.error_status == "always-200"
    admission: asyncio.Semaphore | None = getattr(state, "admission", None)
    if admission is None or getattr(state, "max_in_flight", None) != g.max_in_flight:
        state.admission = asyncio.Semaphore(g.max_in_flight)  # in flight: on the old one
        state.max_in_flight = g.max_in_flight
    state.trusted_networks = parse_networks(g.trusted_proxies)
    state.read_timeouts = ReadTimeouts(g.header_timeout_s, g.body_timeout_s)
    if previous is not None and previous.gateway.log_level != g.log_level:
        logging.getLogger().setLevel(g.log_level.upper())  # as `gateway.ops.logs.setup`


class Generation:
    """One config's resources and actions, and how many API requests use them."""

    def __init__(self, resources: Resources, actions: Actions, stack: AsyncExitStack) -> None:
        self.resources = resources
        self.actions = actions
        self.stack = stack
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> Generation:
        self._in_flight += 1
        self._idle.clear()
        return self

    def leave(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()

    async def retire(self) -> None:
        """Wait (bounded) for the requests in flight, then close: the dispatches in
        flight are waited for by `Actions.aclose`, the rest is closed after them."""
        bound = drain_s(self.resources.settings)
        try:
            async with asyncio.timeout(bound):
                await self._idle.wait()
        except TimeoutError:
            log.warning("config reload: requests still in flight on the old config; "
                        "closing it", extra={"in_flight": self._in_flight, "waited_s": bound})
        try:
            await self.stack.aclose()
        except Exception:  # a background task: nobody else would ever see it
            log.exception("config reload: closing the old config failed")


class Reloader:
    """The app's current generation, and the way to the next one."""

    def __init__(self, state: State, lasting: Lasting, path: Path | None, *,
                 transport: TransportFactory | None = None,
                 webhook_transport: WebhookTransport | None = None) -> None:
        self.path = path
        self.last: ReloadResult | None = None  # shown on the dashboard's Overview
        self.loaded_at = 0.0
        self._state = state
        self._lasting = lasting
        self._transport = transport
        self._webhooks = webhook_transport
        self._lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()
        self._signalled: set[asyncio.Task[ReloadResult]] = set()
        self._asked_by: tuple[str, str] | None = None  # a relayed request's actor, address
        self._waiters: list[asyncio.Future[ReloadResult]] = []
        supervisor = os.environ.get(ENV_SUPERVISOR, "")
        self._supervisor = int(supervisor) if supervisor.isdigit() else None
        self.current: Generation | None = None

    async def start(self, settings: Settings) -> None:
        self._swap(await self._open(settings))
        self.loaded_at = self._lasting.clock.time()

    async def aclose(self) -> None:
        self._listen(False)
        await asyncio.gather(*self._signalled, return_exceptions=True)
        if self.current is not None:
            self._retiring.add(asyncio.ensure_future(self.current.stack.aclose()))
        await asyncio.gather(*self._retiring, return_exceptions=True)

    # --- signals -----------------------------------------------------------------

    def listen(self) -> None:
        """Reload on SIGHUP (the main thread of a process that knows its config file)."""
        self._listen(True)

    def _listen(self, on: bool) -> None:
        if self.path is None or threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        if on:
            loop.add_signal_handler(signal.SIGHUP, self._on_signal)
        else:
            loop.remove_signal_handler(signal.SIGHUP)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # shutting down: not a kill

    def _on_signal(self) -> None:
        actor, address = self._asked_by or ("signal", "-")
        self._asked_by = None
        task = asyncio.create_task(self.reload(actor, address))
        self._signalled.add(task)
        task.add_done_callback(self._signalled.discard)

    # --- reloading ---------------------------------------------------------------

    async def requested(self, actor: str, address: str) -> ReloadResult:
        """A reload asked over HTTP: this worker's result. With several workers the
        supervisor relays it to all of them (and checks the file first)."""
        if self._supervisor is None or os.getppid() != self._supervisor or self.path is None:
            return await self.reload(actor, address)
        settings, problems = await asyncio.to_thread(check_file, self.path)
        if settings is None:
            return await self._refused(problems, actor, address, time.perf_counter())
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._asked_by = (actor, address)
        os.kill(self._supervisor, signal.SIGHUP)
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), RELAY_S)
        except TimeoutError:
            self._waiters.remove(waiter)
            return self._result(False, actor, time.perf_counter(),
                                errors=["the supervisor did not relay the reload in time"])

    async def reload(self, actor: str = "signal", address: str = "-") -> ReloadResult:
        async with self._lock:
            started = time.perf_counter()
            if self.path is None or self.current is None:
                return await self._refused(["this gateway was not started from a config "
                                            "file (`smm-gateway serve`)"], actor, address,
                                           started)
            settings, problems = await asyncio.to_thread(check_file, self.path)
            if settings is None:
                return await self._refused(problems, actor, address, started)
            changes = diff(self.current.resources.settings, settings)
            try:  # a provider added must answer its list, unless `services` fails already
                new = await self._open(settings, self.current.resources.catalog.complete)
            except Exception as exc:  # whatever failed, the running config must stay
                if not isinstance(exc, ConfigError):
                    log.exception("config reload: the new config could not be opened")
                return await self._refused([f"{self.path}: not applied: {exc}"], actor,
                                           address, started)
            old = self._swap(new)
            self.loaded_at = self._lasting.clock.time()
            if old is not None:
                task = asyncio.create_task(old.retire())
                self._retiring.add(task)
                task.add_done_callback(self._retiring.discard)
            return await self._done(self._result(True, actor, started, changes=changes),
                                    address)

    async def _open(self, settings: Settings, complete: bool = False) -> Generation:
        stack = AsyncExitStack()
        try:
            resources = await stack.enter_async_context(open_config(
                settings, self._lasting, transport=self._transport,
                webhook_transport=self._webhooks, complete=complete))
            actions = Actions(resources)
            stack.push_async_callback(actions.aclose)
        except BaseException:
            await stack.aclose()
            raise
        return Generation(resources, actions, stack)

    def _swap(self, new: Generation) -> Generation | None:
        """One step of the event loop: no request sees half of it."""
        old, self.current = self.current, new
        state = self._state
        state.generation = new
        state.resources, state.actions = new.resources, new.actions
        state.outage.events = new.resources.events  # Redis outages are alerts too
        state.slow_reads = None  # the scrape's cached reads name the old providers
        apply_settings(state, new.resources.settings,
                       old.resources.settings if old is not None else None)
        return old

    def _result(self, ok: bool, actor: str, started: float, *, errors: list[str] | None = None,
                changes: Changes | None = None) -> ReloadResult:
        return ReloadResult(ok=ok, at=self._lasting.clock.time(), path=str(self.path),
                            actor=actor, errors=errors or [], changes=changes or Changes(),
                            seconds=time.perf_counter() - started)

    async def _refused(self, errors: list[str], actor: str, address: str,
                       started: float) -> ReloadResult:
        return await self._done(self._result(False, actor, started, errors=errors), address)

    async def _done(self, result: ReloadResult, address: str) -> ReloadResult:
        """Log it, record it in the admin audit list, keep it for the dashboard."""
        self.last = result
        line: dict[str, Any] = {**result.as_dict(), "pid": os.getpid()}
        if not result.ok:
            log.error("config reload refused: the running config stays", extra=line)
        elif result.changes.restart:
            log.warning("config reloaded; some changes apply at the next restart", extra=line)
        else:
            log.info("config reloaded", extra=line)
        entry = {"t": round(result.at, 3), "actor": result.actor, "address": address,
                 "action": "config_reload", "target": result.path, "ok": result.ok,
                 "detail": result.text()[:_DETAIL_MAX]}
        try:
            await AdminStore(self._lasting.redis).audit(entry)
        except StoreUnavailable as exc:
            log.warning("config reload: audit entry not stored", extra={"error": exc.message})
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(result)
        return result

