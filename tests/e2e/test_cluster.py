"""The gateway over a real Redis Cluster (3 masters, 1 replica each, on loopback):
every action, the money race, idempotency, a burst past the connection pool, and
a master killed mid-load.

One cluster serves the module (emptied before each test); the failover test runs
last, and brings the killed node back (as a replica) when it is done.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.cluster import RedisCluster

from gateway.errors import StoreUnavailable
from gateway.models import OrderRecord
from gateway.money import from_units
from gateway.state.connect import connect, mapped
from gateway.state.local_cluster import LocalCluster
from harness import ROOT, Gateway, Sim, base_config

NO_FUNDS = {"error": "Not enough funds on balance"}
TEMPORARY = {"error": "Temporary error, try again later"}
BUCKET = 128  # orders and refills are kept in hashes of 128 ids: gw:o:{id // 128}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("cluster")) as c:
        yield c


@pytest.fixture
def store(cluster: LocalCluster) -> Iterator[RedisCluster]:
    """The module's cluster, emptied, and a client to look into it."""
    cluster.wait_healthy()
    cluster.flushall()
    client = RedisCluster.from_url(cluster.url.replace("redis+cluster://", "redis://"))
    try:
        yield client
    finally:
        client.close()


@contextmanager
def gateways(sims: tuple[Sim, Sim], cluster: LocalCluster, tmp: Path,
             **gateway: Any) -> Iterator[tuple[Gateway, Gateway, Sim, Sim]]:
    """Two gateway processes over the cluster (the harness's flush is standalone-only)."""
    a, b = sims
    a.reset()
    b.reset()
    config = base_config(a, b, **gateway)
    one = Gateway(config, cluster.url, tmp / "one", flush=False)
    try:
        two = Gateway(config, cluster.url, tmp / "two", flush=False)
        try:
            yield one, two, a, b
        finally:
            two.stop()
    finally:
        one.stop()


def cli(url: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "gateway", *args], cwd=ROOT,
                          env={**os.environ, "REDIS_URL": url}, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def create_client(url: str, name: str, credit: str) -> str:
    out = cli(url, "keys", "create", "--name", name, "--credit", credit)
    return next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("key:"))


def balance(gw: Gateway, key: str) -> str:
    return str(gw.call(key=key, action="balance")["balance"])


def assert_clean(*gws: Gateway, outage: bool = False) -> None:
    """Nothing in the logs says a command failed on the cluster (with `outage`, only
    that Redis was unavailable for a while: never a crash)."""
    bad = ("CROSSSLOT", "unhandled error") if outage else (
        "CROSSSLOT", "MOVED", "ASK ", "Traceback", "redis: ", "unhandled error")
    for gw in gws:
        for line in gw.log().splitlines():
            assert not any(text in line for text in bad), f"{gw.log_path}: {line[-4000:]}"


def master_port(store: RedisCluster, key: str) -> int:
    return int(store.get_node_from_key(key).port)


def split_buckets(store: RedisCluster, prefix: str) -> int:
    """A bucket number whose hash and the next one's live on different masters."""
    return next(n for n in range(40, 400)
                if master_port(store, f"{prefix}{{{n}}}")
                != master_port(store, f"{prefix}{{{n + 1}}}"))


def place(gw: Gateway, service: int, key: str = "alice-key") -> int:
    answer = gw.call(key=key, action="add", service=service, link="https://t/x", quantity=100)
    assert list(answer) == ["order"] and isinstance(answer["order"], int), answer
    return int(answer["order"])


# --- every action -------------------------------------------------------------


