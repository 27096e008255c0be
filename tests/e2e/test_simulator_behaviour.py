"""The simulator misbehaves per service (issue 12): slow starts, long runs, partial
deliveries, stalls, refused refills and cancels; from its catalog file and its control
API, reproducible from a seed, on a clock the tests move without sleeping.

Every test talks to real simulator processes over HTTP.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gateway.sim import SimOptions, Simulator, load_catalog
from harness import Sim

SEED = 7
PROGRESS_S = 3600  # unset times: Pending for 1200 s, In progress for 1200 s
N = 200  # orders per share measured
# a catalog file with behaviour fields next to the service's own
FILE_CATALOG = [
    {"service": 11, "name": "Followers", "type": "Default", "category": "TikTok",
     "rate": "0.40", "min": 20, "max": 5000, "refill": 1, "cancel": 1,
     "stall_rate": 1},
    {"service": 12, "name": "Likes", "type": "Default", "category": "TikTok",
     "rate": "0.30", "min": 10, "max": 100000, "refill": 1, "cancel": 1,
     "start_delay_s": 5, "complete_s": 10, "partial_rate": "0.5", "delivered_share": 0.25,
     "refuse_cancel": "Order is not cancelable", "reject_refill": True},
    {"service": 13, "name": "Views", "rate": "0.01", "min": 100, "max": 1000000},
]  # fmt: skip


@pytest.fixture(scope="module")
def tok_proc() -> Iterator[Sim]:
    sim = Sim("toksmm", "--progress-s", str(PROGRESS_S), "--seed", str(SEED),
              "--balance", "100000")  # fmt: skip
    yield sim
    sim.stop()


@pytest.fixture(scope="module")
def tested_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    path = tmp_path_factory.mktemp("catalog") / "behaviour.json"
    path.write_text(json.dumps(FILE_CATALOG))
    sim = Sim("testedsmm", "--progress-s", str(PROGRESS_S), "--seed", str(SEED),
              "--balance", "100000", "--catalog", str(path))  # fmt: skip
    yield sim
    sim.stop()


@pytest.fixture
def tok(tok_proc: Sim) -> Sim:
    tok_proc.reset()
    return tok_proc


@pytest.fixture
def tested(tested_proc: Sim) -> Sim:
    tested_proc.reset()
    return tested_proc


# --------------------------------------------------------------------------- helpers


def call(sim: Sim, **params: Any) -> Any:
    return sim.http.post("/api/v2", data={"key": "k", **params}).json()


def add(sim: Sim, service: int, quantity: int = 1000, link: str = "https://t.example/u") -> int:
    answer = call(sim, action="add", service=service, link=link, quantity=quantity)
    return int(answer["order"])


def adds(sim: Sim, service: int, n: int = N, quantity: int = 1000) -> list[int]:
    return [add(sim, service, quantity) for _ in range(n)]


def statuses(sim: Sim, ids: list[int]) -> dict[int, dict[str, Any]]:
    """Every order's status through the provider API (multi status, 100 at a time)."""
    out: dict[int, dict[str, Any]] = {}
    for i in range(0, len(ids), 100):
        chunk = ids[i : i + 100]
        answer = call(sim, action="status", orders=",".join(map(str, chunk)))
        if isinstance(answer, dict):  # toksmm: keyed by id
            out.update({int(k): v for k, v in answer.items()})
        else:  # testedsmm: a list
            out.update({int(item["order"]): item for item in answer})
    return out


def behave(sim: Sim, **fields: Any) -> None:
    assert sim.control("behaviour", fields) == {"ok": True}


def advance(sim: Sim, seconds: float) -> None:
    assert sim.control("clock", {"advance_s": seconds}) == {"ok": True}


def freeze(sim: Sim) -> None:
    assert sim.control("clock", {"frozen": True}) == {"ok": True}


def balance(sim: Sim) -> Decimal:
    return Decimal(sim.http.get("/_sim/balance").json()["balance"])


def fates(sim: Sim) -> list[str]:
    return [o["fate"] for o in sim.orders()]


# --------------------------------------------------------------------------- time


