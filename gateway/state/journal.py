"""The local journal: an order's outcome when Redis could not take it.

Once an upstream `add` may have created an order, its record must outlive a
Redis outage and this process. When writing it to Redis fails, the dispatcher
appends the record (and any release of its reservation) here, fsync'd, and
answers the client as if Redis had taken it; `gateway.state.recovery` puts the
entries into Redis when Redis answers again, and at start. The normal path
never touches the disk: a process that never saw Redis fail has no journal.

Files, in the data dir's `journal/`:

    <owner>.lock           held (flock) by the process while it lives
    <owner>.<n>.journal    its segments: length-prefixed msgpack frames

    foreign/<owner>.<n>.journal  entries written for another Redis (below)
    conflicts/<owner>.<n>.journal  entries whose order id holds another order

Appends go to the newest segment; a replay closes it and starts another, so
nothing appended while a replay awaits Redis is lost. Each entry names the data
set it belongs to (`Orders.identity()`, kept in Redis, so a promoted replica is
the same store): an entry is replayed only into that store. Entries of another
store (the process was pointed at another Redis with the same data dir) are moved
to `foreign/` and reported, never written into the wrong Redis; a segment moved
back into `journal/` by hand is replayed like one of a process that is gone. A
lock file nobody holds belonged to a process that is gone: whoever takes it
replays its segments. A frame torn by a crash mid-write is ignored (its request
was never answered).
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import struct
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import IO

import msgspec

from gateway.models import OrderRecord

log = logging.getLogger("gateway.journal")

_LEN = struct.Struct(">I")


class JournalEntry(msgspec.Struct, array_like=True):
    order: int
    record: OrderRecord
    release: Decimal | None = None  # give this back to the client's balance (settled once)
    note: str = ""
    store: str = ""  # the Redis data set it belongs to ("": written before stores had ids)
    # what the order's reservation took (a prepaid client's placed or unknown order):
    # charged again on replay if a failover lost the reservation (once per order)
    charge: Decimal | None = None


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(JournalEntry)


def read_segment(path: Path) -> list[JournalEntry]:
    """The whole frames of one segment; a torn or unreadable tail is skipped."""
    data = path.read_bytes()
    out, at = [], 0
    while at + _LEN.size <= len(data):
        (size,) = _LEN.unpack_from(data, at)
        frame = data[at + _LEN.size:at + _LEN.size + size]
        if len(frame) < size:
            log.warning("journal: torn frame skipped", extra={"file": str(path)})
            break
        try:
            out.append(_dec.decode(frame))
        except msgspec.DecodeError:
            log.error("journal: unreadable frame skipped", extra={"file": str(path)})
        at += _LEN.size + size
    return out


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """This process's journal, and the way to the journals of processes gone."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.owner = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._lock: IO[bytes] | None = None
        self._segment: IO[bytes] | None = None
        self._closed: list[Path] = []  # own segments written and not yet replayed
        self._n = 0

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = open(self.directory / f"{self.owner}.lock", "wb")
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def close(self) -> None:
        """Release the lock; segments not replayed stay for the next start."""
        self._close_segment()
        if self._lock is not None:
            if not self._closed:
                (self.directory / f"{self.owner}.lock").unlink(missing_ok=True)
            self._lock.close()
            self._lock = None

    @property
    def waiting(self) -> bool:
        """Entries of this process not yet replayed into Redis."""
        return self._segment is not None or bool(self._closed)

    def append(self, entry: JournalEntry) -> None:
        """Write one entry and fsync it; raises OSError when the disk refuses."""
        if self._segment is None:
            self._n += 1
            path = self.directory / f"{self.owner}.{self._n}.journal"
            self._segment = open(path, "ab")
            _fsync_dir(self.directory)
        frame = _enc.encode(entry)
        self._segment.write(_LEN.pack(len(frame)) + frame)
        self._segment.flush()
        os.fsync(self._segment.fileno())
        log.warning("journal: order kept on disk until Redis takes it",
                    extra={"order": entry.order, "state": entry.record.state})

    def _close_segment(self) -> None:
        if self._segment is not None:
            self._closed.append(Path(self._segment.name))
            self._segment.close()
            self._segment = None

    def own_segments(self) -> list[Path]:
        """Close the current segment (later appends start a new one) and list this
        process's segments waiting for a replay."""
        self._close_segment()
        return list(self._closed)

    def set_aside(self, path: Path, entries: list[JournalEntry],
                  kind: str = "foreign") -> Path:
        """Keep entries that must not be replayed (fsync'd), named after the segment
        they came from: `foreign/` (another Redis's), `conflicts/` (their order id
        holds another order)."""
        foreign = self.directory / kind
        foreign.mkdir(exist_ok=True, mode=0o700)
        target = foreign / path.name
        with open(target, "ab") as f:
            for entry in entries:
                frame = _enc.encode(entry)
                f.write(_LEN.pack(len(frame)) + frame)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(foreign)
        return target

    def foreign(self) -> list[Path]:
        """Segments set aside for another Redis."""
        return sorted((self.directory / "foreign").glob("*.journal"))

    def replayed(self, path: Path) -> None:
        """A segment is in Redis now: remove it."""
        path.unlink(missing_ok=True)
        if path in self._closed:
            self._closed.remove(path)

    def orphans(self) -> Iterator[tuple[list[Path], IO[bytes]]]:
        """Segments of processes that are gone, each group with its lock held.
        Call `release_orphan` with the lock when its segments are replayed."""
        if not self.directory.is_dir():
            return
        owners = {p.name[:-len(".lock")] for p in self.directory.glob("*.lock")}
        # a segment with no lock file at all: put back by hand (from foreign/)
        owners |= {p.name.split(".")[0] for p in self.directory.glob("*.journal")}
        for owner in sorted(owners):
            if owner == self.owner:
                continue
            lock_path = self.directory / f"{owner}.lock"
            try:
                handle = open(lock_path, "ab+")
            except OSError:
                continue
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # its process is alive
                handle.close()
                continue
            segments = sorted(self.directory.glob(f"{owner}.*.journal"),
                              key=lambda p: int(p.name.split(".")[-2]))
            yield segments, handle

    def release_orphan(self, handle: IO[bytes], done: bool) -> None:
        """Done: every segment of that process was replayed; forget it."""
        if done:
            Path(handle.name).unlink(missing_ok=True)
        handle.close()
