"""A Redis Cluster on loopback, for tests and local trials (`redis+cluster://`).

Starts `masters * (1 + replicas)` redis-server processes from the binary the
embedded Redis uses, each with append-only persistence in its own directory, and
joins them with CLUSTER MEET / ADDSLOTS / REPLICATE from Python (no redis-cli).
A small `cluster-node-timeout` makes a failover take about two seconds.

Redis 6.2 keeps a master out of `cluster_state:ok` for 2 s after it starts, so
`start()` takes a little over that.
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
_rng = random.SystemRandom()  # not the test's seeded `random`


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def cluster_port() -> int:
    """A port that is free, and whose cluster bus port (+10000) is free too."""
    while True:
        port = _rng.randrange(15000, 30000)
        if _free(port) and _free(port + BUS_OFFSET):
            return port


@dataclass
class _Node:
    index: int
    dir: Path
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


class LocalCluster:
    """`with LocalCluster(dir) as c: url = c.url` -- or `start()` / `stop()`."""

    def __init__(self, data_dir: str | Path, masters: int = 3, replicas: int = 1,
                 node_timeout_ms: int = 1000) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.masters, self.replicas = masters, replicas
        self.node_timeout_ms = node_timeout_ms
        self.nodes = [_Node(i, self.data_dir / f"node-{i}")
                      for i in range(masters * (1 + replicas))]
        self.url = ""
        self.killed: list[int] = []

    # --- lifecycle -----------------------------------------------------------

    def start(self) -> str:
        """A fresh cluster (node dirs are emptied): its URL once every node says ok."""
        private_dir(self.data_dir)
        try:
            for node in self.nodes:
                shutil.rmtree(node.dir, ignore_errors=True)
                private_dir(node.dir)
                self._launch(node, fresh=True)
            for node in self.nodes:
                self._ready(node, fresh=True)
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
                self._wait(functools.partial(node.knows, master.id),
                           f"node {node.index} to meet node {master.index}")
                node.call("CLUSTER", "REPLICATE", master.id)
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        self.url = f"redis+cluster://127.0.0.1:{first.port}"
        return self.url

    def stop(self) -> None:
        """SIGTERM every node, again while it refuses (Redis 6.2 will not exit while it
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

    # --- failures ------------------------------------------------------------

    def master_nodes(self) -> list[int]:
        """Indexes of the live nodes that are masters now."""
        return [n.index for n in self.nodes
                if n.alive and n.client().info("replication")["role"] == "master"]

    def kill_master(self, index: int = 1) -> int:
        """SIGKILL the `index`-th live master (by node index); the killed node's index."""
        node = self.nodes[self.master_nodes()[index]]
        assert node.proc is not None
        node.drop()
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait()
        self.killed.append(node.index)
        return node.index

    def wait_failover(self, timeout_s: float = TIMEOUT_S) -> float:
        """Until a replica took over every slot of the killed masters and every live
        node says ok; the seconds it took."""
        began = time.monotonic()
        self.wait_healthy(timeout_s)
        return time.monotonic() - began

    def restart_node(self, index: int) -> None:
        """Start a stopped or killed node again (same port, same data): it rejoins,
        as a replica when its slots were taken over meanwhile."""
        node = self.nodes[index]
        if node.alive:
            return
        self._launch(node, fresh=False)
        self._ready(node, fresh=False)
        if index in self.killed:
            self.killed.remove(index)
        self.wait_healthy()

    # --- health ----------------------------------------------------------------

    def wait_healthy(self, timeout_s: float = TIMEOUT_S) -> None:
        self._wait(self.healthy, "cluster_state:ok on every node", timeout_s)

    def healthy(self) -> bool:
        """Every live node says ok, sees every live node as well, sees the slots served
        by `masters` live masters only; every live replica's link is up."""
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
                    node_id, flags = parts[0], parts[2].split(",")
                    if node_id in live and ({"fail", "fail?", "handshake", "noaddr"}
                                            & set(flags)):
                        return False
                    if "master" in flags and len(parts) > 8:
                        owners.add(node_id)
                if len(owners) != self.masters or not owners <= live:
                    return False
                info = node.client().info("replication")
                if info["role"] == "slave" and (info["master_link_status"] != "up"
                                                or info["master_sync_in_progress"]):
                    return False
        except redis.RedisError:
            return False
        return True

    # --- helpers ---------------------------------------------------------------

    def _launch(self, node: _Node, fresh: bool) -> None:
        if fresh:
            node.port = cluster_port()
        node.drop()
        node.proc = subprocess.Popen(self._args(node), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     umask=0o077)

    def _ready(self, node: _Node, fresh: bool) -> None:
        """Until `node` answers PING; a fresh node whose port was taken meanwhile (it
        exits at once) is started again on other ports."""
        deadline, tries = time.monotonic() + TIMEOUT_S, 0
        while True:
            assert node.proc is not None
            if node.proc.poll() is not None:
                tries += 1
                if not fresh or tries > 5:
                    log = node.dir / "redis.log"
                    tail = log.read_text()[-500:] if log.exists() else ""
                    raise RuntimeError(f"redis-server (cluster node {node.index}) exited: "
                                       f"{tail}")
                self._launch(node, fresh)
            else:
                try:
                    if node.client().ping():
                        return
                except redis.ConnectionError:
                    node.drop()
            if time.monotonic() > deadline:
                raise TimeoutError(f"Redis Cluster: node {node.index} did not start")
            time.sleep(POLL_S)

    def _args(self, node: _Node) -> list[str]:
        return [
            redis_binary(),
            "--port", str(node.port),
            "--bind", "127.0.0.1",
            "--dir", str(node.dir),
            "--logfile", str(node.dir / "redis.log"),
            "--daemonize", "no",
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--cluster-replica-validity-factor", "0",  # a replica may always take over
            # order buckets (128 records of ~140 bytes) stay compact listpacks
            "--hash-max-ziplist-value", "256",
            "--hash-max-ziplist-entries", "256",
        ]

    @staticmethod
    def _wait(check: Callable[[], bool], what: str, timeout_s: float = TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while not check():
            if time.monotonic() > deadline:
                raise TimeoutError(f"Redis Cluster: timed out waiting for {what}")
            time.sleep(POLL_S)
