"""A Redis Cluster on loopback, for tests and local trials (`redis+cluster://`).

Starts `masters * (1 + replicas)` redis-server processes from the binary the
embedded Redis uses (append-only, the same listpack settings, each node in its
own directory) and joins them from Python with CLUSTER MEET / ADDSLOTS /
REPLICATE: no redis-cli. A `cluster-node-timeout` of 1 s makes a failover take
about two seconds. Redis 6.2 keeps a new master out of `cluster_state:ok` for
2 s after it starts, so `start()` takes a little over that.
"""

from __future__ import annotations

import functools
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

from gateway.state.embedded import private_dir, redis_binary

SLOTS = 16384
BUS_OFFSET = 10000  # Redis 6 listens for the cluster bus on port + 10000
TIMEOUT_S = 20.0
STOP_S = 10.0
POLL_S = 0.02
_rng = random.SystemRandom()  # not the tests' seeded `random`


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    while True:
        port = _rng.randrange(15000, 30000)
        if _free(port) and _free(port + BUS_OFFSET):
            return port


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"Redis Cluster: timed out waiting for {what}")
        time.sleep(POLL_S)


@dataclass
class _Node:
    index: int
    dir: Path
    node_timeout_ms: int
    port: int = 0
    id: str = ""
    proc: subprocess.Popen[bytes] | None = None
    conn: redis.Redis | None = field(default=None, repr=False)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def client(self) -> redis.Redis:
        if self.conn is None:
            self.conn = redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True,
                                    socket_timeout=2, socket_connect_timeout=1)
        return self.conn

    def call(self, *args: str | int) -> str:
        return str(self.client().execute_command(*args))  # type: ignore[no-untyped-call]

    def knows(self, node_id: str) -> bool:
        return node_id in self.call("CLUSTER", "NODES")

    def drop(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def launch(self, fresh: bool) -> None:
        """Start redis-server; `fresh`: on new ports (else the node's own, to rejoin)."""
        if fresh:
            self.port = cluster_port()
        self.drop()
        args = [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.dir), "--logfile", str(self.dir / "redis.log"),
                "--daemonize", "no", "--appendonly", "yes", "--appendfsync", "everysec",
                "--save", "", "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(self.node_timeout_ms),
                "--cluster-replica-validity-factor", "0",  # a replica may always take over
                # order buckets (128 records of ~140 bytes) stay compact listpacks
                "--hash-max-ziplist-value", "256", "--hash-max-ziplist-entries", "256"]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, umask=0o077)

    def ready(self, fresh: bool) -> None:
        """Until it answers PING. A fresh node that exits (a port taken meanwhile, by
        another test worker) is started again on other ports."""
        deadline, tries = time.monotonic() + TIMEOUT_S, 0
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                tries += 1
                if not fresh or tries > 5:
                    log = self.dir / "redis.log"
                    tail = log.read_text()[-500:] if log.exists() else ""
                    raise RuntimeError(f"cluster node {self.index} exited: {tail}")
                self.launch(fresh)
            else:
                try:
                    if self.client().ping():
                        return
                except redis.ConnectionError:
                    self.drop()
            if time.monotonic() > deadline:
                raise TimeoutError(f"Redis Cluster: node {self.index} did not start")
            time.sleep(POLL_S)


