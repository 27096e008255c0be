"""Client keys and their settings, in Redis, shared by every replica.

A client record holds how a client is billed (`operator`: the owner's key, whose
`balance` is the upstreams' sum; `ledger`: a reseller with a prepaid balance),
its prices (a markup on the gateway's rate or per-service prices), the services
it may see and order, its rate limit, its duplicate-order window and its routing
rules (allowed or denied providers, the most paid per 1000).

Only the SHA-256 of a key is stored. Lookups are cached in each process for
CACHE_S seconds, so disabling or rotating a key takes effect on every replica
within that time.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable
from decimal import Decimal
from typing import Literal, cast

import msgspec

from gateway.clock import SYSTEM, Clock
from gateway.config import ClientSettings, ErrorStatus
from gateway.digest import sha256_hex
from gateway.money import rate_up
from gateway.state import keys
from gateway.state.connect import AnyRedis, maps_redis_errors, text

log = logging.getLogger("gateway.clients")

CACHE_S = 2.0
CACHE_MAX = 10_000
Mode = Literal["operator", "ledger"]


def digest_hex(key: str) -> str:
    return sha256_hex(key)


def new_key() -> str:
    return "sk_" + secrets.token_urlsafe(30)


class ClientRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    name: str
    key_digest: str
    mode: Mode = "operator"
    markup: Decimal | None = None  # multiplier on the gateway's advertised rate
    prices: dict[int, Decimal] = {}  # per-service rate per 1000, instead of the markup
    services: list[int] | None = None  # the services it may see and order; None: all
    active: bool = True
    rate_limit: float | None = None  # requests per second; None: unlimited
    burst: int | None = None
    dup_window_s: float = 0.0  # same add within this window answers the first order
    created: float = 0.0
    error_status: ErrorStatus | None = None  # None: the gateway-wide setting
    # digest of the config entry this record was last seeded from ("": not from the config)
    config_digest: str = ""
    # routing rules, applied by every replica: the providers that may fill this client's
    # orders (None: all), those that may not, and the most paid per 1000 (None: no cap)
    allow_providers: list[str] | None = None
    deny_providers: list[str] = []
    max_rate: Decimal | None = None

    def allows(self, service_id: int) -> bool:
        return self.services is None or service_id in self.services

    def rate(self, service_id: int, gateway_rate: Decimal) -> Decimal:
        """This client's price per 1000 for a service the gateway sells at `gateway_rate`."""
        if service_id in self.prices:
            return self.prices[service_id]
        if self.markup is not None:
            return rate_up(gateway_rate * self.markup)
        return gateway_rate

    @property
    def plain(self) -> bool:
        """Sees the gateway's own catalog and prices."""
        return self.services is None and self.markup is None and not self.prices


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(ClientRecord)


@maps_redis_errors
class Directory:
    def __init__(self, redis: AnyRedis, clock: Clock = SYSTEM) -> None:
        self._redis = redis
        self._clock = clock
        self._cache: dict[str, tuple[float, ClientRecord | None]] = {}

    async def identify(self, key: str | None) -> ClientRecord | None:
        """The active client a key belongs to, or None."""
        if not key:
            return None
        digest = digest_hex(key)
        now = self._clock.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        name = await self._redis.get(keys.client_key_digest(digest))
        record = await self.get(text(name)) if name is not None else None
        if record is not None and (not record.active or not secrets.compare_digest(
                record.key_digest, digest)):
            record = None
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()
        self._cache[digest] = (now + CACHE_S, record)
        return record

    async def get(self, name: str) -> ClientRecord | None:
        raw = await self._redis.get(keys.client(name))
        return _dec.decode(cast(bytes, raw)) if raw is not None else None

    async def all(self) -> list[ClientRecord]:
        names = sorted(text(n) for n in await self._redis.smembers(keys.CLIENTS))
        records = [await self.get(n) for n in names]
        return [r for r in records if r is not None]

    async def put(self, record: ClientRecord, old_digest: str | None = None) -> None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(keys.client(record.name), _enc.encode(record))
        pipe.set(keys.client_key_digest(record.key_digest), record.name)
        pipe.sadd(keys.CLIENTS, record.name)
        if old_digest and old_digest != record.key_digest:
            pipe.delete(keys.client_key_digest(old_digest))
        await pipe.execute()

    async def create(self, record: ClientRecord) -> str:
        """Store a new client; its key, which is shown once and never stored."""
        if await self.get(record.name) is not None:
            raise ValueError(f"client {record.name!r} exists")
        key = new_key()
        record.key_digest, record.created = digest_hex(key), self._clock.time()
        await self.put(record)
        return key

    async def rotate(self, name: str) -> str:
        record = await self._must(name)
        old, key = record.key_digest, new_key()
        record.key_digest = digest_hex(key)
        await self.put(record, old_digest=old)
        return key

    async def set_active(self, name: str, active: bool) -> None:
        record = await self._must(name)
        record.active = active
        await self.put(record)

    async def _must(self, name: str) -> ClientRecord:
        record = await self.get(name)
        if record is None:
            raise KeyError(name)
        return record

    async def import_config(self, clients: Iterable[ClientSettings]) -> None:
        """Seed the config's clients: a client is written from its config entry when it
        is new, or when that entry changed since it was last imported. Otherwise the
        stored record stands, so `keys rotate` / `disable` / `enable` survive restarts;
        a changed entry replaces them, with a warning."""
        for c in clients:
            seed = config_digest(c)
            existing = await self.get(c.name)
            if existing is not None and existing.config_digest == seed:
                continue
            record = ClientRecord(
                name=c.name, key_digest=digest_hex(c.key), mode=c.mode, markup=c.markup,
                prices=dict(c.prices), services=c.services, active=True,
                rate_limit=c.rate_limit, burst=c.burst, dup_window_s=c.dup_window_s,
                error_status=c.error_status, config_digest=seed,
                allow_providers=c.providers.allow if c.providers else None,
                deny_providers=list(c.providers.deny or []) if c.providers else [],
                max_rate=c.max_rate,
                created=existing.created if existing else self._clock.time())
            if existing is not None:
                _log_reseed(existing, record)
            await self.put(record, old_digest=existing.key_digest if existing else None)


# fields added to ClientSettings later: left out of the digest while unset, so an entry
# that does not use them keeps its digest (and is not re-imported over `keys rotate`)
_LATER_FIELDS = ("providers", "max_rate")


def config_digest(c: ClientSettings) -> str:
    """Digest of a client's config entry as loaded (environment values included)."""
    entry = msgspec.to_builtins(c)
    for name in _LATER_FIELDS:
        if entry.get(name) is None:
            entry.pop(name, None)
    return sha256_hex(msgspec.json.encode(entry))


def _log_reseed(old: ClientRecord, new: ClientRecord) -> None:
    overridden = []
    if old.key_digest != new.key_digest:
        overridden.append("key: the config's key works, the stored one no longer does")
    if not old.active:
        overridden.append("disabled: enabled again")
    if overridden:
        log.warning("client's config entry changed since it was last imported: the config "
                    "replaces the stored client, overriding changes made with `keys`",
                    extra={"client": old.name, "overrides": overridden})
    else:
        log.info("client's config entry changed: imported", extra={"client": old.name})
