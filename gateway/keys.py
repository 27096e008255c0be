"""Every Redis key the gateway uses, in one place.

All keys start with `gw:`. Order and refill records live in bucket hashes of
BUCKET ids each (`gw:o:{<id // BUCKET>}` field `<id>`): a hash field costs far
less memory than a key, and each bucket is one key, so a Redis Cluster keeps it
in one slot. The braces are hash tags; a call that spans buckets pipelines one
command per bucket.
"""

from __future__ import annotations

PREFIX = "gw:"
BUCKET = 1024

ORDER_SEQ = PREFIX + "seq:order"
REFILL_SEQ = PREFIX + "seq:refill"
UNKNOWN_ORDERS = PREFIX + "orders:unknown"


def order_bucket(order_id: int) -> str:
    return f"{PREFIX}o:{{{order_id // BUCKET}}}"


def refill_bucket(refill_id: int) -> str:
    return f"{PREFIX}r:{{{refill_id // BUCKET}}}"


def catalog(provider: str) -> str:
    """Cached upstream service list of one provider (msgpack CatalogEntry)."""
    return f"{PREFIX}cat:{{{provider}}}"


def catalog_lock(provider: str) -> str:
    return f"{PREFIX}cat:{{{provider}}}:lock"


def balance(provider: str) -> str:
    """Last known upstream balance of one provider (msgpack)."""
    return f"{PREFIX}bal:{{{provider}}}"
