"""Which cells a run measures: the full matrix, or the smoke subset.

Full: every scenario at concurrency 1 (latency) and 64 (throughput), upstream
latency 0 ms (CPU-bound) and 100 ms, on direct, nginx and the gateway; the bare
litestar app (under uvicorn and under granian) next to `services` at 0 ms; the
gateway on granian next to the CPU-bound services, status and add cells (c1 and
c64: the ASGI server comparison); two gateway workers next to the CPU-bound
throughput cells; 1,000 clients at 100 ms, closed loop and paced.

Smoke: one cell of each kind, so every code path (each target, each target
verdict, both Lua modes, pacing, fixtures of every sort) runs in seconds; the
granian targets only in the services c64 cell.
"""

from __future__ import annotations

from collections.abc import Collection

from bench.measure import (
    BARE,
    BARE_GRANIAN,
    DIRECT,
    GATEWAY,
    GATEWAY_2W,
    GATEWAY_GRANIAN,
    NGINX,
    Cell,
)
from bench.scenarios import SCENARIOS

LATENCIES = (0, 100)
CONCURRENCIES = (1, 64)
C1000 = 1000
C1000_PACE_MS = 900  # with 100 ms upstream: each client polls about once a second
SMOKE_PACE_MS = 300  # same code path, shorter ramp
WORKER_SCENARIOS = ("services", "status", "add")
SERVER_SCENARIOS = ("services", "status", "add")  # granian vs uvicorn, 0 ms, c1 and c64
EXTRAS = ("c1000", "redis_memory", "soak")
REFS = (DIRECT, NGINX, GATEWAY)


def full(only: Collection[str] | None = None) -> list[Cell]:
    def wanted(name: str) -> bool:
        return not only or name in only

    cells = []
    for latency in LATENCIES:
        for scenario in SCENARIOS:
            if not wanted(scenario):
                continue
            for conc in CONCURRENCIES:
                targets = list(REFS)
                if latency == 0 and scenario in SERVER_SCENARIOS:
                    targets.append(GATEWAY_GRANIAN)
                if latency == 0 and scenario == "services":
                    targets += [BARE, BARE_GRANIAN]
                if latency == 0 and conc == 64 and scenario in WORKER_SCENARIOS:
                    targets.append(GATEWAY_2W)
                cells.append(Cell(scenario, latency, conc, tuple(targets)))
    if wanted("c1000"):
        cells.append(Cell("status", 100, C1000, REFS))
        cells.append(Cell("status", 100, C1000, REFS, pace_ms=C1000_PACE_MS))
    return cells


def smoke(only: Collection[str] | None = None) -> list[Cell]:
    cells = [
        Cell("services", 0, 64, (DIRECT, NGINX, GATEWAY, GATEWAY_GRANIAN, BARE, BARE_GRANIAN,
                                 GATEWAY_2W)),
        Cell("status_cached", 0, 64, (GATEWAY,)),
        Cell("status", 0, 1, REFS),
        Cell("add", 0, 1, (DIRECT, GATEWAY)),
        Cell("refill", 0, 64, (GATEWAY,)),
        Cell("multi_status", 0, 1, (DIRECT, GATEWAY)),
        Cell("mixed", 0, 64, (GATEWAY,)),
        Cell("status", 100, C1000, (GATEWAY,), pace_ms=SMOKE_PACE_MS),
    ]
    if only:  # the 1,000-client cell is "c1000", not "status"
        cells = [c for c in cells if ("c1000" if c.concurrency >= C1000 else c.scenario) in only]
    return cells
