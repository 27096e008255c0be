"""`smm-gateway serve --server granian`, over real sockets: the API answers as under
uvicorn (form POST and GET query, JSON errors), a client that sends half a request
head is cut off after `gateway.header_timeout_s`, SIGHUP reloads the config in
place (with `--workers 2`: the parent relays it to every worker, and a reload asked
over HTTP reaches both), and SIGTERM drains the request in flight and exits 0."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_metrics_e2e import TwoWorkers
from test_reliability_e2e import ADD, slow, wait_for_add
from test_reload import ADMIN, log_lines, rewrite, services, wait_for

from gateway.state.embedded import free_port
from harness import (
    HEAD_BALANCE,
    ROOT,
    Gateway,
    Sim,
    _wait,
    base_config,
    raw_answer,
    start_gateway,
)

HEAD_S = 0.6
LATE_S = 1.5  # how late a cut-off may come (a loaded machine)


class Granian(Gateway):
    """The harness's Gateway under `serve --server granian --workers N`. `popen`: a new
    interpreter (slower to start than the harness's fork) whose exit status is known."""

    def __init__(self, config: dict[str, Any], redis_url: str, tmp: Path, *,
                 workers: int = 1, popen: bool = False) -> None:
        self.workers, self.popen = workers, popen
        super().__init__(config, redis_url, tmp)

    def start(self) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/api/v2"
        argv = ["serve", "--server", "granian", "--workers", str(self.workers),
                "--config", str(self.config_path), "--port", str(self.port),
                "--data-dir", str(self.tmp / "data")]
        env = {**os.environ, "REDIS_URL": self.redis_url}
        if self.popen:
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen([sys.executable, "-m", "gateway", *argv],
                                             cwd=ROOT, env=env, stdout=log,
                                             stderr=subprocess.STDOUT)
        else:
            self.proc = start_gateway(argv, env, self.log_path)
        _wait(f"{self.base}/readyz", self.proc, "gateway")
        self.http = httpx.Client(timeout=30)
        if self.workers > 1:
            TwoWorkers.wait_both_ready(self)  # type: ignore[arg-type]

    def terminate(self) -> tuple[int, float]:
        """SIGTERM: the exit status and how long it took."""
        assert isinstance(self.proc, subprocess.Popen)
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=20)
        return code, time.monotonic() - started


def own_database(redis_base: str) -> str:
    """A database handed out by tests/conftest.py (as `fresh_redis` does), for the module."""
    shared = next(m for m in list(sys.modules.values())
                  if getattr(m, "__file__", None) == str(ROOT / "tests" / "conftest.py"))
    url: str = shared.with_db(redis_base, next(shared._dbs))
    return url


def fresh(sims: tuple[Sim, Sim]) -> tuple[Sim, Sim]:
    for sim in sims:
        sim.reset()
    return sims


@pytest.fixture(scope="module")
def granian(sims: tuple[Sim, Sim], redis_base: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Granian]:
    """One granian gateway for the tests that only ask it questions."""
    config = base_config(*fresh(sims), header_timeout_s=HEAD_S)
    gw = Granian(config, own_database(redis_base), tmp_path_factory.mktemp("granian"))
    try:
        yield gw
    finally:
        gw.stop()


def test_services_add_and_status_by_post_and_get(granian: Granian) -> None:
    gw = granian
    listed = services(gw)
    assert sorted(listed) == [1, 2, 3, 4, 5, 6, 7, 8, 10], listed  # 9: gone upstream
    r = gw.post(action="add", service=1, link="https://tiktok.com/@granian", quantity=100)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    order = r.json()["order"]
    r = httpx.get(gw.url, params={"key": "alice-key", "action": "status", "order": order})
    assert r.status_code == 200 and r.json()["status"] == "Pending", r.text
    assert gw.call(action="balance", key="nobody")["error"] == "Invalid API key"


