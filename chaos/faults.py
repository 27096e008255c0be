"""The fault schedule, played while the load runs.

One cycle, each step after the other (the load never stops):

    slow provider (400 ms)*        kill -9 a replica, restart it
    HTML error pages               SIGTERM redis-server, restart it
    plain 500s                     hangs (past the gateway's provider timeout)
    SIGKILL redis-server and kill -9 a replica while it is down; restart both
    dropped connections            answers after the provider timeout (the
                                   order exists upstream, the gateway gave up)
    kill -9 the other replica*     top-up of the prepaid client
    Redis killed and restarted while the gateway is idle (the panels pause): the
    first requests after it answers again must all be served

(* not in a lean plan: the short run.)
Against a replicated Redis (`--replicated`, `--sentinel`: chaos.topology) both
Redis steps are failovers instead: the lossy one (the replica's link goes quiet
while adds are answered, the master is killed, the replica promoted behind the
same address), or a Sentinel promotion; the idle step kills the master while idle.
Against a Redis Cluster (`--cluster`) the Redis steps kill a master and wait for
its replica to take over (then restart the killed node as a replica); against an
external Redis (`--redis-url`) they are skipped. Every step is logged with its
start and end (seconds since the load began).
"""

from __future__ import annotations

import asyncio
import inspect
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from chaos.config import Plan
from chaos.procs import RedisServer, Replica, Sim
from chaos.topology import Replicated, Sentineled

IDLE_PROBES = 20  # requests sent right after an idle restart: each must be served


def kill_a_master(cluster: Any, turn: int) -> int:
    """SIGKILL one live master of a LocalCluster (a different one each turn); its node
    index. `kill_master` takes a node index (returns None), or in its first version
    a position among the live masters (returns the node index)."""
    masters = cluster.master_nodes()
    position = turn % len(masters)
    if inspect.signature(cluster.kill_master).return_annotation in (None, "None"):
        cluster.kill_master(masters[position])
        return int(masters[position])
    return int(cluster.kill_master(position))


@dataclass
class Targets:
    redis: RedisServer | None  # ours to kill (None: external or cluster)
    cluster: Any  # gateway.state.local_cluster.LocalCluster, or None
    sims: list[Sim]
    replicas: list[Replica]
    topup: Callable[[Decimal], Awaitable[bool]]
    pair: Replicated | Sentineled | None = None  # ours to fail over
    pause: Callable[[], Awaitable[None]] | None = None  # the load: hold the panels ...
    resume: Callable[[], None] | None = None  # ... and let them go
    probe: Callable[[int], Awaitable[list[Any]]] | None = None  # n requests: those refused


