"""`gateway.edge.memory.Reclaimer`: after a burst and a quiet second, the hooks run (idle
connections closed), then a full collection and malloc_trim; never while a request is
in flight, never without a burst, and a failing hook does not stop it."""

from __future__ import annotations

import asyncio
import ctypes
import platform

import pytest

from gateway.edge.memory import Reclaimer, malloc_trim
from inprocess import App


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def burst(r: Reclaimer, n: int) -> None:
    for _ in range(n):
        r.enter()
    for _ in range(n):
        r.leave()


def test_reclaims_after_a_burst_and_a_quiet_second() -> None:
    clock = Clock()
    r = Reclaimer(idle_s=1.0, burst=4, clock=clock)
    burst(r, 3)
    clock.now = 10.0
    assert not r.due(), "three at once is no burst"
    burst(r, 4)
    clock.now = 10.5
    assert not r.due(), "not quiet for long enough"
    r.enter()
    clock.now = 20.0
    assert not r.due(), "a request is in flight"
    r.leave()
    clock.now = 20.9
    assert not r.due()
    clock.now = 21.0
    assert r.due()


def test_reclaim_runs_every_hook_even_after_one_fails() -> None:
    ran: list[str] = []

    def broken() -> None:
        raise RuntimeError("boom")

    async def closing() -> None:
        ran.append("async")

    async def go() -> Reclaimer:
        r = Reclaimer(idle_s=1.0, burst=1, clock=Clock())
        r.hooks += [broken, lambda: ran.append("sync") and None, closing]
        burst(r, 1)
        await r.reclaim()
        return r

    r = asyncio.run(go())
    assert ran == ["sync", "async"]
    assert r.reclaims == 1 and r.peak == 0 and not r.due(), "the burst is forgotten"


def test_malloc_trim_is_glibcs_here() -> None:
    """On glibc (this project's images and CI) the hook is glibc's malloc_trim, not
    the no-op kept for C libraries without one."""
    assert platform.libc_ver()[0] == "glibc", "these tests run on a glibc system"
    trim = malloc_trim()
    held = [c.cell_contents for c in trim.__closure__ or ()]
    assert [getattr(f, "__name__", "") for f in held] == ["malloc_trim"]
    assert held[0].argtypes == [ctypes.c_size_t] and held[0].restype is ctypes.c_int
    assert trim() is None  # malloc_trim(0): returns, changes nothing a caller sees


@pytest.mark.anyio
async def test_the_app_counts_requests_and_releases_idle_connections(app: App) -> None:
    """Through the real app: a request is counted in and out; a reclaim closes the idle
    Redis connections (they reopen on the next call)."""
    reclaimer: Reclaimer = app.http.app.state.reclaimer
    pool = app.resources.redis.connection_pool
    answer = await app.post(action="balance")
    assert answer.status_code == 200
    assert reclaimer.in_flight == 0 and reclaimer.peak == 1
    assert sum(c.is_connected for c in pool._available_connections) == pool.max_connections, \
        "the pool was opened whole at start"
    app.in_app(reclaimer.reclaim)
    assert not any(c.is_connected for c in pool._available_connections)
    again = await app.post(action="balance")
    assert again.json() == answer.json()
