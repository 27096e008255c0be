"""The counts: every promise the gateway broke in one run, with examples.

    1 answers without records    an id a panel got as {"order": N} that has no order
                                 record (or that a status call calls unknown)
    2 ids answered twice         one id given for two logical orders, one keyed order
                                 given two ids, or a record whose link is not the one
                                 the id was given for
    3 double dispatches          a logical order (link) with more than one upstream order
    4 unmapped upstream orders   an upstream order no record maps (provider + upstream
                                 id) and that `orders unknown` does not list (by link)
    5 placed, told to retry      an upstream order for a logical order whose panel was
                                 only ever told to retry (or that it failed): its last
                                 answer (a lost connection is no answer) invited a retry
    6 charges without records    money reserved (a ledger charge, not given back) for an
                                 order with no record; those still marked pending and
                                 younger than the gateway's reconciler grace are shown
                                 apart, not counted
    7 ledger drift               `keys check` mismatches; balance != top-ups minus what
                                 the standing orders cost; orders whose ledger entries
                                 net to anything but their record's cost
    8 refused after an idle      requests not served right after Redis died and came
      restart                    back while no request was in flight (counted by the
                                 fault step itself, chaos.faults)
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

from chaos.load import Logical
from chaos.truth import Truth
from gateway.models import OrderRecord
from gateway.money import refund

COUNTS = ("answers_without_records", "ids_answered_twice", "double_dispatches",
          "unmapped_upstream_orders", "placed_while_told_to_retry",
          "charges_without_records", "ledger_drift", "refused_after_idle_restart")
EXAMPLES = 8


@dataclass
class Findings:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    observations: dict[str, Any] = field(default_factory=dict)

    def add(self, count: str, example: dict[str, Any]) -> None:
        self.counts[count] += 1
        shown = self.examples.setdefault(count, [])
        if len(shown) < EXAMPLES:
            shown.append(example)


def cost(rec: OrderRecord) -> Decimal:
    """What a standing order costs its prepaid client once every refund is made."""
    if rec.state == "failed":
        return Decimal(0)
    total = rec.quantity * (rec.runs or 1)
    return rec.charge - refund(rec.charge, rec.status or "", rec.remains, total)


def answers_of(order: Logical) -> list[dict[str, Any]]:
    """Every answer (the first four and the last four of a long story)."""
    shown = order.answers if len(order.answers) <= 8 else [*order.answers[:4],
                                                          *order.answers[-4:]]
    return [{k: v for k, v in asdict(a).items() if v is not None and v != ""}
            for a in shown]


def reconcile(orders: list[Logical], truth: Truth, statuses: dict[int, Any],
              topped_up: Decimal, ledger_client: str, grace_s: float,
              lost: dict[int, tuple[float, int]]) -> Findings:
    """`statuses`: the final status answer of every record; `lost`: ids a status call
    during the load called unknown (when, which replica)."""
    f = Findings()
    by_link = {o.link: o for o in orders}
    upstream_by_link: dict[str, list[str]] = defaultdict(list)
    for u in truth.upstream:
        upstream_by_link[u.link].append(f"{u.provider}#{u.id}")
    _answers(f, orders, truth, statuses)
    _upstream(f, orders, truth, by_link, upstream_by_link)
    _money(f, truth, topped_up, ledger_client, grace_s)
    _observe(f, orders, truth, upstream_by_link)
    _lost(f, orders, lost)
    return f


def _answers(f: Findings, orders: list[Logical], truth: Truth,
             statuses: dict[int, Any]) -> None:
    links_of: dict[int, set[str]] = defaultdict(set)
    for o in orders:
        for oid in o.ids:
            links_of[oid].add(o.link)
            rec = truth.records.get(oid)
            status = statuses.get(oid)
            if rec is None or (isinstance(status, dict)
                               and status.get("error") == "Incorrect order ID"):
                f.add("answers_without_records", {"order": oid, "link": o.link,
                                                  "status": status, "answers": answers_of(o)})
            elif rec.link != o.link:
                f.add("ids_answered_twice", {"order": oid, "given_for": o.link,
                                             "record_link": rec.link})
        if len(o.ids) > 1:
            f.add("ids_answered_twice", {"link": o.link, "ids": sorted(o.ids),
                                         "answers": answers_of(o)})
    for oid, links in links_of.items():
        if len(links) > 1:
            f.add("ids_answered_twice", {"order": oid, "links": sorted(links)})


def _upstream(f: Findings, orders: list[Logical], truth: Truth, by_link: dict[str, Logical],
              upstream_by_link: dict[str, list[str]]) -> None:
    mapped = {(r.provider, r.upstream_id): oid for oid, r in truth.records.items()
              if r.upstream_id is not None}
    listed = {(truth.records[i].provider, truth.records[i].link)
              for i in truth.unknown_listed if i in truth.records}
    ids_by_link: dict[str, list[int]] = defaultdict(list)
    for oid, rec in truth.records.items():
        ids_by_link[rec.link].append(oid)
    for link, ups in upstream_by_link.items():
        if len(ups) > 1:
            o = by_link.get(link)
            f.add("double_dispatches", {"link": link, "upstream": ups,
                                        "records": sorted(ids_by_link.get(link, [])),
                                        "answers": answers_of(o) if o else "not ours"})
    for u in truth.upstream:
        owner = mapped.get((u.provider, u.id))
        if owner is not None and truth.records[owner].link == u.link:
            continue
        if (u.provider, u.link) in listed:
            continue
        f.add("unmapped_upstream_orders", {
            "upstream": f"{u.provider}#{u.id}", "link": u.link, "mapped_to": owner,
            "records": {i: truth.records[i].state for i in ids_by_link.get(u.link, [])}})
    for o in orders:
        if o.link not in upstream_by_link:
            continue
        told = [a for a in o.heard if a.kind != "dropped"]  # answers, not silences
        if any(a.kind in ("order", "not_confirmed") for a in told):
            continue
        if not o.heard or (told and told[-1].kind in ("retry", "error")):
            f.add("placed_while_told_to_retry", {
                "link": o.link, "keyed": o.key is not None,
                "upstream": upstream_by_link[o.link],
                "records": {i: truth.records[i].state for i in ids_by_link.get(o.link, [])},
                "answers": answers_of(o)})


def _money(f: Findings, truth: Truth, topped_up: Decimal, client: str,
           grace_s: float) -> None:
    net: dict[int, Decimal] = defaultdict(Decimal)
    kinds: dict[int, list[str]] = defaultdict(list)
    for e in truth.ledger:
        if e.order is not None:
            net[e.order] += e.amount
            kinds[e.order].append(f"{e.type} {e.amount} {e.note}".strip())
    now_ms = time.time() * 1000
    awaiting = Decimal(0)
    released_orphans: Counter[str] = Counter()
    for oid in sorted(net):
        rec = truth.records.get(oid)
        if rec is not None:
            continue
        if net[oid] == 0:
            released_orphans[" / ".join(kinds[oid])] += 1
        elif oid in truth.pending and now_ms - truth.pending[oid] < grace_s * 1000:
            awaiting -= net[oid]
        else:
            f.add("charges_without_records", {"order": oid, "ledger": kinds[oid]})
    f.observations["charges_awaiting_reconciler"] = str(awaiting)
    f.observations["released_charges_without_records"] = dict(released_orphans)
    ours = {oid: r for oid, r in truth.records.items() if r.client == client and r.ledger}
    for oid, rec in sorted(ours.items()):
        if net.get(oid, Decimal(0)) != -cost(rec):
            f.add("ledger_drift", {"order": oid, "state": rec.state, "status": rec.status,
                                   "charge": str(rec.charge), "expected": str(-cost(rec)),
                                   "ledger": kinds.get(oid, [])})
    ledger_sum = sum((e.amount for e in truth.ledger), Decimal(0))
    expected = topped_up - sum((cost(r) for r in ours.values()), Decimal(0)) - awaiting
    if truth.keys_check_rc != 0 or truth.balance != ledger_sum:
        f.add("ledger_drift", {"keys_check": truth.keys_check_output,
                               "balance": str(truth.balance), "ledger_sum": str(ledger_sum)})
    if truth.balance != expected:
        f.add("ledger_drift", {"balance": str(truth.balance), "topped_up": str(topped_up),
                               "expected_from_records": str(expected),
                               "difference": str(truth.balance - expected)})


def _observe(f: Findings, orders: list[Logical], truth: Truth,
             upstream_by_link: dict[str, list[str]]) -> None:
    last = Counter(o.heard[-1].kind if o.heard else "never reached" for o in orders)
    errors = Counter(a.text for o in orders for a in o.heard if a.kind != "order")
    keyed_open = [o for o in orders if o.key is not None and not o.settled]
    silent = [o.link for o in orders if o.link in upstream_by_link and o.heard
              and all(a.kind == "dropped" for a in o.heard)]
    f.observations.update({
        "logical_orders": len(orders),
        "keyed_orders": sum(1 for o in orders if o.key is not None),
        "last_answer_kinds": dict(last),
        "answer_texts": dict(errors.most_common(12)),
        "ids_given": len({i for o in orders for i in o.ids}),
        "keyed_orders_never_answered": len(keyed_open),
        "keyed_orders_never_answered_examples": [
            {"link": o.link, "answers": answers_of(o)} for o in keyed_open[:4]],
        "placed_but_the_panel_heard_nothing": len(silent),
        "upstream_orders": Counter(u.provider for u in truth.upstream),
        "records_by_state": dict(Counter(r.state for r in truth.records.values())),
        "unknown_listed": len(truth.unknown_listed),
    })


def _lost(f: Findings, orders: list[Logical], lost: dict[int, tuple[float, int]]) -> None:
    """Ids a panel was given that a status call later answered `Incorrect order ID`."""
    given = {a.order: (o.link, round(a.t, 2), a.replica) for o in orders for a in o.answers
             if a.order is not None}
    seen = sorted((oid, at) for oid, at in lost.items() if oid in given)
    f.observations["given_ids_status_called_unknown"] = len(seen)
    f.observations["given_ids_status_called_unknown_examples"] = [
        {"order": oid, "status_at_s": t, "status_replica": rep, "given": given[oid]}
        for oid, (t, rep) in seen[:8]]


def total(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    out = dict.fromkeys(COUNTS, 0)
    for c in counts:
        for k, v in c.items():
            out[k] = out.get(k, 0) + v
    return out
