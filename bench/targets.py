"""The issue's targets, each checked against the figures of this run.

A target that was not measured (a scenario left out with --only) is left out; a
target whose figure exists is reported with the figure whatever the verdict, so
a miss is visible with its number next to it, never hidden.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from bench.measure import BARE, DIRECT, GATEWAY, GATEWAY_2W, CellResult

UPSTREAM_MS = 100
C1000_SLACK_MS = 50


@dataclass(frozen=True)
class Verdict:
    kind: str
    target: str
    figure: str
    met: bool | None  # None: could not be judged (e.g. a reference was unavailable)
    value: float | None = None
    limit: float | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _find(cells: list[CellResult], scenario: str, latency: int, concurrency: int,
          pace: int = 0) -> CellResult | None:
    for c in cells:
        k = c.cell
        if (k.scenario, k.latency_ms, k.concurrency, k.pace_ms) == (scenario, latency,
                                                                    concurrency, pace):
            return c
    return None


def _le(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def _ge(value: float | None, limit: float) -> bool | None:
    return None if value is None else value >= limit


def _fmt(value: float | None, unit: str, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}{unit}"


def added_latency(cells: list[CellResult]) -> list[Verdict]:
    out = []
    for scenario in ("status", "add"):
        c = _find(cells, scenario, 0, 1)
        if c is None or GATEWAY not in c.runs:
            continue
        for metric, limit in (("p50_ms", 0.5), ("p99_ms", 2.0)):
            added = c.added(GATEWAY, DIRECT, metric)
            out.append(Verdict(
                "added_latency", f"{scenario} c1: added {metric[:3]} <= {limit} ms over direct",
                f"+{_fmt(added, ' ms')} (gateway {_fmt(c.median(GATEWAY, metric), ' ms')}, "
                f"direct {_fmt(c.median(DIRECT, metric), ' ms')})",
                _le(added, limit), added, limit))
    return out


def throughput(cells: list[CellResult]) -> list[Verdict]:
    out = []
    for scenario, limit in (("services", 8000.0), ("status", 2500.0), ("add", 2000.0)):
        c = _find(cells, scenario, 0, 64)
        if c is None or GATEWAY not in c.runs:
            continue
        rps = c.median(GATEWAY, "rps")
        cpu = c.median(GATEWAY, "server_cpu_us_per_req")
        out.append(Verdict("throughput", f"{scenario} c64: >= {limit:,.0f} req/s, 1 worker",
                           f"{_fmt(rps, ' req/s', 0)} ({_fmt(cpu, ' us', 0)} CPU/req)",
                           _ge(rps, limit), rps, limit))
    return out


def vs_bare(cells: list[CellResult]) -> list[Verdict]:
    c = _find(cells, "services", 0, 64)
    if c is None or BARE not in c.runs or GATEWAY not in c.runs:
        return []
    ratio = c.ratio(GATEWAY, BARE)
    return [Verdict("vs_bare", "services c64: >= 50% of a bare litestar handler",
                    f"{_fmt(None if ratio is None else 100 * ratio, '%', 0)} "
                    f"(bare {_fmt(c.median(BARE, 'rps'), ' req/s', 0)})",
                    _ge(ratio, 0.5), ratio, 0.5)]


def multi_status(cells: list[CellResult]) -> list[Verdict]:
    out = []
    for c in cells:
        k = c.cell
        if k.scenario != "multi_status" or k.concurrency != 1 or GATEWAY not in c.runs:
            continue
        one = c.checks.get("upstream_calls_one_request")
        if one is not None and k.latency_ms == 0:
            total = sum(one.values())
            load = c.median(GATEWAY, "upstream_per_req")
            out.append(Verdict(
                "upstream_calls", "multi-status of 100 orders / 4 providers: exactly 4 "
                "upstream requests", f"{total} ({', '.join(map(str, one.values()))} per "
                f"provider); {_fmt(load, '', 2)} per request under load",
                total == 4 and all(v == 1 for v in one.values()), float(total), 4.0))
        p50, ref = c.median(GATEWAY, "p50_ms"), c.median(DIRECT, "p50_ms")
        limit = None if ref is None else ref + 5.0
        out.append(Verdict(
            "multi_latency", f"multi-status @{k.latency_ms} ms upstream, c1: p50 <= "
            "slowest upstream + 5 ms", f"{_fmt(p50, ' ms')} (upstream = direct 100-id "
            f"status p50 {_fmt(ref, ' ms')})",
            None if limit is None or p50 is None else p50 <= limit, p50, limit))
    return out


def c1000(cells: list[CellResult]) -> list[Verdict]:
    out = []
    limit = UPSTREAM_MS + C1000_SLACK_MS
    for c in cells:
        k = c.cell
        if k.concurrency < 1000 or GATEWAY not in c.runs:
            continue
        errors = sum(r["errors"] + r["non2xx"] for r in c.runs[GATEWAY])
        p99 = c.median(GATEWAY, "p99_ms")
        rps = c.median(GATEWAY, "rps")
        how = (f"paced: each client waits ~{k.pace_ms} ms between answers"
               if k.pace_ms else "closed loop: each client re-sends at once")
        met = None if p99 is None else (errors == 0 and p99 <= limit)
        out.append(Verdict(
            "c1000", f"1,000 clients @100 ms upstream ({how}): no errors, p99 <= {limit} ms",
            f"{errors} errors, p99 {_fmt(p99, ' ms')}, {_fmt(rps, ' req/s', 0)}",
            met, p99, float(limit),
            "" if k.pace_ms else "offered load is 1,000/0.1 s = 10,000 req/s"))
    return out


def workers(cells: list[CellResult]) -> list[Verdict]:
    out = []
    for scenario in ("services", "status", "add"):
        c = _find(cells, scenario, 0, 64)
        if c is None or GATEWAY_2W not in c.runs:
            continue
        ratio = c.ratio(GATEWAY_2W, GATEWAY)
        out.append(Verdict(
            "workers", f"{scenario} c64: 2 workers >= 1.6x 1 worker",
            f"{_fmt(ratio, 'x')} ({_fmt(c.median(GATEWAY_2W, 'rps'), ' req/s', 0)} vs "
            f"{_fmt(c.median(GATEWAY, 'rps'), ' req/s', 0)})", _ge(ratio, 1.6), ratio, 1.6,
            "2 cores shared by generator, simulator, Redis and both workers"))
    return out


def redis_memory(mem: Mapping[str, Any] | None) -> list[Verdict]:
    if not mem:
        return []
    per = float(mem["bytes_per_order"])
    return [Verdict("redis_memory", "Redis used_memory per stored order <= 200 B",
                    f"{per:.1f} B/order over {mem['orders']:,} orders", per <= 200, per, 200.0)]


def soak(data: Mapping[str, Any] | None) -> list[Verdict]:
    if not data:
        return []
    growth = data.get("growth_pct")
    return [Verdict("soak", f"gateway RSS flat over a {data['seconds']:.0f} s soak "
                    "(<= 10% growth)",
                    f"{_fmt(growth, '%', 1)} ({data['rss_first_mib']:.1f} -> "
                    f"{data['rss_last_mib']:.1f} MiB at {data['rps']:,.0f} req/s)",
                    _le(growth, 10.0), growth, 10.0)]


CHECKS: tuple[Callable[[list[CellResult]], list[Verdict]], ...] = (
    added_latency, throughput, vs_bare, multi_status, c1000, workers)


def evaluate(cells: list[CellResult], mem: Mapping[str, Any] | None,
             soak_data: Mapping[str, Any] | None) -> list[Verdict]:
    out: list[Verdict] = []
    for check in CHECKS:
        out.extend(check(cells))
    return out + redis_memory(mem) + soak(soak_data)