def test_time_moves_by_the_clock_not_by_sleeping(tok: Sim) -> None:
    freeze(tok)
    clock = tok.http.get("/_sim/clock").json()
    assert clock["frozen"] is True and clock["advanced_s"] == 0
    assert tok.http.get("/_sim/clock").json() == clock, "a frozen clock stands still"
    oid = add(tok, 1)
    assert call(tok, action="status", order=oid) == {
        "charge": "0.50000", "start_count": "0", "status": "Pending", "remains": "1000",
        "currency": "USD",
    }  # fmt: skip
    advance(tok, PROGRESS_S / 3 - 1)
    assert call(tok, action="status", order=oid)["status"] == "Pending"
    advance(tok, 1)
    running = call(tok, action="status", order=oid)
    assert running["status"] == "In progress" and running["remains"] == "500"
    assert int(running["start_count"]) > 0
    advance(tok, PROGRESS_S / 3)
    done = call(tok, action="status", order=oid)
    assert done["status"] == "Completed" and done["remains"] == "0"
    assert done["start_count"] == running["start_count"]
    assert tok.http.get("/_sim/clock").json()["advanced_s"] == 2 * PROGRESS_S / 3


def test_a_frozen_clock_runs_again_from_where_it_stood(tok: Sim) -> None:
    freeze(tok)
    before = tok.http.get("/_sim/clock").json()["now_s"]
    assert tok.control("clock", {"frozen": False, "advance_s": 10}) == {"ok": True}
    after = tok.http.get("/_sim/clock").json()
    assert after["frozen"] is False and 10 <= after["now_s"] - before < 11


def test_start_delay_and_completion_time_per_service(tok: Sim) -> None:
    freeze(tok)
    behave(tok, service=1, start_delay_s=30, complete_s=60)
    slow, other = add(tok, 1), add(tok, 2)
    advance(tok, 29.5)
    assert call(tok, action="status", order=slow)["status"] == "Pending"
    advance(tok, 0.5)
    running = call(tok, action="status", order=slow)
    assert (running["status"], running["remains"]) == ("In progress", "500")
    advance(tok, 59.5)
    assert call(tok, action="status", order=slow)["status"] == "In progress"
    advance(tok, 0.5)
    assert call(tok, action="status", order=slow)["status"] == "Completed"
    assert call(tok, action="status", order=other)["status"] == "Pending", "service 2 as before"
    view = tok.http.get("/_sim/behaviour").json()
    assert view["per_service"] == {"1": {"start_delay_s": 30.0, "complete_s": 60.0}}
    assert view["effective"]["1"]["start_delay_s"] == 30.0
    assert view["effective"]["2"]["start_delay_s"] == PROGRESS_S / 3


# --------------------------------------------------------------------------- outcomes


def test_partial_rate_and_delivered_share(tok: Sim) -> None:
    behave(tok, service=1, partial_rate=0.3, delivered_share=0.4, start_delay_s=0, complete_s=0)
    start = balance(tok)
    ids = adds(tok, 1)
    answers = statuses(tok, ids)
    counts = Counter(a["status"] for a in answers.values())
    assert set(counts) == {"Completed", "Partial"}
    assert abs(counts["Partial"] - 0.3 * N) <= 20, counts
    for a in answers.values():
        if a["status"] == "Partial":  # 1000 x (1 - 0.4) remain; charged for 400
            assert (a["remains"], a["charge"]) == ("600", "0.20000")
        else:
            assert (a["remains"], a["charge"]) == ("0", "0.50000")
    # each Partial refunds 0.30 once, however often it is polled
    statuses(tok, ids)
    assert balance(tok) == start - N * Decimal("0.5") + counts["Partial"] * Decimal("0.3")


def test_stall_rate_orders_never_start_and_cancel_with_nothing_delivered(tok: Sim) -> None:
    behave(tok, service=1, stall_rate=0.25, start_delay_s=0, complete_s=0)
    ids = adds(tok, 1)
    advance(tok, 30 * 86400)  # a month later
    answers = statuses(tok, ids)
    stalled = [oid for oid, a in answers.items() if a["status"] == "Pending"]
    assert abs(len(stalled) - 0.25 * N) <= 18, len(stalled)
    assert all(answers[oid]["start_count"] == "0" and answers[oid]["remains"] == "1000"
               for oid in stalled)  # fmt: skip
    assert {a["status"] for oid, a in answers.items() if oid not in stalled} == {"Completed"}
    before = balance(tok)
    assert call(tok, action="cancel", orders=str(stalled[0])) == [
        {"order": stalled[0], "cancel": 1}
    ]
    canceled = call(tok, action="status", order=stalled[0])
    assert (canceled["status"], canceled["remains"], canceled["start_count"]) == (
        "Canceled", "1000", "0",
    )  # fmt: skip
    assert canceled["charge"] == "0.00000" and balance(tok) == before + Decimal("0.5")


