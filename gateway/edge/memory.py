"""Giving memory back after a burst.

A burst (a thousand clients at once) makes the process take memory that the
allocator keeps once the burst is over: freed heap pages stay mapped, and the
connections opened mid-burst (upstream keep-alives, Redis) hold buffers and pin
what was allocated around them. `Reclaimer` counts the API requests in flight;
when a burst (`burst` or more at once) has been followed by `idle_s` of quiet, it
runs its hooks (closing idle upstream and Redis connections), a full garbage
collection and glibc's `malloc_trim(0)`. It runs on the event loop only when no
request is in flight, so no request waits for it.

`smm-gateway serve` also runs the process with `PYTHONMALLOC=malloc`
(`gateway.ops.cli`): with glibc's allocator the pages a burst freed go back to the
system on trim, where pymalloc keeps a 1 MiB arena for as long as one object in it
lives. Measured on the 1,000-connection soak (`tests/e2e/test_memory.py`): RSS
+12.5 % after the burst with pymalloc, +7.0 % with malloc (docs/operations.md has the
figures).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence

log = logging.getLogger("gateway.memory")

# the collector's thresholds while serving: the young generation is collected after
# this many allocations, not CPython's 700 (a 100-order status allocates thousands)
GC_THRESHOLD = (20_000, 20, 20)
IDLE_S = 1.0  # quiet this long after a burst: reclaim
BURST = 32  # API requests in flight at once that make a burst
Hook = Callable[[], Awaitable[None] | None]


def malloc_trim() -> Callable[[], None]:
    """glibc's `malloc_trim(0)` (free heap pages back to the system), or a no-op
    where the C library has none (musl, macOS)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int

    def run() -> None:
        trim(0)

    return run


class Reclaimer:
    """Counts requests in flight; after a burst and `idle_s` of quiet, reclaims."""

    def __init__(self, *, idle_s: float = IDLE_S, burst: int = BURST,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_s, self.burst, self.clock = idle_s, burst, clock
        self.hooks: list[Hook] = []
        self.in_flight = 0
        self.peak = 0  # the most in flight at once since the last reclaim
        self.quiet_since = clock()
        self.reclaims = 0
        self._trim = malloc_trim()

    def enter(self) -> None:
        self.in_flight += 1
        if self.in_flight > self.peak:
            self.peak = self.in_flight

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self.quiet_since = self.clock()

    def due(self) -> bool:
        return (self.peak >= self.burst and self.in_flight == 0
                and self.clock() - self.quiet_since >= self.idle_s)

    async def reclaim(self) -> None:
        self.peak = 0
        for hook in self.hooks:
            try:
                done = hook()
                if done is not None:
                    await done
            except Exception:  # a hook that fails must not stop the loop (logged)
                log.warning("memory: a reclaim hook failed", exc_info=True)
        gc.collect()
        self._trim()
        self.reclaims += 1

    async def run(self) -> None:
        """Until cancelled: look every quarter of `idle_s`, reclaim when due."""
        while True:
            await asyncio.sleep(self.idle_s / 4)
            if self.due():
                await self.reclaim()


def settle_heap() -> None:
    """Once a serving process is up: what it built at start (modules, config, the
    catalogs) is moved out of the cyclic collector's sight (`gc.freeze`), so a full
    collection no longer walks it, and the young generation is collected less often
    (GC_THRESHOLD). Requests make little cyclic garbage (reference counting frees the
    rest at once), and a burst's is collected by the `Reclaimer`."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


def system_allocator(argv: Sequence[str]) -> None:
    """`serve` runs with glibc's allocator (`PYTHONMALLOC=malloc`): unless PYTHONMALLOC
    is set already, the process runs itself again (same pid) with it set; workers
    inherit it. `argv`: the command line after `python -m gateway`."""
    if os.environ.get("PYTHONMALLOC") or not argv:
        return
    os.environ["PYTHONMALLOC"] = "malloc"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "gateway", *argv])
