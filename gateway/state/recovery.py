"""Putting things right after a crash or an outage: journal replay and the
reservation reconciler.

- `replay()`: every journal entry (this process's, and those of processes that
  are gone) goes into Redis. A record is written over one still `dispatching`
  (or missing); one that moved on since (an operator resolved it) is kept. A
  release in an entry is settled once, like any release. A record is written with
  the durability barrier (`gateway.state.durability`): a segment is done only once
  every record in it holds. The order id counter is raised past each entry's id.
  An entry written for another Redis data set is set aside, never applied.
- `reconcile()`: one replica at a time (a lease in Redis), every reservation
  older than PENDING_GRACE_S that no order record explains (the replica died
  between the reservation and the record, or the record says `failed`) is
  released with a ledger entry saying why; marks whose record stands are cleared.

Both run at start and then while serving: the journal every RECOVER_S (every
RECOVER_WAITING_S while this process has entries waiting, so an order answered
during an outage is in Redis within half a second of its return), the
reconciler every RECONCILE_S.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from gateway.clock import SYSTEM, Clock
from gateway.errors import StoreUnavailable
from gateway.models import OrderRecord
from gateway.state import keys
from gateway.state.clients import Directory
from gateway.state.journal import Journal, JournalEntry, read_segment
from gateway.state.ledger import Ledger
from gateway.state.locks import Locks
from gateway.state.orders import Orders

log = logging.getLogger("gateway.recovery")

# A reservation is reconciled only when older than this; the dispatcher never sends
# an order whose record it wrote later than half of it after the reservation.
PENDING_GRACE_S = 120.0
RECOVER_S = 5.0  # how often the journal is looked at (cheap: a directory listing)
RECOVER_WAITING_S = 0.5  # ... while this process has entries waiting for Redis
RECONCILE_S = 60.0
_LOCK_MS = 60_000


class Conflict(Exception):
    """A journal entry whose order id holds another order in Redis."""

    def __init__(self, entry: JournalEntry) -> None:
        super().__init__(f"order {entry.order}")
        self.entry = entry


def same_order(a: OrderRecord, b: OrderRecord) -> bool:
    """Two records of one order (at different states)."""
    return (a.client, a.service, a.link, a.created, a.quantity) == \
        (b.client, b.service, b.link, b.created, b.quantity)


class Recovery:
    def __init__(self, orders: Orders, ledger: Ledger, directory: Directory, locks: Locks,
                 journal: Journal, clock: Clock = SYSTEM) -> None:
        self._orders = orders
        self._ledger = ledger
        self._directory = directory
        self._locks = locks
        self.journal = journal
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    async def start(self, loop: bool = True) -> None:
        """Replay and reconcile once now (a Redis failure is retried by the loop)."""
        with contextlib.suppress(StoreUnavailable):
            await self.replay()
            await self.reconcile()
        if loop:
            self._task = asyncio.create_task(self._run())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(StoreUnavailable):  # last chance before exit
            if self.journal.waiting:
                await self.replay()

    async def _run(self) -> None:
        last_reconcile = self._clock.monotonic()
        while True:
            await asyncio.sleep(RECOVER_WAITING_S if self.journal.waiting else RECOVER_S)
            try:
                await self.replay()
                if self._clock.monotonic() - last_reconcile >= RECONCILE_S:
                    last_reconcile = self._clock.monotonic()
                    await self.reconcile()
            except StoreUnavailable:
                continue  # Redis is still away: the next round tries again
            except Exception:  # the loop must outlive any one bug
                log.exception("recovery round failed")

    # --- the journal --------------------------------------------------------------

    async def replay(self) -> int:
        """Every journal entry into Redis; the number of entries applied."""
        applied = 0
        store: list[str] = []  # this Redis's identity, asked for once a round, if needed
        for path in self.journal.own_segments():
            applied += await self._apply_all(path, store)
            self.journal.replayed(path)
        for segments, lock in self.journal.orphans():
            done = False
            try:
                for path in segments:
                    applied += await self._apply_all(path, store)
                    path.unlink(missing_ok=True)
                done = True
            finally:
                self.journal.release_orphan(lock, done)
        if applied:
            log.warning("journal replayed into redis", extra={"entries": applied})
        return applied

    async def _apply_all(self, path: Path, store: list[str]) -> int:
        entries = read_segment(path)
        if not entries:
            return 0
        if not store:
            store.append(await self._orders.identity())
        ours = [e for e in entries if e.store in ("", store[0])]
        if len(ours) < len(entries):
            kept = self.journal.set_aside(path, [e for e in entries if e not in ours])
            log.error("journal: entries of another Redis kept aside, not replayed here",
                      extra={"entries": len(entries) - len(ours), "file": str(kept),
                             "store": store[0]})
        conflicts = []
        for entry in ours:
            try:
                await self._apply(entry)
            except Conflict:
                conflicts.append(entry)
        if conflicts:
            self.journal.set_aside(path, conflicts, "conflicts")
        return len(ours) - len(conflicts)

    async def _apply(self, e: JournalEntry) -> None:
        await self._orders.ids.floor(keys.ORDER_SEQ, e.order)
        standing = (await self._orders.get_orders([e.order])).get(e.order)
        if standing is not None and not same_order(standing, e.record):
            # the id was handed out again (a counter a failover put back): never write
            # one order over another; the entry stays for the operator
            log.critical("journal: the order id holds another order; entry kept aside",
                         extra={"order": e.order, "journal_link": e.record.link,
                                "redis_link": standing.link})
            raise Conflict(e)
        if e.charge is not None and e.record.ledger:
            if await self._ledger.charge_once(e.record.client, e.charge, e.order,
                                              "its reservation was lost (journal replay)"):
                log.warning("journal: a lost reservation charged again", extra={
                    "order": e.order, "client": e.record.client, "amount": str(e.charge)})
        if standing is None or standing.state in ("dispatching", e.record.state):
            if not await self._orders.put_order(e.order, e.record, settles=True,
                                                durable=True):
                raise StoreUnavailable(f"order {e.order}: the durability barrier "
                                       f"({self._orders.barrier.what}) not met yet")
        else:
            log.warning("journal: order moved on in redis, kept as it is", extra={
                "order": e.order, "journal": e.record.state, "redis": standing.state})
        if e.release is not None:
            await self._ledger.credit(e.record.client, e.release, "release", e.order,
                                      note=e.note, settle=True)

    # --- reservations without a record -------------------------------------------

    async def reconcile(self) -> int:
        """Release reservations no record explains; the number released."""
        token = await self._locks.acquire(keys.RECONCILE_LOCK, _LOCK_MS)
        if token is None:
            return 0  # another replica is at it
        released = 0
        try:
            for client in await self._directory.all():
                if client.mode == "ledger":
                    released += await self._reconcile_client(client.name)
        finally:
            await self._locks.release(keys.RECONCILE_LOCK, token)
        return released

    async def _reconcile_client(self, client: str) -> int:
        cutoff = int((self._clock.time() - PENDING_GRACE_S) * 1000)
        old = [p for p in await self._ledger.pending(client) if p.at_ms <= cutoff]
        if not old:
            return 0
        records = await self._orders.get_orders(p.order for p in old)
        explained, released = [], 0
        for p in old:
            rec = records.get(p.order)
            if rec is not None and rec.state != "failed":
                explained.append(p.order)
                continue
            why = ("reconciled: no order record (the replica stopped before sending it)"
                   if rec is None else "reconciled: the order failed")
            if await self._ledger.credit(client, p.amount, "release", p.order, note=why,
                                         settle=True):
                released += 1
                log.warning("reservation without a record released", extra={
                    "client": client, "order": p.order, "amount": str(p.amount)})
            else:  # already settled: only the mark was left
                await self._ledger.forget_pending(client, [p.order])
        await self._ledger.forget_pending(client, explained)
        return released
