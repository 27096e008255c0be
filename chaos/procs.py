"""The processes of a chaos run, each one killable and restartable in place.

- `RedisServer`: the redis-server binary the embedded Redis uses, with its
  arguments but on a TCP port, so that it can be SIGTERMed or SIGKILLed and
  started again on the same data dir and port (the append-only file brings the
  data back).
- `Sim`: a provider simulator (`python -m gateway.sim`) and its /_sim control API.
- `Replica`: a gateway (`python -m gateway serve`, `--workers` as the plan says:
  serve's default, auto, unless `--serve-workers`) with its own data dir, on the
  same port across restarts; a SIGKILL ends its workers with it.

Output goes to `<name>.log` in the run's work dir; whoever starts a process
registers its `stop` on the run's ExitStack.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import redis

from gateway.state.embedded import free_port, private_dir, redis_binary

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


class Process:
    """A child process whose output is appended to `log_path`."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, umask=0o077,
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)

    def signal(self, signum: int, timeout_s: float = STOP_TIMEOUT_S) -> bool:
        """Send `signum` and wait for the process to end; SIGKILL after `timeout_s`
        (False then)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return True
        proc.send_signal(signum)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return False
        return True

    def stop(self) -> None:
        self.signal(signal.SIGTERM)

    def failed(self, what: str) -> RuntimeError:
        tail = self.log_path.read_text(errors="replace")[-1500:] if self.log_path.exists() else ""
        return RuntimeError(f"{self.name} {what}; log: {tail}")


class RedisServer(Process):
    """redis-server on 127.0.0.1:<port> with append-only persistence in `data_dir`."""

    def __init__(self, data_dir: Path, log_dir: Path) -> None:
        private_dir(data_dir)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        super().__init__("redis", [
            redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(data_dir), "--appendonly", "yes", "--appendfsync", "everysec",
            "--save", "", "--daemonize", "no",
            "--hash-max-ziplist-value", "256", "--hash-max-ziplist-entries", "256",
        ], log_dir / "redis.log")

    def start(self) -> None:
        super().start()
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            while True:
                if not self.alive:
                    raise self.failed("exited at start")
                try:
                    client.ping()
                    return
                except redis.RedisError:
                    if time.monotonic() > deadline:
                        raise self.failed("did not answer PING") from None
                    time.sleep(0.02)
        finally:
            client.close()


class HttpProcess(Process):
    def __init__(self, name: str, argv: Sequence[str], port: int, log_dir: Path,
                 env: dict[str, str] | None = None) -> None:
        super().__init__(name, argv, log_dir / f"{name}.log", env)
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.api = f"{self.base}/api/v2"

    def wait_ok(self, path: str, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive:
                raise self.failed("exited")
            try:
                if httpx.get(self.base + path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise self.failed(f"did not answer {path} in {timeout_s:.0f}s")


class Sim(HttpProcess):
    """A simulated provider; its control API sets faults and lists its orders."""

    def __init__(self, name: str, dialect: str, progress_s: float, latency_ms: float,
                 log_dir: Path, catalog: list[dict[str, Any]] | None = None) -> None:
        self.latency_ms = latency_ms
        argv = [sys.executable, "-m", "gateway.sim", "--dialect", dialect,
                "--balance", "100000000", "--progress-s", str(progress_s),
                "--latency-ms", str(latency_ms)]
        if catalog is not None:
            path = log_dir / f"{name}-catalog.json"
            path.write_text(json.dumps(catalog))
            argv += ["--catalog", str(path)]
        port = free_port()
        super().__init__(name, [*argv, "--port", str(port)], port, log_dir)

    def control(self, path: str, body: dict[str, Any]) -> None:
        httpx.post(f"{self.base}/_sim/{path}", json=body, timeout=10).raise_for_status()

    def calm(self) -> None:
        """No fault, no added latency, no rejections."""
        self.control("fault", {"fault": None})
        self.control("latency", {"ms": 0})
        self.control("reject", {"error": None})

    def orders(self) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.base}/_sim/orders", timeout=30)
        r.raise_for_status()
        return list(r.json()["orders"])


class Replica(HttpProcess):
    """`python -m gateway serve` over the run's Redis; kill -9 and start again."""

    def __init__(self, index: int, config_path: Path, redis_url: str, work: Path,
                 workers: str = "auto") -> None:
        self.index = index
        self.data_dir = work / f"replica-{index}"
        private_dir(self.data_dir)
        port = free_port()
        super().__init__(f"replica-{index}", [
            sys.executable, "-m", "gateway", "serve", "--config", str(config_path),
            "--host", "127.0.0.1", "--port", str(port), "--workers", workers,
            "--data-dir", str(self.data_dir),
        ], port, work, env={**os.environ, "REDIS_URL": redis_url})

    def restart(self, drain_s: float) -> bool:
        """SIGTERM (SIGKILL if it has not drained in `drain_s`), start, until /readyz.
        False if it had to be killed."""
        drained = self.signal(signal.SIGTERM, drain_s)
        self.start()
        self.wait_ok("/readyz")
        return drained


def stop_together(procs: Sequence[Process], drain_s: float) -> None:
    """SIGTERM all at once, then wait for each; SIGKILL what has not exited in `drain_s`."""
    running = [p.proc for p in procs if p.proc is not None and p.proc.poll() is None]
    for p in procs:
        p.proc = None
    for proc in running:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + drain_s
    for proc in running:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def log_kinds(path: Path) -> dict[str, int]:
    """Warnings and errors a gateway logged, counted by message (+ the exception's
    last line for a traceback)."""
    kinds: dict[str, int] = {}
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return kinds
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict):
            continue
        level = str(entry.get("level", "")).lower()
        if level not in ("warning", "error", "critical"):
            continue
        kind = f"{level}: {entry.get('msg', '?')}"
        exc = entry.get("exc")
        if isinstance(exc, str) and exc.strip():
            kind += " - " + exc.strip().splitlines()[-1][:160]
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def log_lines_for(paths: Sequence[Path], order_ids: set[int],
                  per_id: int = 3) -> dict[int, list[str]]:
    """The first JSON log lines (of any replica) that name each order id."""
    found: dict[int, list[str]] = {i: [] for i in order_ids}
    for path in paths:
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            if '"order"' not in line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            oid = entry.get("order") if isinstance(entry, dict) else None
            if isinstance(oid, int) and oid in found and len(found[oid]) < per_id:
                found[oid].append(f"{path.stem}: {line[:400]}")
    return {i: lines for i, lines in found.items() if lines}
