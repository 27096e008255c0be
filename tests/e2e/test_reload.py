"""Live config of a real `smm-gateway serve`: rewrite its config file, send SIGHUP, and
the same process answers with the new config while a client loop sees no error; an
invalid file is refused and the running config stays; the admin API reloads too."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from test_metrics_e2e import TwoWorkers

from harness import Gateway, Sim, base_config

ADMIN = "admin-key-0123456789abcdef"


def rewrite(gw: Gateway, change: Callable[[dict[str, Any]], None]) -> None:
    change(gw.config)
    gw.config_path.write_text(yaml.safe_dump(gw.config, sort_keys=False))


def services(gw: Gateway, key: str = "alice-key") -> dict[int, dict[str, Any]]:
    return {s["service"]: s for s in gw.call(key, action="services")}


def log_lines(gw: Gateway, message: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in gw.log().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("msg", "").startswith(message)]


def wait_for(what: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("timed out")


class Clients:
    """A loop of `services` and `status` requests on keep-alive connections (and some
    fresh ones), in threads, counting answers and every failure."""

    def __init__(self, url: str, order: int, threads: int = 3) -> None:
        self.url, self.order = url, order
        self.answers = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,)) for n in range(threads)]

    def __enter__(self) -> Clients:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def _run(self, n: int) -> None:
        with httpx.Client(timeout=30) as http:
            i = 0
            while not self._stop.is_set():
                i += 1
                fields = ({"action": "services"} if i % 2 else
                          {"action": "status", "order": str(self.order)})
                try:
                    client = http if (i + n) % 5 else httpx  # every fifth: a new connection
                    r = client.post(self.url, data={"key": "alice-key", **fields})
                    body = r.json()
                    if r.status_code != 200 or (isinstance(body, dict) and "error" in body):
                        self.failures.append(f"{r.status_code} {r.text[:200]}")
                    else:
                        self.answers += 1
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))


@pytest.fixture
def admin_stack(sims: tuple[Sim, Sim], fresh_redis: str,
                tmp_path: Path) -> Iterator[Gateway]:
    a, b = sims
    a.reset()
    b.reset()
    gw = Gateway(base_config(a, b, admin_key=ADMIN), fresh_redis, tmp_path / "gw")
    try:
        yield gw
    finally:
        gw.stop()


def test_sighup_reloads_in_place_and_refuses_an_invalid_file(
        stack: tuple[Gateway, Sim, Sim]) -> None:
    gw, _a, _b = stack
    assert gw.proc is not None
    pid = gw.proc.pid
    order = gw.call(action="add", service=1, link="https://tiktok.com/@me",
                    quantity=100)["order"]
    before = services(gw, "bob-key")
    assert 11 not in before
    with Clients(gw.url, order) as clients:
        time.sleep(0.3)

        def change(config: dict[str, Any]) -> None:
            config["services"].append({"id": 11, "name": "Saves", "category": "TikTok",
                                       "upstreams": [{"provider": "prov-a", "service": 3}]})
            config["clients"][1]["markup"] = "2"  # bob

        rewrite(gw, change)
        os.kill(pid, signal.SIGHUP)
        after = wait_for(lambda: (s := services(gw, "bob-key")) and 11 in s and s)
        assert Decimal(after[1]["rate"]) == 2 * Decimal(before[1]["rate"])
        time.sleep(0.3)
        gw.config_path.write_text(gw.config_path.read_text().replace(
            "markup: '1.5'", "markup: '1.5'\n  markpu: 3"))
        os.kill(pid, signal.SIGHUP)
        refused = wait_for(lambda: log_lines(gw, "config reload refused"))
        time.sleep(0.3)
    assert gw.proc.poll() is None, "the same process serves"
    assert clients.failures == [] and clients.answers > 20, clients.failures[:5]
    reloaded = log_lines(gw, "config reloaded")
    assert len(reloaded) == 1 and reloaded[0]["pid"] == pid
    assert reloaded[0]["changes"]["services"]["added"] == ["11"]
    assert reloaded[0]["changes"]["clients"]["changed"] == ["bob"]
    errors = refused[0]["errors"]
    assert len(errors) == 1 and errors[0].startswith(f"{gw.config_path}:")
    assert "markpu" in errors[0]
    assert 11 in services(gw), "the running config stays"


def test_the_admin_api_reloads(admin_stack: Gateway) -> None:
    gw = admin_stack
    api = gw.url.replace("/api/v2", "/admin/api/reload")
    assert httpx.post(api).status_code == 401
    rewrite(gw, lambda c: c["services"].pop())  # service 10
    r = httpx.post(api, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["changes"]["services"]["removed"] == ["10"]
    assert 10 not in services(gw)
    audit = httpx.get(gw.url.replace("/api/v2", "/admin/api/audit"),
                      headers={"Authorization": f"Bearer {ADMIN}"}).json()["audit"]
    assert audit[0]["action"] == "config_reload" and audit[0]["actor"] == "api"


@pytest.fixture
def two_workers(sims: tuple[Sim, Sim], fresh_redis: str,
                tmp_path: Path) -> Iterator[TwoWorkers]:
    a, b = sims
    a.reset()
    b.reset()
    gw = TwoWorkers(base_config(a, b, admin_key=ADMIN), fresh_redis, tmp_path / "gw")
    try:
        yield gw
    finally:
        gw.stop()


def fresh_services(gw: Gateway) -> set[int]:
    """On a new connection: the kernel hands it to either worker."""
    r = httpx.post(gw.url, data={"key": "alice-key", "action": "services"}, timeout=30)
    return {s["service"] for s in r.json()}


def test_sighup_to_the_supervisor_reloads_every_worker(two_workers: TwoWorkers) -> None:
    gw = two_workers
    assert gw.proc is not None
    gw.config_path.write_text("gateway: [\n")
    os.kill(gw.proc.pid, signal.SIGHUP)
    refused = wait_for(lambda: log_lines(gw, "config reload refused"))
    assert refused[0]["errors"][0].startswith(f"{gw.config_path}:2: not valid YAML")
    rewrite(gw, lambda c: c["services"].pop())  # service 10
    os.kill(gw.proc.pid, signal.SIGHUP)
    reloaded = wait_for(lambda: len(log_lines(gw, "config reloaded")) == 2 and
                        log_lines(gw, "config reloaded"))
    assert len({line["pid"] for line in reloaded}) == 2, "each worker, once"
    assert log_lines(gw, "Started parent process") and not log_lines(gw, "Child process")
    assert all(10 not in fresh_services(gw) for _ in range(20))
    # over HTTP: whichever worker takes it, both reload
    rewrite(gw, lambda c: c["services"].pop())  # service 9
    r = httpx.post(gw.url.replace("/api/v2", "/admin/api/reload"),
                   headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60)
    assert r.status_code == 200 and r.json()["changes"]["services"]["removed"] == ["9"]
    wait_for(lambda: len(log_lines(gw, "config reloaded")) == 4)
    assert all(9 not in fresh_services(gw) for _ in range(20))
