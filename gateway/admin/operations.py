"""The operator's changes to the shared state, one function each: the `smm-gateway`
commands (`gateway.ops.admin`) and the dashboard (`gateway.admin.api`, `.pages`)
both call these, so a change means the same thing whichever way it is made.

Each raises `AdminError` (its message says why) and returns what happened, in words.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from gateway.admin import names
from gateway.money import wire
from gateway.state.catalogs import Catalogs
from gateway.state.clients import ClientRecord, Directory, Mode
from gateway.state.ledger import Ledger
from gateway.state.orders import Orders
from gateway.state.stats import Tally


class AdminError(Exception):
    """A change that cannot be carried out; the message says why."""


def amount(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise AdminError(f"not an amount: {text!r}") from None
    if not value.is_finite():
        raise AdminError(f"not an amount: {text!r}")
    return value


async def resolve_order(orders: Orders, ledger: Ledger, order_id: int,
                        placed: str | None) -> str:
    """Settle an order left `unknown`: it was placed upstream (as `placed`, the
    provider's order id) or it was not (its reservation goes back to the client)."""
    record = (await orders.get_orders([order_id])).get(order_id)
    if record is None:
        raise AdminError(f"no order {order_id}")
    if record.state not in ("unknown", "dispatching"):
        raise AdminError(f"order {order_id} is {record.state}, not unknown")
    if placed is not None:
        placed = placed.strip()
        if not placed:
            raise AdminError("the provider's order id is empty")
        record.state, record.upstream_id = "placed", placed
        await orders.put_order(order_id, record, tally=Tally("placed", record.created))
        return (f"order {order_id} placed as {record.provider} order {placed}; "
                "its status is tracked from now on")
    if record.ledger:
        await ledger.credit(record.client, record.charge, "release", order_id,
                            note="resolved: not placed", settle=True)
    record.state = "failed"
    await orders.put_order(order_id, record)
    refunded = f"; {wire(record.charge)} back to {record.client}" if record.ledger else ""
    return f"order {order_id} marked not placed{refunded}"


async def confirm_rate(catalogs: Catalogs, service_id: int) -> str:
    if await catalogs.confirm_rate(service_id):
        return (f"service {service_id}: the current rate will be advertised "
                "(every replica within a few seconds)")
    return f"service {service_id}: no rate on record; nothing to confirm"


@dataclass(frozen=True, slots=True)
class NewClient:
    name: str
    mode: Mode
    markup: Decimal | None = None
    credit: Decimal | None = None
    services: list[int] | None = None
    rate_limit: float | None = None
    burst: int | None = None
    dup_window_s: float = 0.0


async def create_client(directory: Directory, ledger: Ledger, new: NewClient) -> str:
    """Store a new client; its key, which is shown once and never stored."""
    name = new.name.strip()
    wrong = names.problem(name)
    if wrong is not None:
        raise AdminError(wrong)
    if new.markup is not None and not new.markup > 0:
        raise AdminError("markup must be > 0")
    if new.credit and new.mode != "ledger":
        raise AdminError("only a ledger client has a prepaid balance to credit")
    record = ClientRecord(name=name, key_digest="", mode=new.mode, markup=new.markup,
                          services=new.services, rate_limit=new.rate_limit, burst=new.burst,
                          dup_window_s=new.dup_window_s)
    try:
        key = await directory.create(record)
    except ValueError as exc:
        raise AdminError(str(exc)) from None
    if new.credit:
        await ledger.credit(name, new.credit, "topup", note="initial credit")
    return key


async def set_active(directory: Directory, name: str, active: bool) -> str:
    try:
        await directory.set_active(name, active)
    except KeyError:
        raise AdminError(f"no client named {name!r}") from None
    return f"client {name} {'enabled' if active else 'disabled'}"


async def rotate(directory: Directory, name: str) -> str:
    """A new key for the client (the old one stops working); shown once."""
    try:
        return await directory.rotate(name)
    except KeyError:
        raise AdminError(f"no client named {name!r}") from None


async def topup(directory: Directory, ledger: Ledger, name: str, value: Decimal,
                note: str) -> str:
    """Credit (or, negative, take from) a ledger client's prepaid balance."""
    record = await directory.get(name)
    if record is None:
        raise AdminError(f"no client named {name!r}")
    if record.mode != "ledger":
        raise AdminError(f"client {name!r} is not a ledger client")
    kind = "topup" if value >= 0 else "adjust"
    await ledger.credit(name, value, kind, note=note)
    return f"{kind} {wire(value)}: balance {wire(await ledger.balance(name))}"
