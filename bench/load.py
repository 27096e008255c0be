"""Load generation: wrk (preferred) or the suite's own Python generator.

The generator must not be the bottleneck, so its own CPU is measured for every
run (from /proc, just before it is told to stop) and reported next to the result
as % of one core. wrk is a C program with an epoll loop per thread; two threads
drive tens of thousands of requests per second on one core. The Python generator
(`bench.pygen`) is the fallback when wrk cannot be had; results then say so.

Timing: wrk only takes whole seconds, so every run is started with a generous
`-d` and stopped with SIGINT at the wanted moment; wrk then prints its summary
(and our `done()` line) for the time it actually ran. Probes (server CPU, Redis
counters, upstream request counts) are read right after start and right before
the stop, so their window matches the generator's.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from bench import osstat
from bench.procs import ROOT

LUA = Path(__file__).resolve().parent / "lua" / "form.lua"
MARK = "@@BENCH "
SETTLE_S = 0.25  # wrk ignores SIGINT until its threads run; never stop it sooner
TIMEOUT_S = 10


@dataclass(frozen=True)
class Workload:
    """What to send: form bodies (weight, body) to one URL, optionally paced."""

    url: str
    bodies: tuple[tuple[int, str], ...]
    delay_ms: int = 0  # per request per connection, 0 = closed loop (as fast as answered)


@dataclass
class LoadResult:
    generator: str
    connections: int
    threads: int
    window_s: float  # the probes' window
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    errors: int  # socket errors: connect, read, write, timeout
    non2xx: int  # HTTP status >= 400
    gen_cpu_pct: float  # % of one core
    probes: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class Probe(Protocol):
    """Something read at the start and the end of a measurement window."""

    def begin(self) -> None: ...

    def end(self) -> dict[str, float]: ...


def threads_for(connections: int) -> int:
    return 1 if connections < 2 else 2


def _write_bodies(bodies: Sequence[tuple[int, str]]) -> Path:
    fd, name = tempfile.mkstemp(prefix="bench-bodies-", suffix=".txt")
    with os.fdopen(fd, "w") as fh:
        for weight, body in bodies:
            if "\t" in body or "\n" in body:
                raise ValueError("a form body cannot hold tabs or newlines")
            fh.write(f"{weight}\t{body}\n")
    return Path(name)


def _raise_nofile() -> None:
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


class Generator:
    """Runs one load process per measurement; subclasses say which."""

    name = "?"
    max_threads = 2

    def argv(self, work: Workload, bodies: Path, connections: int, threads: int,
             seconds: int) -> list[str]:
        raise NotImplementedError

    def run(self, work: Workload, connections: int, duration_s: float,
            probes: Sequence[Probe] = ()) -> LoadResult:
        threads = min(threads_for(connections), self.max_threads)
        bodies = _write_bodies(work.bodies)
        seconds = math.ceil(duration_s + SETTLE_S) + 2
        try:
            proc = subprocess.Popen(
                self.argv(work, bodies, connections, threads, seconds), cwd=ROOT,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_raise_nofile)
            try:
                started = time.monotonic()
                for p in probes:
                    p.begin()
                t0 = time.monotonic()
                time.sleep(max(duration_s - (t0 - started), SETTLE_S))
                extra: dict[str, float] = {}
                for p in probes:
                    extra.update(p.end())
                window = time.monotonic() - t0
                gen_cpu = osstat.cpu_seconds([proc.pid])
                gen_wall = time.monotonic() - started
                proc.send_signal(signal.SIGINT)
                out, err = proc.communicate(timeout=TIMEOUT_S + 30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        finally:
            bodies.unlink(missing_ok=True)
        line = next((ln for ln in out.decode(errors="replace").splitlines()
                     if ln.startswith(MARK)), None)
        if line is None:
            raise RuntimeError(f"{self.name} gave no result (exit {proc.returncode}): "
                               f"{err.decode(errors='replace')[-600:]}")
        data = json.loads(line[len(MARK):])
        requests = int(data["requests"])
        duration = max(float(data["duration_us"]) / 1e6, 1e-9)
        return LoadResult(
            generator=self.name, connections=connections, threads=threads, window_s=window,
            requests=requests, rps=requests / duration,
            p50_ms=data["p50_us"] / 1000, p90_ms=data["p90_us"] / 1000,
            p99_ms=data["p99_us"] / 1000, max_ms=data["max_us"] / 1000,
            mean_ms=data["mean_us"] / 1000,
            errors=int(data["connect"] + data["read"] + data["write"] + data["timeout"]),
            non2xx=int(data["status"]),
            gen_cpu_pct=100.0 * gen_cpu / max(gen_wall, 1e-9),
            probes=extra,
        )


class Wrk(Generator):
    name = "wrk"

    def __init__(self, binary: str) -> None:
        self.binary = binary

    def argv(self, work: Workload, bodies: Path, connections: int, threads: int,
             seconds: int) -> list[str]:
        return [self.binary, f"-t{threads}", f"-c{connections}", f"-d{seconds}s",
                f"--timeout={TIMEOUT_S}s", "--latency", "-s", str(LUA), work.url, "--",
                str(bodies), str(work.delay_ms)]


class PyGen(Generator):
    """`python -m bench.pygen`: one process, asyncio + uvloop, keep-alive connections."""

    name = "python"
    max_threads = 1

    def argv(self, work: Workload, bodies: Path, connections: int, threads: int,
             seconds: int) -> list[str]:
        return [sys.executable, "-m", "bench.pygen", work.url, str(bodies),
                "--connections", str(connections), "--duration", str(seconds),
                "--delay-ms", str(work.delay_ms), "--timeout", str(TIMEOUT_S)]
