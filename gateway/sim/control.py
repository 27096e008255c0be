"""The control API under ``/_sim/``: JSON, no key, for tests and benchmarks.

Reads: ``GET requests[?action=...]`` (the request log, faulted requests included),
``orders``, ``orders/<id>``, ``stats``, ``balance``, ``behaviour`` and ``clock``;
``health`` answers any method.
Changes (``POST`` with a JSON body): ``fault`` (``{"fault": "429", "rate": 1,
"action": "status", "count": 1, "retry_after": 2}``: see :func:`_set_fault`),
``latency``, ``balance``, ``catalog``, ``reject`` (refuse the next adds with an
error), ``behaviour`` (``{"service": 101, "stall_rate": 0.2, "seed": 7}``: see
:func:`_set_behaviour`), ``behaviour/reset``, ``clock`` (``{"advance_s": 60,
"frozen": true}``), ``orders/<id>`` (force a status) and ``reset``. A malformed body raises;
:class:`~gateway.sim.simulator.Simulator` turns that into a 400. Money here always
has 5 decimals, whatever the dialect.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from gateway.sim.codec import DECODE, NOT_FOUND, OK, SimResponse, json_response, money, to_int
from gateway.sim.options import FAULTS, check_retry_after
from gateway.sim.state import Order

if TYPE_CHECKING:
    from gateway.sim.simulator import Simulator

_ORDER_PREFIX = "orders/"


def answer(sim: Simulator, method: str, sub: str, query: str, body: bytes) -> SimResponse:
    """Answer ``/_sim/<sub>``."""
    if sub == "health":
        return OK
    if method == "GET":
        return _get(sim, sub, query)
    if method != "POST":
        return NOT_FOUND
    # decoded before the path is looked at: a bad body is a 400 on any path
    data: Any = DECODE(body) if body.strip() else {}
    change = _CHANGES.get(sub)
    if change is not None:
        change(sim, data)
        return OK
    if sub.startswith(_ORDER_PREFIX):
        return _force(sim, sub[len(_ORDER_PREFIX) :], data)
    return NOT_FOUND


# --------------------------------------------------------------------------- reads


def _order_view(sim: Simulator, o: Order, now: float) -> dict[str, Any]:
    status, start, remains = sim.book.progress(o, now)
    return {
        "order": o.id,
        "service": o.service,
        "link": o.link,
        "quantity": o.quantity,
        "runs": o.runs,
        "interval": o.interval,
        "charge": money(o.charge, 5),
        "status": status,
        "start_count": start,
        "remains": remains,
        "refunded": money(o.refunded, 5),
        "params": o.params,
        "fate": o.fate.kind,  # "complete" | "partial" | "stall", as drawn when placed
    }


def _get(sim: Simulator, sub: str, query: str) -> SimResponse:
    q = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
    if sub == "requests":
        action = q.get("action")
        if action:
            return json_response({"requests": [r for r in sim.requests if r["action"] == action]})
        return json_response({"requests": list(sim.requests)})
    if sub == "orders":
        sim.book.settle_all()
        now = sim.book.clock.now()
        return json_response(
            {"orders": [_order_view(sim, o, now) for o in sim.book.orders.values()]}
        )
    if sub.startswith(_ORDER_PREFIX):
        o = sim.book.lookup(sub[len(_ORDER_PREFIX) :])
        if o is None:
            return NOT_FOUND
        return json_response(_order_view(sim, o, sim.book.clock.now()))
    if sub == "stats":
        return json_response({"actions": dict(sim.stats), "total": sim.total})
    if sub == "balance":
        sim.book.settle_all()
        return json_response({"balance": money(sim.book.balance, 5), "currency": sim.currency})
    if sub == "behaviour":
        return json_response(_behaviour_view(sim))
    if sub == "clock":
        return json_response(sim.book.clock.view())
    return NOT_FOUND


def _behaviour_view(sim: Simulator) -> dict[str, Any]:
    """The seed, the control API's settings, and what every service does now (times
    left unset shown as they follow from ``progress_s``)."""
    third = max(0.0, sim.book.progress_s) / 3
    services: dict[str, Any] = {}
    for svc in sim.catalog.values():
        view = sim.behaviour_of(svc).view()
        for name in ("start_delay_s", "complete_s"):
            if view[name] is None:
                view[name] = third
        services[str(svc.id)] = view
    return {"seed": sim.book.seed, **sim.behaviours.view(), "effective": services}


# --------------------------------------------------------------------------- changes


def _set_fault(sim: Simulator, data: Any) -> None:
    """``{"fault": F, "rate": R, "action": A, "count": N, "retry_after": S}``.

    Replaces the whole fault setting; only ``fault`` is needed (``null`` clears it).
    ``rate`` defaults to 1; ``action`` (default: any) limits it to one action;
    ``count`` (default: unlimited) clears it after N faulted requests;
    ``retry_after`` is the ``Retry-After`` of ``429``/``503`` in seconds (default:
    the simulator's ``--retry-after``; ``null``: no header).
    """
    if not isinstance(data, dict):
        raise TypeError("expected an object")
    fault = data.get("fault")
    if fault is not None:
        fault = str(fault)
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}")
    rate = data.get("rate")
    action = data.get("action")
    count = None
    if data.get("count") is not None:
        count = to_int(data["count"])
        if count is None or count < 0:
            raise ValueError(f"count: expected a whole number >= 0, got {data['count']!r}")
    retry_after = (
        check_retry_after(data["retry_after"]) if "retry_after" in data else sim.options.retry_after
    )
    sim.fault = fault if count != 0 else None
    sim.fault_rate = float(rate) if rate is not None else (1.0 if fault else 0.0)
    sim.fault_action = str(action) if action is not None else None
    sim.fault_count = count if sim.fault is not None else None
    sim.retry_after = retry_after


def _set_latency(sim: Simulator, data: Any) -> None:
    ms = data.get("ms", 0) if isinstance(data, dict) else data
    sim.latency_ms = max(0.0, float(ms or 0))


def _set_balance(sim: Simulator, data: Any) -> None:
    value = data.get("balance") if isinstance(data, dict) else data
    sim.book.balance = Decimal(str(value))


def _set_catalog(sim: Simulator, data: Any) -> None:
    services = data.get("services") if isinstance(data, dict) else data
    if not isinstance(services, list):
        raise TypeError('expected {"services": [...]}')
    sim.set_catalog(services)


def _set_reject(sim: Simulator, data: Any) -> None:
    if not isinstance(data, dict):
        raise TypeError("expected an object")
    error = data.get("error")
    count = to_int(data.get("count", 1))
    if error is None or count == 0:
        sim.reject_error, sim.reject_count = None, 0
    else:
        sim.reject_error = str(error)
        # a count that is not a number means one; a negative one, until cleared
        sim.reject_count = count if count is not None else 1


def _set_behaviour(sim: Simulator, data: Any) -> None:
    """``{"service": 101, "start_delay_s": 30, ..., "seed": 7}``.

    Sets the fields given (``null`` unsets one) for that service (or a list of ids;
    without ``service``, for every service, under what is set for one service), over
    its catalog entry. ``seed`` alone re-seeds the draws. New orders follow; placed
    ones keep their fate.
    """
    if not isinstance(data, dict):
        raise TypeError("expected an object")
    seed = data.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed: expected an integer, got {seed!r}")
    fields = {k: v for k, v in data.items() if k not in ("service", "seed")}
    sim.behaviours.change(data.get("service"), fields)
    if seed is not None:
        sim.book.seed = seed


def _reset_behaviour(sim: Simulator, data: Any) -> None:
    """``{"service": 101}``: that service back to its catalog entry; ``{}``: every
    service, and the seed back to ``--seed``."""
    service = data.get("service") if isinstance(data, dict) else None
    sim.behaviours.reset(service)
    if service is None:
        sim.book.seed = sim.options.seed


def _set_clock(sim: Simulator, data: Any) -> None:
    """``{"advance_s": 60}`` moves the clock on; ``{"frozen": true}`` stops real time
    moving it (``false`` lets it run again). Orders and refills progress by it."""
    if not isinstance(data, dict):
        raise TypeError("expected an object")
    unknown = set(data) - {"advance_s", "frozen"}
    if unknown:
        raise ValueError(f"unknown clock fields {sorted(unknown)} (use advance_s, frozen)")
    advance = data.get("advance_s")
    seconds = 0.0
    if advance is not None:
        if isinstance(advance, bool) or not isinstance(advance, int | float):
            raise TypeError(f"advance_s: expected seconds, got {advance!r}")
        seconds = float(advance)
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"advance_s: expected seconds >= 0, got {advance!r}")
    frozen = data.get("frozen")
    if frozen is not None and not isinstance(frozen, bool):
        raise TypeError(f"frozen: expected true or false, got {frozen!r}")
    if frozen is not None:
        sim.book.clock.freeze(frozen)
    sim.book.clock.advance(seconds)


def _reset(sim: Simulator, data: Any) -> None:
    sim.reset()


_CHANGES: dict[str, Callable[[Simulator, Any], None]] = {
    "fault": _set_fault,
    "latency": _set_latency,
    "balance": _set_balance,
    "catalog": _set_catalog,
    "reject": _set_reject,
    "behaviour": _set_behaviour,
    "behaviour/reset": _reset_behaviour,
    "clock": _set_clock,
    "reset": _reset,
}


def _force(sim: Simulator, raw_id: str, data: Any) -> SimResponse:
    o = sim.book.lookup(raw_id)
    if o is None:
        return NOT_FOUND
    if not isinstance(data, dict) or not isinstance(data.get("status"), str):
        raise TypeError('expected {"status": ...}')
    sim.book.force(o, data["status"], to_int(data.get("start_count")), to_int(data.get("remains")))
    return OK
