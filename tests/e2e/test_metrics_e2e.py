"""Metrics and probes of a real `smm-gateway serve --workers 2`: one scrape, whichever
worker answers it, counts the requests of both workers."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.state.embedded import free_port
from harness import Gateway, Sim, _wait, base_config, start_gateway

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class TwoWorkers(Gateway):
    """The harness's Gateway, served by `--workers 2` from a data dir of its own."""

    def start(self) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/api/v2"
        self.data_dir = self.tmp / "data"
        env = {**os.environ, "REDIS_URL": self.redis_url}
        self.proc = start_gateway(
            ["serve", "--config", str(self.config_path), "--port", str(self.port),
             "--workers", "2", "--data-dir", str(self.data_dir)], env, self.log_path)
        _wait(f"{self.base}/readyz", self.proc, "gateway")
        self.http = httpx.Client(timeout=30)
        self.wait_both_ready()

    def wait_both_ready(self) -> None:
        """`/readyz` answered by one worker says nothing of the other (it may still be
        loading the lists): ready on 8 new connections in a row, whichever answers."""
        deadline, in_a_row = time.monotonic() + 30, 0
        while in_a_row < 8:
            assert time.monotonic() < deadline, "a worker never got ready"
            ok = httpx.get(f"{self.base}/readyz", timeout=10).status_code == 200
            in_a_row = in_a_row + 1 if ok else 0
            if not ok:
                time.sleep(0.1)


@pytest.fixture
def gateway(sims: tuple[Sim, Sim], fresh_redis: str, tmp_path: Path) -> Iterator[TwoWorkers]:
    a, b = sims
    a.reset()
    b.reset()
    gw = TwoWorkers(base_config(a, b), fresh_redis, tmp_path / "gw")
    try:
        yield gw
    finally:
        gw.stop()


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name` over the samples that have these labels (and any others)."""
    return sum(v for (n, ls), v in samples.items()
               if n == name and set(labels.items()) <= set(ls))


def access(gw: Gateway) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in gw.log().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("logger") == "gateway.access"]


def fresh_post(gw: Gateway, **fields: Any) -> httpx.Response:
    """A request on a new connection: the kernel hands it to either worker."""
    return httpx.post(gw.url, data={"key": "alice-key", **{k: str(v) for k, v in fields.items()}},
                      timeout=30)


def test_a_scrape_merges_both_workers(gateway: TwoWorkers) -> None:
    gw = gateway
    orders = [fresh_post(gw, action="add", service=1, link=f"https://t.co/{n}",
                         quantity=100).json()["order"] for n in range(4)]
    sent = len(orders)
    deadline = time.monotonic() + 60
    while len({line["replica"] for line in access(gw)}) < 2:  # until both have answered
        assert time.monotonic() < deadline, "one worker answered everything"
        assert fresh_post(gw, action="status", order=orders[0]).status_code == 200
        sent += 1
        time.sleep(0.01)
    replicas = {line["replica"] for line in access(gw)}
    assert len(replicas) == 2 and all(re.fullmatch(r".+:\d+", r) for r in replicas)
    assert len(access(gw)) == sent

    for _ in range(4):  # each scrape is answered by one worker or the other: all agree
        response = httpx.get(f"{gw.base}/metrics", timeout=10)
        assert response.status_code == 200
        samples = parse(response.text)
        assert total(samples, "smm_requests_total") == sent
        assert total(samples, "smm_requests_total", action="add", outcome="ok") == 4
        assert total(samples, "smm_requests_total", action="status", outcome="ok") == sent - 4
        assert total(samples, "smm_request_seconds_count") == sent
        assert total(samples, "smm_orders_total", provider="prov-b", service="1") == 4
        # testedsmm's #11 at 0.40 (cheaper than toksmm's 0.50), sold at x1.5: 0.06 each
        assert total(samples, "smm_charged_total", service="1") == pytest.approx(0.24)
        assert total(samples, "smm_cost_total", service="1") == pytest.approx(0.16)
        assert total(samples, "smm_margin_total", service="1") == pytest.approx(0.08)
        assert total(samples, "smm_upstream_calls_total", action="add", outcome="ok") == 4
        for provider in ("prov-a", "prov-b"):  # one value per gauge, not one per worker
            assert [v for (n, ls), v in samples.items() if n == "smm_catalog_age_seconds"
                    and ("provider", provider) in ls] != []
            assert samples["smm_breaker_open", (("provider", provider),)] == 0
            assert 0 <= samples["smm_catalog_age_seconds", (("provider", provider),)] < 600
        assert samples["smm_unknown_orders", ()] == 0
        assert not any("pid" in dict(ls) for (_, ls) in samples)
        for secret in ("alice-key", "bob-key", "upstream-secret-prov-a"):
            assert secret not in response.text


def test_probes_and_the_metrics_directory(gateway: TwoWorkers) -> None:
    gw = gateway
    live = httpx.get(f"{gw.base}/livez", timeout=10)
    assert (live.status_code, live.json()) == (200, {"live": True})
    ready = httpx.get(f"{gw.base}/readyz", timeout=10)
    assert (ready.status_code, ready.json()) == (200, {"ready": True})
    health = httpx.get(f"{gw.base}/healthz", timeout=10)
    assert (health.status_code, health.json()) == (200, {"ok": True})
    assert gw.proc is not None
    mine = gw.data_dir / "metrics" / str(gw.proc.pid)
    assert sorted(p.name.split("_")[0] for p in mine.glob("*.db")).count("counter") == 2
    stale = gw.data_dir / "metrics" / "999999999"  # a serve that is gone
    stale.mkdir()
    gw.stop()
    assert not mine.exists()  # removed at exit
    gw.start()
    assert not stale.exists()  # removed at the next start
    assert httpx.get(f"{gw.base}/readyz", timeout=10).status_code == 200


def test_one_worker_serves_its_own_metrics(stack: tuple[Gateway, Sim, Sim]) -> None:
    gw, _, _ = stack
    assert gw.call(action="add", service=1, link="https://t.co/x", quantity=100)["order"]
    base = gw.url.removesuffix("/api/v2")
    samples = parse(httpx.get(f"{base}/metrics", timeout=10).text)
    assert total(samples, "smm_orders_total", provider="prov-b") == 1
    assert total(samples, "smm_requests_total", action="add", outcome="ok") == 1
    assert httpx.get(f"{base}/livez", timeout=10).json() == {"live": True}

