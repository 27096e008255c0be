"""Every order's status history: what changed, and when, in a few dozen bytes.

One blob per order, in bucket hashes like the records (`keys.history_bucket`, the
same hash tag as the order's record bucket), kept as long as the record:

    blob  = <flags: 1 byte> <entry> ...
    entry = <len: 1 byte> <code: 1 byte> <unix time: 4 bytes> <payload: msgpack>

`code` is a status (its index in `models.ORDER_STATUSES`; OTHER_STATUS for one the
provider made up, its text then in the payload) with [start_count, remains], or an
event below 16 (REFILL_ASKED, ...) with [refill id] or []. A status entry is
appended only when it differs from the order's last status entry (a second replica
that saw the same change adds nothing), and at most MAX_ENTRIES / MAX_BYTES are kept
(the first, then the newest), so a bucket stays a compact listpack.

`flags` marks the events an order has been counted for in its scorecard (SEEN,
STARTED, FINAL: `gateway.state.scores`): the append that sets a flag is the one
that counts it, so each order counts each event once across replicas.
"""

from __future__ import annotations

import asyncio
import struct
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from gateway.models import FINAL_STATUSES, ORDER_STATUSES, OrderRecord
from gateway.state import keys, scripts
from gateway.state.connect import AnyRedis, maps_redis_errors

MAX_ENTRIES = 12
MAX_BYTES = 200  # with the field name, under the listpack value limit (256)

SEEN, STARTED, FINAL = 1, 2, 4  # scorecard events, counted once per order

OTHER_STATUS = 15
REFILL_ASKED, REFILL_REFUSED, REFILL_DONE, REFILL_FAILED = 16, 17, 18, 19
CANCEL_ASKED, CANCEL_REFUSED = 20, 21
# order rescue (gateway.actions.rescue); REPLACED and RESCUE_STOPPED carry a text
RESCUE_CANCEL_ASKED, RESCUE_CANCELED, REPLACED, RESCUE_STOPPED = 22, 23, 24, 25
EVENTS = {REFILL_ASKED: "refill requested", REFILL_REFUSED: "refill refused",
          REFILL_DONE: "refill completed", REFILL_FAILED: "refill rejected",
          CANCEL_ASKED: "cancel requested", CANCEL_REFUSED: "cancel refused",
          RESCUE_CANCEL_ASKED: "rescue_cancel_requested", RESCUE_CANCELED: "rescue_canceled",
          REPLACED: "replaced", RESCUE_STOPPED: "rescue_stopped"}
_TEXT_EVENTS = frozenset({REPLACED, RESCUE_STOPPED})
STARTED_STATUSES = frozenset({"In progress", "Processing", "Completed", "Partial"})

# status change, once, always, always and reset the event flags (scripts.HISTORY_APPEND)
Mode = Literal["c", "o", "a", "r"]

_CODES = {s: i for i, s in enumerate(ORDER_STATUSES)}
_TIME = struct.Struct(">I")
_enc = msgspec.msgpack.Encoder()
_payload = msgspec.msgpack.Decoder(list[Any])


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry to append, and how (`Mode`); `claim`: the events it counts."""

    data: bytes
    mode: Mode
    claim: int = 0


@dataclass(frozen=True, slots=True)
class Change:
    """One entry as read back."""

    t: int  # unix time it was seen
    what: str  # the status, as the provider said it, or an event ("refill requested")
    start_count: int | None = None
    remains: int | None = None
    refill: int | None = None  # the gateway refill id of a refill event


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        try:
            return int(float(text))
        except (ValueError, OverflowError):
            return None


def _pack(code: int, at: float, payload: list[Any]) -> bytes:
    body = _enc.encode(payload)
    return bytes((5 + len(body), code)) + _TIME.pack(max(0, int(at))) + body


def status_entry(rec: OrderRecord, at: float, claim: int = 0) -> Entry:
    """The order's status as `rec` has it now, seen at `at`."""
    status = rec.status or "Pending"
    payload: list[Any] = [_int(rec.start_count), _int(rec.remains)]
    code = _CODES.get(status, OTHER_STATUS)
    if code == OTHER_STATUS:
        payload.append(status[:24])
    return Entry(_pack(code, at, payload), "c", claim)


def event_entry(code: int, at: float, refill: int | None = None) -> Entry:
    """A refill or cancel event; an outcome (REFILL_DONE, REFILL_FAILED) is kept once."""
    mode: Mode = "o" if code in (REFILL_DONE, REFILL_FAILED) else "a"
    return Entry(_pack(code, at, [refill] if refill is not None else []), mode)


