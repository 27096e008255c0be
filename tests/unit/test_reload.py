"""Live config (`gateway.edge.reload`), in-process over a real Redis: the app runs in
the test's loop, its config is a file the test rewrites, and a reload swaps it in
while requests keep being answered."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml
from litestar import Litestar

from gateway.clock import ManualClock
from gateway.config import load_settings
from gateway.edge.app import create_app
from gateway.edge.reload import Reloader
from gateway.state import keys
from inprocess import ALICE, BOB, config_text, upstream_key
from upstream import FakeProvider, Unreachable, transport_for

pytestmark = pytest.mark.anyio
ADMIN = "admin-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


class Running:
    def __init__(self, app: Litestar, path: Path) -> None:
        self.app = app
        self.path = path
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                      base_url="http://gw")

    @property
    def reloader(self) -> Reloader:
        found: Reloader = self.app.state.reloader
        return found

    def config(self) -> dict[str, Any]:
        loaded: dict[str, Any] = yaml.safe_load(self.path.read_text())
        return loaded

    def write(self, config: dict[str, Any]) -> None:
        self.path.write_text(yaml.safe_dump(config, sort_keys=False))

    async def call(self, key: str = ALICE, **fields: Any) -> Any:
        r = await self.http.post("/api/v2", data={"key": key, **{k: str(v) for k, v in
                                                                fields.items()}})
        return r.json()

    async def services(self, key: str = ALICE) -> dict[int, dict[str, Any]]:
        return {s["service"]: s for s in await self.call(key, action="services")}


@asynccontextmanager
async def running(redis_url: str, providers: dict[str, FakeProvider], clock: ManualClock,
                  tmp_path: Path, **gateway: Any) -> AsyncIterator[Running]:
    """The app, its lifespan in this loop, its config in `tmp_path/gateway.yaml`."""
    path = tmp_path / "gateway.yaml"
    path.write_text(config_text(**gateway))
    app = create_app(load_settings(path, env={}), redis_url, data_dir=tmp_path / "data",
                     transport=transport_for(providers), clock=clock, config_path=path)
    async with app.lifespan():
        r = Running(app, path)
        try:
            yield r
        finally:
            await r.http.aclose()


async def test_a_reload_changes_markups_services_and_clients(
        redis_url: str, providers: dict[str, FakeProvider], clock: ManualClock,
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.reload")
    async with running(redis_url, providers, clock, tmp_path) as gw:
        before = await gw.services()
        assert sorted(before) == [1, 2, 3] and D(before[1]["rate"]) == D("0.75")  # 0.50 x 1.5
        config = gw.config()
        config["gateway"]["markup"] = "2"
        config["services"].append({"id": 4, "name": "More likes", "category": "TikTok",
                                   "upstreams": [{"provider": "prov-b", "service": 12}]})
        config["clients"][1]["markup"] = "3"  # bob's own markup on the gateway's rates
        gw.write(config)
        result = await gw.reloader.reload("test")
        assert result.ok, result.errors
        c = result.changes
        assert (c.services.added, c.clients.changed, c.settings) == (
            ["4"], ["bob"], ["gateway.markup"])
        assert not c.providers and c.restart == []
        after = await gw.services()
        assert sorted(after) == [1, 2, 3, 4]
        assert D(after[1]["rate"]) == D("1") and D(after[4]["rate"]) == D("0.6")  # 0.30 x 2
        assert D((await gw.services(BOB))[1]["rate"]) == D("3") * D("0.5") * 2  # on 1.00
        assert any(r.getMessage() == "config reloaded" and r.__dict__["changes"]["services"]
                   == {"added": ["4"], "removed": [], "changed": []} for r in caplog.records)


async def test_an_invalid_file_is_refused_and_the_running_config_stays(
        redis_url: str, providers: dict[str, FakeProvider], clock: ManualClock,
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with running(redis_url, providers, clock, tmp_path) as gw:
        before = await gw.services()
        config = gw.config()
        config["gateway"]["markup"] = "2"
        config["gateway"]["markpu"] = "3"  # a typo
        config["services"][0]["upstreams"][0]["provider"] = "prov-z"
        gw.write(config)
        result = await gw.reloader.reload("test")
        assert not result.ok and len(result.errors) == 2
        lines = gw.path.read_text().splitlines()
        for error in result.errors:
            where, _, message = error.partition(": ")
            file, line = where.rsplit(":", 1)
            assert file == str(gw.path) and int(line) >= 1
            assert ("markpu" in message) == ("markpu" in lines[int(line) - 1])
        assert any("prov-z" in e for e in result.errors)
        refused = [r for r in caplog.records if r.getMessage().startswith("config reload refused")]
        assert len(refused) == 1 and refused[0].__dict__["errors"] == result.errors
        assert await gw.services() == before  # the old config answers
        assert gw.reloader.last is result


async def test_a_request_in_flight_finishes_on_the_old_config(
        redis_url: str, providers: dict[str, FakeProvider], clock: ManualClock,
        tmp_path: Path) -> None:
    async with running(redis_url, providers, clock, tmp_path) as gw:
        old = gw.reloader.current
        assert old is not None
        hold = providers["prov-a"].hold("add")
        placing = asyncio.create_task(gw.call(action="add", service=1, quantity=100,
                                              link="https://tiktok.com/@me"))
        await hold.entered.wait()
        config = gw.config()
        config["gateway"]["markup"] = "2"
        gw.write(config)
        assert (await gw.reloader.reload("test")).ok
        assert gw.reloader.current is not old
        assert D((await gw.services())[1]["rate"]) == D("1")  # new requests: the new config
        await asyncio.sleep(0.05)
        assert not placing.done() and gw.reloader._retiring  # the old one waits for it
        hold.release.set()
        answer = await placing
        assert answer == {"order": 1000}
        orders = await gw.reloader.current.resources.orders.get_orders([1000])
        assert orders[1000].state == "placed" and orders[1000].charge == D("0.075")
        for _ in range(100):  # then the old config is closed
            if not gw.reloader._retiring:
                break
            await asyncio.sleep(0.01)
        assert not gw.reloader._retiring


async def test_the_admin_api_reloads_and_the_dashboard_shows_it(
        redis_url: str, providers: dict[str, FakeProvider], clock: ManualClock,
        tmp_path: Path) -> None:
    async with running(redis_url, providers, clock, tmp_path, admin_key=ADMIN) as gw:
        assert (await gw.http.post("/admin/api/reload")).status_code == 401
        wrong = {"Authorization": "Bearer not-the-key-at-all-000"}
        assert (await gw.http.post("/admin/api/reload", headers=wrong)).status_code == 401
        config = gw.config()
        config["gateway"]["error_status"] = "always-200"
        config["gateway"]["admin_key"] = ADMIN + "-new"
        del config["services"][2]
        gw.write(config)
        r = await gw.http.post("/admin/api/reload", headers=AUTH)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["ok"] and body["changes"]["services"]["removed"] == ["3"]
        assert body["restart_needed"] == ["gateway.admin_key"]
        assert sorted(await gw.services()) == [1, 2]
        wrong_key = await gw.http.post("/api/v2", data={"key": "nope", "action": "services"})
        assert wrong_key.status_code == 200  # error_status followed the reload
        # the admin key did not: the running one still opens the API
        audit = (await gw.http.get("/admin/api/audit", headers=AUTH)).json()["audit"]
        assert audit[0]["action"] == "config_reload" and audit[0]["ok"]
        assert "needs a restart: gateway.admin_key" in audit[0]["detail"]
        gw.path.write_text("gateway: [\n")
        refused = await gw.http.post("/admin/api/reload", headers=AUTH)
        assert refused.status_code == 422
        assert refused.json()["errors"][0].startswith(f"{gw.path}:")
        assert sorted(await gw.services()) == [1, 2]


async def test_the_reload_button_posts_with_the_csrf_token(
        redis_url: str, providers: dict[str, FakeProvider], clock: ManualClock,
        tmp_path: Path) -> None:
    async with running(redis_url, providers, clock, tmp_path, admin_key=ADMIN) as gw:
        page = await gw.http.get("/admin/login")
        csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
        await gw.http.post("/admin/login", data={"key": ADMIN, "csrf": csrf})
        overview = await gw.http.get("/admin/")
        assert 'action="/admin/reload"' in overview.text and str(gw.path) in overview.text
        token = overview.text.split('name="csrf" value="')[1].split('"')[0]
        assert (await gw.http.post("/admin/reload", data={})).status_code == 403
        config = gw.config()
        config["services"].append({"id": 9, "name": "Saves",
                                   "upstreams": [{"provider": "prov-a", "service": 3}]})
        gw.write(config)
        done = await gw.http.post("/admin/reload", data={"csrf": token})
        assert done.status_code == 303
        shown = (await gw.http.get("/admin/")).text
        assert "Config reloaded: services + 9" in shown and 'id="reload-result"' in shown
        assert sorted(await gw.services()) == [1, 2, 3, 9]


async def test_a_provider_added_that_lists_nothing_is_not_swapped_in(
        redis_url: str, providers: dict[str, FakeProvider], clock: ManualClock,
        tmp_path: Path, sync_redis: redis.Redis) -> None:
    providers["prov-c"] = FakeProvider("prov-c", [], key=upstream_key("prov-c"))
    providers["prov-c"].fail_always("services", Unreachable())
    async with running(redis_url, providers, clock, tmp_path) as gw:
        before = await gw.services()
        config = gw.config()
        config["providers"].append({"name": "prov-c", "url": "https://prov-c.example/api/v2",
                                    "key": upstream_key("prov-c"), "timeout_s": 0.2})
        config["services"][0]["upstreams"].append({"provider": "prov-c", "service": 1})
        config["clients"].append({"name": "carol", "key": "carol-key"})
        gw.write(config)
        result = await gw.reloader.reload("test")
        assert not result.ok
        assert result.errors[0].startswith(f"{gw.path}: not applied: no service list from "
                                           "provider prov-c")
        assert await gw.services() == before
        assert not sync_redis.exists(keys.client("carol")), "nothing imported"
