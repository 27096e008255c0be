"""Memory figures: Redis bytes per stored order, and gateway RSS over a soak.

Redis: N realistic order records are written through the gateway's own
`Orders.put_orders` (batches of 1,000, one pipeline each) into a Redis of their
own, and `used_memory` after minus before, over N, is the cost of an order. The
bucket layout (hash fields in `gw:o:{n}`) is the store's, not ours.

Soak: the gateway serves the mixed panel-like load at about half of its measured
maximum for a fixed time while its RSS is sampled; growth is last sample over
the first sample taken after the warm-up (the first tenth of the soak).
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from decimal import Decimal
from typing import Any

import msgspec

from bench import osstat
from bench.load import Generator, Workload
from bench.scenarios import link
from gateway.models import OrderRecord
from gateway.state import keys
from gateway.state.connect import connect
from gateway.state.orders import Orders

BATCH = 1000
FIRST_ID = 1000


def order_record(i: int) -> OrderRecord:
    """What a placed order looks like once a status poll has filled it in."""
    return OrderRecord(
        client="panel-main", service=1 + i % 20, provider="provider-a",
        upstream_service=str(100 + i % 50), link=link(i), quantity=1000,
        charge=Decimal("0.56250"), cost=Decimal("0.50000"), created=1_700_000_000 + i,
        state="placed", upstream_id=str(5_000_000 + i), status="In progress",
        start_count=str(100 + i % 9000), remains="500", currency="USD")


async def _fill(url: str, orders: int, log: Any) -> dict[str, Any]:
    r = connect(url)
    store = Orders(r)
    try:
        before = await r.info("memory")
        started = time.monotonic()
        for start in range(0, orders, BATCH):
            end = min(orders, start + BATCH)
            batch = {FIRST_ID + i: order_record(i) for i in range(start, end)}
            await store.put_orders(batch)
            if start and start % 200_000 == 0:
                log(f"redis memory: {start:,} orders written")
        took = time.monotonic() - started
        # an AOF rewrite in progress holds a buffer counted in used_memory: wait it out
        for _ in range(600):
            persistence = await r.info("persistence")
            if not persistence.get("aof_rewrite_in_progress") and \
                    not persistence.get("aof_rewrite_scheduled"):
                break
            await asyncio.sleep(0.1)
        after = await r.info("memory")
        bucket = keys.order_bucket(FIRST_ID + orders // 2)  # a full one
        encoding = await r.object("encoding", bucket)
        bucket_bytes = await r.memory_usage(bucket)
        fields = await r.hlen(bucket)
    finally:
        await r.aclose()
    enc = msgspec.msgpack.Encoder()
    sizes = [len(enc.encode(order_record(i))) for i in range(0, orders, max(1, orders // 1000))]
    used = int(after["used_memory"]) - int(before["used_memory"])
    dataset = int(after.get("used_memory_dataset", 0)) - int(before.get("used_memory_dataset", 0))
    return {
        "orders": orders,
        "used_memory_before": int(before["used_memory"]),
        "used_memory_after": int(after["used_memory"]),
        "bytes_per_order": used / orders,
        "dataset_bytes_per_order": dataset / orders,
        "record_bytes_mean": statistics.mean(sizes),
        "bucket_encoding": encoding.decode() if isinstance(encoding, bytes) else encoding,
        "bucket_fields": fields,
        "bucket_memory_usage": bucket_bytes,
        "write_s": took,
        "orders_per_s": orders / took if took else None,
    }


def redis_memory(url: str, orders: int, log: Any) -> dict[str, Any]:
    return asyncio.run(_fill(url, orders, log))


class RssSampler:
    """Samples a process tree's RSS every `every_s` in a thread, during a load run."""

    def __init__(self, pid: int, every_s: float) -> None:
        self.pid, self.every_s = pid, every_s
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    def _loop(self) -> None:
        while True:
            self.samples.append((time.monotonic() - self._t0,
                                 osstat.rss_bytes(osstat.tree(self.pid))))
            if self._stop.wait(self.every_s):
                break

    def begin(self) -> None:
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def end(self) -> dict[str, float]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.samples.append((time.monotonic() - self._t0,
                             osstat.rss_bytes(osstat.tree(self.pid))))
        return {}


def pacing(rate: float, connections: int, latency_ms: float) -> int:
    """Per-connection pause (ms) for `connections` to offer about `rate` req/s."""
    return max(1, round(connections * 1000 / rate - latency_ms))


def soak(generator: Generator, url: str, bodies: tuple[tuple[int, str], ...], pid: int,
         rate: float, seconds: float, connections: int, calibrate_s: float,
         log: Any) -> dict[str, Any]:
    """Run `bodies` at about `rate` req/s for `seconds`, sampling the gateway's RSS.

    Pacing is wrk's `delay()` per connection (wrk2 is not packaged): the pause is
    connections/rate minus the answer time, which a short calibration run measures.
    """
    delay = pacing(rate, connections, 1.0)
    if calibrate_s > 0:
        probe = generator.run(Workload(url, bodies, delay), connections, calibrate_s)
        # answers take connections/rps - delay on average; subtract that from the pause
        answer_ms = max(0.0, connections * 1000 / max(probe.rps, 1.0) - delay)
        delay = pacing(rate, connections, answer_ms)
        log(f"soak: calibration {probe.rps:,.0f} req/s; pause {delay} ms per connection")
    sampler = RssSampler(pid, every_s=max(0.25, min(5.0, seconds / 60)))
    result = generator.run(Workload(url, bodies, delay), connections, seconds, [sampler])
    samples = sampler.samples
    warm = [s for s in samples if s[0] >= seconds * 0.1] or samples
    first, last = warm[0][1], samples[-1][1]
    peak = max(s[1] for s in warm)
    return {
        "seconds": seconds, "target_rps": rate, "rps": result.rps,
        "connections": connections, "pause_ms": delay,
        "errors": result.errors + result.non2xx, "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms, "gen_cpu_pct": result.gen_cpu_pct,
        "rss_first_mib": first / 2**20, "rss_last_mib": last / 2**20,
        "rss_peak_mib": peak / 2**20,
        "growth_pct": 100.0 * (last - first) / first if first else None,
        "samples": [{"t_s": round(t, 2), "rss_mib": round(b / 2**20, 2)} for t, b in samples],
    }
