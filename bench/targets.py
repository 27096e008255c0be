"""Issue 13's targets, each checked against the figures of this run.

A target that was not measured (a scenario left out with --only) is left out; a
target whose figure exists is reported with the figure whatever the verdict, so
a miss is visible with its number next to it, never hidden. Rows marked
informational (the add c1 latency, the closed-loop 1,000 clients, multi-status
at 100 ms, granian vs uvicorn) are judged against their limit where they have
one but are not issue 13's targets: the summary counts them apart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from bench.measure import (
    BARE,
    BARE_GRANIAN,
    DIRECT,
    GATEWAY,
    GATEWAY_2W,
    GATEWAY_GRANIAN,
    CellResult,
)

UPSTREAM_MS = 100
SERVICES_RPS, SERVICES_OF_BARE = 10_000.0, 0.9  # one worker; met if either
STATUS_RPS = 3_000.0  # cache off: one upstream call per request
ADD_RPS = 2_000.0
STATUS_ADDED_MS = {"p50_ms": 0.4, "p99_ms": 1.5}
ADD_ADDED_MS = {"p50_ms": 0.5, "p99_ms": 2.0}  # informational
PACED_C1000_P99_MS = 130.0  # 1,000 clients polling ~once a second, 100 ms upstream
MULTI_STATUS_P50_MS = 2.0  # 100 orders over 4 providers, 0 ms upstream, c1
MULTI_SLACK_MS = 5.0  # informational at 100 ms: slowest upstream + this
REDIS_BYTES_PER_ORDER = 150.0
SERVER_SCENARIOS = ("services", "status", "add")


@dataclass(frozen=True)
class Verdict:
    kind: str
    target: str
    figure: str
    met: bool | None  # None: could not be judged (e.g. a reference was unavailable)
    value: float | None = None
    limit: float | None = None
    note: str = ""
    informational: bool = False  # reported, not one of the targets

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


def _signed(value: float | None, unit: str) -> str:
    return "n/a" if value is None else f"{value:+,.2f}{unit}"


def _any(*verdicts: bool | None) -> bool | None:
    """Met if either is met; unknown if none is and one could not be judged."""
    if any(v is True for v in verdicts):
        return True
    return None if any(v is None for v in verdicts) else False


def added_latency(cells: list[CellResult]) -> list[Verdict]:
    out = []
    for scenario, limits, info in (("status", STATUS_ADDED_MS, False),
                                   ("add", ADD_ADDED_MS, True)):
        c = _find(cells, scenario, 0, 1)
        if c is None or GATEWAY not in c.runs:
            continue
        for metric, limit in limits.items():
            added = c.added(GATEWAY, DIRECT, metric)
            out.append(Verdict(
                "added_latency", f"{scenario} c1: added {metric[:3]} <= {limit} ms over direct",
                f"{_signed(added, ' ms')} (gateway {_fmt(c.median(GATEWAY, metric), ' ms')}, "
                f"direct {_fmt(c.median(DIRECT, metric), ' ms')})",
                _le(added, limit), added, limit, informational=info))
    return out


def throughput(cells: list[CellResult]) -> list[Verdict]:
    """services (or 90% of bare), status and add at c64, 0 ms upstream, one worker."""
    out = []
    for scenario, limit in (("services", SERVICES_RPS), ("status", STATUS_RPS),
                            ("add", ADD_RPS)):
        c = _find(cells, scenario, 0, 64)
        if c is None or GATEWAY not in c.runs:
            continue
        rps = c.median(GATEWAY, "rps")
        cpu = c.median(GATEWAY, "server_cpu_us_per_req")
        target = f"{scenario} c64: >= {limit:,.0f} req/s, 1 worker"
        figure = f"{_fmt(rps, ' req/s', 0)} ({_fmt(cpu, ' us', 0)} CPU/req"
        met = _ge(rps, limit)
        note = ""
        if scenario == "services":
            target += f", or >= {100 * SERVICES_OF_BARE:.0f}% of a bare litestar handler"
            ratio = c.ratio(GATEWAY, BARE) if BARE in c.runs else None
            figure += (f"); {_fmt(None if ratio is None else 100 * ratio, '%', 0)} of bare "
                       f"({_fmt(c.median(BARE, 'rps'), ' req/s', 0)})")
            met = _any(met, _ge(ratio, SERVICES_OF_BARE))
            if BARE not in c.runs:
                note = "bare: " + c.unavailable.get(BARE, "not measured")
        elif scenario == "status":
            target += " (cache off, 1 upstream call per request)"
            figure += f", {_fmt(c.median(GATEWAY, 'upstream_per_req'), '', 2)} upstream/req)"
        else:
            figure += ")"
        out.append(Verdict("throughput", target, figure, met, rps, limit, note))
    return out


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
        if k.latency_ms == 0:
            out.append(Verdict(
                "multi_latency", f"multi-status of 100 orders / 4 providers @0 ms upstream, "
                f"c1: gateway p50 <= {MULTI_STATUS_P50_MS} ms",
                f"{_fmt(p50, ' ms')} (direct 100-id status p50 {_fmt(ref, ' ms')})",
                _le(p50, MULTI_STATUS_P50_MS), p50, MULTI_STATUS_P50_MS))
            continue
        limit = None if ref is None else ref + MULTI_SLACK_MS
        out.append(Verdict(
            "multi_latency", f"multi-status @{k.latency_ms} ms upstream, c1: p50 <= "
            f"slowest upstream + {MULTI_SLACK_MS:.0f} ms", f"{_fmt(p50, ' ms')} (upstream = "
            f"direct 100-id status p50 {_fmt(ref, ' ms')})",
            None if limit is None or p50 is None else p50 <= limit, p50, limit,
            informational=True))
    return out


def c1000(cells: list[CellResult]) -> list[Verdict]:
    """Paced (each client polls about once a second): the target. Closed loop (each
    client re-sends at once, 10,000 req/s offered): informational."""
    out = []
    for c in cells:
        k = c.cell
        if k.concurrency < 1000 or GATEWAY not in c.runs:
            continue
        errors = sum(r["errors"] + r["non2xx"] for r in c.runs[GATEWAY])
        p99 = c.median(GATEWAY, "p99_ms")
        rps = c.median(GATEWAY, "rps")
        figure = f"{errors} errors, p99 {_fmt(p99, ' ms')}, {_fmt(rps, ' req/s', 0)}"
        if k.pace_ms:
            met = None if p99 is None else (errors == 0 and p99 <= PACED_C1000_P99_MS)
            out.append(Verdict(
                "c1000", f"1,000 clients polling status ~once a second @{UPSTREAM_MS} ms "
                f"upstream: p99 <= {PACED_C1000_P99_MS:.0f} ms, 0 errors, 1 worker",
                figure, met, p99, PACED_C1000_P99_MS,
                f"paced: each client waits ~{k.pace_ms} ms between answers"))
        else:
            out.append(Verdict(
                "c1000", f"1,000 clients @{UPSTREAM_MS} ms upstream, closed loop (each "
                "client re-sends at once): errors and p99", figure, None, p99, None,
                "offered load is 1,000/0.1 s = 10,000 req/s, beyond one worker",
                informational=True))
    return out


def asgi_server(cells: list[CellResult]) -> list[Verdict]:
    """granian against uvicorn in the same run: req/s ratio at c64 per scenario, c1 p50s,
    and gateway/bare under each server. Informational: met is "granian faster in every
    measured scenario?"."""
    parts, ratios, notes = [], [], []
    for scenario in SERVER_SCENARIOS:
        c = _find(cells, scenario, 0, 64)
        if c is None or GATEWAY not in c.runs:
            continue
        if GATEWAY_GRANIAN not in c.runs:
            why = c.unavailable.get(GATEWAY_GRANIAN)
            if why:
                notes.append(f"{scenario}: granian {why}")
            continue
        ratio = c.ratio(GATEWAY_GRANIAN, GATEWAY)
        if ratio is not None:
            ratios.append(ratio)
        text = (f"{scenario} {_fmt(ratio, 'x')} ({_fmt(c.median(GATEWAY_GRANIAN, 'rps'), '', 0)}"
                f" vs {_fmt(c.median(GATEWAY, 'rps'), '', 0)} req/s")
        c1 = _find(cells, scenario, 0, 1)
        if c1 is not None and GATEWAY_GRANIAN in c1.runs and GATEWAY in c1.runs:
            text += (f"; c1 p50 {_fmt(c1.median(GATEWAY_GRANIAN, 'p50_ms'), '')} vs "
                     f"{_fmt(c1.median(GATEWAY, 'p50_ms'), ' ms')}")
        if scenario == "services" and BARE_GRANIAN in c.runs and BARE in c.runs:
            text += (f"; gateway/bare {_fmt(c.ratio(GATEWAY_GRANIAN, BARE_GRANIAN), '')} on "
                     f"granian, {_fmt(c.ratio(GATEWAY, BARE), '')} on uvicorn")
        parts.append(text + ")")
    if not parts and not notes:
        return []
    met = None if not ratios else all(r >= 1.0 for r in ratios)
    figure = "; ".join(parts) if parts else "n/a"
    return [Verdict("asgi_server", "ASGI server: granian vs uvicorn (services/status/add c64, "
                    "granian/uvicorn req/s): granian faster?", figure, met,
                    min(ratios) if ratios else None, 1.0,
                    "; ".join(notes)[:400], informational=True)]


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
    return [Verdict("redis_memory", "Redis used_memory per stored order <= "
                    f"{REDIS_BYTES_PER_ORDER:.0f} B",
                    f"{per:.1f} B/order over {mem['orders']:,} orders",
                    per <= REDIS_BYTES_PER_ORDER, per, REDIS_BYTES_PER_ORDER)]


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
    throughput, added_latency, c1000, multi_status, workers, asgi_server)


def evaluate(cells: list[CellResult], mem: Mapping[str, Any] | None,
             soak_data: Mapping[str, Any] | None) -> list[Verdict]:
    out: list[Verdict] = []
    for check in CHECKS:
        out.extend(check(cells))
    return out + redis_memory(mem) + soak(soak_data)
