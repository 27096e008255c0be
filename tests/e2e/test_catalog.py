"""The catalog over time: grace for vanished services, hard TTL, ETag, the rate
guard, mirroring with stable ids, margins, and the operator's commands."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from gateway.sim.catalog import DEFAULT_CATALOG
from harness import ROOT, Gateway, Sim, base_config

UNAVAILABLE = {"error": "Service is temporarily unavailable, try again later"}


def wait_for(check: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.2)


def rates(gw: Gateway) -> dict[int, str]:
    return {s["service"]: s["rate"] for s in gw.call(action="services")}


def catalog_without(*ids: int, **changes: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for s in DEFAULT_CATALOG:
        if s["service"] in ids:
            continue
        out.append({**s, **changes.get(str(s["service"]), {})})
    return out


def start(sims: tuple[Sim, Sim], redis: str, tmp: Path, **gateway: Any) -> Gateway:
    a, b = sims
    a.reset()
    b.reset()
    return Gateway(base_config(a, b, **gateway), redis, tmp)


def test_a_vanished_service_stays_listed_for_the_grace_period(sims, fresh_redis, tmp_path):
    a, b = sims
    gw = start(sims, fresh_redis, tmp_path, catalog_ttl_s=1, catalog_grace_s=4)
    try:
        assert 8 in rates(gw)
        a.control("catalog", {"services": catalog_without(5)})  # mentions vanish upstream
        gone_at = time.monotonic()
        wait_for(lambda: len(a.requests("services")) >= 3)
        assert rates(gw)[8] == "4.50000", "still listed at the last known price"
        r = gw.post(action="add", service=8, link="l", usernames="a\nb\nc\nd\ne\nf\ng\nh\ni\nj")
        assert r.json() == UNAVAILABLE
        assert a.requests("add") == []
        wait_for(lambda: 8 not in rates(gw), seconds=15)
        assert time.monotonic() - gone_at >= 3.5, "dropped only after the grace period"
    finally:
        gw.stop()


def test_a_list_past_its_hard_ttl_is_not_routed_to(sims, fresh_redis, tmp_path):
    a, b = sims
    gw = start(sims, fresh_redis, tmp_path, catalog_ttl_s=100, catalog_max_stale_s=2)
    try:
        time.sleep(4.5)  # nobody refreshes (soft TTL 100 s): both lists go stale
        assert 1 in rates(gw), "kept for the grace period"
        assert gw.call(action="add", service=1, link="l", quantity=100) == UNAVAILABLE
        assert a.requests("add") == [] and b.requests("add") == []
    finally:
        gw.stop()


def test_services_etag_and_304(sims, fresh_redis, tmp_path):
    a, b = sims
    gw = start(sims, fresh_redis, tmp_path, catalog_ttl_s=1)
    try:
        first = gw.post(action="services")
        tag = first.headers["etag"]
        again = gw.http.post(gw.url, data={"key": "alice-key", "action": "services"},
                             headers={"If-None-Match": tag})
        assert again.status_code == 304 and again.content == b""
        a.control("catalog", {"services": catalog_without(9)})  # used by no gateway service
        wait_for(lambda: len(a.requests("services")) >= 3)
        assert gw.post(action="services").headers["etag"] == tag, "same body, same tag"
        a.control("catalog", {"services": catalog_without(**{"2": {"rate": "0.22"}})})
        wait_for(lambda: gw.post(action="services").headers["etag"] != tag)
        changed = gw.http.post(gw.url, data={"key": "alice-key", "action": "services"},
                               headers={"If-None-Match": tag})
        assert changed.status_code == 200 and changed.json()
    finally:
        gw.stop()


def test_a_rate_jump_is_held_until_confirmed(sims, fresh_redis, tmp_path):
    a, b = sims
    gw = start(sims, fresh_redis, tmp_path, catalog_ttl_s=1, max_rate_change="0.5")
    try:
        assert rates(gw)[8] == "4.50000"
        a.control("catalog", {"services": catalog_without(**{"5": {"rate": "30.00"}})})
        wait_for(lambda: len(a.requests("services")) >= 3)
        assert rates(gw)[8] == "4.50000", "a 10x jump waits for the operator"
        usernames = "\n".join("abcdefghij")
        assert gw.call(action="add", service=8, link="l", usernames=usernames) == UNAVAILABLE
        assert a.requests("add") == [], "never sold below its cost at the held rate"
        route = run_cli(gw, "route", "8", "10")
        assert "held at 4.50000 (computed 45.00000)" in route and "over price" in route
        assert "will be advertised" in run_cli(gw, "catalog", "confirm", "8")
        wait_for(lambda: rates(gw)[8] == "45.00000")
        assert "order" in gw.call(action="add", service=8, link="l", usernames=usernames)
    finally:
        gw.stop()


def test_mirrored_ids_never_change(sims, fresh_redis, tmp_path):
    a, b = sims
    config = base_config(a, b, catalog_ttl_s=1, mirror_id_start=100000)
    config["mirror"] = [{"provider": "prov-b", "categories": ["TikTok"], "markup": "2"}]
    a.reset()
    b.reset()
    gw = Gateway(config, fresh_redis, tmp_path / "1")

    def mirrored() -> dict[str, int]:
        return {s["name"]: s["service"] for s in gw.call(action="services")
                if s["service"] >= 100000}

    try:
        first = mirrored()
        assert sorted(first.values()) == [100000, 100001, 100002]
        assert {s["service"]: s["rate"] for s in gw.call(action="services")}[
            first["Followers"]] == "0.80000"  # 0.40 x 2
        order = gw.call(action="add", service=first["Likes"], link="l", quantity=100)
        assert b.orders()[0]["service"] == 12 and "order" in order
        gw.restart()
        assert mirrored() == first, "the same ids after a restart"
        from harness import TESTED_CATALOG
        b.control("catalog", {"services": [
            s for s in TESTED_CATALOG if s["service"] != 12] + [
            {"service": 15, "name": "Shares", "type": "Default", "category": "TikTok",
             "rate": "0.10", "min": 10, "max": 1000}]})
        wait_for(lambda: "Shares" in mirrored())
        now = mirrored()
        assert now["Shares"] == 100003, "a new upstream service gets a new id"
        for name in ("Followers", "Comments", "Likes"):
            assert now[name] == first[name], "existing ids keep their meaning"
    finally:
        gw.stop()


def test_min_margin_guards_fixed_prices(sims, fresh_redis, tmp_path):
    gw = start(sims, fresh_redis, tmp_path, min_margin="0.9")
    try:
        # views cost 0.01; price 0.05 leaves 80 %, less than the 90 % asked for
        assert gw.call(action="add", service=3, link="l", quantity=1000) == UNAVAILABLE
        assert "over price" in gw.log()
        assert 3 in rates(gw)
    finally:
        gw.stop()


def run_cli(gw: Gateway, *args: str, check: bool = True) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", *args, "--config", str(gw.config_path)],
        cwd=ROOT, env={**os.environ, "REDIS_URL": gw.redis_url}, capture_output=True,
        text=True, check=check)
    return result.stdout + result.stderr


def test_route_explains_each_candidate(stack):
    gw, a, b = stack
    out = run_cli(gw, "route", "1", "100")
    lines = out.splitlines()
    assert "service 1 (Followers)" in lines[0]
    assert any("prov-b #11" in x and "TAKEN" in x for x in lines)
    assert any("prov-a #1" in x and "fallback" in x for x in lines)
    out = run_cli(gw, "route", "1", "8000")
    assert "prov-b #11" in out and "quantity out of range (20..5000)" in out
    assert any("prov-a #1" in x and "TAKEN" in x for x in out.splitlines())
    out = run_cli(gw, "route", "2", "100", "--runs", "3")
    assert "feature missing: drip-feed" in out
    out = run_cli(gw, "route", "9", "100")
    assert "not offered now" in out and "not listed upstream" in out
    # trip prov-b's breaker: three failed status calls
    order = gw.call(action="add", service=1, link="l", quantity=100)["order"]
    b.control("fault", {"fault": "500", "rate": 1.0})
    for _ in range(5):
        gw.call(action="status", order=order)
    b.control("fault", {"fault": None, "rate": 0})
    out = run_cli(gw, "route", "1", "100")
    assert "breaker open" in out
    assert any("prov-a #1" in x and "TAKEN" in x for x in out.splitlines())


def test_route_knows_a_balance_too_low(stack):
    gw, a, b = stack
    b.control("balance", {"balance": "0.01"})
    gw.call(action="balance")
    out = run_cli(gw, "route", "1", "100")
    assert "balance too low" in out


def test_catalog_show(stack):
    gw, a, b = stack
    out = run_cli(gw, "catalog", "show")
    assert "provider prov-a" in out and "provider prov-b" in out
    assert "Followers" in out and "-> prov-b" in out
    assert "not listed upstream" in out  # service 9


def test_catalog_suggest_groups_equivalents(stack):
    gw, a, b = stack
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "catalog", "suggest", "--config",
         str(gw.config_path), "--first-id", "500"], cwd=ROOT,
        env={**os.environ, "REDIS_URL": gw.redis_url}, capture_output=True, text=True,
        check=True)
    assert "2/2 providers" in result.stderr  # the progress bar
    proposed = yaml.safe_load(result.stdout)["services"]
    by_name = {s["name"]: s for s in proposed}
    followers = by_name["TikTok Followers (refill)"]
    assert {(u["provider"], u["service"]) for u in followers["upstreams"]} == {
        ("prov-a", 1), ("prov-b", 11)}  # numbers, as panels and the config expect
    assert followers["upstreams"][0]["provider"] == "prov-b", "cheapest first"
    likes = by_name["TikTok Likes"]
    assert {u["provider"] for u in likes["upstreams"]} == {"prov-a", "prov-b"}
    comments = by_name["TikTok Comments"]
    assert {u["service"] for u in comments["upstreams"]} == {4, 14}
    assert proposed[0]["id"] == 500
    assert "0.40000 USD/1000" in result.stdout  # prices shown for review
