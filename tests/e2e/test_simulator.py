"""Tests for the SMM API v2 provider simulator, run as a real server process."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from gateway.sim import SimOptions, Simulator, load_catalog, start_server

ROOT = Path(__file__).resolve().parents[2]
TOK_KEY = "secret"
TOK_PROGRESS = 0.9  # Pending < 0.3 s, In progress < 0.6 s, final afterwards


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _spawn(*args: str) -> Iterator[str]:
    port = _free_port()
    errors = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: cannot fill up and block
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.sim", "--port", str(port), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    try:
        while True:
            if proc.poll() is not None:
                errors.seek(0)
                raise RuntimeError(f"simulator exited: {errors.read()}")
            try:
                if httpx.get(f"{base}/_sim/health", timeout=0.5).json() == {"ok": True}:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("simulator did not start")
            time.sleep(0.05)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        errors.close()
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == (
        f"simulator ({args[args.index('--dialect') + 1]}) listening on {base}/api/v2"
    )


class Sim:
    """A thin client for one simulator: the provider API plus the control API."""

    def __init__(self, base: str, key: str) -> None:
        self.base = base
        self.key = key
        self.http = httpx.Client(base_url=base, timeout=5)

    def post(self, key: str | None = None, path: str = "/api/v2", **params: Any) -> httpx.Response:
        data = {"key": self.key if key is None else key, **params}
        return self.http.post(path, data={k: str(v) for k, v in data.items()})

    def api(self, **params: Any) -> Any:
        return self.post(**params).json()

    def get(self, path: str) -> Any:
        resp = self.http.get(f"/_sim/{path}")
        assert resp.status_code == 200, resp.text
        return resp.json()

    def ctl(self, path: str, body: Any = None) -> Any:
        resp = self.http.post(f"/_sim/{path}", json=body if body is not None else {})
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"ok": True}
        return resp.json()

    def order(self, oid: int) -> dict[str, Any]:
        return next(o for o in self.get("orders")["orders"] if o["order"] == oid)


@pytest.fixture(scope="module")
def tok_server() -> Iterator[str]:
    yield from _spawn(
        "--dialect", "toksmm", "--key", TOK_KEY, "--balance", "100",
        "--progress-s", str(TOK_PROGRESS),
    )  # fmt: skip


@pytest.fixture(scope="module")
def tested_server() -> Iterator[str]:
    yield from _spawn(
        "--dialect", "testedsmm", "--balance", "50", "--progress-s", "0",
        "--order-start", "1000", "--currency", "EUR",
    )  # fmt: skip


@pytest.fixture
def tok(tok_server: str) -> Iterator[Sim]:
    sim = Sim(tok_server, TOK_KEY)
    sim.ctl("reset")
    yield sim
    sim.http.close()


@pytest.fixture
def tested(tested_server: str) -> Iterator[Sim]:
    sim = Sim(tested_server, "anything")
    sim.ctl("reset")
    yield sim
    sim.http.close()


# ------------------------------------------------------------------ routing and auth


def test_not_found(tok: Sim) -> None:
    get = tok.http.get("/api/v2")
    assert (get.status_code, get.json()) == (404, {"error": "Not Found"})
    other = tok.post(path="/api/v3", action="balance")
    assert (other.status_code, other.json()) == (404, {"error": "Not Found"})
    assert tok.http.get("/_sim/nothing").status_code == 404
    assert tok.post(path="/api/v2/", action="balance").status_code == 200


def test_key_check_toksmm(tok: Sim) -> None:
    for key in ("wrong", ""):
        resp = tok.post(key=key, action="balance")
        assert (resp.status_code, resp.json()) == (401, {"error": "Invalid API key"})
    no_key = tok.http.post("/api/v2", data={"action": "balance"})
    assert (no_key.status_code, no_key.json()) == (401, {"error": "Invalid API key"})
    for field in ("api", "api_token"):
        alt = tok.http.post("/api/v2", data={field: TOK_KEY, "action": "balance"})
        assert alt.status_code == 200 and "balance" in alt.json()


def test_key_check_testedsmm(tested: Sim) -> None:
    assert "balance" in tested.api(key="whatever", action="balance")
    resp = tested.post(key="", action="balance")
    assert (resp.status_code, resp.json()) == (200, {"error": "Invalid API key"})


def test_missing_and_unknown_action(tok: Sim, tested: Sim) -> None:
    for sim, code in ((tok, 400), (tested, 200)):
        missing = sim.post()
        assert (missing.status_code, missing.json()) == (code, {"error": "Missing action"})
        unknown = sim.post(action="dance")
        assert (unknown.status_code, unknown.json()) == (code, {"error": "Incorrect request"})


def test_json_body(tok: Sim) -> None:
    body = {"key": TOK_KEY, "action": "add", "service": 2, "link": "x", "quantity": 100}
    assert tok.http.post("/api/v2", json=body).json() == {"order": 1}
    assert tok.order(1)["quantity"] == 100


def test_keep_alive_on_one_socket(tok: Sim) -> None:
    port = int(tok.base.rsplit(":", 1)[1])
    body = f"key={TOK_KEY}&action=balance".encode()
    request = (
        b"POST /api/v2 HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for _ in range(3):
            sock.sendall(request)
            data = b""
            while b"\r\n\r\n" not in data:
                data += sock.recv(4096)
            head, _, rest = data.partition(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            while len(rest) < length:
                rest += sock.recv(4096)
            assert head.startswith(b"HTTP/1.1 200")
            assert json.loads(rest) == {"balance": "100.00000", "currency": "USD"}


# ------------------------------------------------------------------ services and balance


def test_services_toksmm_shape(tok: Sim) -> None:
    services = tok.api(action="services")
    assert [s["service"] for s in services] == list(range(1, 10))
    followers = services[0]
    assert followers == {
        "service": 1,
        "name": "Followers",
        "type": "Default",
        "category": "TikTok",
        "rate": "0.50000",
        "min": "50",
        "max": "10000",
        "refill": True,
        "cancel": True,
        "form": None,
    }
    comments = services[3]
    assert comments["type"] == "Custom Comments"
    assert comments["form"] == {
        "fields": [{"name": "comments", "type": "textarea", "required": True}]
    }
    package = services[5]
    assert package["type"] == "Package" and package["form"]["fields"][0]["name"] == "package"
    for s in services:
        assert isinstance(s["rate"], str) and isinstance(s["min"], str)
        assert isinstance(s["refill"], bool) and isinstance(s["cancel"], bool)


def test_services_testedsmm_shape(tested: Sim) -> None:
    services = tested.api(action="services")
    assert services[0] == {
        "service": 1,
        "name": "Followers",
        "type": "Default",
        "category": "TikTok",
        "rate": "0.50",
        "min": 50,
        "max": 10000,
        "refill": 1,
        "cancel": 1,
        "dripfeed": 1,
    }
    assert services[1]["refill"] == 0 and services[2]["rate"] == "0.01"
    types = {s["type"] for s in services}
    assert {"Custom Comments", "Mentions Custom List", "Package", "Poll"} <= types
    assert {"Subscriptions", "Comment Likes"} <= types


def test_balance_shapes(tok: Sim, tested: Sim) -> None:
    assert tok.api(action="balance") == {"balance": "100.00000", "currency": "USD"}
    assert tested.api(action="balance") == {"balance": "50.00", "currency": "EUR"}
    tok.ctl("balance", {"balance": "12.5"})
    assert tok.api(action="balance")["balance"] == "12.50000"


# ------------------------------------------------------------------ add


def test_add_answers_only_order(tok: Sim, tested: Sim) -> None:
    resp = tok.post(action="add", service=1, link="https://t.co/u", quantity=1000)
    assert (resp.status_code, resp.json()) == (200, {"order": 1})
    assert tested.api(action="add", service=1, link="u", quantity=100) == {"order": 1000}
    assert tested.api(action="add", service=1, link="u", quantity=100) == {"order": 1001}
    assert tok.api(action="balance")["balance"] == "99.50000"
    order = tok.order(1)
    assert order["service"] == 1 and order["link"] == "https://t.co/u"
    assert order["quantity"] == 1000 and order["runs"] is None and order["charge"] == "0.50000"
    assert order["params"] == {
        "action": "add",
        "service": "1",
        "link": "https://t.co/u",
        "quantity": "1000",
    }


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"service": 99, "link": "x", "quantity": 100}, "Incorrect service ID"),
        ({"service": "abc", "link": "x", "quantity": 100}, "Incorrect service ID"),
        ({"link": "x", "quantity": 100}, "Incorrect service ID"),
        ({"service": 1, "link": "x", "quantity": 49}, "Quantity less than minimal 50"),
        ({"service": 1, "link": "x", "quantity": 10001}, "Quantity more than maximal 10000"),
        ({"service": 1, "quantity": 100}, "Incorrect request"),
        ({"service": 1, "link": "", "quantity": 100}, "Incorrect request"),
        ({"service": 1, "link": "x", "quantity": "lots"}, "Incorrect request"),
        ({"service": 1, "link": "x"}, "Incorrect request"),
    ],
)
def test_add_errors(tok: Sim, tested: Sim, params: dict[str, Any], error: str) -> None:
    for sim, code in ((tok, 400), (tested, 200)):
        resp = sim.post(action="add", **params)
        assert (resp.status_code, resp.json()) == (code, {"error": error})
        assert sim.get("orders") == {"orders": []}


def test_not_enough_funds(tok: Sim) -> None:
    tok.ctl("balance", {"balance": "0.4"})
    resp = tok.post(action="add", service=1, link="x", quantity=1000)  # costs 0.50
    assert (resp.status_code, resp.json()) == (400, {"error": "Not enough funds on balance"})
    assert tok.get("orders")["orders"] == []
    assert tok.api(action="balance")["balance"] == "0.40000"
    assert tok.api(action="add", service=1, link="x", quantity=800) == {"order": 1}
    assert tok.api(action="balance")["balance"] == "0.00000"


def test_dripfeed_charge(tok: Sim, tested: Sim) -> None:
    assert tok.api(action="add", service=1, link="x", quantity=100, runs=5, interval=10) == {
        "order": 1
    }
    order = tok.order(1)
    assert (order["runs"], order["interval"], order["charge"]) == (5, 10, "0.25000")
    assert tok.api(action="balance")["balance"] == "99.75000"
    status = tok.api(action="status", order=1)
    assert status["remains"] == "500" and status["charge"] == "0.25000"

    tested.api(action="add", service=3, link="x", quantity=1000, runs=3, intervals=15)
    order = tested.order(1000)
    assert (order["runs"], order["interval"], order["charge"]) == (3, 15, "0.03000")
    assert tested.api(action="balance")["balance"] == "49.97"


def test_comments_quantity_toksmm(tok: Sim) -> None:
    comments = ",".join(f"c{i}" for i in range(12))
    assert tok.api(action="add", service=4, link="x", quantity=1, comments=comments) == {"order": 1}
    assert tok.order(1)["quantity"] == 12
    form = json.dumps({"comments": "a\nb,c\nd,e,f,g,h,i,j,k"})
    assert tok.api(action="add", service=4, link="x", quantity=1, form=form) == {"order": 2}
    assert tok.order(2)["quantity"] == 11
    assert tok.order(2)["charge"] == "0.05500"
    few = tok.api(action="add", service=4, link="x", comments="a,b")
    assert few == {"error": "Quantity less than minimal 10"}


def test_comments_quantity_testedsmm(tested: Sim) -> None:
    comments = "\n".join(f"nice, video {i}" for i in range(10))
    assert tested.api(action="add", service=4, link="x", comments=comments) == {"order": 1000}
    assert tested.order(1000)["quantity"] == 10  # commas do not split in this dialect


def test_package_and_mentions_without_quantity(tok: Sim) -> None:
    form = json.dumps({"package": "basic"})
    assert tok.api(action="add", service=6, link="x", form=form) == {"order": 1}
    order = tok.order(1)
    assert order["quantity"] == 1 and order["params"]["form"] == form
    usernames = "\n".join(f"user{i}" for i in range(15))
    assert tok.api(action="add", service=5, link="x", usernames=usernames) == {"order": 2}
    assert tok.order(2)["quantity"] == 15


# ------------------------------------------------------------------ status


def test_status_progression_toksmm(tok: Sim) -> None:
    tok.ctl("clock", {"frozen": True})  # moved on by hand: no sleeping, no race
    tok.api(action="add", service=1, link="x", quantity=1000)
    pending = tok.api(action="status", order=1)
    assert pending == {
        "charge": "0.50000",
        "start_count": "0",
        "status": "Pending",
        "remains": "1000",
        "currency": "USD",
    }
    assert list(pending) == ["charge", "start_count", "status", "remains", "currency"]
    tok.ctl("clock", {"advance_s": TOK_PROGRESS / 2})
    running = tok.api(action="status", order=1)
    assert running["status"] == "In progress"
    assert running["remains"] == "500" and int(running["start_count"]) > 0
    tok.ctl("clock", {"advance_s": TOK_PROGRESS / 2 + 0.1})
    done = tok.api(action="status", order="1")
    assert done["status"] == "Completed" and done["remains"] == "0"
    assert done["start_count"] == running["start_count"]


def test_status_single_testedsmm(tested: Sim) -> None:
    tested.api(action="add", service=2, link="x", quantity=1000)
    status = tested.api(action="status", order=1000)
    assert status == {
        "status": "Completed",
        "charge": "0.20",
        "start_count": status["start_count"],
        "remains": "0",
        "currency": "EUR",
    }
    assert isinstance(status["start_count"], str)


def test_status_unknown(tok: Sim, tested: Sim) -> None:
    resp = tok.post(action="status", order=42)
    assert (resp.status_code, resp.json()) == (400, {"error": "Incorrect order ID"})
    assert tested.api(action="status", order=42) == {"error": "Incorrect order ID"}


def test_multi_status_toksmm(tok: Sim) -> None:
    tok.ctl("clock", {"frozen": True})  # still Pending however slow the machine is today
    tok.api(action="add", service=1, link="x", quantity=100)
    tok.api(action="add", service=2, link="x", quantity=100)
    multi = tok.api(action="status", orders="1,2,10")
    assert list(multi) == ["1", "2", "10"]
    assert multi["1"]["status"] == "Pending" and multi["1"]["currency"] == "USD"
    assert multi["2"]["charge"] == "0.02000"
    assert multi["10"] == {"error": "Incorrect order ID"}
    too_many = tok.post(action="status", orders=",".join(str(i) for i in range(101)))
    assert too_many.json() == {"error": "Incorrect request"}


def test_multi_status_testedsmm(tested: Sim) -> None:
    tested.api(action="add", service=1, link="x", quantity=100)
    multi = tested.api(action="status", orders="1000,9")
    assert multi == [
        {
            "order": 1000,
            "status": "Completed",
            "charge": "0.05",
            "start_count": multi[0]["start_count"],
            "remains": "0",
            "currency": "EUR",
        },
        {"order": 9, "error": "Incorrect order ID"},
    ]


def test_partial_refund_once(tested: Sim) -> None:
    tested.api(action="add", service=1, link="https://x/partial-user", quantity=1000)  # 0.50
    status = tested.api(action="status", order=1000)
    assert status["status"] == "Partial" and status["remains"] == "333"
    assert status["charge"] == "0.3335"  # 0.5 * 667 / 1000
    assert tested.api(action="balance")["balance"] == "49.6665"
    for _ in range(3):
        assert tested.api(action="status", orders="1000")[0]["status"] == "Partial"
    assert tested.api(action="balance")["balance"] == "49.6665"
    assert tested.order(1000)["refunded"] == "0.16650"


def test_partial_refund_on_balance_without_polling(tok: Sim) -> None:
    tok.ctl("clock", {"frozen": True})
    tok.api(action="add", service=1, link="partial", quantity=300)  # 0.15
    assert tok.api(action="balance")["balance"] == "99.85000"
    tok.ctl("clock", {"advance_s": TOK_PROGRESS + 0.1})
    assert tok.api(action="balance")["balance"] == "99.90000"  # refund 0.15 * 100 / 300


def test_force_status(tok: Sim) -> None:
    tok.api(action="add", service=1, link="x", quantity=1000)
    tok.ctl("orders/1", {"status": "Partial", "remains": 10, "start_count": 5})
    status = tok.api(action="status", order=1)
    assert status == {
        "charge": "0.49500",
        "start_count": "5",
        "status": "Partial",
        "remains": "10",
        "currency": "USD",
    }
    assert tok.api(action="balance")["balance"] == "99.50500"
    tok.ctl("orders/1", {"status": "In progress"})
    assert tok.api(action="status", order=1)["status"] == "In progress"
    resp = tok.http.post("/_sim/orders/77", json={"status": "Completed"})
    assert (resp.status_code, resp.json()) == (404, {"error": "Not Found"})


# ------------------------------------------------------------------ refill


def test_refill_toksmm(tok: Sim) -> None:
    tok.ctl("clock", {"frozen": True})
    tok.api(action="add", service=1, link="x", quantity=100)  # refill allowed
    tok.api(action="add", service=2, link="x", quantity=100)  # refill not allowed
    not_yet = tok.post(action="refill", order=1)
    assert (not_yet.status_code, not_yet.json()) == (
        400,
        {"error": "Refill is disabled for this service"},
    )
    tok.ctl("orders/1", {"status": "Completed"})
    tok.ctl("orders/2", {"status": "Completed"})
    assert tok.api(action="refill", order=1) == {"refill": "1"}
    assert tok.api(action="refill", order=2) == {"error": "Refill is disabled for this service"}
    assert tok.api(action="refill", order=9) == {"error": "Incorrect order ID"}
    assert tok.api(action="refill", orders="1,2,9") == [
        {"order": 1, "refill": 2},
        {"order": 2, "refill": {"error": "Refill is disabled for this service"}},
        {"order": 9, "refill": {"error": "Incorrect order ID"}},
    ]
    assert tok.api(action="refill_status", refill=1) == {"status": "Pending"}
    tok.ctl("clock", {"advance_s": TOK_PROGRESS / 2 + 0.1})
    assert tok.api(action="refill_status", refill="1") == {"status": "Completed"}
    assert tok.api(action="refill_status", refills="1,2,3") == [
        {"refill": 1, "status": "Completed"},
        {"refill": 2, "status": "Completed"},
        {"refill": 3, "status": {"error": "Refill not found"}},
    ]
    resp = tok.post(action="refill_status", refill=3)
    assert (resp.status_code, resp.json()) == (400, {"error": "Refill not found"})


def test_refill_testedsmm(tested: Sim) -> None:
    tested.api(action="add", service=1, link="x", quantity=100)
    tested.api(action="add", service=1, link="partial", quantity=100)
    assert tested.api(action="refill", order=1000) == {"refill": 1000}
    assert tested.api(action="refill", order=1001) == {"refill": 1001}  # Partial refills too
    assert tested.api(action="refill", orders="1000,5") == [
        {"order": 1000, "refill": 1002},
        {"order": 5, "refill": {"error": "Incorrect order ID"}},
    ]
    assert tested.api(action="refill_status", refill=1000) == {"status": "Completed"}
    assert tested.api(action="refill_status", refills="1001,7") == [
        {"refill": 1001, "status": "Completed"},
        {"refill": 7, "status": {"error": "Refill not found"}},
    ]
    assert tested.api(action="refill_status", refill=7) == {"error": "Refill not found"}


# ------------------------------------------------------------------ cancel


def test_cancel_toksmm(tok: Sim) -> None:
    tok.api(action="add", service=2, link="x", quantity=1000)  # cancellable, 0.20
    tok.api(action="add", service=3, link="x", quantity=1000)  # not cancellable, 0.01
    tok.api(action="add", service=2, link="x", quantity=1000)
    tok.ctl("orders/3", {"status": "Completed"})
    assert tok.api(action="balance")["balance"] == "99.59000"
    assert tok.api(action="cancel", orders="1,9,2,3") == [
        {"order": 1, "cancel": 1},
        {"order": 9, "cancel": {"error": "Incorrect order ID"}},
        {"order": 2, "cancel": {"error": "Cancel is disabled for this service"}},
        {"order": 3, "cancel": {"error": "Order cannot be canceled"}},
    ]
    status = tok.api(action="status", order=1)
    assert status["status"] == "Canceled" and status["charge"] == "0.00000"
    assert tok.api(action="balance")["balance"] == "99.79000"
    assert tok.api(action="cancel", order=1) == [
        {"order": 1, "cancel": {"error": "Order cannot be canceled"}}
    ]
    assert tok.api(action="balance")["balance"] == "99.79000"


def test_cancel_testedsmm(tested: Sim) -> None:
    tested.api(action="add", service=2, link="x", quantity=1000)  # final at once (progress 0)
    tested.api(action="add", service=2, link="x", quantity=1000)
    tested.ctl("orders/1001", {"status": "Pending"})
    assert tested.api(action="cancel", orders="1000,1001,9") == [
        {"order": 1000, "canceled": False},
        {"order": 1001, "canceled": True},
        {"order": 9, "error": "Incorrect order ID"},
    ]
    assert tested.api(action="status", order=1001)["status"] == "Canceled"
    assert tested.api(action="balance")["balance"] == "49.80"
    assert tested.api(action="cancel", order=1001) == [{"order": 1001, "canceled": False}]


# ------------------------------------------------------------------ faults


def test_fault_html(tok: Sim) -> None:
    tok.ctl("fault", {"fault": "html", "rate": 1.0})
    resp = tok.post(action="add", service=1, link="x", quantity=100)
    assert resp.status_code == 502
    assert resp.headers["content-type"].startswith("text/html")
    assert "cloudflare" in resp.text.lower()
    assert tok.get("orders")["orders"] == []
    [entry] = tok.get("requests")["requests"]
    assert entry["action"] == "add" and entry["fault"] == "html"
    assert entry["params"]["quantity"] == "100" and "key" not in entry["params"]
    tok.ctl("fault", {"fault": None})
    assert tok.api(action="add", service=1, link="x", quantity=100) == {"order": 1}


def test_fault_500(tested: Sim) -> None:
    tested.ctl("fault", {"fault": "500", "rate": 1})
    resp = tested.post(action="balance")
    assert (resp.status_code, resp.text) == (500, "Internal Server Error")
    assert resp.headers["content-type"].startswith("text/plain")


def test_fault_drop(tok: Sim) -> None:
    tok.ctl("fault", {"fault": "drop", "rate": 1.0})
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        tok.post(action="add", service=1, link="x", quantity=100)
    tok.ctl("fault", {"fault": None})
    assert tok.get("orders")["orders"] == []
    assert tok.get("requests")["requests"][0]["fault"] == "drop"
    assert tok.api(action="balance")["balance"] == "100.00000"


def test_fault_hang(tok: Sim) -> None:
    tok.ctl("fault", {"fault": "hang", "rate": 1.0})
    with (
        httpx.Client(base_url=tok.base, timeout=0.3) as short,
        pytest.raises(httpx.ReadTimeout),
    ):
        short.post("/api/v2", data={"key": TOK_KEY, "action": "balance"})
    tok.ctl("fault", {"fault": None})
    assert tok.api(action="balance")["balance"] == "100.00000"
    assert tok.get("stats") == {"actions": {"balance": 2}, "total": 2}


def test_fault_rate_is_a_fraction(tested: Sim) -> None:
    tested.ctl("fault", {"fault": "500", "rate": 0.5})
    codes = [tested.post(action="balance").status_code for _ in range(200)]
    assert set(codes) == {200, 500}
    assert 50 < codes.count(500) < 150
    tested.ctl("fault", {"fault": "500", "rate": 0})
    assert all(tested.post(action="balance").status_code == 200 for _ in range(20))


def test_latency(tok: Sim) -> None:
    tok.ctl("latency", {"ms": 200})
    t0 = time.monotonic()
    assert "balance" in tok.api(action="balance")
    assert time.monotonic() - t0 >= 0.2
    t0 = time.monotonic()
    tok.get("health")
    assert time.monotonic() - t0 < 0.2  # control API is not delayed
    tok.ctl("latency", {"ms": 0})


# ------------------------------------------------------------------ control API


def test_reject(tok: Sim) -> None:
    tok.ctl("reject", {"error": "Not enough funds on balance", "count": 1})
    resp = tok.post(action="add", service=1, link="x", quantity=100)
    assert (resp.status_code, resp.json()) == (400, {"error": "Not enough funds on balance"})
    assert tok.api(action="add", service=1, link="x", quantity=100) == {"order": 1}
    tok.ctl("reject", {"error": "Service disabled", "count": -1})
    for _ in range(3):
        assert tok.api(action="add", service=1, link="x", quantity=100) == {
            "error": "Service disabled"
        }
    assert "balance" in tok.api(action="balance")  # only add is rejected
    tok.ctl("reject", {"error": None})
    assert tok.api(action="add", service=1, link="x", quantity=100) == {"order": 2}
    faults = {r["fault"] for r in tok.get("requests")["requests"]}
    assert faults == {None}


def test_request_log_and_stats(tok: Sim) -> None:
    tok.api(action="services")
    tok.api(action="add", service=1, link="x", quantity=100)
    tok.api(action="status", order=1)
    tok.post(key="bad", action="balance")
    tok.post()
    log = tok.get("requests")["requests"]
    assert [r["action"] for r in log] == ["services", "add", "status", "balance", None]
    assert all(isinstance(r["t"], float) for r in log)
    adds = tok.get("requests?action=add")["requests"]
    assert len(adds) == 1
    assert adds[0]["params"] == {"action": "add", "service": "1", "link": "x", "quantity": "100"}
    stats = tok.get("stats")
    assert stats["total"] == 5
    assert stats["actions"]["add"] == 1 and stats["actions"]["balance"] == 1


def test_catalog_replace_either_shape(tok: Sim, tested: Sim) -> None:
    tested_shape = [
        {"service": 7, "name": "IG Likes", "rate": "0.9", "min": 10, "max": 100,
         "category": "Instagram", "type": "Default", "refill": 1, "cancel": 0, "dripfeed": 0},
    ]  # fmt: skip
    tok.ctl("catalog", {"services": tested_shape})
    assert tok.api(action="services") == [
        {
            "service": 7,
            "name": "IG Likes",
            "type": "Default",
            "category": "Instagram",
            "rate": "0.90000",
            "min": "10",
            "max": "100",
            "refill": True,
            "cancel": False,
            "form": None,
        }
    ]
    assert tok.api(action="add", service=1, link="x", quantity=100) == {
        "error": "Incorrect service ID"
    }
    tok_shape = [
        {"service": "3", "name": "Views", "type": "Default", "category": "TikTok",
         "rate": "0.01234", "min": "100", "max": "1000", "refill": True, "cancel": False,
         "form": None},
    ]  # fmt: skip
    tested.ctl("catalog", {"services": tok_shape})
    [svc] = tested.api(action="services")
    assert (svc["service"], svc["rate"], svc["min"], svc["refill"]) == (3, "0.01234", 100, 1)
    tok.ctl("reset")
    assert len(tok.api(action="services")) == 9


def test_reset(tok: Sim) -> None:
    tok.api(action="add", service=1, link="x", quantity=100)
    tok.ctl("fault", {"fault": "500", "rate": 0.0})
    tok.ctl("reset")
    assert tok.get("orders") == {"orders": []}
    assert tok.get("stats") == {"actions": {}, "total": 0}
    assert tok.api(action="balance")["balance"] == "100.00000"
    assert tok.api(action="add", service=1, link="x", quantity=100) == {"order": 1}


def test_bad_control_request(tok: Sim) -> None:
    resp = tok.http.post("/_sim/fault", json={"fault": "explode"})
    assert resp.status_code == 400 and "error" in resp.json()
    resp = tok.http.post("/_sim/balance", content=b"{not json")
    assert resp.status_code == 400


# ------------------------------------------------------------------ in-process API


def test_load_catalog(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps([{"service": 5, "name": "X", "rate": 0.9, "min": 1, "max": 9}]))
    catalog = load_catalog(str(path))
    assert catalog[0]["rate"] == Decimal("0.9")
    sim = Simulator(SimOptions(dialect="testedsmm", catalog=catalog))
    resp = sim.handle("/api/v2", "POST", {}, b"key=k&action=services")
    assert json.loads(resp.body)[0]["rate"] == "0.90"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"name": "no id"}]))
    with pytest.raises(ValueError):
        load_catalog(str(bad))


def test_start_server_in_process() -> None:
    async def scenario() -> dict[str, Any]:
        server = await start_server(SimOptions(dialect="testedsmm"), "127.0.0.1", 0)
        port = cast(asyncio.Server, server).sockets[0].getsockname()[1]
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                resp = await client.post("/api/v2", data={"key": "k", "action": "balance"})
                return dict(resp.json())
        finally:
            server.close()
            await server.wait_closed()

    assert asyncio.run(scenario()) == {"balance": "1000.00", "currency": "USD"}
