"""`python -m bench`: start everything, measure every cell, write the results, stop everything.

    python -m bench                       # full run (3 rounds x 3 s per target)
    python -m bench --smoke --out /tmp/b  # ~20 s: one cell of each kind
    python -m bench --only status add --rounds 5 --duration 5
    python -m bench --profile status add  # py-spy on the gateway under those loads

Results go to --out (default bench/results): latest.json, latest.md, latest.png,
and profile-<scenario>.svg/.txt with --profile. The exit status is 0 when the
suite ran, whatever the verdicts: the targets table says which were met.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

from bench import osstat, plan, report
from bench.load import Generator, PyGen, Workload, Wrk
from bench.measure import (
    BARE,
    BARE_GRANIAN,
    DIRECT,
    GATEWAY,
    GATEWAY_2W,
    GATEWAY_GRANIAN,
    NGINX,
    UPSTREAM_BODY_TARGETS,
    Cell,
    CellResult,
    Runner,
)
from bench.memory import redis_memory, soak
from bench.procs import (
    CLIENT_KEY,
    PROVIDERS,
    BareApp,
    GatewayServer,
    Nginx,
    Server,
    Sim,
    Stack,
    gateway_config,
    nofile_limit,
    which,
)
from bench.profile import profile
from bench.scenarios import SCENARIOS, TITLES, Env, Prepared, prepare, upstream_calls_of_one
from bench.targets import evaluate
from gateway.config import GatewaySettings

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
UNAVAILABLE_CACHE = "not available in this build (GatewaySettings has no status_cache_s)"
CACHE_ON_S = 60
PACED_RAMP_S = 1.5  # paced clients start within ~1.5 pauses; measure that much longer


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true",
                   help="a ~20 s run of one cell of each kind (checks the suite, not figures)")
    p.add_argument("--rounds", type=int, help="rounds per cell (default 3; smoke 1)")
    p.add_argument("--duration", type=float, help="seconds per measurement (default 3; "
                   "smoke 0.3)")
    p.add_argument("--warmup", type=float, help="warm-up seconds before each measurement "
                   "(default 1; smoke 0)")
    p.add_argument("--only", nargs="+", metavar="NAME", choices=[*SCENARIOS, *plan.EXTRAS],
                   help=f"only these scenarios/extras: {', '.join(SCENARIOS + plan.EXTRAS)}")
    p.add_argument("--profile", nargs="*", metavar="SCENARIO", choices=SCENARIOS,
                   help="py-spy the gateway at c64 during these scenarios (default: status add)")
    p.add_argument("--profile-seconds", type=float, help="default 10; smoke 1")
    p.add_argument("--soak-seconds", type=float, help="default 300; smoke 1")
    p.add_argument("--redis-orders", type=int, help="default 1,000,000; smoke 2,000")
    p.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    p.add_argument("--durability", choices=("auto", "written", "fsync"),
                   help="gateway.durability of the gateways measured (default: the "
                   "gateway's default, auto; `written` also runs the embedded Redis "
                   "with appendfsync everysec)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    smoke = args.smoke
    defaults = {"rounds": (1, 3), "duration": (0.3, 3.0), "warmup": (0.0, 1.0),
                "profile_seconds": (1.0, 10.0), "soak_seconds": (1.0, 300.0),
                "redis_orders": (2_000, 1_000_000)}
    for name, (small, big) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, small if smoke else big)
    if args.profile == []:
        args.profile = ["status", "add"]
    return args


# --- tools ----------------------------------------------------------------------


def ensure_tools() -> dict[str, str | None]:
    """wrk and nginx from PATH; installed with apt-get when missing and we may."""
    tools = {"wrk": which("wrk"), "nginx": which("nginx")}
    if None in tools.values() and os.geteuid() == 0 and which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "RUNLEVEL": "1"}
        cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "wrk",
               "nginx-light"]
        log("tools: installing wrk and nginx-light with apt-get ...")
        if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        tools = {"wrk": which("wrk"), "nginx": which("nginx")}
    for name, path in tools.items():
        if path is None:
            log(f"tools: {name} unavailable" + (" (falling back to the Python generator)"
                                                if name == "wrk" else ""))
    return tools


def _version(argv: list[str]) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except OSError:
        return "?"
    text = (r.stdout + r.stderr).strip().splitlines()
    return text[0] if text else "?"


def _dist_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _generator(choice: str, tools: dict[str, str | None]) -> tuple[Generator, str]:
    wrk = tools["wrk"]
    if choice == "python" or (choice == "auto" and wrk is None):
        return PyGen(), f"bench.pygen (Python {platform.python_version()}, uvloop)"
    if wrk is None:
        raise SystemExit("wrk is not available (use --generator python)")
    return Wrk(wrk), _version([wrk, "-v"])


# --- the run --------------------------------------------------------------------


CACHED = "gateway_cached"  # the gateway with gateway.status_cache_s on
GRANIAN_TARGETS = (GATEWAY_GRANIAN, BARE_GRANIAN)  # a failure to start is not fatal


def _short(text: str, size: int = 300) -> str:
    """One line of at most ~`size` characters: its head and its tail (a log's last
    lines say why a server stopped)."""
    text = " ".join(text.split())
    return text if len(text) <= size else f"{text[:size // 3]} … {text[-(2 * size // 3):]}"


class Targets:
    """The server behind each target name in a cell.

    Servers in `always` run for the whole run. Servers in `lazy` (the two-worker
    gateway, the status-cache gateway, the gateway on granian) are started for the
    cells that use them and stopped before the others, so their background work
    (catalog, breaker and balance loops) never runs next to another target's
    measurement. A server named in `optional` (the granian ones) that cannot start
    makes its target unavailable, with the reason, instead of failing the run;
    `unavailable` names targets known to be so from the start (name -> why).
    """

    def __init__(self, stack: Stack, always: dict[str, Server | None],
                 lazy: dict[str, Callable[[], Server]], optional: Collection[str] = (),
                 unavailable: dict[str, str] | None = None) -> None:
        self.stack = stack
        self.always = always
        self.lazy = lazy
        self.optional = set(optional)
        self.failed: dict[str, str] = dict(unavailable or {})
        self.running: dict[str, Server] = {}

    @staticmethod
    def name(cell: Cell, target: str) -> str:
        return CACHED if cell.scenario == "status_cached" and target == GATEWAY else target

    def available(self, cell: Cell, target: str) -> bool:
        name = self.name(cell, target)
        if name in self.failed:
            return False
        return self.always.get(name) is not None or name in self.lazy

    def why(self, cell: Cell, target: str) -> str:
        """Why `target` has no server in `cell`."""
        return self.failed.get(self.name(cell, target), "unavailable (not installed)")

    def enter(self, cell: Cell) -> None:
        """Stop the lazy servers `cell` does not use."""
        used = {self.name(cell, t) for t in cell.targets}
        for name in [n for n in self.running if n not in used]:
            self.running.pop(name).stop()

    def _start(self, servers: dict[str, Server]) -> None:
        """Start `servers` (name -> server) in parallel; an optional one that fails is
        marked unavailable (and is no longer running)."""
        optional = [s for n, s in servers.items() if n in self.optional]
        failed = self.stack.start(*servers.values(), optional=optional)
        for name, server in servers.items():
            if server.name in failed:
                why = _short(f"failed to start: {failed[server.name]}")
                log(f"{name}: {why}")
                self.failed[name] = why
                self.running.pop(name, None)

    def boot(self, first: Cell | None) -> None:
        """Start the `always` servers not yet running and the lazy ones `first` uses,
        all at once (they boot in parallel)."""
        servers = {n: s for n, s in self.always.items()
                   if s is not None and s.proc is None and n not in self.failed}
        if first is not None:
            for target in first.targets:
                name = self.name(first, target)
                if name in self.lazy and name not in self.running and name not in self.failed:
                    self.running[name] = servers[name] = self.lazy[name]()
        self._start(servers)

    def server(self, cell: Cell, target: str) -> Server | None:
        name = self.name(cell, target)
        if name in self.failed:
            return None
        if name in self.always:
            return self.always[name]
        if name not in self.lazy:
            return None
        if name not in self.running:
            self.running[name] = self.lazy[name]()
            self._start({name: self.running[name]})
        return self.running.get(name)


def run_cells(cells: list[Cell], rounds: int, env: Env, targets: Targets,
              runner: Runner) -> list[CellResult]:
    results: list[CellResult] = []
    runner.planned = sum(len(c.targets) for c in cells) * rounds
    prepared: Prepared | None = None
    prepared_for: tuple[str, int] | None = None
    for cell in cells:
        res = CellResult(cell)
        results.append(res)
        targets.enter(cell)
        if not targets.available(cell, GATEWAY) and cell.scenario == "status_cached":
            res.unavailable = dict.fromkeys(cell.targets, UNAVAILABLE_CACHE)
            runner.planned -= len(cell.targets) * rounds
            continue
        if prepared is None or prepared_for != (cell.scenario, cell.latency_ms):
            prepared = prepare(cell.scenario, env, cell.latency_ms)
            prepared_for = (cell.scenario, cell.latency_ms)
        if cell.scenario == "multi_status":
            res.checks["upstream_calls_one_request"] = upstream_calls_of_one(
                env, prepared.gateway[0][1])
        duration = runner.duration_s + (PACED_RAMP_S * cell.pace_ms / 1000 if cell.pace_ms
                                        else 0.0)
        for rnd in range(rounds):
            for target in cell.targets:
                server = targets.server(cell, target)
                if server is None:
                    res.unavailable[target] = targets.why(cell, target)
                    runner.planned -= 1
                    continue
                bodies = prepared.upstream if target in UPSTREAM_BODY_TARGETS \
                    else prepared.gateway
                work = Workload(server.api, bodies, cell.pace_ms)
                try:
                    record = runner.measure(target, server, work, cell.concurrency, duration)
                except RuntimeError as exc:
                    log(f"{cell.key} {target}: failed: {exc}")
                    res.unavailable[target] = _short(f"failed: {exc}")
                    runner.planned -= 1
                    continue
                record["round"] = rnd
                res.runs.setdefault(target, []).append(record)
                runner.progress(cell, target, rnd, record)
    return results


def _max_mixed_rps(results: list[CellResult], env: Env, runner: Runner,
                   gateway: Server) -> tuple[float, Prepared]:
    """The gateway's measured maximum on the mixed load (measured now if not yet)."""
    mixed = prepare("mixed", env, 0)
    for res in results:
        c = res.cell
        if (c.scenario, c.latency_ms, c.concurrency) == ("mixed", 0, 64):
            rps = res.median(GATEWAY, "rps")
            if rps:
                return rps, mixed
    record = runner.measure(GATEWAY, gateway, Workload(gateway.api, mixed.gateway), 64)
    return float(record["rps"]), mixed


