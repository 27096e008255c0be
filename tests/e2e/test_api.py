"""The downstream API over HTTP: a real gateway, real Redis, simulator upstreams."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from gateway.state.embedded import free_port
from harness import HEAD_BALANCE, ROOT, Gateway, Sim, base_config, provider, raw_answer

SECRETS = ("prov-a", "prov-b", "127.0.0.1", "upstream-secret", "localhost", "http")


def assert_no_leak(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} leaked in {text!r}"


def adds(sim: Sim) -> list[dict]:
    return sim.requests("add")


# --- services ---------------------------------------------------------------


def test_services_are_computed_from_live_candidate_lists(stack):
    gw, a, b = stack
    r = gw.post(action="services")
    assert r.status_code == 200
    assert_no_leak(r.text)
    services = {s["service"]: s for s in r.json()}
    # 9 is listed by no provider; 10 is, but below its cost (it stays, takes no orders)
    assert sorted(services) == [1, 2, 3, 4, 5, 6, 7, 8, 10]
    assert services[10]["rate"] == "0.00100"
    f = services[1]
    assert f == {"service": 1, "name": "Followers", "type": "Default", "category": "TikTok",
                 "rate": "0.60000", "min": "20", "max": "10000", "refill": True,
                 "cancel": True, "dripfeed": True, "form": None}
    likes = services[2]
    assert likes["rate"] == "0.30000"  # 0.20 (prov-a) x 1.5
    assert likes["refill"] is False  # prov-a's likes have no refill
    assert (likes["min"], likes["max"]) == ("10", "100000")
    assert services[3]["rate"] == "0.05000"  # fixed price
    comments = services[4]
    assert comments["type"] == "Custom Comments"
    assert comments["rate"] == "6.00000"
    assert comments["form"]["fields"][0]["name"] == "comments"
    for s in services.values():
        assert isinstance(s["service"], int)
        assert all(isinstance(s[k], str) for k in ("rate", "min", "max"))
        assert all(isinstance(s[k], bool) for k in ("refill", "cancel", "dripfeed"))


def test_provider_down_keeps_the_last_list(stack, sims):
    gw, a, b = stack
    before = gw.call(action="services")
    b.control("fault", {"fault": "500", "rate": 1.0})
    gw.restart()  # a new process: the list comes from Redis, not from the provider
    assert gw.call(action="services") == before


# --- the endpoint -------------------------------------------------------------


def test_both_paths_served_and_get_is_404(stack):
    gw, _, _ = stack
    slash = gw.http.post(gw.url + "/", data={"key": "alice-key", "action": "balance"})
    assert slash.status_code == 200 and "balance" in slash.json()
    for url in (gw.url, gw.url + "/"):
        r = gw.http.get(url)
        assert r.status_code == 404
        assert r.json() == {"error": "Not Found"}
    r = gw.http.post(gw.url.replace("/api/v2", "/nowhere"), data={"key": "alice-key"})
    assert r.status_code == 404 and r.json() == {"error": "Not Found"}
    assert r.headers["content-type"].startswith("application/json")
    # other methods are 404 too; a HEAD gets the answer's head only
    assert gw.http.put(gw.url, data={"key": "alice-key", "action": "balance"}).json() == \
        {"error": "Not Found"}
    port = int(gw.url.split(":")[2].split("/")[0])
    head, rest = raw_answer(port, HEAD_BALANCE)
    assert head.startswith(b"HTTP/1.1 404") and rest == b"", head


@pytest.mark.parametrize("how", ["key", "api", "x-api-key", "bearer"])
def test_every_way_to_send_the_key(stack, how):
    gw, _, _ = stack
    data = {"action": "balance"}
    headers = {}
    if how in ("key", "api"):
        data[how] = "bob-key"
    elif how == "x-api-key":
        headers["X-Api-Key"] = "bob-key"
    else:
        headers["Authorization"] = "Bearer bob-key"
    r = gw.http.post(gw.url, data=data, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["currency"] == "USD"


def test_bad_keys(stack):
    gw, _, _ = stack
    for key in (None, "", "nope", "alice-key "[:-2]):
        r = gw.post(key=key, action="balance")
        assert r.status_code == 401
        assert r.json() == {"error": "Invalid API key"}


def test_json_and_multipart_bodies(stack):
    gw, _, _ = stack
    r = gw.http.post(gw.url, json={"key": "alice-key", "action": "add", "service": 2,
                                   "link": "https://t/x", "quantity": 100})
    assert r.status_code == 200, r.text
    order = r.json()["order"]
    r = gw.http.post(gw.url, files={"key": (None, "alice-key"), "action": (None, "status"),
                                    "order": (None, str(order))})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "Pending"


def test_malformed_bodies(stack):
    gw, a, b = stack
    r = gw.http.post(gw.url, content=b"<xml/>", headers={"content-type": "text/xml"})
    assert r.status_code == 400 and "content type" in r.json()["error"]
    r = gw.http.post(gw.url, content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]
    big = "key=alice-key&action=add&service=2&link=" + "x" * 70000 + "&quantity=100"
    r = gw.http.post(gw.url, content=big.encode(),
                     headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400 and "too large" in r.json()["error"]
    assert adds(a) == [] and adds(b) == []


@pytest.mark.parametrize("fields, status, message", [
    ({}, 400, "Missing action"),
    ({"action": "fly"}, 400, "Incorrect request: unknown action"),
    ({"action": "add", "link": "l", "quantity": 100}, 400, "Missing required parameter: service"),
    ({"action": "add", "service": "x1", "link": "l", "quantity": 100}, 400,
     "Incorrect service ID"),
    ({"action": "add", "service": 9, "link": "l", "quantity": 100}, 400, "Incorrect service ID"),
    ({"action": "add", "service": 424242, "link": "l", "quantity": 100}, 400,
     "Incorrect service ID"),
    ({"action": "add", "service": 1, "quantity": 100}, 400, "Missing required parameter: link"),
    ({"action": "add", "service": 1, "link": "l"}, 400, "Missing required parameter: quantity"),
    ({"action": "add", "service": 1, "link": "l", "quantity": "ten"}, 400,
     "Incorrect quantity: must be a whole number of at least 1"),
    ({"action": "add", "service": 1, "link": "l", "quantity": 19}, 400,
     "Quantity less than minimal 20"),
    ({"action": "add", "service": 1, "link": "l", "quantity": 10001}, 400,
     "Quantity more than maximal 10000"),
    ({"action": "add", "service": 5, "link": "l", "form": "{bad json"}, 400,
     "Incorrect form: not valid JSON"),
    ({"action": "add", "service": 5, "link": "l", "form": "[1]"}, 400,
     "Incorrect form: must be a JSON object"),
    ({"action": "add", "service": 5, "link": "l"}, 400, "Missing required form field: package"),
    ({"action": "add", "service": 6, "link": "l", "quantity": 100}, 400,
     "Missing required parameter: answer_number"),
    ({"action": "add", "service": 7, "username": "u", "min": 50, "max": 100,
      "expiry": "2026-12-01"}, 400, "Incorrect expiry: use DD/MM/YYYY"),
    ({"action": "add", "service": 7, "username": "u", "min": 50, "max": 100,
      "expiry": "31/02/2027"}, 400, "Incorrect expiry: not a real date (DD/MM/YYYY)"),
    ({"action": "add", "service": 2, "link": "l", "quantity": 100, "runs": 3}, 400,
     "Drip-feed is not available for this service"),
    ({"action": "add", "service": 4, "link": "l", "quantity": 5}, 400,
     "Missing required parameter: comments"),
    ({"action": "status"}, 400, "Missing required parameter: order"),
    ({"action": "status", "order": "abc"}, 400, "Incorrect order ID"),
    ({"action": "status", "orders": ",".join(str(i) for i in range(101))}, 400,
     "Too many IDs, at most 100 per request"),
    ({"action": "refill", "order": "77"}, 400, "Incorrect order ID"),
    ({"action": "refill_status", "refill": "77"}, 400, "Refill not found"),
    ({"action": "cancel"}, 400, "Missing required parameter: order"),
])
def test_bad_input_is_a_clear_error_and_sends_nothing(stack, fields, status, message):
    gw, a, b = stack
    r = gw.post(**fields)
    assert r.status_code == status
    assert r.json() == {"error": message}
    assert adds(a) == [] and adds(b) == []


def test_always_200_switch(sims, fresh_redis, tmp_path):
    a, b = sims
    a.reset()
    b.reset()
    gw = Gateway(base_config(a, b, error_status="always-200"), fresh_redis, tmp_path)
    try:
        for fields, message in (({"key": "nope", "action": "balance"}, "Invalid API key"),
                                ({"action": "fly"}, "Incorrect request: unknown action")):
            key = fields.pop("key", "alice-key")
            r = gw.post(key=key, **fields)
            assert r.status_code == 200
            assert r.json() == {"error": message}
        r = gw.http.get(gw.url)
        assert r.status_code == 200 and r.json() == {"error": "Not Found"}
    finally:
        gw.stop()


# --- add and routing ----------------------------------------------------------


def test_add_routes_to_the_cheapest_and_answers_only_the_order(stack):
    gw, a, b = stack
    r = gw.post(action="add", service=1, link="https://tiktok.com/@u", quantity=100)
    assert r.status_code == 200
    assert r.json() == {"order": 5000}
    assert r.text == '{"order":5000}'
    sent = b.orders()
    assert len(sent) == 1 and sent[0]["service"] == 11 and sent[0]["quantity"] == 100
    assert a.orders() == []
    status = gw.call(action="status", order=5000)
    assert status == {"charge": "0.06000", "start_count": "0", "status": "Pending",
                      "remains": "100", "currency": "USD"}


def test_quantity_outside_the_cheapest_range_goes_to_the_next(stack):
    gw, a, b = stack
    # prov-b (cheaper) takes at most 5000; 8000 must go to prov-a
    assert "order" in gw.call(action="add", service=1, link="l", quantity=8000)
    assert [o["service"] for o in a.orders()] == [1]
    assert b.orders() == []


@pytest.mark.parametrize("error", [
    "Not enough funds on balance",
    "Service is disabled",
    "You have active order with this link. Please wait until order being completed.",
])
def test_fallback_on_a_definite_rejection(stack, error):
    gw, a, b = stack
    b.control("reject", {"error": error, "count": 1})
    r = gw.post(action="add", service=1, link="https://t/x", quantity=100)
    assert r.json() == {"order": 5000}
    assert len(adds(b)) == 1 and b.orders() == []
    assert len(a.orders()) == 1
    assert gw.call(action="status", order=5000)["status"] == "Pending"


def test_every_candidate_refusing_is_an_error(stack):
    gw, a, b = stack
    for sim in (a, b):
        sim.control("reject", {"error": "Not enough funds on balance", "count": 1})
    r = gw.post(action="add", service=1, link="https://t/x", quantity=100)
    assert r.status_code == 400
    assert r.json() == {"error": "Service is temporarily unavailable, try again later"}
    assert len(adds(a)) == 1 and len(adds(b)) == 1


def test_a_rejection_of_the_order_itself_is_not_tried_elsewhere(stack):
    gw, a, b = stack
    b.control("reject", {"error": "Invalid link, see https://prov-b.example.com/help",
                         "count": 1})
    r = gw.post(action="add", service=1, link="bad", quantity=100)
    assert r.status_code == 400
    assert r.json() == {"error": "Incorrect link"}  # the standard text, never the upstream's
    assert_no_leak(r.text)
    assert adds(a) == []


@pytest.mark.parametrize("fault", ["drop", "500", "hang", "html"])
def test_ambiguous_add_is_never_sent_twice(stack, fault):
    gw, a, b = stack
    b.control("fault", {"fault": fault, "rate": 1.0})
    r = gw.post(action="add", service=1, link="https://t/amb", quantity=100)
    assert r.status_code == 400
    assert r.json() == {"error": "Order could not be confirmed; do not resend it, "
                                 "contact support"}
    assert_no_leak(r.text)
    assert len(adds(b)) == 1, "the add reached prov-b exactly once"
    assert adds(a) == [], "an ambiguous add must not go to another provider"
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "orders", "unknown"], cwd=ROOT,
        env={**os.environ, "REDIS_URL": gw.redis_url}, capture_output=True, text=True,
        check=True).stdout
    assert "5000" in out and "unknown" in out and "https://t/amb" in out
    log = gw.log()
    assert "ambiguous outcome" in log
    for secret in ("upstream-secret", "alice-key"):
        assert secret not in log, "keys never reach the log"


def test_unreachable_provider_is_skipped(sims, fresh_redis, tmp_path):
    a, b = sims
    a.reset()
    b.reset()
    config = base_config(a, b)
    gw = Gateway(config, fresh_redis, tmp_path)  # warms both catalogs in Redis
    gw.stop()
    dead = Sim.__new__(Sim)
    dead.api = f"http://127.0.0.1:{free_port()}/api/v2"  # nothing listens there
    config["providers"][1] = provider("prov-b", dead)
    gw = Gateway(config, fresh_redis, tmp_path / "2", flush=False)
    try:
        r = gw.post(action="add", service=1, link="https://t/x", quantity=100)
        assert r.json() == {"order": 5000}
        assert len(a.orders()) == 1
    finally:
        gw.stop()


# --- parameter families -------------------------------------------------------


def test_dripfeed_is_forwarded_and_charged_for_every_run(stack):
    gw, a, b = stack
    order = gw.call(action="add", service=1, link="l", quantity=100, runs=3, interval=15)["order"]
    params = b.orders()[0]["params"]
    assert (params["runs"], params["interval"], params["quantity"]) == ("3", "15", "100")
    status = gw.call(action="status", order=order)
    assert status["charge"] == "0.18000"  # 0.60 x 100 x 3 / 1000
    assert status["remains"] == "300"


@pytest.mark.parametrize("fields", [
    {"comments": "hi,hello,good video"},
    {"comments": "hi\nhello\ngood video"},
    {"form": json.dumps({"comments": "hi,hello,good video"})},
])
def test_comments_are_the_quantity(stack, fields):
    gw, a, b = stack
    order = gw.call(action="add", service=4, link="l", quantity=3, **fields)["order"]
    sent = b.orders()[0]  # prov-b is cheaper (4.00 vs 5.00)
    assert sent["quantity"] == 3
    assert sent["params"]["comments"] == "hi\nhello\ngood video"
    assert gw.call(action="status", order=order)["charge"] == "0.01800"  # 6.00 x 3 / 1000


def test_package_form_poll_subscription_and_mentions_are_forwarded(stack):
    gw, a, b = stack
    gw.call(action="add", service=5, link="l", form=json.dumps({"package": "pro"}))
    gw.call(action="add", service=6, link="l", quantity=100, answer_number=2)
    gw.call(action="add", service=7, username="someone", min=50, max=100, posts=5,
            delay=30, expiry="31/12/2026")
    gw.call(action="add", service=8, link="l", usernames="a\nb\nc\nd\ne\nf\ng\nh\ni\nj",
            quantity=10)
    params = [o["params"] for o in a.orders()]
    assert len(params) == 4
    assert json.loads(params[0]["form"]) == {"package": "pro"}
    assert params[1]["answer_number"] == "2"
    assert (params[2]["username"], params[2]["expiry"], params[2]["posts"]) == (
        "someone", "31/12/2026", "5")
    assert params[3]["usernames"].count("\n") == 9


def test_form_fields_as_top_level_parameters(stack):
    gw, a, b = stack
    assert "order" in gw.call(action="add", service=5, link="l", package="basic")
    assert json.loads(a.orders()[0]["params"]["form"]) == {"package": "basic"}


# --- status -------------------------------------------------------------------


def place(gw: Gateway, service: int = 1, key: str = "alice-key", quantity: int = 100) -> int:
    answer = gw.call(key=key, action="add", service=service, link="https://t/x",
                     quantity=quantity)
    return int(answer["order"])


def test_same_upstream_ids_from_two_providers_never_mix(stack):
    gw, a, b = stack
    on_b = place(gw, service=1)  # prov-b order 1
    on_a = place(gw, service=2)  # prov-a order 1
    assert a.orders()[0]["order"] == b.orders()[0]["order"] == 1
    assert on_a != on_b
    b.control("orders/1", {"status": "Partial", "remains": 40, "start_count": 7})
    a.control("orders/1", {"status": "Completed", "start_count": 3})
    multi = gw.call(action="status", orders=f"{on_a},{on_b}")
    assert multi[str(on_b)]["status"] == "Partial"
    assert multi[str(on_b)]["remains"] == "40"
    assert multi[str(on_b)]["start_count"] == "7"
    assert multi[str(on_a)]["status"] == "Completed"
    assert multi[str(on_a)]["start_count"] == "3"
    cancel = gw.call(action="cancel", orders=f"{on_a},{on_b}")
    # both final: refused by the gateway itself, nothing asked upstream
    assert cancel == [{"order": on_a, "cancel": {"error": "Order cannot be canceled"}},
                      {"order": on_b, "cancel": {"error": "Order cannot be canceled"}}]
    assert a.requests("cancel") == [] and b.requests("cancel") == []


def test_multi_status_keys_ids_exactly_as_sent(stack):
    gw, a, b = stack
    mine = place(gw)
    theirs = place(gw, key="bob-key")
    answer = gw.call(action="status", orders=f" {mine} ,{mine},abc,{theirs},99999,")
    assert list(answer) == [str(mine), "abc", str(theirs), "99999"]
    assert answer[str(mine)]["status"] == "Pending"
    for other in ("abc", str(theirs), "99999"):
        assert answer[other] == {"error": "Incorrect order ID"}
    r = gw.post(action="status", order=theirs)
    assert r.status_code == 400 and r.json() == {"error": "Incorrect order ID"}


def test_multi_status_batches_per_provider(stack):
    gw, a, b = stack
    on_b = [place(gw, service=1) for _ in range(3)]
    on_a = [place(gw, service=2) for _ in range(3)]
    answer = gw.call(action="status", orders=",".join(map(str, on_a + on_b)))
    assert len(answer) == 6
    assert len(a.requests("status")) == 1 and len(b.requests("status")) == 1
    assert "orders" in a.requests("status")[0]["params"]


def test_terminal_statuses_are_not_asked_again(stack):
    gw, a, b = stack
    order = place(gw, service=1)
    b.control("orders/1", {"status": "Completed"})
    assert gw.call(action="status", order=order)["status"] == "Completed"
    asked = len(b.requests("status"))
    for _ in range(3):
        assert gw.call(action="status", order=order)["status"] == "Completed"
    assert len(b.requests("status")) == asked


def test_partial_and_canceled_adjust_the_charge(stack):
    gw, a, b = stack
    partial, canceled = place(gw, quantity=1000), place(gw, quantity=1000)
    b.control("orders/1", {"status": "Partial", "remains": 250})
    b.control("orders/2", {"status": "Canceled"})
    answer = gw.call(action="status", orders=f"{partial},{canceled}")
    assert answer[str(partial)]["charge"] == "0.45000"  # 0.60 x 1000/1000 x 750/1000
    assert answer[str(canceled)]["charge"] == "0.00000"
    assert answer[str(canceled)]["status"] == "Canceled"


def test_upstream_status_spellings_are_normalised(stack):
    gw, a, b = stack
    order = place(gw)
    b.control("orders/1", {"status": "In progress", "remains": 60})
    assert gw.call(action="status", order=order)["status"] == "In progress"


# --- refill, refill_status, cancel --------------------------------------------


def test_refill_and_refill_status_single_and_multi(stack):
    gw, a, b = stack
    o1, o2 = place(gw), place(gw)  # both on prov-b, refill-capable
    b.control("orders/1", {"status": "Completed"})
    b.control("orders/2", {"status": "Completed"})
    single = gw.call(action="refill", order=o1)
    assert list(single) == ["refill"] and isinstance(single["refill"], int)
    assert single["refill"] >= 700
    multi = gw.call(action="refill", orders=f"{o2},123456,x")
    assert multi[0]["order"] == o2 and isinstance(multi[0]["refill"], int)
    assert multi[1] == {"order": 123456, "refill": {"error": "Incorrect order ID"}}
    assert multi[2] == {"order": "x", "refill": {"error": "Incorrect order ID"}}
    r1, r2 = single["refill"], multi[0]["refill"]
    assert r1 != r2
    status = gw.call(action="refill_status", refill=r1)
    assert status["status"] in ("Pending", "In progress", "Completed")
    many = gw.call(action="refill_status", refills=f"{r1},{r2},999")
    assert [m["refill"] for m in many] == [r1, r2, 999]
    assert many[2] == {"refill": 999, "status": {"error": "Refill not found"}}
    # another client cannot see these refills
    r = gw.post(key="bob-key", action="refill_status", refill=r1)
    assert r.json() == {"error": "Refill not found"}


def test_refill_refused_upstream_is_a_per_id_error(stack):
    gw, a, b = stack
    order = place(gw, service=2)  # prov-a likes: no refill
    a.control("orders/1", {"status": "Completed"})
    r = gw.post(action="refill", order=order)
    assert r.status_code == 400
    assert "error" in r.json()
    assert_no_leak(r.text)


@pytest.mark.parametrize("service, sim_index", [(2, 0), (1, 1)])
def test_cancel_on_both_dialects(stack, service, sim_index):
    gw, a, b = stack
    order = place(gw, service=service)
    sim = (a, b)[sim_index]
    answer = gw.call(action="cancel", orders=f"{order},424242")
    assert answer == [{"order": order, "cancel": 1},
                      {"order": 424242, "cancel": {"error": "Incorrect order ID"}}]
    assert sim.orders()[0]["status"] == "Canceled"
    assert gw.call(action="cancel", order=order) == [
        {"order": order, "cancel": {"error": "Order cannot be canceled"}}]
    assert gw.call(action="status", order=order)["status"] == "Canceled"


def test_a_client_never_touches_another_clients_orders(stack):
    gw, a, b = stack
    order = place(gw)
    b.control("orders/1", {"status": "Completed"})
    for fields in ({"action": "status", "order": order},
                   {"action": "refill", "order": order}):
        r = gw.post(key="bob-key", **fields)
        assert r.json() == {"error": "Incorrect order ID"}
    assert gw.call(key="bob-key", action="cancel", orders=str(order)) == [
        {"order": order, "cancel": {"error": "Incorrect order ID"}}]
    assert b.requests("refill") == [] and b.requests("cancel") == []


# --- balance ------------------------------------------------------------------


def test_balance_sums_upstreams_in_the_gateway_currency(sims, fresh_redis, tmp_path):
    a, b = sims
    a.reset()
    b.reset()
    a.control("balance", {"balance": "10.5"})
    b.control("balance", {"balance": "20"})
    # prov-b is configured as EUR: 10.5 + 20 x 1.1 (its own answer says USD; the
    # operator's configured currency is what its prices and balance are read in)
    config = base_config(a, b, rates={"EUR": "1.10000"})
    config["providers"][1]["currency"] = "EUR"
    gw = Gateway(config, fresh_redis, tmp_path)
    try:
        assert gw.call(action="balance") == {"balance": "32.50000", "currency": "USD"}
        # prices too: prov-b's followers cost 0.40 EUR = 0.44 USD, still under prov-a's 0.50
        followers = next(s for s in gw.call(action="services") if s["service"] == 1)
        assert followers["rate"] == "0.66000"  # 0.44 x 1.5
    finally:
        gw.stop()


def test_status_of_a_provider_that_is_down_answers_the_last_known(stack):
    gw, a, b = stack
    order = place(gw)
    b.control("orders/1", {"status": "In progress", "remains": 30})
    assert gw.call(action="status", order=order)["status"] == "In progress"
    b.control("fault", {"fault": "500", "rate": 1.0})
    r = gw.post(action="status", order=order)
    assert r.status_code == 200
    assert r.json()["status"] == "In progress" and r.json()["remains"] == "30"


def test_persistence_survives_a_restart_of_gateway_and_redis(sims, tmp_path):
    """No REDIS_URL: the gateway starts its own embedded Redis under --data-dir."""
    a, b = sims
    a.reset()
    b.reset()
    config_path = tmp_path / "gw.yaml"
    import yaml

    config_path.write_text(yaml.safe_dump(base_config(a, b)))
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    data = tmp_path / "d"

    def start() -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config_path),
             "--port", str(port), "--workers", "1", "--data-dir", str(data)], cwd=ROOT, env=env)
        from harness import _wait
        _wait(f"http://127.0.0.1:{port}/healthz", proc, "gateway")
        return proc, f"http://127.0.0.1:{port}/api/v2"

    proc, url = start()
    try:
        first = httpx.post(url, data={"key": "alice-key", "action": "add", "service": "1",
                                      "link": "l", "quantity": "100"}).json()["order"]
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert list(Path(data).rglob("appendonly*")), "Redis wrote its append-only file"
    assert not (data / "redis" / "redis.sock").exists(), "the embedded Redis was stopped"
    proc, url = start()
    try:
        status = httpx.post(url, data={"key": "alice-key", "action": "status",
                                       "order": str(first)}).json()
        assert status["status"] == "Pending" and status["charge"] == "0.06000"
        second = httpx.post(url, data={"key": "alice-key", "action": "add", "service": "1",
                                       "link": "l", "quantity": "100"}).json()["order"]
        assert second > first, "the counter lives in Redis: ids never repeat"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_catalog_refreshes_in_the_background_and_guards_a_fixed_price(
        sims, fresh_redis, tmp_path):
    a, b = sims
    a.reset()
    b.reset()
    gw = Gateway(base_config(a, b, catalog_ttl_s=1), fresh_redis, tmp_path)
    try:
        assert {s["service"]: s["rate"] for s in gw.call(action="services")}[2] == "0.30000"
        # prov-a's likes get cheaper and its views dearer than service 3's fixed price
        a.control("catalog", {"services": [
            {"service": 2, "name": "Likes", "type": "Default", "rate": "0.10",
             "min": 10, "max": 50000, "cancel": True},
            {"service": 3, "name": "Views", "type": "Default", "rate": "0.06",
             "min": 100, "max": 1000000},
        ]})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            rates = {s["service"]: s["rate"] for s in gw.call(action="services")}
            if rates.get(2) == "0.15000":
                break
            time.sleep(0.2)
        assert rates[2] == "0.15000"
        assert rates[3] == "0.05000", "a fixed price stays listed (panels drop what vanishes)"
        r = gw.post(action="add", service=3, link="l", quantity=1000)
        assert r.json() == {"error": "Service is temporarily unavailable, try again later"}
        assert adds(a) == [], "never routed to a candidate that costs more than the price"
        assert "over price" in gw.log()
    finally:
        gw.stop()


@pytest.mark.parametrize("fault", ["500", "drop"])
def test_reads_are_retried_writes_are_not(stack, fault):
    gw, a, b = stack
    order = place(gw)
    b.control("fault", {"fault": fault, "rate": 1.0})
    assert gw.call(action="status", order=order)["status"] == "Pending"
    assert len(b.requests("status")) == 3, "a read is tried three times"
    b.control("orders/1", {"status": "Completed"})
    assert gw.post(action="refill", order=order).status_code == 400
    assert len(b.requests("refill")) == 1, "a write that may have arrived is sent once"
    assert gw.call(action="cancel", order=order)[0]["cancel"] == {
        "error": "Service is temporarily unavailable, try again later"}
    assert len(b.requests("cancel")) == 1


def test_status_cache_answers_repeat_polls_without_an_upstream_call(
        sims, fresh_redis, tmp_path):
    a, b = sims
    a.reset()
    b.reset()
    gw = Gateway(base_config(a, b, status_cache_s=2), fresh_redis, tmp_path)
    try:
        order = place(gw)
        assert gw.call(action="status", order=order)["status"] == "Pending"
        b.control("orders/1", {"status": "In progress", "remains": 10})
        for _ in range(5):
            assert gw.call(action="status", orders=str(order))[str(order)]["status"] == "Pending"
        assert len(b.requests("status")) == 1, "repeat polls within the cache time stay local"
        time.sleep(2.2)
        assert gw.call(action="status", order=order)["status"] == "In progress"
        assert len(b.requests("status")) == 2
    finally:
        gw.stop()
