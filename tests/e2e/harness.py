"""End-to-end harness: real processes only.

- Redis: `REDIS_URL` if set, else an embedded redis-server (the one the project
  runs in production when no URL is given).
- Providers: the project's simulator, each a real server process.
- Gateway: `smm-gateway serve` as a real process, talked to over HTTP.
Each stack gets its own Redis database, flushed before it starts.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import redis
import yaml

from gateway.state.embedded import free_port

ROOT = Path(__file__).resolve().parents[2]
# `serve` runs with glibc's allocator (gateway.edge.memory); set here, the forker and
# the processes it forks run with it from the start instead of starting again
os.environ.setdefault("PYTHONMALLOC", "malloc")
START_TIMEOUT_S = 20.0

class Forked:
    """A gateway process started by `forker.py`: the part of Popen the harness uses.

    The forker's children are reaped by the kernel, so the exit code is not
    known here; `returncode` is -1 once the process is gone.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                self.returncode = -1
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        deadline = time.monotonic() + (timeout if timeout is not None else 1e9)
        while self.poll() is None:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0)
            time.sleep(0.01)
        return -1


_forker: subprocess.Popen[str] | None = None


def start_gateway(argv: list[str], env: dict[str, str],
                  log_path: Path) -> subprocess.Popen[bytes] | Forked:
    """`python -m gateway *argv`, its output appended to `log_path`."""
    global _forker
    if os.environ.get("E2E_FORK", "1") == "0":
        with open(log_path, "ab") as log:
            return subprocess.Popen([sys.executable, "-m", "gateway", *argv], cwd=ROOT,
                                    env=env, stdout=log, stderr=subprocess.STDOUT)
    if _forker is None or _forker.poll() is not None:
        _forker = subprocess.Popen([sys.executable, str(Path(__file__).with_name("forker.py"))],
                                   cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   text=True)
    assert _forker.stdin is not None and _forker.stdout is not None
    _forker.stdin.write(json.dumps({"argv": argv, "env": env, "cwd": str(ROOT),
                                    "log": str(log_path)}) + "\n")
    _forker.stdin.flush()
    return Forked(int(_forker.stdout.readline()))


def _wait(url: str, proc: subprocess.Popen[bytes] | Forked, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{what} did not start")


def _stop(proc: subprocess.Popen[bytes] | Forked) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Sim:
    """A simulator process and its control API."""

    def __init__(self, dialect: str, *args: str) -> None:
        self.dialect = dialect
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api = f"{self.url}/api/v2"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.sim", "--port", str(self.port),
             "--dialect", dialect, *args], cwd=ROOT)
        _wait(f"{self.url}/_sim/health", self.proc, f"simulator {dialect}")
        self.http = httpx.Client(base_url=self.url, timeout=10)

    def control(self, path: str, body: dict[str, Any] | None = None) -> Any:
        r = self.http.post(f"/_sim/{path}", json=body or {})
        r.raise_for_status()
        return r.json()

    def reset(self) -> None:
        self.control("reset")

    def requests(self, action: str | None = None) -> list[dict[str, Any]]:
        params = {"action": action} if action else {}
        return list(self.http.get("/_sim/requests", params=params).json()["requests"])

    def orders(self) -> list[dict[str, Any]]:
        return list(self.http.get("/_sim/orders").json()["orders"])

    def stop(self) -> None:
        self.http.close()
        _stop(self.proc)