def test_errors_are_json(granian: Granian) -> None:
    gw = granian
    big = ("key=alice-key&action=add&service=2&link=" + "x" * 70000 + "&quantity=100").encode()
    form = {"content-type": "application/x-www-form-urlencoded"}
    # each on a connection of its own: after this answer granian may close the
    # connection without saying so (`connection: close`), so reusing it can fail
    r = httpx.post(gw.url, content=big, headers=form)
    assert r.status_code == 400, r.text  # the gateway's answer to 413, as under uvicorn
    assert r.json() == {"error": "Request body too large (64 KiB at most)"}
    chunked = httpx.post(gw.url, content=iter([big]), headers=form)
    assert chunked.status_code == 400 and "too large" in chunked.json()["error"]
    r = gw.http.get(f"{gw.base}/nowhere")
    assert r.status_code == 404 and r.json() == {"error": "Not Found"}
    # HEAD: the answer's head only (httpx would not read a body either way)
    head, rest = raw_answer(gw.port, HEAD_BALANCE)
    assert head.startswith(b"HTTP/1.1 404") and rest == b"", head


def test_half_a_request_head_is_cut_off(granian: Granian) -> None:
    sock = socket.create_connection(("127.0.0.1", granian.port), timeout=10)
    sock.sendall(b"POST /api/v2 HTTP/1.1\r\nHost: gw\r\nContent-Type: application/x-www-")
    started, data = time.monotonic(), b""
    while chunk := sock.recv(65536):
        data += chunk
    waited = time.monotonic() - started
    sock.close()
    assert HEAD_S - 0.1 <= waited <= HEAD_S + LATE_S, waited
    assert data == b""  # granian closes without an answer (uvicorn: a 408)
    assert granian.call(action="balance")["balance"]


def test_sighup_reloads_and_sigterm_drains_then_exits_0(
        sims: tuple[Sim, Sim], fresh_redis: str, tmp_path: Path) -> None:
    a, b = fresh(sims)
    gw = Granian(base_config(a, b), fresh_redis, tmp_path / "gw", popen=True)
    try:
        assert gw.proc is not None
        assert 11 not in services(gw)

        def change(config: dict[str, Any]) -> None:
            config["services"].append({"id": 11, "name": "Saves", "category": "TikTok",
                                       "upstreams": [{"provider": "prov-a", "service": 3}]})

        rewrite(gw, change)
        os.kill(gw.proc.pid, signal.SIGHUP)
        wait_for(lambda: 11 in services(gw))
        [line] = log_lines(gw, "config reloaded")
        assert line["pid"] == gw.proc.pid and line["changes"]["services"]["added"] == ["11"]
        slow(700, a, b)
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(httpx.post, gw.url, data={"key": "alice-key", **ADD},
                                  timeout=30)
            wait_for_add(a, b)
            code, took = gw.terminate()  # while the provider still holds the add
            answer = pending.result()
        assert "order" in answer.json(), answer.text
        assert code == 0 and took < 5, (code, took)
        assert not log_lines(gw, "shutdown: requests still in flight")
        assert '"level":"error"' not in gw.log()
    finally:
        slow(0, a, b)
        gw.stop()


def test_two_workers_reload_on_the_parents_sighup_and_over_http(
        sims: tuple[Sim, Sim], fresh_redis: str, tmp_path: Path) -> None:
    a, b = fresh(sims)
    gw = Granian(base_config(a, b, admin_key=ADMIN), fresh_redis, tmp_path / "gw",
                 workers=2, popen=True)
    try:
        assert gw.proc is not None
        rewrite(gw, lambda c: c["services"].pop())  # service 10
        os.kill(gw.proc.pid, signal.SIGHUP)
        reloaded = wait_for(lambda: len(log_lines(gw, "config reloaded")) == 2 and
                            log_lines(gw, "config reloaded"))
        pids = {line["pid"] for line in reloaded}
        assert len(pids) == 2 and gw.proc.pid not in pids, "each worker, once"
        rewrite(gw, lambda c: c["services"].pop())  # service 9
        r = httpx.post(f"{gw.base}/admin/api/reload",
                       headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
        assert r.status_code == 200 and r.json()["changes"]["services"]["removed"] == ["9"]
        again = wait_for(lambda: len(log_lines(gw, "config reloaded")) == 4 and
                         log_lines(gw, "config reloaded"))
        assert {line["pid"] for line in again[2:]} == pids, "the same workers, both"
        code, took = gw.terminate()
        assert code == 0 and took < 5, (code, took)
    finally:
        gw.stop()
