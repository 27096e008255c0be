"""Order rescue: an order its provider has not started `rescue_after_s` after it was
placed is cancelled there and, once the cancel is confirmed with nothing delivered,
placed with the next candidate under the same gateway order id.

A periodic job (every `gateway.rescue_every_s`, one replica at a time under a lease)
reads the orders due (`gateway.state.rescues`: a sorted set by deadline, written when
an order of a service with rescue on is placed; no scan of the orders) and moves
each one step:

1. waiting: the order's status is asked upstream now (as a `status` poll would, with
   its history, scorecard and refund). Started, ended, or at a provider that does not
   take cancels: left alone. Still Pending, start count 0, nothing delivered, and
   another candidate left: the record goes `dispatching` without an upstream id (the
   panel's polls answer Pending from it, nothing asks the old provider, nothing
   refunds), then the cancel is sent.
2. canceling: `Canceled`/`Refunded` with remains = quantity -> step 3. Anything else
   stops the rescue: a refused or unanswered cancel, a delivery, a `Pending` that
   outlasts `gateway.rescue_confirm_s`. The record goes back to the old placement
   (polled again at once, so an order the cancel did end is refunded as usual).
3. replacing: the phase and the new candidate are written before the `add` is sent;
   the outcome is stored like a dispatch's (the journal if Redis cannot take it). A
   round that finds a `replacing` left behind (a crash mid-add) never sends again:
   the order becomes `unknown`, as an ambiguous add does. An ambiguous add is
   `unknown` too. Nobody takes it: the order stays Canceled at the old provider and
   its client is refunded as for any cancel.

The client's charge never changes; the order's cost becomes the new provider's (the
dashboard's day moves by the difference). Every step is in the order's history
(`rescue_cancel_requested`, `rescue_canceled`, `replaced -> provider`,
`rescue_stopped -> why`); a stop raises `rescue_stopped` and flags the order
(`RescueRecord.flag`, shown by the admin order detail).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from decimal import Decimal
from typing import Any

import msgspec

from gateway import money
from gateway.actions.dispatch import Dispatcher, unknown_alert
from gateway.actions.status import Status
from gateway.config import GatewaySettings
from gateway.errors import ProviderError, StoreUnavailable
from gateway.events import Alert
from gateway.models import OrderRecord, UpstreamStatus
from gateway.routing import decide
from gateway.routing.params import AddRequest
from gateway.routing.plan import Candidate, usable
from gateway.routing.views import ServiceView
from gateway.state import history as h
from gateway.state.journal import JournalEntry
from gateway.state.rescues import Placement, RescueRecord
from gateway.state.scores import Evidence
from gateway.wiring import Resources

log = logging.getLogger("gateway.rescue")

BATCH = 50  # orders one round looks at, at most
LEASE_MS = 300_000  # past a round of BATCH orders at the slowest provider's timeouts
REFUNDED = frozenset({"Canceled", "Refunded"})
_enc = msgspec.msgpack.Encoder()
_request = msgspec.msgpack.Decoder(AddRequest)


def rescue_after(view: ServiceView, g: GatewaySettings) -> float:
    after = view.settings.rescue_after_s
    return g.rescue_after_s if after is None else after


def max_rescues(view: ServiceView, g: GatewaySettings) -> int:
    most = view.settings.max_rescues
    return g.max_rescues if most is None else most


def untouched(rec: OrderRecord) -> bool:
    """Not started by its last known status: Pending, start count 0, nothing delivered."""
    total = rec.quantity * (rec.runs or 1)
    return (rec.status or "Pending") == "Pending" and rec.start_count in (None, "", "0") \
        and rec.remains in (None, str(total))


class _Steps:
    """The rescue's bookkeeping: records, flags, history and alerts."""

    def __init__(self, r: Resources, dispatcher: Dispatcher, status: Status) -> None:
        self._r = r
        self._g = r.settings.gateway
        self._dispatcher = dispatcher
        self._status = status
        self._task: asyncio.Task[None] | None = None

    async def _placed(self, oid: int, rec: OrderRecord, res: RescueRecord,
                      view: ServiceView, old_cost: Decimal) -> None:
        now = self._r.clock.time()
        res.rescues += 1
        more = res.rescues < max_rescues(view, self._g)
        res.phase = "waiting" if more else "done"
        await self._r.rescues.put(oid, res, now + rescue_after(view, self._g) if more else None)
        await self._note(oid, h.rescue_entry(h.REPLACED, now, rec.provider))
        with contextlib.suppress(StoreUnavailable):
            await self._r.rescues.cost_moved(now, old_cost, rec.cost)
        old = res.prior[-1]
        log.warning("order rescued", extra={"order": oid, "from": old.provider, "to": rec.provider})
        self._r.events.emit(Alert(
            kind="order_rescued", subject=str(oid), once=f"order_rescued:{oid}:{res.rescues}",
            message=f"order {oid}: not started at {old.provider} after "
                    f"{rescue_after(view, self._g):g} s; cancelled there and placed at "
                    f"{rec.provider} (upstream order {rec.upstream_id})",
            details={"order": oid, "from": old.provider, "to": rec.provider,
                     "old_cost": str(old_cost), "cost": str(rec.cost),
                     "charge": str(rec.charge)}))

    async def _left_replacing(self, oid: int, rec: OrderRecord, res: RescueRecord) -> None:
        """A round stopped mid-add (a crash, Redis away): never sent again."""
        if rec.state == "placed" and rec.upstream_id:  # its outcome came from the journal
            view = self._r.catalog.views.get(rec.service)
            if view is not None:
                old_cost = res.prior[-1].cost if res.prior else rec.cost
                return await self._placed(oid, rec, res, view, old_cost)
        if self._r.clock.time() - res.since <= self._g.rescue_confirm_s:
            return await self._r.rescues.put(oid, res, res.since + self._g.rescue_confirm_s)
        if rec.state == "dispatching":
            rec.state = "unknown"
            await self._store_async(oid, rec)
            self._r.events.emit(unknown_alert(oid, rec, "rescue stopped mid-add"))
        await self._flag(oid, res, f"add at {rec.provider} unconfirmed")

    async def _stop(self, oid: int, rec: OrderRecord, res: RescueRecord, why: str,
                    upstream_id: str | None = None) -> None:
        """Back to the placement that stands, asked again at once (a cancel that did
        end it is refunded as any), and the order flagged for the operator."""
        if res.current is not None:
            upstream_id = res.current.upstream_id
        rec.state, rec.upstream_id, rec.checked = "placed", upstream_id, 0
        await self._r.orders.put_order(oid, rec)
        with contextlib.suppress(StoreUnavailable):
            await self._status.refresh({oid: rec})
        await self._flag(oid, res, why)

    async def _flag(self, oid: int, res: RescueRecord, why: str) -> None:
        now = self._r.clock.time()
        res.phase, res.flag, res.current = "stopped", why, None
        await self._r.rescues.put(oid, res, None)
        await self._note(oid, h.rescue_entry(h.RESCUE_STOPPED, now, why))
        log.error("rescue stopped", extra={"order": oid, "why": why})
        self._r.events.emit(Alert(
            kind="rescue_stopped", subject=str(oid), once=f"rescue_stopped:{oid}",
            message=f"order {oid}: rescue stopped: {why}; look at it with "
                    f"`smm-gateway orders show {oid}`",
            details={"order": oid, "why": why, "tried": ",".join(res.tried)}))

    async def _leave(self, oid: int, res: RescueRecord) -> None:
        """Nothing (more) to rescue: state kept only where it tells something."""
        if res.rescues == 0 and res.flag is None:
            return await self._r.rescues.forget(oid)
        res.phase = "done"
        await self._r.rescues.put(oid, res, None)

    async def _choices(self, rec: OrderRecord, view: ServiceView) -> list[Candidate]:
        client = await self._r.directory.get(rec.client)
        return usable(decide.choices(view, rec.quantity, rec.runs, self._r.balances, client))

    async def _store_async(self, oid: int, rec: OrderRecord) -> None:
        """An add's outcome, in Redis or else in the journal (as a dispatch's)."""
        try:
            await self._r.orders.put_order(oid, rec, settles=True)
        except StoreUnavailable:
            self._r.recovery.journal.append(JournalEntry(oid, rec))

    async def _evidence(self, rec: OrderRecord, name: str) -> None:
        """A cancel accepted (cq) or refused (cr), for the provider's scorecard."""
        evidence = Evidence()
        evidence.add(rec.provider, rec.upstream_service, **{name: 1.0})
        with contextlib.suppress(StoreUnavailable):
            await self._r.scores.add(evidence)

    async def _note(self, oid: int, *entries: h.Entry, scored: OrderRecord | None = None,
                    ) -> None:
        """History entries (and the scorecard events the first claims); evidence, not
        money: a Redis failure here is logged."""
        try:
            bits = await self._r.history.append([(oid, e) for e in entries])
            if scored is not None and bits and bits[0] > 0:
                evidence = Evidence()
                evidence.order(scored, bits[0], self._r.clock.time())
                await self._r.scores.add(evidence)
        except StoreUnavailable as exc:
            log.warning("rescue: history not written", extra={"order": oid,
                                                              "error": exc.message})