class Gateway:
    """A `smm-gateway serve` process with its own config and Redis database."""

    def __init__(self, config: dict[str, Any], redis_url: str, tmp: Path,
                 flush: bool = True) -> None:
        self.config = config
        self.redis_url = redis_url
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.config_path = tmp / "gateway.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        if flush:
            r = redis.Redis.from_url(redis_url)
            r.flushdb()
            r.close()
        self.proc: subprocess.Popen[bytes] | Forked | None = None
        self.log_path = tmp / "gateway.log"
        self.start()

    def start(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/api/v2"
        env = {**os.environ, "REDIS_URL": self.redis_url}
        self.proc = start_gateway(["serve", "--config", str(self.config_path),
                                   "--port", str(self.port), "--workers", "1",
                                   "--data-dir", str(self.tmp / "data")], env, self.log_path)
        _wait(f"http://127.0.0.1:{self.port}/healthz", self.proc, "gateway")
        self.http = httpx.Client(timeout=30)

    def stop(self) -> None:
        if self.proc is not None:
            self.http.close()
            _stop(self.proc)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        return self.log_path.read_text()

    def post(self, key: str | None = "alice-key", **fields: Any) -> httpx.Response:
        data = {k: str(v) for k, v in fields.items()}
        if key is not None:
            data["key"] = key
        return self.http.post(self.url, data=data)

    def call(self, key: str | None = "alice-key", **fields: Any) -> Any:
        return self.post(key, **fields).json()


def raw_answer(port: int, request: bytes) -> tuple[bytes, bytes]:
    """Send one raw HTTP/1.1 request (it should say `Connection: close`) to 127.0.0.1:`port`
    and read to the end: the answer's head and what came after it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        raw = b""
        while chunk := sock.recv(4096):
            raw += chunk
    head, _, rest = raw.partition(b"\r\n\r\n")
    return head, rest


HEAD_BALANCE = (b"HEAD /api/v2?key=alice-key&action=balance HTTP/1.1\r\n"
                b"Host: gw\r\nConnection: close\r\n\r\n")


def provider(name: str, sim: Sim, **extra: Any) -> dict[str, Any]:
    return {"name": name, "url": sim.api, "key": "upstream-secret-" + name,
            "timeout_s": 3, **extra}


CLIENTS = [{"name": "alice", "key": "alice-key"}, {"name": "bob", "key": "bob-key"}]

# The testedsmm simulator's catalog: ids that differ from toksmm's, other prices.
TESTED_CATALOG = [
    {"service": 11, "name": "Followers", "type": "Default", "category": "TikTok",
     "rate": "0.40", "min": 20, "max": 5000, "refill": 1, "cancel": 1, "dripfeed": 1},
    {"service": 12, "name": "Likes", "type": "Default", "category": "TikTok",
     "rate": "0.30", "min": 10, "max": 100000, "refill": 0, "cancel": 1},
    {"service": 14, "name": "Comments", "type": "custom_comments", "category": "TikTok",
     "rate": "4.00", "min": 1, "max": 500, "refill": 0, "cancel": 1},
]


def base_config(a: Sim, b: Sim, **gateway: Any) -> dict[str, Any]:
    """Two providers (a: toksmm built-in catalog, b: testedsmm TESTED_CATALOG)."""
    return {
        "gateway": {"currency": "USD", "markup": "1.5", "order_id_start": 5000,
                    "refill_id_start": 700, "balance_cache_s": 0, "status_cache_s": 0,
                    **gateway},
        "clients": [dict(c) for c in CLIENTS],  # copies: a test may change its own
        "providers": [provider("prov-a", a), provider("prov-b", b)],
        "services": [
            {"id": 1, "name": "Followers", "category": "TikTok",
             "upstreams": [{"provider": "prov-a", "service": 1},
                           {"provider": "prov-b", "service": 11}]},
            {"id": 2, "name": "Likes", "category": "TikTok",
             "upstreams": [{"provider": "prov-a", "service": 2},
                           {"provider": "prov-b", "service": 12}]},
            {"id": 3, "name": "Views", "category": "TikTok", "price": "0.05",
             "upstreams": [{"provider": "prov-a", "service": 3}]},
            {"id": 4, "name": "Custom Comments", "category": "TikTok",
             "type": "Custom Comments",
             "upstreams": [{"provider": "prov-a", "service": 4},
                           {"provider": "prov-b", "service": 14}]},
            {"id": 5, "name": "Package", "type": "Package",
             "upstreams": [{"provider": "prov-a", "service": 6}]},
            {"id": 6, "name": "Poll votes", "type": "Poll",
             "upstreams": [{"provider": "prov-a", "service": 7}]},
            {"id": 7, "name": "Subscriptions", "type": "Subscriptions",
             "upstreams": [{"provider": "prov-a", "service": 8}]},
            {"id": 8, "name": "Mentions", "type": "Mentions Custom List",
             "upstreams": [{"provider": "prov-a", "service": 5}]},
            {"id": 9, "name": "Gone everywhere",
             "upstreams": [{"provider": "prov-a", "service": 999}]},
            {"id": 10, "name": "Too cheap to route", "price": "0.001",
             "upstreams": [{"provider": "prov-a", "service": 3}]},
        ],
    }


@contextmanager
def two_gateways(sims: tuple[Sim, Sim], redis_url: str, tmp: Path,
                 **gateway: Any) -> Iterator[tuple[Gateway, Gateway, Sim, Sim]]:
    """Two gateway processes (replicas) over one Redis database and both simulators."""
    a, b = sims
    a.reset()
    b.reset()
    config = base_config(a, b, **gateway)
    one = Gateway(config, redis_url, tmp / "one")
    two = Gateway(config, redis_url, tmp / "two", flush=False)
    try:
        yield one, two, a, b
    finally:
        one.stop()
        two.stop()
