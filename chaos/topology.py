"""Replicated Redis for the chaos suite: a master and a replica, and the failovers
that lose writes.

- `Replicated` (`--replicated`): both behind one address (a TCP proxy, as a cloud
  Redis or a load balancer gives) and the replica's link to its master through
  another proxy. Its failover is the lossy one: the link goes quiet (the replica
  hears nothing more while the gateway keeps answering adds), the master is
  killed, the replica promoted and the address moved to it; then the old master
  comes back as the new master's replica, so the next cycle can do it again.
- `Sentineled` (`--sentinel`): the same pair watched by a real Redis Sentinel; the
  gateway connects with `redis+sentinel://`. Its failover kills the master and
  waits for the sentinel to promote the replica; the old master comes back and
  the sentinel makes it a replica. The sentinel calls a master down after 3 s
  without an answer (less fails healthy masters over on a busy 2-core machine).
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import redis

from chaos.procs import RedisServer
from chaos.proxy import ThreadedProxy
from gateway.state.embedded import free_port, redis_binary

SERVICE = "chaos"
FAILOVER_TIMEOUT_S = 30.0


def _until(check: object, what: str, within_s: float = FAILOVER_TIMEOUT_S) -> float:
    began = time.monotonic()
    while not check():  # type: ignore[operator]
        if time.monotonic() - began > within_s:
            raise RuntimeError(f"{what}: not within {within_s:.0f} s")
        time.sleep(0.05)
    return time.monotonic() - began


def _client(port: int) -> redis.Redis:
    return redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=2)


def _role(port: int) -> str:
    r = _client(port)
    try:
        return str(r.info("replication").get("role"))
    except redis.RedisError:
        return "down"
    finally:
        r.close()


def _in_sync(port: int) -> bool:
    r = _client(port)
    try:
        return r.info("replication").get("master_link_status") == "up"
    except redis.RedisError:
        return False
    finally:
        r.close()


class _Pair:
    def __init__(self, work: Path) -> None:
        self.nodes = [RedisServer(work / f"redis-{n}", work / f"redis-{n}") for n in "ab"]
        for node in self.nodes:
            node.start()
        self.master, self.replica = self.nodes

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class Replicated(_Pair):
    def __init__(self, work: Path) -> None:
        super().__init__(work)
        self.front = ThreadedProxy(("127.0.0.1", self.master.port))
        self.link = ThreadedProxy(("127.0.0.1", self.master.port))
        self.url = f"redis://127.0.0.1:{self.front.port}/0"
        self._follow(self.replica)

    def _follow(self, node: RedisServer) -> None:
        r = _client(node.port)
        try:
            r.replicaof("127.0.0.1", self.link.port)
        finally:
            r.close()
        _until(lambda: _in_sync(node.port), f"redis {node.port} in sync")

    def failover(self, quiet_s: float) -> str:
        """The lossy failover; `quiet_s`: how long the link is quiet before the kill."""
        self.link.proxy.blackhole = True
        time.sleep(quiet_s)  # adds answered now never reach the replica
        self.master.signal(signal.SIGKILL)
        r = _client(self.replica.port)
        try:
            r.replicaof("NO", "ONE")
        finally:
            r.close()
        self.front.fail_over(("127.0.0.1", self.replica.port))
        self.link.fail_over(("127.0.0.1", self.replica.port))
        self.link.proxy.blackhole = False
        old, self.master, self.replica = self.master, self.replica, self.master
        old.start()
        self._follow(old)
        return (f"link quiet {quiet_s:.1f}s, master :{old.port} killed, "
                f":{self.master.port} promoted")

    def stop(self) -> None:
        self.front.close()
        self.link.close()
        super().stop()


class Sentineled(_Pair):
    def __init__(self, work: Path) -> None:
        super().__init__(work)
        r = _client(self.replica.port)
        try:
            r.replicaof("127.0.0.1", self.master.port)
        finally:
            r.close()
        _until(lambda: _in_sync(self.replica.port), "replica in sync")
        self.port = free_port()
        conf = work / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {work}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.master.port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 3000\n"
            f"sentinel failover-timeout {SERVICE} 5000\n"
            f"logfile {work / 'sentinel.log'}\n")
        self._proc = subprocess.Popen([redis_binary(), str(conf), "--sentinel"],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
        self.url = f"redis+sentinel://127.0.0.1:{self.port}/{SERVICE}"
        _until(self._knows_replica, "sentinel sees the replica")

    def _sentinel(self) -> redis.Redis:
        return _client(self.port)

    def _knows_replica(self) -> bool:
        s = self._sentinel()
        try:
            return bool(s.execute_command(  # type: ignore[no-untyped-call]
                "SENTINEL", "REPLICAS", SERVICE))
        except redis.RedisError:
            return False
        finally:
            s.close()

    def _master_port(self) -> int:
        s = self._sentinel()
        try:
            _, port = s.execute_command(  # type: ignore[no-untyped-call]
                "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
            return int(port)
        finally:
            s.close()

    def failover(self, quiet_s: float) -> str:
        """SIGKILL the master the sentinel names; wait for it to name another one that
        answers as a master; the killed node comes back, and the sentinel makes it a
        replica (a few seconds later). Done when the pair is one master and one replica
        in sync with it, whichever is which (a sentinel may fail over again)."""
        killed = self._master_port()
        old = next(n for n in self.nodes if n.port == killed)
        old.signal(signal.SIGKILL)
        took = _until(lambda: self._master_port() != killed
                      and _role(self._master_port()) == "master", "sentinel promotion")
        old.start()
        _until(self._settled, "one master and its replica in sync", within_s=90)
        return f"master :{killed} killed, sentinel promoted :{self.master.port} in {took:.1f}s"

    def _settled(self) -> bool:
        port = self._master_port()
        master = next(n for n in self.nodes if n.port == port)
        replica = next(n for n in self.nodes if n.port != port)
        if _role(port) != "master" or _role(replica.port) != "slave" \
                or not _in_sync(replica.port):
            return False
        self.master, self.replica = master, replica
        return True

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        super().stop()