def rescue_entry(code: int, at: float, text: str | None = None) -> Entry:
    """A rescue step; REPLACED (`text`: the new provider) resets the order's event
    flags, so its new provider's scorecard counts it (seen, started, final) anew."""
    payload: list[Any] = [text[:40]] if text is not None else []
    return Entry(_pack(code, at, payload), "r" if code == REPLACED else "a")


def started(before: tuple[str | None, str | None, str | None], rec: OrderRecord) -> bool:
    """Has the order visibly started: a working or delivered status, less than the whole
    quantity remaining, or a start count that moved since the last answer."""
    if rec.status in STARTED_STATUSES:
        return True
    remains = _int(rec.remains)
    if remains is not None and remains < rec.quantity * (rec.runs or 1):
        return True
    start_before = before[1]
    return start_before is not None and rec.start_count != start_before


def claims(before: tuple[str | None, str | None, str | None], rec: OrderRecord) -> int:
    """The scorecard events a status change may count (the history keeps each once)."""
    bits = SEEN
    if started(before, rec):
        bits |= STARTED
    if rec.status in FINAL_STATUSES:
        bits |= FINAL
    return bits


def decode(blob: bytes) -> tuple[int, list[Change]]:
    """(flags, changes) of a stored blob."""
    if not blob:
        return 0, []
    out: list[Change] = []
    at = 1
    while at < len(blob):
        end = at + 1 + blob[at]
        code = blob[at + 1]
        (t,) = _TIME.unpack_from(blob, at + 2)
        p = _payload.decode(blob[at + 6:end])
        if code < len(ORDER_STATUSES) or code == OTHER_STATUS:
            what = ORDER_STATUSES[code] if code < len(ORDER_STATUSES) else str(p[2])
            out.append(Change(t, what, p[0], p[1]))
        elif code in _TEXT_EVENTS:
            out.append(Change(t, f"{EVENTS[code]} -> {p[0]}" if p else EVENTS[code]))
        else:
            out.append(Change(t, EVENTS.get(code, f"event {code}"),
                              refill=p[0] if p else None))
        at = end
    return blob[0], out


@maps_redis_errors
class History:
    def __init__(self, redis: AnyRedis) -> None:
        self._redis = redis
        self._append = redis.register_script(scripts.HISTORY_APPEND)

    async def append(self, entries: Sequence[tuple[int, Entry]]) -> list[int]:
        """Append entries (order id, entry), one script call per bucket, all at once.
        Per entry, in order: -1 when it was already recorded (skipped), else the
        claimed event bits this call was first to set."""
        groups: dict[str, list[int]] = defaultdict(list)
        for i, (order_id, _) in enumerate(entries):
            groups[keys.history_bucket(order_id)].append(i)

        async def one(bucket: str, which: list[int]) -> list[int]:
            args: list[Any] = [MAX_ENTRIES, MAX_BYTES]
            for i in which:
                order_id, e = entries[i]
                args += [str(order_id), e.data, e.mode, e.claim]
            return [int(x) for x in await self._append(keys=[bucket], args=args)]

        out = [-1] * len(entries)
        answers = await asyncio.gather(*(one(b, w) for b, w in groups.items()))
        for which, got in zip(groups.values(), answers, strict=True):
            for i, bits in zip(which, got, strict=True):
                out[i] = bits
        return out

    async def read(self, ids: Iterable[int]) -> dict[int, list[Change]]:
        """The changes of each order that has any, oldest first (one round trip)."""
        groups: dict[str, list[int]] = defaultdict(list)
        for i in ids:
            groups[keys.history_bucket(i)].append(i)
        if not groups:
            return {}
        pipe = self._redis.pipeline(transaction=False)
        for bucket, members in groups.items():
            pipe.hmget(bucket, [str(i) for i in members])
        found: dict[int, list[Change]] = {}
        for members, values in zip(groups.values(), await pipe.execute(), strict=True):
            for order_id, blob in zip(members, values, strict=True):
                if blob:
                    found[order_id] = decode(blob)[1]
        return found

    async def raw(self, order_id: int) -> bytes | None:
        """The stored blob of one order (its size is what the history costs)."""
        blob = await self._redis.hget(keys.history_bucket(order_id), str(order_id))
        return blob.encode() if isinstance(blob, str) else blob