def test_stall_and_partial_rates_are_shares_of_all_orders(tok: Sim) -> None:
    behave(tok, stall_rate=0.2, partial_rate=0.3, start_delay_s=0, complete_s=0)  # every service
    ids = adds(tok, 2, quantity=100)
    counts = Counter(a["status"] for a in statuses(tok, ids).values())
    assert abs(counts["Pending"] - 0.2 * N) <= 17, counts
    assert abs(counts["Partial"] - 0.3 * N) <= 20, counts
    assert counts["Pending"] + counts["Partial"] + counts["Completed"] == N
    assert Counter(fates(tok)) == {
        "stall": counts["Pending"], "partial": counts["Partial"], "complete": counts["Completed"]
    }  # fmt: skip


def test_placed_orders_keep_the_behaviour_they_were_placed_with(tok: Sim) -> None:
    behave(tok, service=1, stall_rate=1)
    stuck = add(tok, 1)
    behave(tok, service=1, stall_rate=None, start_delay_s=0, complete_s=0)
    fine = add(tok, 1)
    answers = statuses(tok, [stuck, fine])
    assert (answers[stuck]["status"], answers[fine]["status"]) == ("Pending", "Completed")


# --------------------------------------------------------------------------- seed


def test_fates_are_reproducible_from_the_seed(tok: Sim, tested: Sim) -> None:
    rates = {"stall_rate": 0.1, "partial_rate": 0.4}
    behave(tok, service=1, **rates)
    adds(tok, 1, n=100)
    first = fates(tok)
    assert len(set(first)) == 3
    tok.reset()  # the seed stays --seed
    behave(tok, service=1, **rates)
    adds(tok, 1, n=100)
    assert fates(tok) == first
    # another process, another dialect, the same seed and order ids: the same fates
    behave(tested, service=13, **rates)
    adds(tested, 13, n=100)
    assert fates(tested) == first
    tok.reset()
    behave(tok, service=1, seed=SEED + 1, **rates)
    adds(tok, 1, n=100)
    other = fates(tok)
    assert other != first
    assert tok.http.get("/_sim/behaviour").json()["seed"] == SEED + 1


# --------------------------------------------------------------------------- refill


def test_refuse_refill_answers_an_error(tok: Sim, tested: Sim) -> None:
    behave(tok, service=1, refuse_refill=True, start_delay_s=0, complete_s=0)
    oid = add(tok, 1)
    assert call(tok, action="status", order=oid)["status"] == "Completed"
    resp = tok.http.post("/api/v2", data={"key": "k", "action": "refill", "order": oid})
    assert resp.status_code == 400
    assert resp.json() == {"error": "Refill is disabled for this service"}
    assert call(tok, action="refill", orders=str(oid)) == [
        {"order": oid, "refill": {"error": "Refill is disabled for this service"}}
    ]
    behave(tok, service=1, refuse_refill="Refill is not available for this order")
    other = add(tok, 1)
    assert call(tok, action="refill", order=other) == {
        "error": "Refill is not available for this order"
    }
    services = {s["service"]: s for s in call(tok, action="services")}
    assert services[1]["refill"] is True, "the service still advertises refills"
    assert "refuse_refill" not in services[1]
    # testedsmm: HTTP 200 with the error
    behave(tested, service=11, stall_rate=0, start_delay_s=0, complete_s=0, refuse_refill=True)
    tid = add(tested, 11, quantity=100)
    assert call(tested, action="refill", order=tid) == {
        "error": "Refill is disabled for this service"
    }


def test_reject_refill_takes_the_refill_which_ends_rejected(tested: Sim) -> None:
    freeze(tested)
    behave(tested, service=12, start_delay_s=0, complete_s=0)
    oid = add(tested, 12, quantity=100)
    rid = call(tested, action="refill", order=oid)["refill"]
    assert isinstance(rid, int)
    assert call(tested, action="refill_status", refill=rid) == {"status": "Pending"}
    advance(tested, PROGRESS_S / 2)
    assert call(tested, action="refill_status", refill=rid) == {"status": "Rejected"}
    assert call(tested, action="refill_status", refills=str(rid)) == [
        {"refill": rid, "status": "Rejected"}
    ]


