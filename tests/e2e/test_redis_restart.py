"""Redis restarts and failovers under a running gateway process (issue: Redis
restarts and failovers): the gateway is back as soon as Redis answers, and loses
nothing it acknowledged."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.state.embedded import EmbeddedRedis, free_port
from harness import Gateway, Sim, base_config


class KillableRedis:
    """A redis-server on a TCP port of its own, killed with SIGKILL and started again
    on the same port and the same append-only file."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.server = EmbeddedRedis(data_dir, port=self.port)
        self.url = self.server.start()

    def kill(self) -> None:
        proc = self.server._proc
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def start(self) -> None:
        self.server = EmbeddedRedis(self.data_dir, port=self.port)
        assert self.server.start() == self.url

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def killable(tmp_path: Path) -> Iterator[KillableRedis]:
    r = KillableRedis(tmp_path / "redis")
    try:
        yield r
    finally:
        r.stop()


def test_redis_killed_and_restarted_while_idle(sims: tuple[Sim, Sim], killable: KillableRedis,
                                              tmp_path: Path) -> None:
    """The first request after Redis answers again is served: on main of dc7389a every
    request answered 503 for as long as it was measured."""
    a, b = sims
    a.reset()
    b.reset()
    gw = Gateway(base_config(a, b), killable.url, tmp_path / "gw")
    try:
        order = gw.call(action="add", service=1, link="https://t.co/x", quantity=100)["order"]
        assert gw.call(action="status", order=order)["status"] == "Pending"
        time.sleep(1.5)  # everything (appendfsync everysec) is on disk
        killable.kill()
        time.sleep(0.5)  # idle: the gateway's pooled connections see the server gone
        down = [gw.post(action="status", order=order).status_code for _ in range(5)]
        assert 200 not in down
        killable.start()
        # the very first requests after Redis answers: a status, then an add
        assert gw.call(action="status", order=order)["status"] == "Pending"
        second = gw.call(action="add", service=1, link="https://t.co/y", quantity=100)
        assert second["order"] > order
        statuses = [gw.post(action="status", order=order).status_code for _ in range(20)]
        assert statuses == [200] * 20
    finally:
        gw.stop()
