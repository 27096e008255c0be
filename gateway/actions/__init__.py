"""What each SMM API v2 action does, one module per action family.

Every action is a callable `(client, fields) -> answer`: the authenticated
client, the request's fields as text, and a `gateway.wire` answer for the edge
to encode. `Actions.table` maps the `action` field to its callable.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from gateway.actions.add import Add
from gateway.actions.balance import Balance
from gateway.actions.cancel import Cancel
from gateway.actions.dispatch import Dispatcher
from gateway.actions.fanout import FanOut
from gateway.actions.refills import Evidenced, Refill, RefillStatus
from gateway.actions.rescue import Rescuer
from gateway.actions.services import Services
from gateway.actions.status import Status
from gateway.state.clients import ClientRecord
from gateway.wire import Answer
from gateway.wiring import Resources

Action = Callable[[ClientRecord, Mapping[str, str]], Awaitable[Answer]]


class Actions:
    def __init__(self, r: Resources) -> None:
        g = r.settings.gateway
        fanout = FanOut(r.providers, r.breakers)
        evidenced = Evidenced(r.history, r.scores, r.clock)
        self.dispatcher = Dispatcher(r.orders, r.ledger, r.breakers, r.balances,
                                     r.providers, r.recovery.journal, g.currency, r.clock,
                                     events=r.events)
        status = Status(g, r.orders, r.ledger, fanout, r.history, r.scores, r.clock)
        # order rescue: watches what the dispatcher places; its job runs when serving
        self.rescuer = Rescuer(r, self.dispatcher, status)
        if self.rescuer.wanted:
            self.dispatcher.placed = self.rescuer.watch
            status.guarded = True
            if r.serving:
                self.rescuer.start()
        self.table: dict[str, Action] = {
            "services": Services(r.catalog),
            "add": Add(r.catalog, r.claims, r.orders, self.dispatcher, r.weigher),
            "status": status,
            "refill": Refill(r.orders, fanout, evidenced, r.clock),
            "refill_status": RefillStatus(r.orders, fanout, evidenced),
            "cancel": Cancel(r.orders, fanout, evidenced),
            "balance": Balance(g, r.ledger, r.balances, list(r.providers), r.clock),
        }

    async def aclose(self) -> None:
        await self.rescuer.aclose()
        await self.dispatcher.aclose()