def test_every_action_over_the_cluster(sims, cluster, store, tmp_path):
    # ids start just below a bucket boundary whose two buckets sit on two masters,
    # so multi-id reads and writes span nodes
    orders_at = split_buckets(store, "gw:o:") * BUCKET + BUCKET - 4  # 8 orders
    refills_at = split_buckets(store, "gw:r:") * BUCKET + BUCKET - 2  # 3 refills
    with gateways(sims, cluster, tmp_path, order_id_start=orders_at,
                  refill_id_start=refills_at) as (gw, other, a, b):
        services = {s["service"]: s for s in gw.call(action="services")}
        assert sorted(services) == [1, 2, 3, 4, 5, 6, 7, 8, 10]
        assert services[1]["rate"] == "0.60000" and services[2]["rate"] == "0.30000"
        # the operator's balance: what the providers hold
        assert other.call(action="balance") == {"balance": "2000.00000", "currency": "USD"}

        on_b = [place(gw, 1) for _ in range(4)]  # followers: prov-b, upstream 1..4
        on_a = [place(gw, 2) for _ in range(4)]  # likes: prov-a, upstream 1..4
        ids = on_b + on_a
        assert len(set(ids)) == 8
        buckets = {f"gw:o:{{{i // BUCKET}}}" for i in ids}
        assert len({master_port(store, k) for k in buckets}) == 2, buckets
        assert all(store.hexists(f"gw:o:{{{i // BUCKET}}}", str(i)) for i in ids)

        single = gw.call(action="status", order=on_b[0])
        assert single == {"charge": "0.06000", "start_count": "0", "status": "Pending",
                          "remains": "100", "currency": "USD"}
        multi = other.call(action="status", orders=",".join(map(str, ids)) + ",42")
        assert list(multi) == [*map(str, ids), "42"]
        assert all(multi[str(i)]["status"] == "Pending" for i in ids)
        assert multi["42"] == {"error": "Incorrect order ID"}

        for upstream in (1, 2, 4):
            b.control(f"orders/{upstream}", {"status": "Completed"})
        r1 = gw.call(action="refill", order=on_b[0])["refill"]
        many = other.call(action="refill", orders=f"{on_b[1]},123456,{on_b[3]}")
        r2, r3 = many[0]["refill"], many[2]["refill"]
        assert many[1] == {"order": 123456, "refill": {"error": "Incorrect order ID"}}
        assert all(isinstance(r, int) for r in (r1, r2, r3)) and len({r1, r2, r3}) == 3
        refill_buckets = {f"gw:r:{{{r // BUCKET}}}" for r in (r1, r2, r3)}
        assert len({master_port(store, k) for k in refill_buckets}) == 2, refill_buckets
        assert gw.call(action="refill_status", refill=r1)["status"] == "Pending"
        states = other.call(action="refill_status", refills=f"{r1},{r2},{r3},999")
        assert [s["refill"] for s in states] == [r1, r2, r3, 999]
        assert [s["status"] for s in states[1:3]] == ["Pending", "Pending"]
        assert states[3]["status"] == {"error": "Refill not found"}

        canceled = gw.call(action="cancel", orders=f"{on_b[2]},{on_a[0]},424242")
        assert canceled == [{"order": on_b[2], "cancel": 1}, {"order": on_a[0], "cancel": 1},
                            {"order": 424242, "cancel": {"error": "Incorrect order ID"}}]
        after = other.call(action="status", orders=f"{on_b[2]},{on_a[0]}")
        assert {s["status"] for s in after.values()} == {"Canceled"}

        assert Decimal(gw.call(action="balance")["balance"]) < 2000  # upstreams spent
        key = create_client(cluster.url, "reseller", "1")
        order = place(other, 2, key=key)
        assert balance(gw, key) == "0.97000"
        assert gw.call(key=key, action="cancel", order=order)[0]["cancel"] == 1
        assert other.call(key=key, action="status", order=order)["status"] == "Canceled"
        assert balance(gw, key) == "1.00000"  # refunded, once
        assert "ledger sum 1.00000: ok" in cli(cluster.url, "keys", "check", "reseller")
        assert_clean(gw, other)


# --- money and at-most-once ----------------------------------------------------