class Faults:
    def __init__(self, targets: Targets, plan: Plan, t0: float) -> None:
        self.t = targets
        self.plan = plan
        self.t0 = t0
        self.log: list[dict[str, Any]] = []
        self.topped_up = Decimal(0)
        self.refused_after_idle_restart: list[dict[str, Any]] = []  # what each got

    async def run(self) -> None:
        for cycle in range(self.plan.cycles):
            for name, step in self._cycle(cycle):
                began = time.monotonic() - self.t0
                note = await step()
                self.log.append({"cycle": cycle, "step": name, "start_s": round(began, 2),
                                 "end_s": round(time.monotonic() - self.t0, 2),
                                 "note": note or ""})

    def _cycle(self, c: int) -> list[tuple[str, Callable[[], Awaitable[str | None]]]]:
        a, b = self.t.sims[0], self.t.sims[1]
        n = len(self.t.replicas)
        late_ms = self.plan.provider_timeout_s * 1000 + 300
        steps: list[tuple[str, Callable[[], Awaitable[str | None]]]] = []
        if not self.plan.lean:
            steps.append((f"{a.name} latency 400 ms", lambda: self._latency(a, 400)))
        steps += [
            (f"kill -9 replica-{c % n}", lambda: self._kill_replica(c % n)),
            (f"{b.name} html 50%", lambda: self._upstream(b, "html", 0.5)),
            (self._redis_name(signal.SIGTERM), lambda: self._redis(signal.SIGTERM, None)),
            (f"{a.name} 500 50%", lambda: self._upstream(a, "500", 0.5)),
            (f"{b.name} hang 30%", lambda: self._upstream(b, "hang", 0.3)),
            (f"{self._redis_name(signal.SIGKILL)} + kill -9 replica-{(c + 1) % n}",
             lambda: self._redis(signal.SIGKILL, (c + 1) % n)),
            (f"{a.name} drop 40%", lambda: self._upstream(a, "drop", 0.4)),
            (f"{b.name} answers after the timeout ({late_ms:.0f} ms)",
             lambda: self._latency(b, late_ms)),
        ]
        if not self.plan.lean:
            steps.append((f"kill -9 replica-{(c + 1) % n}",
                          lambda: self._kill_replica((c + 1) % n)))
        steps.append(("top-up", self._topup))
        if self.t.pause is not None and (self.t.redis is not None or self.t.pair is not None):
            steps.append(("redis killed and restarted while idle", self._idle_restart))
        return steps

    # --- upstream ------------------------------------------------------------------

    async def _upstream(self, sim: Sim, fault: str, rate: float) -> None:
        await asyncio.to_thread(sim.control, "fault", {"fault": fault, "rate": rate})
        await asyncio.sleep(self.plan.step_s)
        await asyncio.to_thread(sim.control, "fault", {"fault": None})

    async def _latency(self, sim: Sim, ms: float) -> None:
        await asyncio.to_thread(sim.control, "latency", {"ms": ms})
        await asyncio.sleep(max(self.plan.step_s, ms / 1000))
        await asyncio.to_thread(sim.control, "latency", {"ms": sim.latency_ms})

    # --- processes -----------------------------------------------------------------

    async def _kill_replica(self, i: int) -> None:
        replica = self.t.replicas[i]
        await asyncio.to_thread(replica.signal, signal.SIGKILL)
        await asyncio.sleep(self.plan.down_s)
        await asyncio.to_thread(self._start_replica, replica)

    @staticmethod
    def _start_replica(replica: Replica) -> None:
        replica.start()
        replica.wait_ok("/healthz")

    def _redis_name(self, signum: int) -> str:
        if isinstance(self.t.pair, Sentineled):
            return "sentinel failover (master SIGKILLed)"
        if self.t.pair is not None:
            return "lossy failover (replica cut off, master SIGKILLed, replica promoted)"
        if self.t.cluster is not None:
            return "SIGKILL a Redis Cluster master (failover)"
        if self.t.redis is None:
            return "(no Redis outage: external Redis)"
        return f"{signal.Signals(signum).name} redis-server"

    async def _redis(self, signum: int, also_kill: int | None) -> str | None:
        """Redis goes away (and, with `also_kill`, a replica dies while it is away);
        then both come back."""
        server, cluster, pair = self.t.redis, self.t.cluster, self.t.pair
        if pair is not None:
            dies = self.t.replicas[also_kill] if also_kill is not None else None
            failed_over: str = await asyncio.to_thread(pair.failover, self.plan.down_s)
            if dies is not None:  # a gateway replica dies right after the failover
                await asyncio.to_thread(dies.signal, signal.SIGKILL)
                await asyncio.sleep(self.plan.down_s / 2)
                await asyncio.to_thread(self._start_replica, dies)
            return failed_over
        ours = server is not None or cluster is not None
        note = None if ours else "no Redis outage: an external Redis"
        if cluster is not None:
            node = await asyncio.to_thread(kill_a_master, cluster, len(self.log))
        elif server is not None:
            await asyncio.to_thread(server.signal, signum)
        replica = self.t.replicas[also_kill] if also_kill is not None else None
        if replica is not None:
            await asyncio.sleep(self.plan.down_s / 2)
            await asyncio.to_thread(replica.signal, signal.SIGKILL)
        await asyncio.sleep(self.plan.down_s)
        if cluster is not None:
            took = await asyncio.to_thread(cluster.wait_failover)
            await asyncio.to_thread(cluster.restart_node, node)  # back, as a replica
            note = f"master node {node} killed; failover took {took:.1f}s"
        elif server is not None:
            await asyncio.to_thread(server.start)
        if replica is not None:
            await asyncio.to_thread(self._start_replica, replica)
        return note

    async def _idle_restart(self) -> str:
        """No request in flight; Redis dies and comes back (the same address and data);
        then every request must be served: a pooled connection the old server closed
        must never be handed out again."""
        assert self.t.pause is not None and self.t.resume is not None
        assert self.t.probe is not None
        await self.t.pause()
        await asyncio.sleep(0.3)  # idle: the gateways' pooled connections see it go
        note: str | None
        if self.t.pair is not None:
            note = await asyncio.to_thread(self.t.pair.failover, 0.0)
        else:
            assert self.t.redis is not None
            await asyncio.to_thread(self.t.redis.signal, signal.SIGKILL)
            await asyncio.sleep(0.3)
            await asyncio.to_thread(self.t.redis.start)
            note = "SIGKILL redis-server while idle, restarted"
        refused = await self.t.probe(IDLE_PROBES)
        self.t.resume()
        self.refused_after_idle_restart += [
            {"replica": a.replica, "status": a.status, "kind": a.kind, "answer": a.text}
            for a in refused]
        return f"{note}; {len(refused)} of {IDLE_PROBES} requests after it refused"

    async def _topup(self) -> str:
        amount = self.plan.credit
        if await self.t.topup(amount):
            self.topped_up += amount
            return f"+{amount}"
        return "top-up failed (not counted)"