class Rescuer(_Steps):
    """The job: which orders are due, and the step each one takes next."""

    @property
    def wanted(self) -> bool:
        """Does any service of this config rescue?"""
        return self._g.rescue_after_s > 0 or any(
            s.rescue_after_s for s in self._r.settings.services)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._g.rescue_every_s)
            try:
                await self.run_once()
            except StoreUnavailable:
                continue  # Redis is away: the next round tries again
            except Exception:  # the loop must outlive any one bug
                log.exception("rescue round failed")

    async def watch(self, order_id: int, rec: OrderRecord, view: ServiceView,
                    order: AddRequest) -> None:
        """The dispatcher's hook: an order of a service with rescue on is due at its
        deadline. Bookkeeping: a Redis failure costs this order its rescue, no more."""
        after = rescue_after(view, self._g)
        if after <= 0 or max_rescues(view, self._g) <= 0:
            return
        try:
            await self._r.rescues.put(order_id, RescueRecord(_enc.encode(order), [rec.provider]),
                                      rec.created + after)
        except StoreUnavailable as exc:
            log.warning("rescue: order not watched", extra={"order": order_id,
                                                            "error": exc.message})

    async def run_once(self) -> int:
        """One round, if this replica holds the lease: the number of orders looked at."""
        token = await self._r.rescues.lease(LEASE_MS)
        if token is None:
            return 0  # another replica is at it
        try:
            due = await self._r.rescues.due(self._r.clock.time(), BATCH)
            for oid in due:
                try:
                    await self._one(oid)
                except StoreUnavailable:
                    raise
                except Exception:  # one order's bug must not hold the others up
                    log.exception("rescue: order step failed", extra={"order": oid})
                    await self._r.rescues.postpone(oid, self._r.clock.time()
                                                   + self._g.rescue_confirm_s)
            return len(due)
        finally:
            await self._r.rescues.release(token)

    async def _one(self, oid: int) -> None:
        rec = (await self._r.orders.get_orders([oid])).get(oid)
        res = (await self._r.rescues.get([oid])).get(oid)
        view = self._r.catalog.views.get(rec.service) if rec is not None else None
        if rec is None or res is None or view is None:
            if res is not None:
                await self._r.rescues.put(oid, res, None)
            return
        # the routing order a new add would see (without exploring: a rescue is no trial)
        view = view.weighed(await self._r.weigher.weigh(view, explore=False))
        if res.phase == "waiting":
            await self._waiting(oid, rec, res, view)
        elif res.phase == "canceling":
            await self._canceling(oid, rec, res, view)
        elif res.phase == "replacing":
            await self._left_replacing(oid, rec, res)
        else:
            await self._r.rescues.put(oid, res, None)

    async def _waiting(self, oid: int, rec: OrderRecord, res: RescueRecord,
                       view: ServiceView) -> None:
        now = self._r.clock.time()
        if rec.state != "placed" or rec.final or not untouched(rec) \
                or rec.provider not in self._r.providers \
                or res.rescues >= max_rescues(view, self._g) or rescue_after(view, self._g) <= 0:
            return await self._leave(oid, res)
        await self._status.refresh({oid: rec})
        if rec.checked < int(now):  # no fresh answer: look again next round
            return await self._r.rescues.put(oid, res, now + self._g.rescue_every_s)
        if rec.final or not untouched(rec):
            return await self._leave(oid, res)
        cand = next((c for c in view.candidates if c.provider == rec.provider
                     and c.upstream.service == rec.upstream_service), None)
        if cand is None or not (cand.upstream.cancel or view.settings.cancel):
            return await self._leave(oid, res)  # its provider takes no cancels
        if not [c for c in await self._choices(rec, view) if c.provider not in res.tried]:
            # nowhere to go: cancelling would only end it; look again later
            return await self._r.rescues.put(oid, res, now + rescue_after(view, self._g))
        res.phase, res.since = "canceling", int(now)
        res.current = Placement(rec.provider, rec.upstream_service, rec.upstream_id or "",
                                rec.cost)
        rec.state, rec.upstream_id = "dispatching", None  # polls answer Pending from Redis
        await self._r.orders.put_order(oid, rec)
        await self._r.rescues.put(oid, res, now + self._g.rescue_every_s)
        await self._note(oid, h.rescue_entry(h.RESCUE_CANCEL_ASKED, now))
        try:
            got = (await self._r.providers[rec.provider].cancel([res.current.upstream_id]))
            result: Any = got.get(res.current.upstream_id)
        except ProviderError as exc:
            return await self._stop(oid, rec, res, f"cancel unanswered ({exc.message[:60]})")
        if result is not True:
            await self._evidence(rec, "cr")
            why = result.message if hasattr(result, "message") else "not accepted"
            return await self._stop(oid, rec, res, f"cancel refused: {why[:80]}")
        await self._evidence(rec, "cq")
        await self._canceling(oid, rec, res, view)

    async def _canceling(self, oid: int, rec: OrderRecord, res: RescueRecord,
                         view: ServiceView) -> None:
        """The cancel was accepted: what does the provider say now?"""
        now = self._r.clock.time()
        assert res.current is not None
        standing = (await self._r.orders.get_orders([oid])).get(oid)
        if standing is None or standing.state != "dispatching" or standing.upstream_id:
            # written over meanwhile (an operator, a poll that read it before): its
            # polls now settle it as it stands; nothing more is sent
            return await self._flag(oid, res, "the order changed during the rescue")
        uid = res.current.upstream_id
        waited = now - res.since > self._g.rescue_confirm_s
        try:
            said = (await self._r.providers[res.current.provider].status([uid])).get(uid)
        except ProviderError:
            said = None
        if not isinstance(said, UpstreamStatus):
            if waited:
                return await self._stop(oid, rec, res, "cancel not confirmed (no status)")
            return await self._r.rescues.put(oid, res, now + self._g.rescue_every_s)
        total = str(rec.quantity * (rec.runs or 1))
        if said.status in REFUNDED and said.remains in (None, total) \
                and said.start_count in (None, "", "0"):
            return await self._replace(oid, rec, res, view, said)
        if said.status == "Pending" and untouched(_as(rec, said)):
            if waited:
                return await self._stop(oid, rec, res, "still Pending after the cancel")
            return await self._r.rescues.put(oid, res, now + self._g.rescue_every_s)
        await self._stop(oid, rec, res, f"delivery after the cancel ({said.status}, "
                                        f"remains {said.remains})")

    async def _replace(self, oid: int, rec: OrderRecord, res: RescueRecord,
                       view: ServiceView, said: UpstreamStatus) -> None:
        now = self._r.clock.time()
        old = res.current
        assert old is not None
        ended = _as(rec, said)  # the old placement as it ended, for its scorecard
        ended.provider, ended.upstream_service = old.provider, old.service
        await self._note(oid, h.status_entry(ended, now, h.SEEN | h.FINAL),
                         h.rescue_entry(h.RESCUE_CANCELED, now), scored=ended)
        res.prior.append(Placement(old.provider, old.service, old.upstream_id, old.cost,
                                   said.status))
        request = _request.decode(res.request)
        picked = [c for c in decide.choices(view, rec.quantity, rec.runs, self._r.balances,
                                            await self._r.directory.get(rec.client))
                  if c.candidate.provider not in res.tried]
        async for verdict in decide.verdicts(picked, self._r.breakers, take=True):
            if verdict.reason is not None:
                continue
            cand = verdict.candidate
            rec.provider, rec.upstream_service = cand.provider, cand.upstream.service
            rec.cost = money.charge(cand.cost_rate, rec.quantity, rec.runs)
            rec.status = rec.start_count = rec.remains = None
            rec.checked = 0
            res.phase, res.since, res.current = "replacing", int(now), None
            res.tried.append(cand.provider)
            # before the add: a crash from here on never sends it again (`_left_replacing`)
            await self._r.orders.put_order(oid, rec)
            await self._r.rescues.put(oid, res, now + self._g.rescue_confirm_s)
            kind, value = await self._dispatcher.send(cand, request, verdict.probe)
            if kind == "placed":
                rec.state, rec.upstream_id = "placed", value
                await self._store_async(oid, rec)
                return await self._placed(oid, rec, res, view, old.cost)
            if kind == "unknown":
                rec.state = "unknown"
                await self._store_async(oid, rec)
                self._r.events.emit(unknown_alert(oid, rec, value))
                return await self._flag(oid, res, f"add at {cand.provider} unconfirmed")
        # nobody took it: it stays Canceled where it was, and is refunded as such
        rec.provider, rec.upstream_service, rec.cost = old.provider, old.service, old.cost
        res.current = None
        await self._stop(oid, rec, res, "no other provider took it: Canceled, refunded",
                         upstream_id=old.upstream_id)


def _as(rec: OrderRecord, said: UpstreamStatus) -> OrderRecord:
    """A copy of `rec` with what the provider said."""
    out = msgspec.structs.replace(rec, status=said.status)
    out.start_count = said.start_count or rec.start_count
    if said.remains is not None:
        out.remains = said.remains
    return out