def test_100_concurrent_adds_against_a_balance_for_50(sims, cluster, store, tmp_path):
    with gateways(sims, cluster, tmp_path) as (one, two, a, b):
        # likes: 0.30 per 1000; 100 likes cost 0.03; 1.50 pays for exactly 50
        key = create_client(cluster.url, "reseller", "1.50")

        def add(i: int) -> dict[str, Any]:
            gw = (one, two)[i % 2]
            r = httpx.post(gw.url, data={"key": key, "action": "add", "service": "2",
                                         "link": f"https://t/{i}", "quantity": "100"},
                           timeout=30)
            return dict(r.json())

        with ThreadPoolExecutor(max_workers=50) as pool:
            answers = list(pool.map(add, range(100)))
        placed = [x for x in answers if "order" in x]
        assert len(placed) == 50 and answers.count(NO_FUNDS) == 50, Counter(map(str, answers))
        assert len({x["order"] for x in placed}) == 50
        assert len(a.orders()) + len(b.orders()) == 50, "exactly 50 orders reached upstream"
        assert balance(one, key) == balance(two, key) == "0.00000"
        assert "balance 0.00000, ledger sum 0.00000: ok" in cli(cluster.url, "keys", "check")
        assert cli(cluster.url, "keys", "history", "reseller").count(" charge ") == 50
        assert_clean(one, two)


def test_idempotency_key_across_replicas(sims, cluster, store, tmp_path):
    with gateways(sims, cluster, tmp_path) as (one, two, a, b):
        key = create_client(cluster.url, "panel", "10")
        b.control("latency", {"ms": 300})  # the first add is still in flight for the others
        data = {"key": key, "action": "add", "service": "1", "link": "https://t/dup",
                "quantity": "100"}
        headers = {"Idempotency-Key": "req-42"}

        def add(i: int) -> httpx.Response:
            return httpx.post((one, two)[i % 2].url, data=data, headers=headers, timeout=30)

        with ThreadPoolExecutor(max_workers=6) as pool:
            answers = [r.json() for r in pool.map(add, range(6))]
        assert len({x.get("order") for x in answers}) == 1 and "order" in answers[0], answers
        assert len(b.orders()) == 1 and not a.orders(), "one upstream order"
        assert two.http.post(two.url, data=data, headers=headers).json() == answers[0]
        changed = one.http.post(one.url, data={**data, "quantity": "300"}, headers=headers)
        assert changed.status_code == 400 and "different request" in changed.json()["error"]
        assert balance(one, key) == "9.94000"  # charged once
        assert_clean(one, two)


# --- the client under load -------------------------------------------------------


async def hammer(url: str, stop: Callable[[], bool], pool_size: int = 256, tasks: int = 64,
                 rounds: int = 0) -> Counter[str]:
    """`tasks` loops of a cross-node pipeline, a script and a command through the
    gateway's own client, until `stop()` (or `rounds` each); what each one raised."""
    redis = connect(url, pool_size=pool_size)
    script = redis.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    outcomes: Counter[str] = Counter()

    @mapped
    async def once(i: int) -> None:
        pipe = redis.pipeline(transaction=False)
        for j in range(4):
            pipe.incr(f"hammer:{{{(i + j) % 7}}}")
        await pipe.execute()
        await script(keys=[f"hammer:{{{i % 7}}}"], args=[1])
        await redis.get(f"hammer:{{{i % 5}}}")

    async def loop(worker: int) -> None:
        n = 0
        while not stop() and (not rounds or n < rounds):
            n += 1
            try:
                await once(worker + n)
                outcomes["ok"] += 1
            except StoreUnavailable:
                outcomes["StoreUnavailable"] += 1
                await asyncio.sleep(0.01)
            except Exception as exc:  # anything else escapes gateway.state: a crash
                outcomes[f"{type(exc).__name__}: {exc}"] += 1

    try:
        await asyncio.gather(*(loop(w) for w in range(tasks)))
    finally:
        await redis.aclose()
    return outcomes


