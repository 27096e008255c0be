"""`serve --workers N`: the supervisor of the worker processes, and their metrics dir.

uvicorn's own supervisor (0.54) answers SIGHUP with a rolling restart of every
worker, and so does granian's. Ours reloads the config live instead
(`gateway.edge.reload`): on SIGHUP it checks the config file with the loader
`serve` uses (`relay_reload`; `gateway.ops.servers.GranianSupervisor` uses it
too); an invalid file is refused there (its errors logged, one JSON line) and no
worker is touched; a valid one is relayed as a SIGHUP to every worker, and each
swaps it in without dropping a request, keeping its pid. The rest (SIGTERM,
SIGINT, SIGTTIN/SIGTTOU, a dead worker replaced) is uvicorn's.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from uvicorn import Config
from uvicorn.supervisors.multiprocess import Multiprocess

from gateway.config import check_file

log = logging.getLogger("gateway.reload")

ENV_METRICS = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus-client in each worker


class Supervisor(Multiprocess):
    """uvicorn's supervisor, with SIGHUP relayed to the workers as a live reload."""

    def __init__(self, config: Config, config_path: str) -> None:
        super().__init__(config, sockets=[config.bind_socket()])
        self.config_path = config_path

    def handle_hup(self) -> None:
        # a worker still starting reads the file as it starts (and would die of a SIGHUP
        # before its app listens for it)
        relay_reload(self.config_path, lambda: [
            p.pid for p in self.processes if p.pid is not None and p.is_ready(timeout=1)])


def relay_reload(config_path: str, workers: Callable[[], list[int]]) -> None:
    """A supervisor's SIGHUP: check the config file with the loader `serve` uses; refuse
    an invalid one (its errors logged), else SIGHUP each of `workers()` (pids)."""
    settings, problems = check_file(config_path)
    if settings is None:
        log.error("config reload refused: the running config stays", extra={
            "ok": False, "path": config_path, "errors": problems,
            "actor": "signal", "workers": "none reloaded"})
        return
    pids = workers()
    log.info("config reload: relayed to every worker", extra={
        "path": config_path, "workers": pids})
    for pid in pids:
        try:
            os.kill(pid, signal.SIGHUP)
        except ProcessLookupError:
            continue  # it died: its replacement reads the file as it starts


def usable_cpus(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The CPUs this process may use (`--workers auto`): its affinity mask, capped by
    a cgroup CPU quota (a container's `--cpus`, a pod's CPU limit; v2 `cpu.max` or
    v1 `cpu.cfs_quota_us`), rounded up, at least 1."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        count = os.cpu_count() or 1
    for quota_file, period_file in (("cpu.max", None),
                                    ("cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us")):
        try:
            words = (cgroup / quota_file).read_text().split()
            if period_file is not None:
                words.append((cgroup / period_file).read_text().strip())
            quota, period = words[0], words[1]
            if quota not in ("max", "-1"):
                count = min(count, -(-int(quota) // int(period)))
            break
        except (OSError, ValueError, IndexError, ZeroDivisionError):
            continue
    return max(1, count)


@contextmanager
def metrics_dir(data_dir: str, workers: int) -> Iterator[None]:
    """Several workers: prometheus-client's multiprocess mode, its files in
    `<data-dir>/metrics/<this pid>` (one per serve: serves sharing a data dir never
    mix), made empty, removed at exit; those of serves that are gone are removed."""
    os.environ.pop(ENV_METRICS, None)
    if workers <= 1:
        yield
        return
    root = Path(data_dir) / "metrics"
    for old in root.glob("*"):
        if old.name.isdigit() and not _alive(int(old.name)):
            shutil.rmtree(old, ignore_errors=True)
    mine = root / str(os.getpid())
    shutil.rmtree(mine, ignore_errors=True)
    mine.mkdir(parents=True, mode=0o700)
    os.environ[ENV_METRICS] = str(mine.resolve())
    try:
        yield
    finally:
        os.environ.pop(ENV_METRICS, None)
        shutil.rmtree(mine, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: alive
    return True
