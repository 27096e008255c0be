"""Measurement cells and rounds.

A cell is (scenario, upstream latency, concurrency, pacing) measured on several
targets: the simulator direct, nginx in front of it, the gateway, and where it
applies the gateway with two workers, the gateway on granian instead of uvicorn,
and the bare litestar app under each of the two servers. Within a round
the targets run back to back, so a drift of the machine hits all of them; the
figures reported are medians over rounds, and ratios are medians of the
per-round ratios.

Every run on a Python server (gateway, bare litestar) is preceded by a warm-up
on the same target (connection pools, caches, allocator); the simulator and
nginx need none. Runs are read together with probes: CPU of the target's
process tree, Redis commands, upstream requests, and the whole machine's busy
time (what is busy but not ours is someone else's contention).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from bench import osstat
from bench.load import Generator, LoadResult, Workload
from bench.procs import Server, Sim

DIRECT, NGINX, GATEWAY, GATEWAY_2W, BARE = "direct", "nginx", "gateway", "gateway_2w", "bare"
GATEWAY_GRANIAN, BARE_GRANIAN = "gateway_granian", "bare_granian"
TARGET_TITLES = {DIRECT: "direct", NGINX: "nginx", GATEWAY: "gateway",
                 GATEWAY_2W: "gateway x2 workers", BARE: "bare litestar",
                 GATEWAY_GRANIAN: "gateway on granian", BARE_GRANIAN: "bare litestar on granian"}
UPSTREAM_BODY_TARGETS = (DIRECT, NGINX)
# the gateway under any server or worker count: Redis and upstream probes apply
GATEWAYS = (GATEWAY, GATEWAY_2W, GATEWAY_GRANIAN)
# Python servers warm up (connection pools, caches, allocator); the C references don't need to
WARM_TARGETS = (*GATEWAYS, BARE, BARE_GRANIAN)


@dataclass(frozen=True)
class Cell:
    scenario: str
    latency_ms: int
    concurrency: int
    targets: tuple[str, ...]
    pace_ms: int = 0  # per-connection pause between requests; 0 = closed loop

    @property
    def key(self) -> str:
        pace = f"-paced{self.pace_ms}" if self.pace_ms else ""
        return f"{self.scenario}@{self.latency_ms}ms-c{self.concurrency}{pace}"


@dataclass
class CellResult:
    cell: Cell
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # target -> rounds
    unavailable: dict[str, str] = field(default_factory=dict)  # target -> why
    checks: dict[str, Any] = field(default_factory=dict)

    def median(self, target: str, metric: str) -> float | None:
        values = [r[metric] for r in self.runs.get(target, []) if r.get(metric) is not None]
        return statistics.median(values) if values else None

    def pairs(self, a: str, b: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """Runs of `a` and `b` in the same round (a round where either failed is left out)."""
        rounds = {r.get("round", i): r for i, r in enumerate(self.runs.get(b, []))}
        return [(r, rounds[k]) for i, r in enumerate(self.runs.get(a, []))
                if (k := r.get("round", i)) in rounds]

    def ratio(self, num: str, den: str, metric: str = "rps") -> float | None:
        """Median over rounds of num/den, pairing runs of the same round."""
        values = [a[metric] / b[metric] for a, b in self.pairs(num, den)
                  if a.get(metric) is not None and b.get(metric)]
        return statistics.median(values) if values else None

    def added(self, target: str, ref: str, metric: str) -> float | None:
        """Median over rounds of target - ref (latency added over the reference)."""
        values = [a[metric] - b[metric] for a, b in self.pairs(target, ref)
                  if a.get(metric) is not None and b.get(metric) is not None]
        return statistics.median(values) if values else None

    def as_dict(self) -> dict[str, Any]:
        medians = {t: {m: self.median(t, m) for m in MEDIAN_METRICS} for t in self.runs}
        return {
            "key": self.cell.key, "scenario": self.cell.scenario,
            "latency_ms": self.cell.latency_ms, "concurrency": self.cell.concurrency,
            "pace_ms": self.cell.pace_ms, "targets": list(self.cell.targets),
            "rounds": self.runs, "median": medians, "unavailable": self.unavailable,
            "ratios": {
                "gateway_over_direct": self.ratio(GATEWAY, DIRECT),
                "gateway_over_nginx": self.ratio(GATEWAY, NGINX),
                "nginx_over_direct": self.ratio(NGINX, DIRECT),
                "gateway_2w_over_gateway": self.ratio(GATEWAY_2W, GATEWAY),
                "gateway_over_bare": self.ratio(GATEWAY, BARE),
                # the ASGI server: granian over uvicorn, and gateway/bare per server
                "gateway_granian_over_gateway": self.ratio(GATEWAY_GRANIAN, GATEWAY),
                "gateway_granian_over_bare_granian": self.ratio(GATEWAY_GRANIAN, BARE_GRANIAN),
                "bare_granian_over_bare": self.ratio(BARE_GRANIAN, BARE),
            },
            "added_ms": {
                "p50_over_direct": self.added(GATEWAY, DIRECT, "p50_ms"),
                "p99_over_direct": self.added(GATEWAY, DIRECT, "p99_ms"),
                "p50_over_nginx": self.added(GATEWAY, NGINX, "p50_ms"),
                "p99_over_nginx": self.added(GATEWAY, NGINX, "p99_ms"),
                "granian_p50_over_direct": self.added(GATEWAY_GRANIAN, DIRECT, "p50_ms"),
                "granian_p99_over_direct": self.added(GATEWAY_GRANIAN, DIRECT, "p99_ms"),
            },
            "checks": self.checks,
        }


MEDIAN_METRICS = ("rps", "p50_ms", "p90_ms", "p99_ms", "max_ms", "errors", "non2xx",
                  "gen_cpu_pct", "server_cpu_us_per_req", "server_cpu_pct",
                  "redis_cmds_per_req", "redis_cpu_us_per_req", "upstream_per_req",
                  "foreign_cpu_pct")


# --- probes -------------------------------------------------------------------


class _Windowed:
    """A probe that reads counters at begin and end and reports their rates per second
    over its own window (reading /proc or asking a server takes a few ms; each probe's
    own window keeps that out of the figures)."""

    def __init__(self) -> None:
        self._t0 = 0.0
        self._v0: dict[str, float] = {}

    def read(self) -> dict[str, float]:
        raise NotImplementedError

    def begin(self) -> None:
        self._v0 = self.read()
        self._t0 = time.monotonic()

    def end(self) -> dict[str, float]:
        elapsed = max(time.monotonic() - self._t0, 1e-9)
        v1 = self.read()
        return {f"{k}_per_s": (v1[k] - self._v0.get(k, 0.0)) / elapsed for k in v1}


class TreeCpu(_Windowed):
    """CPU seconds of the target's process tree (uvicorn workers included)."""

    def __init__(self, pid: int) -> None:
        super().__init__()
        self.pid = pid

    def read(self) -> dict[str, float]:
        return {"server_cpu_s": osstat.tree_cpu_seconds(self.pid)}


