"""`serve --workers N`: the supervisor of the worker processes, and their metrics dir.

uvicorn's own supervisor (0.54) answers SIGHUP with a rolling restart of every
worker, and so does granian's. Ours reloads the config live instead
(`gateway.edge.reload`): on SIGHUP it checks the config file with the loader
`serve` uses (`relay_reload`; `gateway.ops.servers.GranianSupervisor` uses it
too); an invalid file is refused there (its errors logged, one JSON line) and no
worker is touched; a valid one is relayed as a SIGHUP to every worker, and each
swaps it in without dropping a request, keeping its pid. The rest (SIGTERM,
SIGINT, SIGTTIN/SIGTTOU, a dead worker replaced) is uvicorn's.

A worker ends with its supervisor, whatever ended the supervisor (`kill -9`
too). On Linux the kernel kills it when its parent dies (`PR_SET_PDEATHSIG` with
SIGKILL, asked right after the fork for granian's forked workers, and first thing
in uvicorn's spawned ones): a SIGTERM would not do, a worker can be inside
granian's startup holding the GIL, where no Python signal handler or thread runs.
Its requests in flight are cut as a `kill -9` of the whole serve would cut them.
Elsewhere a thread watches the parent pid (it changes when the parent dies): the
worker shuts down gracefully (SIGTERM) and exits `ORPHAN_EXIT_S` later whatever it
is doing.

The metrics dir of a serve (`metrics_dir`) holds a lock file; the serve and each
of its workers hold a shared lock on it for as long as they live. A dir is
removed only when no process holds that lock (a dir without one, from a serve
before this: when the pid it is named for is gone), so a new serve never takes
the directory from under workers still running.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import logging
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from uvicorn import Config
from uvicorn.supervisors.multiprocess import Multiprocess

from gateway.config import check_file

log = logging.getLogger("gateway.reload")

ENV_METRICS = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus-client in each worker
LOCK = ".lock"  # in `<data-dir>/metrics` (creating, removing) and in each serve's dir (in use)
ORPHAN_EXIT_S = 0.5  # without prctl: an orphaned worker's graceful shutdown gets this long
WATCH_S = 0.1  # without prctl: how often a worker looks at its parent pid
EXIT_ORPHANED = 1
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_held: list[int] = []  # this process's shared locks on metrics dirs (fds kept open)
_prctl: Any = None  # libc's prctl, once looked up


class Supervisor(Multiprocess):
    """uvicorn's supervisor, with SIGHUP relayed to the workers as a live reload."""

    def __init__(self, config: Config, config_path: str, sock: socket.socket) -> None:
        super().__init__(config, sockets=[sock])
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


def worker_factory() -> Any:
    """The app of one `Supervisor` worker (uvicorn's factory, in the worker process)."""
    # first: a reload relayed while this worker starts must not end it (the app
    # listens for SIGHUP once it runs; `app_factory` keeps it ignored until then)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from gateway.ops.factory import app_factory

    in_worker()
    return app_factory()


def in_worker() -> None:
    """Called first in a worker process of `serve --workers N` (uvicorn's or granian's):
    it ends with its supervisor (the pid in `ENV_SUPERVISOR`), and holds the metrics
    dir it writes to, so that no new serve removes it while it lives."""
    from gateway.edge.reload import ENV_SUPERVISOR

    supervisor = os.environ.get(ENV_SUPERVISOR, "")
    if supervisor.isdigit():
        end_with(int(supervisor))
    hold_metrics_dir()


def end_forks_with_me() -> None:
    """Every process forked from this one from now on (granian's workers) ends with it,
    from the first instruction after the fork."""
    me = os.getpid()
    os.register_at_fork(after_in_child=lambda: end_with(me, watch=False))


def end_with(supervisor: int, watch: bool = True) -> None:
    """This process ends with its parent `supervisor`: killed by the kernel when it
    dies (Linux); elsewhere (`watch`) a thread watches the parent pid."""
    if _parent_death_signal(signal.SIGKILL):
        if os.getppid() != supervisor:  # it died before this process could ask
            os._exit(EXIT_ORPHANED)
        return
    if watch:
        threading.Thread(target=_watch_parent, args=(supervisor,), name="supervisor-watch",
                         daemon=True).start()


def _parent_death_signal(signum: int) -> bool:
    """`prctl(PR_SET_PDEATHSIG, signum)`: whether the kernel will send it (Linux only)."""
    global _prctl
    if _prctl is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            _prctl = libc.prctl
        except (OSError, AttributeError):
            return False
        _prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                           ctypes.c_ulong]
        _prctl.restype = ctypes.c_int
    return bool(_prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0)


def _watch_parent(supervisor: int) -> None:
    while os.getppid() == supervisor:
        time.sleep(WATCH_S)
    log.warning("the supervisor is gone: this worker stops", extra={
        "supervisor": supervisor, "exit_within_s": ORPHAN_EXIT_S})
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(ORPHAN_EXIT_S)
    os._exit(EXIT_ORPHANED)


@contextmanager
def metrics_dir(data_dir: str, workers: int) -> Iterator[None]:
    """Several workers: prometheus-client's multiprocess mode, its files in
    `<data-dir>/metrics/<this pid>` (one per serve: serves sharing a data dir never
    mix), made empty, removed at exit; those no process uses any more are removed
    (`LOCK`: the serve and its workers hold it shared while they live)."""
    os.environ.pop(ENV_METRICS, None)
    if workers <= 1:
        yield
        return
    root = Path(data_dir) / "metrics"
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _locked(root):  # no other serve makes or removes a dir meanwhile
        for old in root.iterdir():
            if old.is_dir() and _unused(old):
                shutil.rmtree(old, ignore_errors=True)
        mine = root / str(os.getpid())
        if mine.exists():  # in use by the workers of a serve that had this pid
            mine = root / f"{os.getpid()}.{time.time_ns()}"
        mine.mkdir(mode=0o700)
        (mine / LOCK).touch(mode=0o600)
        hold_metrics_dir(mine)
    os.environ[ENV_METRICS] = str(mine.resolve())
    try:
        yield
    finally:
        os.environ.pop(ENV_METRICS, None)
        with _locked(root):
            release_metrics_dirs()
            if _unused(mine):  # a worker still ending keeps it (the next serve removes it)
                shutil.rmtree(mine, ignore_errors=True)


def hold_metrics_dir(path: Path | None = None) -> None:
    """A shared lock on the metrics dir `path` (default: `ENV_METRICS`'s), held until
    this process ends."""
    if path is None:
        named = os.environ.get(ENV_METRICS)
        if not named:
            return
        path = Path(named)
    try:
        fd = os.open(path / LOCK, os.O_RDONLY)
    except FileNotFoundError:
        log.warning("metrics dir without its lock file", extra={"path": str(path)})
        return
    fcntl.flock(fd, fcntl.LOCK_SH)
    _held.append(fd)


def release_metrics_dirs() -> None:
    while _held:
        os.close(_held.pop())


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _unused(path: Path) -> bool:
    """No process holds the dir's `LOCK`; a dir without one (a serve before locks, or a
    stray one): when the pid it is named for is gone."""
    try:
        fd = os.open(path / LOCK, os.O_RDONLY)
    except FileNotFoundError:
        pid = path.name.split(".")[0]
        return pid.isdigit() and not _alive(int(pid))
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: alive
    return True
