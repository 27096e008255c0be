"""Where the gateway's time goes: py-spy on the gateway process under load.

Two samplers attach to the serving process at once, both non-blocking so the
gateway is not paused: one writes a flame graph SVG for a human, one writes raw
collapsed stacks that are aggregated here into the top functions by own time
(the leaf of a sample), by inclusive time, and by package, so the figures can be
printed and kept in latest.json. Idle samples (waiting in epoll) are not taken,
so percentages are of the time the gateway was busy. A sample taken while a
coroutine runs starts at that coroutine (the event loop that resumed it is C
code), so "inclusive" shares are lower bounds.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bench.load import Generator, Workload

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*):(?P<line>\d+)\)$")
RATE_HZ = 250


def py_spy(log: Any) -> str:
    """The py-spy binary, installed into this virtualenv with pip if missing."""
    local = Path(sys.executable).parent / "py-spy"
    if local.exists():
        return str(local)
    found = shutil.which("py-spy")
    if found:
        return found
    log("profile: installing py-spy with pip ...")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "py-spy"], check=True)
    return str(local)


def _package(func: str, path: str) -> str:
    if func == "Runner.run" and path.endswith("asyncio/runners.py"):
        return "event loop (uvloop, C)"  # samples inside uvloop's C code land on its caller
    if "/site-packages/" in path:
        rest = path.split("/site-packages/", 1)[1]
        return rest.split("/", 1)[0].removesuffix(".py")
    if "/gateway/" in path:
        return "gateway"
    if "/asyncio/" in path:
        return "asyncio (stdlib)"
    name = path.rsplit("/", 1)[-1].removesuffix(".py")
    return f"{name} (stdlib)" if path.startswith("/") else name


def _short(func: str, path: str) -> str:
    if "/site-packages/" in path:
        path = path.split("/site-packages/", 1)[1]
    elif "/gateway/" in path:
        path = "gateway/" + path.split("/gateway/", 1)[1]
    else:
        path = path.rsplit("/", 1)[-1]
    return f"{func} ({path})"


def aggregate(raw: str, top: int = 15) -> dict[str, Any]:
    """Top functions from py-spy's collapsed stacks (`frame;frame;... count`)."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = []
        for text in stack.split(";"):
            m = _FRAME.match(text)
            frames.append((m["func"], m["file"]) if m else (text, ""))
        names = [_short(f, p) for f, p in frames]
        own[names[-1]] += count
        packages[_package(*frames[-1])] += count
        for name in set(names):
            incl[name] += count
        for name in {n for n, (_, p) in zip(names, frames, strict=True)
                     if "/gateway/" in p and not p.endswith("/gateway/ops/cli.py")}:
            ours[name] += count

    def pct(counter: Counter[str]) -> list[list[Any]]:
        return [[name, round(100.0 * n / total, 1)] for name, n in counter.most_common(top)]

    return {"samples": total, "top_own": pct(own), "top_inclusive": pct(incl),
            "top_gateway_inclusive": pct(ours), "by_package": pct(packages)}


def profile(generator: Generator, work: Workload, connections: int, pid: int, seconds: float,
            out_dir: Path, name: str, log: Any) -> dict[str, Any]:
    """Profile `pid` for `seconds` while `work` runs; SVG and raw stacks land in out_dir."""
    binary = py_spy(log)
    svg, raw = out_dir / f"profile-{name}.svg", out_dir / f"profile-{name}.txt"
    common = ["record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
              "--rate", str(RATE_HZ), "--nonblocking", "--full-filenames"]
    spies = [subprocess.Popen([binary, *common, "-o", str(svg)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE),
             subprocess.Popen([binary, *common, "--format", "raw", "-o", str(raw)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)]
    try:
        result = generator.run(work, connections, max(1, round(seconds)) + 0.5)
    finally:
        errors = []
        for spy in spies:
            try:
                _, err = spy.communicate(timeout=seconds + 60)
            except subprocess.TimeoutExpired:
                spy.kill()
                _, err = spy.communicate()
            if spy.returncode:
                errors.append(err.decode(errors="replace")[-400:])
    if not raw.exists():
        raise RuntimeError(f"py-spy wrote no profile: {' | '.join(errors)}")
    summary = aggregate(raw.read_text())
    summary.update({"svg": svg.name, "raw": raw.name, "rps_while_profiled": result.rps,
                    "connections": connections, "seconds": seconds})
    return summary