class Machine(_Windowed):
    """Busy CPU of the whole machine, and of everything this run started."""

    def read(self) -> dict[str, float]:
        return {"system_busy_s": osstat.system_busy_seconds(),
                "ours_s": osstat.tree_cpu_seconds(os.getpid())}


class RedisCounters(_Windowed):
    """Commands Redis processed (in all, and per command: commands a Lua script runs
    count as well as the EVALSHA) and the CPU it used, from INFO. The probe's own
    INFO commands are taken off."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self._client = redis.Redis.from_url(url)
        self._reads = 0

    def read(self) -> dict[str, float]:
        stats, cpu = self._client.info("stats"), self._client.info("cpu")
        per_command = self._client.info("commandstats")
        self._reads += 1
        out = {"redis_cmds": float(stats["total_commands_processed"]) - 3 * self._reads,
               "redis_cpu_s": float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])}
        for name, entry in per_command.items():
            command = name.removeprefix("cmdstat_")
            if command != "info":
                out[f"cmd:{command}"] = float(entry["calls"])
        return out

    def close(self) -> None:
        self._client.close()


class UpstreamRequests(_Windowed):
    """Requests the simulators received (their /_sim/stats)."""

    def __init__(self, sims: Iterable[Sim]) -> None:
        super().__init__()
        self._sims = list(sims)

    def read(self) -> dict[str, float]:
        return {"upstream_requests": float(sum(s.total() for s in self._sims))}


def derive(result: LoadResult) -> dict[str, Any]:
    """A run's record: the generator's figures plus per-request costs from the probes."""
    out: dict[str, Any] = result.as_dict()
    rates = out.pop("probes")
    rps = result.rps

    def per_req(name: str, scale: float = 1.0) -> float | None:
        rate = rates.get(name + "_per_s")
        return None if rate is None or rps <= 0 else rate / rps * scale

    out["server_cpu_us_per_req"] = per_req("server_cpu_s", 1e6)
    if "server_cpu_s_per_s" in rates:
        out["server_cpu_pct"] = 100 * rates["server_cpu_s_per_s"]
    out["redis_cmds_per_req"] = per_req("redis_cmds")
    out["redis_cpu_us_per_req"] = per_req("redis_cpu_s", 1e6)
    out["upstream_per_req"] = per_req("upstream_requests")
    commands = {k[4:-6]: per_req(k[:-6]) for k in rates if k.startswith("cmd:")}
    if commands:
        out["redis_per_req"] = {k: round(v, 3) for k, v in sorted(commands.items())
                                if v is not None and v > 0.0005}
    if "system_busy_s_per_s" in rates:
        out["foreign_cpu_pct"] = max(
            0.0, 100 * (rates["system_busy_s_per_s"] - rates["ours_s_per_s"]))
    return out


# --- the runner ---------------------------------------------------------------


@dataclass
class Runner:
    generator: Generator
    duration_s: float
    warmup_s: float
    redis_url: str
    sims: Sequence[Sim]
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True)
    planned: int = 0
    done: int = 0
    started: float = field(default_factory=time.monotonic)

    def measure(self, target: str, server: Server, work: Workload, concurrency: int,
                duration_s: float | None = None) -> dict[str, Any]:
        """Warm up, then one measured run of `work` on `server` with probes."""
        duration = duration_s if duration_s is not None else self.duration_s
        if self.warmup_s > 0 and target in WARM_TARGETS:
            self.generator.run(work, concurrency, self.warmup_s)
        probes: list[Any] = [TreeCpu(server.pid), Machine()]
        counters = None
        log_at = server.log_size()
        if target in GATEWAYS:
            counters = RedisCounters(self.redis_url)
            probes += [counters, UpstreamRequests(self.sims)]
        try:
            result = self.generator.run(work, concurrency, duration, probes)
        finally:
            if counters is not None:
                counters.close()
        if concurrency >= 1000:
            osstat.wait_idle(server.pid)  # let the backlog drain before anything else
        record = derive(result)
        record["gen_saturated"] = result.gen_cpu_pct >= 90.0 * result.threads
        problems = server.log_problems(log_at)
        if problems:
            record["server_log_problems"] = problems
        return record

    def progress(self, cell: Cell, target: str, rnd: int, record: Mapping[str, Any]) -> None:
        self.done += 1
        elapsed = time.monotonic() - self.started
        eta = elapsed / self.done * max(self.planned - self.done, 0)
        cpu = record.get("server_cpu_us_per_req")
        cpu_text = f" {cpu:7.0f}us cpu/req" if cpu is not None else ""
        self.log(f"[{self.done:>3}/{self.planned}] {cell.key:<28} r{rnd + 1} {target:<15} "
                 f"{record['rps']:>9.0f} req/s  p50 {record['p50_ms']:7.2f}  "
                 f"p99 {record['p99_ms']:7.2f} ms  err {record['errors'] + record['non2xx']}"
                 f"{cpu_text}  gen {record['gen_cpu_pct']:3.0f}%  eta {eta:4.0f}s")