class LocalCluster:
    """`with LocalCluster(dir) as c:` use `c.url`; or `start()` (the URL) and `stop()`.

    The URL names node 0: once node 0 is killed, clients that already know the
    cluster go on, new ones need it back (`restart_node(0)`)."""

    def __init__(self, data_dir: str | Path, masters: int = 3, replicas: int = 1,
                 node_timeout_ms: int = 1000) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.masters = masters
        self.nodes = [_Node(i, self.data_dir / f"node-{i}", node_timeout_ms)
                      for i in range(masters * (1 + replicas))]
        self.url = ""

    def start(self) -> str:
        """A new cluster (node directories are emptied); its URL once `healthy()`."""
        private_dir(self.data_dir)
        try:
            for node in self.nodes:
                shutil.rmtree(node.dir, ignore_errors=True)
                private_dir(node.dir)
                node.launch(fresh=True)
            for node in self.nodes:
                node.ready(fresh=True)
                node.id = node.call("CLUSTER", "MYID")
            first = self.nodes[0]
            for node in self.nodes[1:]:
                first.call("CLUSTER", "MEET", "127.0.0.1", node.port)
            per = SLOTS // self.masters
            for i, node in enumerate(self.nodes[:self.masters]):
                end = SLOTS if i == self.masters - 1 else (i + 1) * per
                node.call("CLUSTER", "ADDSLOTS", *range(i * per, end))
            for node in self.nodes[self.masters:]:
                master = self.nodes[node.index % self.masters]
                wait_until(functools.partial(node.knows, master.id),
                           f"node {node.index} to meet node {master.index}")
                node.call("CLUSTER", "REPLICATE", master.id)
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        self.url = f"redis+cluster://127.0.0.1:{first.port}"
        return self.url

    def stop(self) -> None:
        """SIGTERM every node, again while it refuses (Redis 6.2 does not exit while it
        writes its first append-only file after a sync); SIGKILL after STOP_S."""
        procs = []
        for node in self.nodes:
            node.drop()
            if node.proc is not None and node.proc.poll() is None:
                procs.append(node.proc)
            node.proc = None
        deadline = time.monotonic() + STOP_S
        while procs:
            for proc in procs:
                proc.send_signal(signal.SIGTERM if time.monotonic() < deadline
                                 else signal.SIGKILL)
            time.sleep(POLL_S)
            procs = [proc for proc in procs if proc.poll() is None]

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def master_nodes(self) -> list[int]:
        """Indexes of the live nodes that are masters now."""
        return [n.index for n in self.nodes
                if n.alive and n.client().info("replication")["role"] == "master"]

    def flushall(self) -> None:
        """Empty every master (the replicas follow)."""
        for index in self.master_nodes():
            self.nodes[index].call("FLUSHALL")

    def kill_master(self, index: int) -> None:
        """SIGKILL node `index`, a master now: no shutdown, no last append-only write."""
        node = self.nodes[index]
        if index not in self.master_nodes() or node.proc is None:
            raise ValueError(f"cluster node {index} is not a live master")
        node.drop()
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait()

    def wait_failover(self, timeout_s: float = TIMEOUT_S) -> float:
        """Until replicas serve the killed masters' slots (`healthy()`); the seconds."""
        began = time.monotonic()
        self.wait_healthy(timeout_s)
        return time.monotonic() - began

    def restart_node(self, index: int) -> None:
        """Start a killed node again (same port, same data): it rejoins, as a replica
        when a failover gave its slots away; returns once the cluster is healthy."""
        node = self.nodes[index]
        if not node.alive:
            node.launch(fresh=False)
            node.ready(fresh=False)
        self.wait_healthy()

    def wait_healthy(self, timeout_s: float = TIMEOUT_S) -> None:
        wait_until(self.healthy, "cluster_state:ok on every node", timeout_s)

    def healthy(self) -> bool:
        """Every live node says cluster_state:ok, flags no live node as failing, and
        sees every slot served by `masters` live masters; every live replica's link
        is up and synced."""
        live = {n.id for n in self.nodes if n.alive}
        try:
            for node in self.nodes:
                if not node.alive:
                    continue
                if "cluster_state:ok" not in node.call("CLUSTER", "INFO"):
                    return False
                owners = set()
                for line in node.call("CLUSTER", "NODES").splitlines():
                    parts = line.split()
                    flags = set(parts[2].split(","))
                    if parts[0] in live and flags & {"fail", "fail?", "handshake", "noaddr"}:
                        return False
                    if "master" in flags and len(parts) > 8:  # it serves slots
                        owners.add(parts[0])
                if len(owners) != self.masters or not owners <= live:
                    return False
                info = node.client().info("replication")
                if info["role"] == "slave" and (info["master_link_status"] != "up"
                                                or info["master_sync_in_progress"]):
                    return False
        except redis.RedisError:
            return False
        return True