def test_a_burst_past_the_pool_waits_for_connections(cluster, store):
    # 400 operations at once on a client of 16 connections per node: like the
    # standalone client's blocking pool, the rest wait; none fails
    outcomes = asyncio.run(hammer(cluster.url, lambda: False, pool_size=16, tasks=400,
                                  rounds=2))
    assert outcomes == {"ok": 800}


# --- a master killed mid-load ---------------------------------------------------


@dataclass
class Seen:
    """One answer the load got: when, from which action, what."""
    at: float
    action: str
    status: int
    body: Any  # parsed JSON, or the raw text when it was not JSON


class Load:
    """Adds and status polls from threads, through both gateways, until stopped."""

    def __init__(self, gws: tuple[Gateway, Gateway], key: str) -> None:
        self.gws, self.key = gws, key
        self.seen: list[Seen] = []
        self.ids: list[int] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.http = httpx.Client(timeout=30)

    def _post(self, n: int, action: str, **fields: str) -> Any:
        gw = self.gws[n % 2]
        at = time.monotonic()
        try:
            r = self.http.post(gw.url, data={"key": self.key, "action": action, **fields})
        except httpx.HTTPError as exc:  # no answer at all (status 0): the test fails
            status, body = 0, repr(exc)
        else:
            status, body = r.status_code, r.text
            if r.headers.get("content-type", "").startswith("application/json"):
                try:
                    body = r.json()
                except ValueError:
                    pass
        with self.lock:
            self.seen.append(Seen(at, action, status, body))
        return body

    def adder(self, worker: int) -> None:
        n = worker
        while not self.stop.is_set():
            n += 1
            body = self._post(n, "add", service="2", link=f"https://t/{worker}/{n}",
                              quantity="100")
            if isinstance(body, dict) and "order" in body:
                with self.lock:
                    self.ids.append(body["order"])

    def poller(self, worker: int) -> None:
        n = worker
        while not self.stop.is_set():
            n += 1
            with self.lock:
                recent = self.ids[-30:]
            if recent:
                self._post(n, "status", orders=",".join(map(str, recent)))
            else:
                time.sleep(0.01)

    def count(self) -> int:
        with self.lock:
            return len(self.ids)


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def is_error(body: Any) -> bool:
    return isinstance(body, dict) and set(body) == {"error"} and isinstance(body["error"], str)


