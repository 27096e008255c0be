"""`Retry-After` over real sockets: the simulator's 429/503 faults, and the gateway's
upstream client honouring them.

- The simulator sends `Retry-After` with a `429` or `503` fault (control API and
  command line), limited to one action and to the next N requests if asked.
- A read answered 429/503 with `Retry-After: N` is asked again N seconds later,
  measured on the simulator's own request log (when each request arrived), not on
  the client's clock; without the header the gateway's own short backoff applies.
- A write (`add`) answered 429/503 may have been created: it is never sent again,
  anywhere, and the client is told not to resend it.

The cap on a huge `Retry-After` (`MAX_BACKOFF_S`, a module constant of the gateway's
upstream client) is proved in `tests/unit/test_retry_after.py`, where the cap can be
lowered and the wait measured without a 5-second test.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.actions.common import NOT_CONFIRMED
from harness import Gateway, Sim

LINK = "https://tiktok.com/@retry"


@pytest.fixture
def clean_sims(sims: tuple[Sim, Sim]) -> Iterator[tuple[Sim, Sim]]:
    """The session's simulators, reset before and after (a fault must not leak)."""
    for sim in sims:
        sim.reset()
    try:
        yield sims
    finally:
        for sim in sims:
            sim.reset()


def _post(sim: Sim, **fields: Any) -> httpx.Response:
    return sim.http.post("/api/v2", data={"key": "k", **{k: str(v) for k, v in fields.items()}})


# ----------------------------------------------------------------- the simulator


@pytest.mark.parametrize(("fault", "ctype", "body"), [
    ("429", "application/json", b'{"error":"Too many requests"}'),
    ("503", "text/plain", b"Service Unavailable"),
])
def test_sim_fault_sends_retry_after(clean_sims: tuple[Sim, Sim], fault: str, ctype: str,
                                     body: bytes) -> None:
    a, _ = clean_sims
    a.control("fault", {"fault": fault, "retry_after": 7})
    resp = _post(a, action="balance")
    assert resp.status_code == int(fault)
    assert resp.headers["retry-after"] == "7"
    assert resp.headers["content-type"].startswith(ctype)
    assert resp.content == body
    assert resp.headers["connection"] == "keep-alive"  # the connection stays usable
    a.control("fault", {"fault": fault, "retry_after": 0.25})
    assert _post(a, action="balance").headers["retry-after"] == "0.25"
    a.control("fault", {"fault": fault, "retry_after": None})  # null: no header at all
    resp = _post(a, action="balance")
    assert resp.status_code == int(fault) and "retry-after" not in resp.headers
    a.control("fault", {"fault": fault})  # absent: the --retry-after default, 1 s
    assert _post(a, action="balance").headers["retry-after"] == "1"
    [entry, *_] = a.requests("balance")
    assert entry["fault"] == fault


def test_sim_fault_limited_to_one_action_and_a_count(clean_sims: tuple[Sim, Sim]) -> None:
    a, _ = clean_sims
    a.control("fault", {"fault": "429", "action": "status", "count": 2, "retry_after": 3})
    assert _post(a, action="balance").status_code == 200  # another action: not faulted
    codes = [_post(a, action="status", order=1).status_code for _ in range(3)]
    assert codes == [429, 429, 400]  # then the fault clears itself ("Incorrect order ID")
    assert [r["fault"] for r in a.requests("status")] == ["429", "429", None]
    assert _post(a, action="balance").status_code == 200


def test_sim_bad_retry_after_is_refused(clean_sims: tuple[Sim, Sim]) -> None:
    a, _ = clean_sims
    for body in ({"fault": "429", "retry_after": -1}, {"fault": "503", "retry_after": "soon"},
                 {"fault": "429", "count": -2}, {"fault": "418"}):
        resp = a.http.post("/_sim/fault", json=body)
        assert resp.status_code == 400, body
    assert _post(a, action="balance").status_code == 200  # nothing was changed


def test_sim_retry_after_from_the_command_line() -> None:
    sim = Sim("toksmm", "--fault", "503", "--retry-after", "9", "--fault-action", "services",
              "--fault-count", "1")
    try:
        assert _post(sim, action="balance").status_code == 200
        first = _post(sim, action="services")
        assert (first.status_code, first.headers["retry-after"]) == (503, "9")
        assert _post(sim, action="services").status_code == 200
        sim.reset()  # back to the command line's fault
        assert _post(sim, action="services").status_code == 503
    finally:
        sim.stop()


# ----------------------------------------------------------------- the gateway


def _place(gw: Gateway, a: Sim, b: Sim) -> tuple[int, Sim]:
    """An order placed through the gateway, and the simulator that holds it."""
    answer = gw.call(action="add", service=1, link=LINK, quantity=100)
    assert set(answer) == {"order"}, answer
    [holder] = [s for s in (a, b) if s.requests("add")]
    return answer["order"], holder


def _gaps(sim: Sim, action: str) -> tuple[list[str | None], list[float]]:
    """The faults and the gaps (s) between consecutive `action` requests the sim saw."""
    log = sim.requests(action)
    times = [r["t"] for r in log]
    return [r["fault"] for r in log], [t2 - t1 for t1, t2 in zip(times, times[1:], strict=False)]


@pytest.mark.parametrize("fault", ["429", "503"])
def test_read_waits_retry_after_before_asking_again(stack: tuple[Gateway, Sim, Sim],
                                                    fault: str) -> None:
    gw, a, b = stack
    order, holder = _place(gw, a, b)
    holder.control("fault", {"fault": fault, "action": "status", "count": 1, "retry_after": 1})
    answer = gw.call(action="status", order=order)
    assert answer["status"] == "Pending" and answer["remains"] == "100"
    faults, gaps = _gaps(holder, "status")
    assert faults == [fault, None]  # asked twice: the 429/503, then the answer
    # the second request arrived Retry-After (1 s) after the first, not the gateway's
    # own 0.1-0.2 s backoff; the slack is one local round trip and scheduling
    assert 0.98 <= gaps[0] < 1.4, gaps


def test_read_without_retry_after_uses_the_short_backoff(
        stack: tuple[Gateway, Sim, Sim]) -> None:
    gw, a, b = stack
    order, holder = _place(gw, a, b)
    holder.control("fault", {"fault": "429", "action": "status", "count": 1,
                             "retry_after": None})
    assert gw.call(action="status", order=order)["status"] == "Pending"
    faults, gaps = _gaps(holder, "status")
    assert faults == ["429", None]
    assert 0.09 <= gaps[0] < 0.6, gaps  # FIRST_BACKOFF_S x (1 + jitter): 0.1-0.2 s


@pytest.mark.parametrize("fault", ["429", "503"])
def test_add_answered_429_or_503_is_never_sent_again(stack: tuple[Gateway, Sim, Sim],
                                                     fault: str) -> None:
    gw, a, b = stack
    for sim in (a, b):  # every provider would answer the same: a re-send would be seen
        sim.control("fault", {"fault": fault, "action": "add", "retry_after": 0})
    resp = gw.post(action="add", service=1, link=LINK, quantity=100)
    assert resp.json() == {"error": NOT_CONFIRMED}
    assert resp.status_code < 500  # not an answer that invites a retry
    adds = a.requests("add") + b.requests("add")
    assert len(adds) == 1, adds  # sent once, to one provider, never again
    assert adds[0]["fault"] == fault
    assert a.orders() == [] and b.orders() == []
