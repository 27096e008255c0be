"""`add`: read and check the order, then place it at most once.

An `Idempotency-Key` (24 hours) or the client's duplicate-order window makes
`add` at-most-once: the first request claims the token, a repeat gets the
first one's answer (errors included for an Idempotency-Key), a concurrent one
waits for it. Placing the order is `Dispatcher.place`.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from gateway.actions.dispatch import Dispatcher
from gateway.errors import ClientError
from gateway.routing.catalog import Catalog
from gateway.routing.params import AddRequest, parse_add, parse_service_id
from gateway.routing.plan import family
from gateway.routing.views import ServiceView
from gateway.state.claims import IDEMPOTENCY_TTL_S, Answer, Claims
from gateway.state.clients import ClientRecord
from gateway.wire import ENCODER, OrderAnswer

_order_dec = msgspec.json.Decoder(OrderAnswer)


class Add:
    def __init__(self, catalog: Catalog, claims: Claims, dispatcher: Dispatcher) -> None:
        self._catalog = catalog
        self._claims = claims
        self._dispatcher = dispatcher

    def _view(self, client: ClientRecord, fields: Mapping[str, str]) -> ServiceView:
        service_id = parse_service_id(fields)
        view = self._catalog.views.get(service_id)
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
            return await self._place(client, view, order)
        return await self._once(client, view, order, token, ttl, replay_errors=bool(idem))

    async def _once(self, client: ClientRecord, view: ServiceView, order: AddRequest,
                    token: str, ttl: float, replay_errors: bool) -> OrderAnswer:
        fingerprint = order.fingerprint()
        first = await self._claims.claim(client.name, token, fingerprint, ttl)
        if first is not None:
            if first.status != 200:
                raise ClientError.with_status(first.body.decode(), first.status)
            return _order_dec.decode(first.body)
        try:
            answer = await self._place(client, view, order)
        except ClientError as exc:
            if replay_errors:  # the same request gets the same answer, errors included
                await self._claims.finish(client.name, token, Answer(
                    fingerprint, True, exc.status_code, exc.message.encode()), ttl)
            else:
                await self._claims.release(client.name, token)
            raise
        except BaseException:
            await self._claims.release(client.name, token)
            raise
        await self._claims.finish(client.name, token, Answer(
            fingerprint, True, 200, ENCODER.encode(answer)), ttl)
        return answer

    async def _place(self, client: ClientRecord, view: ServiceView,
                     order: AddRequest) -> OrderAnswer:
        if order.quantity < view.min:
            raise ClientError(f"Quantity less than minimal {view.min}")
        if order.quantity > view.max:
            raise ClientError(f"Quantity more than maximal {view.max}")
        if order.runs and not view.dripfeed:
            raise ClientError("Drip-feed is not available for this service")
        return await self._dispatcher.place(client, view, order)