def test_a_master_killed_mid_load(sims, cluster, store, tmp_path, record_property):
    credit, price = Decimal(1000), Decimal("0.03")
    with gateways(sims, cluster, tmp_path) as (one, two, a, b):
        key = create_client(cluster.url, "reseller", str(credit))
        # the master that holds the client's money, so the ledger scripts feel it
        port = master_port(store, "{c:reseller}")
        victim = next(n.index for n in cluster.nodes if n.port == port)
        load = Load((one, two), key)
        threads = [threading.Thread(target=load.adder, args=(i,)) for i in range(6)]
        threads += [threading.Thread(target=load.poller, args=(i,)) for i in range(2)]
        # and the gateway's own client, in-process, much busier than the HTTP load
        raised: Counter[str] = Counter()
        threads.append(threading.Thread(target=lambda: raised.update(
            asyncio.run(hammer(cluster.url, load.stop.is_set)))))
        for t in threads:
            t.start()
        try:
            wait_for(lambda: load.count() >= 30, "30 orders before the kill")
            killed_at, before = time.monotonic(), load.count()
            cluster.kill_master(victim)
            took = cluster.wait_failover()
            recovered_at = time.monotonic()
            wait_for(lambda: load.count() >= before + 30, "30 orders after the failover")
        finally:
            load.stop.set()
            for t in threads:
                t.join()
            load.http.close()

        # every answer is JSON; every error is exactly {"error": "..."}; no 500, no HTML
        errors = Counter((s.action, s.status, str(s.body)) for s in load.seen
                         if not (s.status == 200 and not is_error(s.body)))
        summary = (f"failover {took:.2f}s; {len(load.seen)} answers, {len(load.ids)} orders;"
                   f" errors: {dict(errors)}; in-process client: {dict(raised)}")
        print(summary)
        record_property("failover", summary)
        for s in load.seen:
            assert s.status in (200, 400, 503) and not isinstance(s.body, str), (s, summary)
            if s.status != 200 or s.action == "add":
                assert is_error(s.body) or set(s.body) == {"order"}, (s, summary)
            if s.status == 503:
                assert s.body == TEMPORARY, (s, summary)
        # errors only in the failover window: none asked 2 s after every node said ok
        # (a request already under way, a client's topology refresh)
        late = [s for s in load.seen if s.at > recovered_at + 2.0
                and (s.status != 200 or is_error(s.body))]
        assert not late, (late[:5], summary)
        assert any(s.at > killed_at for s in load.seen)
        # a Redis failure leaves gateway.state as StoreUnavailable, nothing else
        assert set(raised) <= {"ok", "StoreUnavailable"} and raised["ok"], summary

        ids = load.ids
        assert len(set(ids)) == len(ids), "an order id was handed out twice"

        def all_answer() -> bool:  # every order the client got has a record, on both
            for gw in (one, two):
                for i in range(0, len(ids), 100):
                    chunk = ids[i:i + 100]
                    got = gw.call(key=key, action="status", orders=",".join(map(str, chunk)))
                    if any(not isinstance(got.get(str(o)), dict) or "status" not in got[str(o)]
                           for o in chunk):
                        return False
            return True

        wait_for(all_answer, "a status for every order the client was given")
        assert all(store.hexists(f"gw:o:{{{i // BUCKET}}}", str(i)) for i in ids)
        # what Redis could not take during the failover is in the replicas' journals
        # until replayed (within half a second of Redis answering): then the money
        wait_for(lambda: not any(any((gw.tmp / "data" / "journal").glob("*.journal"))
                                 for gw in (one, two)), "the journals replayed")
        left = balance(one, key)
        assert_clean(one, two, outage=True)

    cluster.restart_node(victim)  # back as a replica: the cluster is whole again
    assert victim not in cluster.master_nodes()
    upstream = len(a.orders()) + len(b.orders())
    unknown = [line for line in cli(cluster.url, "orders", "unknown").splitlines()[1:]
               if line.split() and line.split()[0].isdigit()]
    assert len(ids) <= upstream <= len(ids) + len(unknown), (upstream, len(ids), unknown)
    assert "ok" in cli(cluster.url, "keys", "check", "reseller")
    # the money is exactly what the records say: the charge of every order that stands
    # (placed, or held for the operator: unknown or still dispatching) and the
    # reservations awaiting the reconciler (their order never got a record: the
    # failover took the write; released after PENDING_GRACE_S). An index such as the
    # unknown-orders set may lose a write on failover (asynchronous replication), so
    # the records themselves are counted.
    awaiting = sum((from_units(v.decode().split(":")[1])
                    for v in store.hgetall("gw:{c:reseller}:pending").values()), Decimal(0))
    standing = Decimal(0)
    for n in range(min(ids) // BUCKET - 1, max(ids) // BUCKET + 2):
        for raw in store.hgetall(f"gw:o:{{{n}}}").values():
            rec = _record(raw)
            if rec.client == "reseller" and rec.state != "failed":
                standing += rec.charge
    assert Decimal(left) == credit - standing - awaiting, (summary, standing, awaiting)
    assert Decimal(left) <= credit - price * len(ids), summary


def _record(raw: bytes) -> OrderRecord:
    import msgspec
    return msgspec.msgpack.decode(raw, type=OrderRecord)
