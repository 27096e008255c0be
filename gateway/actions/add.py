"""`add`: read and check the order, then place it at most once.

An `Idempotency-Key` (24 hours) or the client's duplicate-order window makes
`add` at-most-once: the first request claims the token, a repeat gets the
first one's answer (for an Idempotency-Key, definite errors too; a temporary
one lets the token go, so the retry it invites can succeed), a concurrent one
waits for it. The owner holds a lease on the claim while it works; a retry
after the owner died answers from the order record the claim names, and
places the order anew only when that order provably never went out.
Placing the order is `Dispatcher.place`.

With the link guard on for the service (`link_guard`), the order must first hold
its link within the service's family (`gateway.state.links`): while another
order on the link is active the answer is ACTIVE_LINK, nothing is reserved and
nothing is sent. A repeat answered from a claim never gets that far, and the
answer is not kept for an Idempotency-Key (the retry it invites can succeed).
An order that places nothing gives its link back; one whose outcome is unknown
keeps it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Mapping
from decimal import Decimal

import msgspec

from gateway.actions.common import NOT_CONFIRMED, NOT_READY, UNAVAILABLE
from gateway.actions.dispatch import FUNDS, Dispatcher
from gateway.errors import ClientError, NotReady, StoreUnavailable
from gateway.models import OrderRecord
from gateway.routing.catalog import Catalog
from gateway.routing.decide import Weigher
from gateway.routing.params import AddRequest, parse_add, parse_service_id
from gateway.routing.plan import family
from gateway.routing.views import ServiceView
from gateway.state.claims import IDEMPOTENCY_TTL_S, Answer, Claims, Lapsed, Owned
from gateway.state.clients import ClientRecord
from gateway.state.links import Held, Links
from gateway.state.orders import Orders
from gateway.wire import ENCODER, OrderAnswer

log = logging.getLogger("gateway.actions")
_order_dec = msgspec.json.Decoder(OrderAnswer)
ACTIVE_LINK = "You have active order with this link. Please wait until order being completed."
# answers a retry may change: not kept for the Idempotency-Key
_TEMPORARY = frozenset({UNAVAILABLE, FUNDS, ACTIVE_LINK})


class Add:
    def __init__(self, catalog: Catalog, claims: Claims, orders: Orders,
                 dispatcher: Dispatcher, weigher: Weigher | None = None) -> None:
        self._catalog = catalog
        self._weigher = weigher  # the scorecards the service's routing policy weighs
        self._claims = claims
        self._orders = orders
        self._dispatcher = dispatcher
        self._links = Links(orders, dispatcher.clock)

    def _view(self, client: ClientRecord, fields: Mapping[str, str]) -> ServiceView:
        service_id = parse_service_id(fields)
        view = self._catalog.views.get(service_id)
        if view is None and not self._catalog.complete:
            raise NotReady(NOT_READY)  # a provider's list is still missing: it may be there
        if view is None or not client.allows(service_id):
            raise ClientError("Incorrect service ID")
        return view

    async def __call__(self, client: ClientRecord, fields: Mapping[str, str]) -> OrderAnswer:
        view = self._view(client, fields)
        order = parse_add(fields, family(view.type), view.form)
        idem = fields.get("idempotency_key", "").strip()
        if idem:
            token, ttl = "idem:" + idem[:200], float(IDEMPOTENCY_TTL_S)
        elif client.dup_window_s > 0:
            token, ttl = "dup:" + order.fingerprint(), client.dup_window_s
        else:
            return await self._dispatcher.guarded(self._place(client, view, order))
        return await self._dispatcher.guarded(
            self._once(client, view, order, token, ttl, replay_errors=bool(idem)))

    async def _once(self, client: ClientRecord, view: ServiceView, order: AddRequest,
                    token: str, ttl: float, replay_errors: bool) -> OrderAnswer:
        fingerprint = order.fingerprint()
        order_id = await self._orders.next_order_id()
        got = await self._claims.claim(client.name, token, fingerprint, ttl, order_id)
        while isinstance(got, Lapsed):
            got = await self._after_lapse(client, view, order, token, ttl, got, order_id)
        if isinstance(got, Answer):
            if got.status != 200:
                raise ClientError.with_status(got.body.decode(), got.status)
            return _order_dec.decode(got.body)
        async with self._claims.lease(client.name, token, got):
            try:
                answer = await self._place(client, view, order, order_id)
            except ClientError as exc:
                if replay_errors and exc.message not in _TEMPORARY and exc.status_code < 500:
                    await _quietly(self._claims.finish(client.name, token, got, Answer(
                        fingerprint, True, exc.status_code, exc.message.encode()), ttl))
                else:
                    await _quietly(self._claims.release(client.name, token, got))
                raise
            except StoreUnavailable:  # nothing went out; if Redis is down, the lease lapses
                await _quietly(self._claims.release(client.name, token, got))
                raise
        await _quietly(self._claims.finish(client.name, token, got, Answer(
            fingerprint, True, 200, ENCODER.encode(answer)), ttl))
        return answer

    async def _after_lapse(self, client: ClientRecord, view: ServiceView, order: AddRequest,
                           token: str, ttl: float, lapsed: Lapsed,
                           order_id: int) -> Owned | Answer | Lapsed:
        """The owner of this token died without answering: answer from the order it
        was placing, or take the claim over when that order never went out."""
        fingerprint = order.fingerprint()
        rec = None
        if lapsed.order is not None:
            rec = (await self._orders.get_orders([lapsed.order])).get(lapsed.order)
            if rec is None and await self._orders.create_order(
                    lapsed.order, self._abandoned(client, view, order)):
                rec = self._abandoned(client, view, order)  # the dead owner can never send it
            elif rec is None:
                rec = (await self._orders.get_orders([lapsed.order])).get(lapsed.order)
        if rec is not None and rec.state in ("dispatching", "unknown"):
            raise ClientError(NOT_CONFIRMED)
        owned = await self._claims.take_over(client.name, token, lapsed, fingerprint, order_id)
        if owned is None:  # another retry was first: wait for its answer
            return await self._claims.claim(client.name, token, fingerprint, ttl, order_id)
        if rec is not None and rec.state == "placed" and lapsed.order is not None:
            answer = Answer(fingerprint, True, 200,
                            ENCODER.encode(OrderAnswer(order=lapsed.order)))
            await self._claims.finish(client.name, token, owned, answer, ttl)
            return answer
        return owned

    @staticmethod
    def _abandoned(client: ClientRecord, view: ServiceView, order: AddRequest) -> OrderRecord:
        return OrderRecord(client=client.name, service=view.id, provider="", upstream_service="",
                           link=order.link, quantity=order.quantity, runs=order.runs,
                           charge=Decimal(0), cost=Decimal(0), created=0, state="failed")

    async def _place(self, client: ClientRecord, view: ServiceView, order: AddRequest,
                     order_id: int | None = None) -> OrderAnswer:
        if order.quantity < view.min:
            raise ClientError(f"Quantity less than minimal {view.min}")
        if order.quantity > view.max:
            raise ClientError(f"Quantity more than maximal {view.max}")
        if order.runs and not view.dripfeed:
            raise ClientError("Drip-feed is not available for this service")
        if order_id is None:
            order_id = await self._orders.next_order_id()
        if self._weigher is not None:  # this order's view: with its policy's evidence
            view = view.weighed(await self._weigher.weigh(view))
        if not view.link_guard:
            return await self._dispatcher.place(client, view, order, order_id)
        taken = await self._links.take(view.link_family, order.link, order_id,
                                       view.link_ttl_s, client.name, view.id)
        if isinstance(taken, Held):
            log.info("add: link held by an active order", extra={
                "order": order_id, "service": view.id, "holder": taken.order})
            raise ClientError(ACTIVE_LINK)
        try:
            return await self._dispatcher.place(client, view, order, order_id)
        except ClientError as exc:
            if exc.message != NOT_CONFIRMED:  # placed nothing: the link is free again
                await _quietly(self._links.release(taken))
            raise
        except StoreUnavailable:  # nothing went out
            await _quietly(self._links.release(taken))
            raise


async def _quietly(bookkeeping: Awaitable[object]) -> None:
    """Bookkeeping after the outcome is known never changes the answer: if Redis
    cannot take it, a claim's lease lapses and a retry answers from the order record;
    a link not given back is taken over once its order's record shows it placed nothing."""
    try:
        await bookkeeping
    except StoreUnavailable as exc:
        log.warning("add: bookkeeping not updated", extra={"error": exc.message})
