"""Per-client routing rules over HTTP, against the simulators: a real `smm-gateway serve`
with clients whose `providers` (allow / deny) and `max_rate` change where their orders
go, or refuse them, while the same order from a client without rules goes to the
cheapest candidate. Service 1: prov-b 0.40 per 1000 (cheapest), prov-a 0.50."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import CLIENTS, ROOT, Gateway, Sim, base_config

RULED = [
    {"name": "carol", "key": "carol-key", "providers": {"deny": ["prov-b"]}},
    {"name": "dave", "key": "dave-key", "providers": {"allow": ["prov-a"]}, "max_rate": "0.45"},
    {"name": "erin", "key": "erin-key", "max_rate": "0.45"},
    {"name": "frank", "key": "frank-key", "max_rate": "0.35"},
]
UNAVAILABLE = {"error": "Service is temporarily unavailable, try again later"}


@pytest.fixture
def gw(sims: tuple[Sim, Sim], fresh_redis: str, tmp_path: Path) -> Iterator[Gateway]:
    a, b = sims
    a.reset()
    b.reset()
    config = base_config(a, b)
    config["clients"] = [*CLIENTS, *RULED]
    gateway = Gateway(config, fresh_redis, tmp_path / "gw")
    try:
        yield gateway
    finally:
        gateway.stop()


def add(gw: Gateway, key: str, link: str) -> Any:
    return gw.call(key, action="add", service=1, link=link, quantity=100)


def where(sims: tuple[Sim, Sim], link: str) -> list[str]:
    a, b = sims
    return (["prov-a" for o in a.orders() if o["link"] == link]
            + ["prov-b" for o in b.orders() if o["link"] == link])


def test_client_rules_steer_or_refuse_orders(gw: Gateway, sims: tuple[Sim, Sim]) -> None:
    assert "order" in add(gw, "alice-key", "https://t/alice")
    assert where(sims, "https://t/alice") == ["prov-b"], "no rules: the cheapest"
    assert "order" in add(gw, "carol-key", "https://t/carol")
    assert where(sims, "https://t/carol") == ["prov-a"], "prov-b denied"
    assert add(gw, "dave-key", "https://t/dave") == UNAVAILABLE, \
        "only prov-a allowed, and it costs more than dave's max rate"
    assert where(sims, "https://t/dave") == []
    assert "order" in add(gw, "erin-key", "https://t/erin")
    assert where(sims, "https://t/erin") == ["prov-b"], "within erin's max rate"
    assert add(gw, "frank-key", "https://t/frank") == UNAVAILABLE, "every candidate too dear"
    assert where(sims, "https://t/frank") == []
    # the rules are stored with the client's record: a rotated key keeps them
    out = subprocess.run([sys.executable, "-m", "gateway", "keys", "rotate", "frank"],
                         cwd=ROOT, env={**os.environ, "REDIS_URL": gw.redis_url},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    key = re.search(r"key: (\S+)", out.stdout)
    assert key is not None, out.stdout
    assert add(gw, key.group(1), "https://t/frank2") == UNAVAILABLE
    assert where(sims, "https://t/frank2") == []