# --------------------------------------------------------------------------- cancel


def test_refuse_cancel_answers_an_error_and_nothing_moves(tok: Sim, tested: Sim) -> None:
    behave(tok, service=1, refuse_cancel=True)
    oid = add(tok, 1)
    before = balance(tok)
    assert call(tok, action="cancel", orders=str(oid)) == [
        {"order": oid, "cancel": {"error": "Cancel is disabled for this service"}}
    ]
    assert call(tok, action="status", order=oid)["status"] == "Pending"
    assert balance(tok) == before
    oid2 = add(tested, 12, quantity=100)  # refuse_cancel from the catalog file
    assert call(tested, action="cancel", orders=str(oid2)) == [
        {"order": oid2, "canceled": False}
    ]
    behave(tested, service=12, refuse_cancel=False)
    oid3 = add(tested, 12, quantity=100)
    assert call(tested, action="cancel", orders=str(oid3)) == [{"order": oid3, "canceled": True}]


def test_cancel_before_the_start_cancels_after_it_ends_partial(tok: Sim) -> None:
    freeze(tok)
    behave(tok, service=1, start_delay_s=10, complete_s=100)
    early, late = add(tok, 1), add(tok, 1)
    before = balance(tok)
    assert call(tok, action="cancel", orders=str(early)) == [{"order": early, "cancel": 1}]
    assert call(tok, action="status", order=early) == {
        "charge": "0.00000", "start_count": "0", "status": "Canceled", "remains": "1000",
        "currency": "USD",
    }  # fmt: skip
    advance(tok, 10)
    assert call(tok, action="status", order=late)["status"] == "In progress"
    assert call(tok, action="cancel", orders=str(late)) == [{"order": late, "cancel": 1}]
    ended = call(tok, action="status", order=late)
    assert (ended["status"], ended["remains"], ended["charge"]) == ("Partial", "500", "0.25000")
    assert int(ended["start_count"]) > 0
    advance(tok, 1000)
    assert call(tok, action="status", order=late)["status"] == "Partial", "pinned"
    assert balance(tok) == before + Decimal("0.75")


# --------------------------------------------------------------------------- catalog file


def test_behaviour_from_the_catalog_file(tested: Sim) -> None:
    view = tested.http.get("/_sim/behaviour").json()
    assert (view["seed"], view["every"], view["per_service"]) == (SEED, {}, {})
    assert view["effective"]["11"]["stall_rate"] == 1.0
    assert view["effective"]["12"] == {
        "start_delay_s": 5.0, "complete_s": 10.0, "partial_rate": 0.5, "delivered_share": 0.25,
        "stall_rate": 0.0, "refuse_refill": None, "reject_refill": True,
        "refuse_cancel": "Order is not cancelable",
    }  # fmt: skip
    assert view["effective"]["13"]["stall_rate"] == 0.0
    services = call(tested, action="services")
    assert all(set(s) <= {"service", "name", "type", "category", "rate", "min", "max",
                          "refill", "cancel", "dripfeed"} for s in services)  # fmt: skip
    stuck = add(tested, 11, quantity=100)
    freeze(tested)
    ids = adds(tested, 12, n=100, quantity=100)
    advance(tested, 5)
    assert {a["status"] for a in statuses(tested, ids).values()} == {"In progress"}
    advance(tested, 10)
    answers = statuses(tested, [stuck, *ids])
    assert answers[stuck]["status"] == "Pending"
    counts = Counter(answers[i]["status"] for i in ids)
    assert abs(counts["Partial"] - 50) <= 15, counts
    assert {answers[i]["remains"] for i in ids if answers[i]["status"] == "Partial"} == {"75"}


