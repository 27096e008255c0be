"""`smm-gateway orders show ID`: one order as the operator needs it at a glance:
its routing (provider, upstream service and order id), its money (charge, cost,
refunds) and its status history with times (`gateway.state.history`)."""

from __future__ import annotations

import time
from decimal import Decimal

from gateway.admin.operations import AdminError
from gateway.admin.queries import ORDER_LEDGER_SCAN
from gateway.money import wire
from gateway.state.connect import AnyRedis
from gateway.state.history import Change, History
from gateway.state.ledger import Ledger
from gateway.state.orders import Orders


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


def _after(seconds: int) -> str:
    hours, rest = divmod(max(0, seconds), 3600)
    return f"+{hours}:{rest // 60:02d}:{rest % 60:02d}"


def change_line(c: Change, created: int) -> str:
    detail = []
    if c.start_count is not None:
        detail.append(f"start {c.start_count}")
    if c.remains is not None:
        detail.append(f"remains {c.remains}")
    if c.refill is not None:
        detail.append(f"refill {c.refill}")
    return (f"    {_utc(c.t)}  {_after(c.t - created):>10}  {c.what}"
            + (f" ({', '.join(detail)})" if detail else ""))


async def order_lines(redis: AnyRedis, order_id: int) -> list[str]:
    rec = (await Orders(redis).get_orders([order_id])).get(order_id)
    if rec is None:
        raise AdminError(f"no order {order_id}")
    changes = (await History(redis).read([order_id])).get(order_id, [])
    refunded = Decimal(0)
    if rec.ledger:
        refunded = sum((e.amount for e in await Ledger(redis).recent(rec.client,
                                                                     ORDER_LEDGER_SCAN)
                        if e.order == str(order_id) and e.type in ("refund", "release")),
                       Decimal(0))
    currency = rec.currency or ""
    runs = f" x {rec.runs} runs" if rec.runs else ""
    lines = [
        f"order {order_id}: client {rec.client}, gateway service {rec.service}, "
        f"state {rec.state}, status {rec.status or '-'}",
        f"  routing: {rec.provider} service #{rec.upstream_service}, "
        f"upstream order {rec.upstream_id or '-'}",
        f"  link: {rec.link}, quantity {rec.quantity}{runs}",
        f"  placed: {_utc(rec.created)} UTC",
        f"  money: charge {wire(rec.charge)}, cost {wire(rec.cost)}, margin "
        f"{wire(rec.charge - rec.cost)}, refunded {wire(refunded)}, net margin "
        f"{wire(rec.charge - refunded - rec.cost)} {currency}".rstrip(),
    ]
    if not changes:
        return [*lines, "  history: no status seen yet"]
    return [*lines, "  history (UTC, after placement):",
            *(change_line(c, rec.created) for c in changes)]
