"""Real replication for tests: a master, a replica and a sentinel, all the project's
own redis-server binary (`redis-server --sentinel` is Sentinel)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import redis

from gateway.state.embedded import EmbeddedRedis, free_port, redis_binary

SERVICE = "gw"


def until(check: object, within_s: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + within_s
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within_s} s")
        time.sleep(0.02)


class ReplicatedRedis:
    """A master and one replica on TCP ports of their own, and a sentinel watching
    them that fails over half a second after the master stops answering."""

    def __init__(self, base: Path, sentinel: bool = True) -> None:
        self.base = base
        self.master = EmbeddedRedis(base / "a", port=free_port())
        self.replica = EmbeddedRedis(base / "b", port=free_port())
        self.master.start()
        self.replica.start()
        self._sentinel: subprocess.Popen[bytes] | None = None
        self.sentinel_port = 0
        r = self.client(self.replica)
        r.replicaof("127.0.0.1", self.master.port)
        until(lambda: r.info("replication").get("master_link_status") == "up",
              what="replica in sync")
        r.close()
        if sentinel:
            self._start_sentinel()

    @staticmethod
    def client(server: EmbeddedRedis) -> redis.Redis:
        return redis.Redis.from_url(server.url, socket_timeout=5)

    def _start_sentinel(self) -> None:
        self.sentinel_port = free_port()
        conf = self.base / "sentinel.conf"
        conf.write_text(
            f"port {self.sentinel_port}\nbind 127.0.0.1\ndir {self.base}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.master.port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 500\n"
            f"sentinel failover-timeout {SERVICE} 5000\n"
            f"sentinel parallel-syncs {SERVICE} 1\n")
        self._sentinel = subprocess.Popen(
            [redis_binary(), str(conf), "--sentinel"], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        s = redis.Redis(port=self.sentinel_port, socket_timeout=2)
        until(lambda: _answers(s) and
              s.execute_command("SENTINEL", "REPLICAS", SERVICE) not in (None, []),
              what="sentinel knows the replica")
        s.close()

    @property
    def sentinel_url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{SERVICE}"

    def kill_master(self) -> None:
        proc = self.master._proc
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def freeze_replica(self) -> None:
        """The replica stops taking the master's stream (its link is cut)."""
        proc = self.replica._proc
        assert proc is not None
        proc.send_signal(signal.SIGSTOP)

    def thaw_replica(self) -> None:
        proc = self.replica._proc
        assert proc is not None
        proc.send_signal(signal.SIGCONT)

    def promote_replica(self) -> None:
        r = self.client(self.replica)
        r.replicaof("NO", "ONE")
        r.close()

    def stop(self) -> None:
        if self._sentinel is not None and self._sentinel.poll() is None:
            self._sentinel.kill()
            self._sentinel.wait()
        self.thaw_replica_if_frozen()
        self.replica.stop()
        self.master.stop()

    def thaw_replica_if_frozen(self) -> None:
        proc = self.replica._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGCONT)


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