def run(args: argparse.Namespace) -> dict[str, Any]:
    started_wall = time.monotonic()
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    load_before = list(os.getloadavg())
    tools = ensure_tools()
    generator, generator_version = _generator(args.generator, tools)
    cache_available = "status_cache_s" in GatewaySettings.__struct_fields__
    granian_version = _dist_version("granian")
    cells = (plan.smoke if args.smoke else plan.full)(args.only)
    wanted = set(args.only or [*SCENARIOS, *plan.EXTRAS])
    needs = {t for c in cells for t in c.targets}
    log(f"bench: {len(cells)} cells x {args.rounds} round(s), {args.duration} s each "
        f"(+{args.warmup} s warm-up), generator {generator.name}")

    with nofile_limit(), tempfile.TemporaryDirectory(prefix="smm-bench-") as tmpname, \
            Stack(Path(tmpname)) as stack:
        tmp = Path(tmpname)
        # the embedded Redis fsyncs every write unless the write alone is asked for
        redis_url = stack.redis("redis", db=14,
                                fsync="everysec" if args.durability == "written" else "always")
        sims = {name: Sim(name, tmp) for name in PROVIDERS}
        stack.start(*sims.values())
        cache_off = 0 if cache_available else None
        plain = gateway_config(sims, cache_off, args.durability)
        gw = GatewayServer("gateway", plain, redis_url, 1, tmp)
        servers: dict[str, Server | None] = {DIRECT: sims[PROVIDERS[0]], GATEWAY: gw}
        nginx = Nginx(tools["nginx"], sims[PROVIDERS[0]], tmp) if tools["nginx"] else None
        servers[NGINX] = nginx
        lazy: dict[str, Callable[[], Server]] = {
            GATEWAY_2W: lambda: GatewayServer("gateway-2w", plain, redis_url, 2, tmp),
            GATEWAY_GRANIAN: lambda: GatewayServer(
                "gateway-granian", plain, redis_url, 1, tmp,
                server="granian")}
        if cache_available:
            lazy[CACHED] = lambda: GatewayServer(
                "gateway-cached", gateway_config(sims, CACHE_ON_S, args.durability), redis_url,
                1, tmp)
        services_body = tmp / "services.json"
        if BARE in needs:
            servers[BARE] = BareApp(services_body, tmp)
        if BARE_GRANIAN in needs:
            servers[BARE_GRANIAN] = BareApp(services_body, tmp, server="granian")
        no_granian = {} if granian_version else {
            name: "unavailable: granian is not installed" for name in GRANIAN_TARGETS}
        targets = Targets(stack, servers, lazy, optional=GRANIAN_TARGETS,
                          unavailable=no_granian)
        # boot in parallel: the gateway, nginx, bare, and what the first cell needs
        targets.boot(cells[0] if cells else None)
        http = httpx.Client(timeout=30)
        stack.callback(http.close)
        services_body.write_bytes(
            http.post(gw.api, data={"key": CLIENT_KEY, "action": "services"}).content)
        env = Env(sims, gw, redis_url, http)
        runner = Runner(generator, args.duration, args.warmup, redis_url, list(sims.values()))
        results = run_cells(cells, args.rounds, env, targets, runner)
        targets.enter(Cell("none", 0, 0, ()))  # stop the lazy servers before the extras

        mem = None
        if "redis_memory" in wanted:
            log(f"redis memory: writing {args.redis_orders:,} orders through Store.put_orders")
            mem = redis_memory(stack.redis("redis-memory", db=15), args.redis_orders, log)
            log(f"redis memory: {mem['bytes_per_order']:.1f} B/order")
        soak_data = None
        if "soak" in wanted:
            top, mixed = _max_mixed_rps(results, env, runner, gw)
            log(f"soak: {args.soak_seconds:.0f} s at ~{top / 2:,.0f} req/s (half of "
                f"{top:,.0f})")
            soak_data = soak(generator, gw.api, mixed.gateway, gw.pid, top / 2,
                             args.soak_seconds, 8 if args.smoke else 32,
                             0.0 if args.smoke else 5.0, log)
            log(f"soak: RSS growth {soak_data['growth_pct']:.1f}%")
        profiles = {}
        for name in args.profile or []:
            prepared = prepare(name, env, 0)
            log(f"profile: {name} c64 for {args.profile_seconds:.0f} s")
            args.out.mkdir(parents=True, exist_ok=True)
            profiles[name] = profile(generator, Workload(gw.api, prepared.gateway), 64, gw.pid,
                                     args.profile_seconds, args.out, name, log)

    verdicts = evaluate(results, mem, soak_data)
    judged = [v for v in verdicts if not v.informational]
    versions = {dist: _dist_version(dist) for dist in (
        "litestar", "uvicorn", "granian", "uvloop", "httptools", "aiohttp", "redis", "msgspec")}
    return {
        "meta": {
            "started": started, "mode": "smoke" if args.smoke else "full",
            "argv": sys.argv[1:], "rounds": args.rounds, "duration_s": args.duration,
            "warmup_s": args.warmup, "generator": generator.name,
            "generator_version": generator_version,
            "nginx_version": _version([tools["nginx"], "-v"]) if tools["nginx"] else None,
            "machine": osstat.machine(), "python": platform.python_version(),
            "versions": versions, "status_cache_available": cache_available,
            "redis": "REDIS_URL" if os.environ.get("REDIS_URL") else "embedded",
            "load_before": load_before, "load_after": list(os.getloadavg()),
            "wall_s": time.monotonic() - started_wall,
        },
        "cells": [{**r.as_dict(), "title": TITLES[r.cell.scenario]} for r in results],
        "targets": [v.as_dict() for v in verdicts],
        "summary": {"met": sum(v.met is True for v in judged),
                    "not_met": sum(v.met is False for v in judged),
                    "not_judged": sum(v.met is None for v in judged),
                    "informational": len(verdicts) - len(judged)},
        "redis_memory": mem,
        "soak": soak_data,
        "profiles": profiles,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)  # so every started process is stopped on kill
    doc = run(args)
    paths = report.write_all(args.out, doc)
    print(report.markdown(doc))
    log("bench: wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
