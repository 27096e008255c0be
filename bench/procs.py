"""The processes a bench run starts, and the `Stack` that stops every one of them.

Everything listens on 127.0.0.1 on a free port: the provider simulators, Redis
(embedded unless REDIS_URL is set), the gateway (`smm-gateway serve` with a
generated config; under uvicorn, and under granian for the server comparison),
nginx as a plain reverse proxy in front of a simulator, and a bare litestar app
(the ceiling for a litestar handler on this machine, under each server). Each is a
real process, as a user would run it; the stack stops them in reverse order on
success, error or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import redis
import yaml

from gateway.state.embedded import EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
CLIENT_KEY = "bench-key"
UPSTREAM_KEY = "bench-upstream-key"
SIM_BALANCE = "1000000000"
# one simulator per provider; the multi-status scenario spreads orders over all four
PROVIDERS = ("prov-a", "prov-b", "prov-c", "prov-d")
# gateway service ids: 1 -> prov-a service 1; 11..14 -> one provider each
MAIN_SERVICE = 1
PER_PROVIDER_SERVICES = {name: 11 + i for i, name in enumerate(PROVIDERS)}
GRANIAN_BACKLOG = 2048  # as the gateway's (gateway.ops.servers.BACKLOG, uvicorn's default)


class Server:
    """A child process serving HTTP on `port`, healthy when `health` answers 200."""

    def __init__(self, name: str, argv: Sequence[str], port: int, health: str,
                 log_dir: Path, env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.port = port
        self.health = health
        self.log_path = log_dir / f"{name}.log"
        self.env = dict(env) if env is not None else None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> str:
        return f"{self.base}/api/v2"

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} is not running"
        return self.proc.pid

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT)

    def wait_healthy(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; "
                                   f"log: {self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base + self.health, timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start in {START_TIMEOUT_S:.0f}s; "
                           f"log: {self.log_tail()}")

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_problems(self, since: int) -> dict[str, int]:
        """Errors and warnings the server logged after byte `since`, counted by kind.

        The gateway logs JSON lines; a kind is the message plus, for a traceback,
        its last line (the exception), so the cause of an error answer is visible
        next to the figure it spoiled.
        """
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(since)
                data = fh.read()
        except OSError:
            return {}
        kinds: dict[str, int] = {}
        for line in data.decode(errors="replace").splitlines():
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
                kind += " — " + exc.strip().splitlines()[-1][:200]
            kinds[kind] = kinds.get(kind, 0) + 1
        return kinds

    def log_tail(self, size: int = 800) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError:
            return ""

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Sim(Server):
    """A provider simulator (`python -m gateway.sim`) and its /_sim control API."""

    def __init__(self, name: str, log_dir: Path) -> None:
        port = free_port()
        super().__init__(name, [
            sys.executable, "-m", "gateway.sim", "--port", str(port),
            "--dialect", "toksmm", "--progress-s", "3600", "--balance", SIM_BALANCE,
        ], port, "/_sim/health", log_dir)
        self._http: httpx.Client | None = None

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(base_url=self.base, timeout=30)
        return self._http

    def control(self, path: str, body: Any = None) -> Any:
        r = self.http.post(f"/_sim/{path}", json=body if body is not None else {})
        r.raise_for_status()
        return r.json()

    def stats(self) -> dict[str, int]:
        return dict(self.http.get("/_sim/stats").json()["actions"])

    def total(self) -> int:
        return int(self.http.get("/_sim/stats").json()["total"])

    def reset(self, latency_ms: float) -> None:
        self.control("reset")
        self.control("latency", {"ms": latency_ms})

    def add(self, link: str, quantity: int = 100) -> int:
        """Place an order direct (as the direct and nginx targets' fixtures)."""
        r = self.http.post("/api/v2", data={"key": UPSTREAM_KEY, "action": "add",
                                            "service": "1", "link": link,
                                            "quantity": str(quantity)})
        return int(r.json()["order"])

    def force(self, upstream_id: str | int, status: str) -> None:
        self.control(f"orders/{upstream_id}", {"status": status})

    def stop(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        super().stop()


def gateway_config(sims: Mapping[str, Sim], status_cache_s: float | None,
                   durability: str | None = None) -> dict[str, Any]:
    """One client key, one provider per simulator, services on simulator service 1.

    `status_cache_s` is written only when the gateway build has the setting
    (None leaves it out: an unknown key is a config error); so is `durability`.
    """
    gateway: dict[str, Any] = {"log_level": "INFO"}
    if status_cache_s is not None:
        gateway["status_cache_s"] = status_cache_s
    if durability is not None:
        gateway["durability"] = durability
    services: list[dict[str, Any]] = [
        {"id": MAIN_SERVICE, "name": "Followers", "category": "Bench",
         "upstreams": [{"provider": PROVIDERS[0], "service": 1}]}]
    for name, sid in PER_PROVIDER_SERVICES.items():
        services.append({"id": sid, "name": f"Followers via {name}", "category": "Bench",
                         "upstreams": [{"provider": name, "service": 1}]})
    return {
        "gateway": gateway,
        "clients": [{"name": "bench", "key": CLIENT_KEY}],
        "providers": [{"name": name, "url": sim.api, "key": UPSTREAM_KEY,
                       "timeout_s": 10, "max_concurrency": 1024}
                      for name, sim in sims.items()],
        "services": services,
    }


class GatewayServer(Server):
    """`python -m gateway serve` over a generated config and the bench's Redis.

    `server`: the ASGI server (`serve --server`), "uvicorn" (the default) or "granian".
    """

    def __init__(self, name: str, config: Mapping[str, Any], redis_url: str, workers: int,
                 log_dir: Path, server: str = "uvicorn") -> None:
        port = free_port()
        path = log_dir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
        self.workers = workers
        self.server = server
        super().__init__(name, [
            sys.executable, "-m", "gateway", "serve", "--config", str(path),
            "--port", str(port), "--workers", str(workers), "--server", server,
            "--data-dir", str(log_dir / f"{name}-data"),
        ], port, "/healthz", log_dir, env={**os.environ, "REDIS_URL": redis_url})

    def post(self, client: httpx.Client, **fields: str) -> Any:
        r = client.post(self.api, data={"key": CLIENT_KEY, **fields})
        return r.json()


class BareApp(Server):
    """A litestar handler answering constant bytes, served like the gateway: by uvicorn
    (uvloop, httptools) or by granian (ASGI on uvloop, HTTP/1, the gateway's backlog),
    one worker, no access log."""

    def __init__(self, body_file: Path, log_dir: Path, server: str = "uvicorn") -> None:
        port = free_port()
        self.server = server
        if server == "granian":
            name, argv = "bare-litestar-granian", [
                sys.executable, "-m", "granian", "--interface", "asgi", "--loop", "uvloop",
                "--http", "1", "--no-ws", "--workers", "1", "--host", "127.0.0.1",
                "--port", str(port), "--backlog", str(GRANIAN_BACKLOG), "--no-access-log",
                "--log-level", "warning", "bench.bare_app:app"]
        else:
            name, argv = "bare-litestar", [
                sys.executable, "-m", "uvicorn", "bench.bare_app:app", "--host", "127.0.0.1",
                "--port", str(port), "--loop", "uvloop", "--http", "httptools",
                "--no-access-log", "--log-level", "warning", "--lifespan", "on"]
        super().__init__(name, argv, port, "/healthz", log_dir,
                         env={**os.environ, "BENCH_BARE_BODY": str(body_file)})


NGINX_CONF = """\
worker_processes 1;
worker_rlimit_nofile 16384;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    client_body_buffer_size 64k;
    client_max_body_size 64k;
    keepalive_requests 1000000;
    upstream provider {{
        server 127.0.0.1:{upstream};
        keepalive 1024;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://provider;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_read_timeout 60s;
        }}
    }}
}}
"""


class Nginx(Server):
    """nginx -c <generated> with keep-alive to one simulator, one worker."""

    def __init__(self, binary: str, upstream: Sim, log_dir: Path) -> None:
        port = free_port()
        tmp = log_dir / "nginx"
        tmp.mkdir(parents=True, exist_ok=True)
        # the worker drops root to `nobody`; it must be able to use the temp dirs
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (tmp / sub).mkdir(exist_ok=True)
            (tmp / sub).chmod(0o777)
        conf = tmp / "nginx.conf"
        conf.write_text(NGINX_CONF.format(tmp=tmp, upstream=upstream.port, port=port))
        super().__init__("nginx", [binary, "-p", str(tmp), "-e", str(tmp / "nginx-error.log"),
                                  "-c", str(conf)], port,
                         "/_sim/health", log_dir)


def redis_with_db(url: str, db: int) -> str:
    if url.startswith("unix://"):
        base, _, query = url.partition("?")
        kept = [q for q in query.split("&") if q and not q.startswith("db=")]
        return base + "?" + "&".join([*kept, f"db={db}"])
    return urlunsplit(urlsplit(url)._replace(path=f"/{db}"))


class Stack(contextlib.ExitStack):
    """Starts servers and stops each one it started, in reverse order, whatever happens."""

    def __init__(self, log_dir: Path) -> None:
        super().__init__()
        self.log_dir = log_dir

    def start(self, *servers: Server, optional: Collection[Server] = ()) -> dict[str, str]:
        """Start several servers at once (they boot in parallel), then wait for each.

        A server in `optional` that cannot start (no binary, exits, never healthy)
        is stopped and returned (name -> why) instead of raising.
        """
        failed: dict[str, str] = {}
        started = []
        for s in servers:
            try:
                s.start()
            except OSError as exc:
                if s not in optional:
                    raise
                failed[s.name] = f"could not start: {exc}"
                continue
            self.callback(s.stop)
            started.append(s)
        for s in started:
            try:
                s.wait_healthy()
            except RuntimeError as exc:
                if s not in optional:
                    raise
                s.stop()
                failed[s.name] = str(exc)
        return failed

    def redis(self, name: str, db: int, fsync: str = "always") -> str:
        """A Redis URL on an empty database: REDIS_URL's database `db`, or a fresh
        embedded redis-server of its own."""
        external = os.environ.get("REDIS_URL")
        if external:
            url = redis_with_db(external, db)
            client = redis.Redis.from_url(url)
            try:
                client.flushdb()
            finally:
                client.close()
            return url
        server = EmbeddedRedis(self.log_dir / name, fsync=fsync)
        url = server.start()
        self.callback(server.stop)
        return url


@contextlib.contextmanager
def nofile_limit(wanted: int = 65536) -> Iterator[int]:
    """Raise this process's open-files limit (children inherit it): 1,000 client
    connections need ~2,000 descriptors in the gateway and in nginx."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    try:
        yield max(target, soft)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def which(name: str) -> str | None:
    found = shutil.which(name)
    if found is None:
        for d in ("/usr/sbin", "/usr/local/sbin", "/sbin"):
            if os.access(f"{d}/{name}", os.X_OK):
                return f"{d}/{name}"
    return found
