"""CPU time and memory of processes, read from /proc.

The suite reports CPU per request and the load generator's own CPU, so it needs
the CPU time of a process *tree* (uvicorn with `--workers 2` forks its workers
under the serving process) sampled before and after a measurement window. The
whole machine's busy time is read too: what is busy but not ours is contention
from someone else, and a reader should see it.
"""

from __future__ import annotations

import os
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (which may hold spaces)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def _parents() -> dict[int, int]:
    out: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                out[int(entry.name)] = int(fields[1])
    return out


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants that are alive now."""
    parents = _parents()
    children: dict[int, list[int]] = {}
    for child, parent in parents.items():
        children.setdefault(parent, []).append(child)
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p in parents or p == pid:
            out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of the given processes (the dead ones count 0)."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            # fields[0] is `state`; utime and stime are fields 14 and 15 of the full line
            total += int(fields[11]) + int(fields[12])
    return total / TICKS


def tree_cpu_seconds(pid: int) -> float:
    return cpu_seconds(tree(pid))


def wait_idle(pid: int, max_busy: float = 0.2, window_s: float = 0.2,
              timeout_s: float = 15.0) -> bool:
    """Wait until a process tree uses under `max_busy` of a core over `window_s`.

    After a run with 1,000 clients the gateway still works off its backlog for a
    while after the generator stopped; the next step must not start in it.
    """
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        before = tree_cpu_seconds(pid)
        time.sleep(window_s)
        if tree_cpu_seconds(pid) - before < max_busy * window_s:
            return True
    return False


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            continue
    return total


def system_busy_seconds() -> float:
    """CPU seconds all processes of the machine ran since boot (user + nice + system).

    Interrupt and softirq time is left out: on loopback it is mostly this run's own
    network traffic, which no process is charged for.
    """
    first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system = (int(v) for v in first[:3])
    return (user + nice + system) / TICKS


def machine() -> dict[str, object]:
    """What a reader needs to judge the figures: cores, model, memory, load, kernel."""
    info: dict[str, object] = {"cpus": os.cpu_count(), "kernel": os.uname().release}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["mem_total_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    except OSError:
        pass
    info["load_avg"] = list(os.getloadavg())
    return info