def test_yaml_catalog_and_bad_fields(tmp_path: Path) -> None:
    good = tmp_path / "catalog.yaml"
    good.write_text(
        "services:\n"
        "  - {service: 5, name: X, rate: 0.9, min: 1, max: 900, refill: true,\n"
        "     stall_rate: 0.5, refuse_refill: 'No refill', start_delay_s: 60}\n"
    )
    sim = Simulator(SimOptions(dialect="testedsmm", catalog=load_catalog(str(good))))
    [svc] = sim.catalog.values()
    b = sim.behaviour_of(svc)
    assert (b.stall_rate, b.refuse_refill, b.start_delay_s) == (0.5, "No refill", 60.0)
    resp = sim.handle("/api/v2", "POST", {}, b"key=k&action=services")
    assert json.loads(resp.body)[0]["rate"] == "0.90"
    for bad in ({"stall_rate": 2}, {"start_delay_s": -1}, {"complete_s": "soon"},
                {"reject_refill": "maybe"}):  # fmt: skip
        path = tmp_path / "bad.json"
        path.write_text(json.dumps([{"service": 5, "rate": "1", **bad}]))
        with pytest.raises(ValueError, match="service 5"):
            load_catalog(str(path))


def test_a_catalog_replaced_through_control_keeps_the_control_settings(tok: Sim) -> None:
    behave(tok, service=1, refuse_cancel=True)
    tok.control("catalog", {"services": [
        {"service": 1, "name": "F", "rate": "1", "min": 1, "max": 10000, "cancel": 1,
         "stall_rate": 1},
    ]})  # fmt: skip
    effective = tok.http.get("/_sim/behaviour").json()["effective"]
    assert effective["1"]["stall_rate"] == 1.0
    assert effective["1"]["refuse_cancel"] == "Cancel is disabled for this service"


# --------------------------------------------------------------------------- control


def test_behaviour_reset_per_service_and_whole(tested: Sim) -> None:
    behave(tested, service=[12, 13], stall_rate=0.5)
    behave(tested, complete_s=1)  # every service
    behave(tested, seed=99)
    view = tested.http.get("/_sim/behaviour").json()
    assert view["every"] == {"complete_s": 1.0} and view["seed"] == 99
    assert view["per_service"] == {"12": {"stall_rate": 0.5}, "13": {"stall_rate": 0.5}}
    assert view["effective"]["11"]["complete_s"] == 1.0
    assert tested.control("behaviour/reset", {"service": 12}) == {"ok": True}
    view = tested.http.get("/_sim/behaviour").json()
    assert view["per_service"] == {"13": {"stall_rate": 0.5}} and view["seed"] == 99
    assert view["effective"]["12"]["stall_rate"] == 0.0
    assert tested.control("behaviour/reset") == {"ok": True}
    view = tested.http.get("/_sim/behaviour").json()
    assert (view["seed"], view["every"], view["per_service"]) == (SEED, {}, {})
    assert view["effective"]["11"]["stall_rate"] == 1.0, "the catalog file's stays"
    assert view["effective"]["12"]["complete_s"] == 10.0


def test_reset_restores_clock_and_behaviour(tok: Sim) -> None:
    freeze(tok)
    advance(tok, 500)
    behave(tok, stall_rate=1, seed=3)
    tok.reset()
    clock = tok.http.get("/_sim/clock").json()
    assert (clock["advanced_s"], clock["frozen"]) == (0, False)
    view = tok.http.get("/_sim/behaviour").json()
    assert (view["seed"], view["every"]) == (SEED, {})


@pytest.mark.parametrize(("path", "body"), [
    ("behaviour", {"service": 1, "stall_rate": 1.5}),
    ("behaviour", {"service": 1, "stal_rate": 0.5}),
    ("behaviour", {"service": 1, "partial_rate": 0.5, "complete_s": -3}),
    ("behaviour", {"service": "x", "stall_rate": 0.5}),
    ("behaviour", {"seed": "seven"}),
    ("behaviour", [1]),
    ("clock", {"advance_s": -1}),
    ("clock", {"advance": 5}),
    ("clock", {"frozen": "yes"}),
])  # fmt: skip
def test_bad_control_requests_change_nothing(tok: Sim, path: str, body: Any) -> None:
    resp = tok.http.post(f"/_sim/{path}", json=body)
    assert resp.status_code == 400 and "error" in resp.json()
    view = tok.http.get("/_sim/behaviour").json()
    assert (view["every"], view["per_service"], view["seed"]) == ({}, {}, SEED)
    assert tok.http.get("/_sim/clock").json()["advanced_s"] == 0
