"""Every Redis key the gateway uses, in one place.

All keys start with `gw:`. Order and refill records live in bucket hashes of
BUCKET ids each (`gw:o:{<id // BUCKET>}` field `<id>`): a hash field costs far
less memory than a key, and each bucket is one key, so a Redis Cluster keeps it
in one slot. The braces are hash tags; a call that spans buckets pipelines one
command per bucket. With `hash-max-listpack-value 256` (the embedded Redis sets
it) a bucket of 128 records stays a compact listpack: ~150 bytes per order.
"""

from __future__ import annotations

PREFIX = "gw:"
BUCKET = 128

ORDER_SEQ = PREFIX + "seq:order"
REFILL_SEQ = PREFIX + "seq:refill"
UNKNOWN_ORDERS = PREFIX + "orders:unknown"
# the identity of the data set: journal entries are replayed only into the same one
STORE_ID = PREFIX + "store:id"


def order_bucket(order_id: int) -> str:
    return f"{PREFIX}o:{{{order_id // BUCKET}}}"


def refill_bucket(refill_id: int) -> str:
    return f"{PREFIX}r:{{{refill_id // BUCKET}}}"


def history_bucket(order_id: int) -> str:
    """Status histories of a bucket of orders (`gateway.state.history`): field `<id>`,
    a packed blob of a few dozen bytes; same hash tag as the order's record bucket."""
    return f"{PREFIX}h:{{{order_id // BUCKET}}}"


def catalog(provider: str) -> str:
    """Cached upstream service list of one provider (msgpack CatalogEntry)."""
    return f"{PREFIX}cat:{{{provider}}}"


def catalog_lock(provider: str) -> str:
    return f"{PREFIX}cat:{{{provider}}}:lock"


def balance(provider: str) -> str:
    """Last known upstream balance of one provider (msgpack)."""
    return f"{PREFIX}bal:{{{provider}}}"


# --- clients (issue: clients and money) ----------------------------------------
# Every key of one client carries the hash tag {c:<name>}, so the Lua scripts that
# move money (balance + ledger + settlement marks) touch a single Cluster slot.

CLIENTS = PREFIX + "clients"  # set of client names


def client_key_digest(digest_hex: str) -> str:
    """SHA-256 of an API key -> the client name it belongs to."""
    return f"{PREFIX}ck:{digest_hex}"


def client(name: str) -> str:
    """The client record (msgpack ClientRecord)."""
    return f"{PREFIX}{{c:{name}}}:rec"


def client_balance(name: str) -> str:
    """Prepaid balance in integer units of money.UNIT."""
    return f"{PREFIX}{{c:{name}}}:bal"


def client_ledger(name: str) -> str:
    """Append-only stream of every money movement."""
    return f"{PREFIX}{{c:{name}}}:ledger"


def client_settled(name: str) -> str:
    """Hash order id -> how its reservation was settled (refund/release), set once."""
    return f"{PREFIX}{{c:{name}}}:settled"


def client_charged(name: str) -> str:
    """Hash order id -> the units its reservation took, set once by the reservation:
    a journal replay after a lossy failover charges an order whose reservation was
    lost, and never one whose reservation stands (`gateway.state.ledger.charge_once`)."""
    return f"{PREFIX}{{c:{name}}}:charged"


def client_pending(name: str) -> str:
    """Hash order id -> reservation time (ms): reserved, the order's record not yet
    settled. Written by the reservation itself, so a crash right after it leaves a
    trace the reconciler (`gateway.state.recovery`) finds and releases."""
    return f"{PREFIX}{{c:{name}}}:pending"


def client_rate(name: str) -> str:
    """Token bucket of the client's rate limit."""
    return f"{PREFIX}{{c:{name}}}:rate"


def auth_count(address: str) -> str:
    """Failed authentications from one client address in the current window."""
    return f"{PREFIX}{{auth:{address}}}:n"


def auth_block(address: str) -> str:
    """Set (with a TTL) while one client address is refused for failing too often."""
    return f"{PREFIX}{{auth:{address}}}:block"


def once(client_name: str, token: str) -> str:
    """An Idempotency-Key or duplicate-window claim of one client (a hash: answer,
    owner, lease)."""
    return f"{PREFIX}{{c:{client_name}}}:once:{token}"


# --- provider health (issue: routing that survives real providers) -------------


def breaker(provider: str, service: str | None = None) -> str:
    """Circuit breaker of a provider, or of one of its services (same hash tag)."""
    base = f"{PREFIX}brk:{{{provider}}}"
    return base if service is None else f"{base}:svc:{service}"


def balance_lock(provider: str) -> str:
    return f"{PREFIX}bal:{{{provider}}}:lock"


def score(provider: str, service: str) -> str:
    """Scorecard of one provider service (`gateway.state.scores`): a hash of decayed
    sums and their last update time; same hash tag as the provider's breaker."""
    return f"{PREFIX}sc:{{{provider}}}:{service}"


# --- catalog ------------------------------------------------------------------

PUBLISHED_RATES = PREFIX + "rates"  # service id -> the advertised rate last confirmed
MIRROR_IDS = PREFIX + "{mirror}:ids"  # "provider:upstream id" -> gateway id, for ever
MIRROR_SEQ = PREFIX + "{mirror}:seq"

# --- recovery -------------------------------------------------------------------

RECONCILE_LOCK = PREFIX + "reconcile:lock"  # one replica at a time reconciles

# --- order rescue (gateway.state.rescues) ------------------------------------------

RESCUE_LOCK = PREFIX + "rescue:lock"  # one replica at a time rescues
RESCUE_DUE = PREFIX + "rescue:due"  # sorted set: order id -> when the rescue looks at it next


def rescue_bucket(order_id: int) -> str:
    """Rescue state of a bucket of orders (msgpack RescueRecord, field `<id>`), for
    orders of services with `rescue_after_s`; same hash tag as the record bucket."""
    return f"{PREFIX}rs:{{{order_id // BUCKET}}}"

# --- alerts -----------------------------------------------------------------------
# One hash tag, so the claim and the recent list are written by one script in one slot.

ALERTS_RECENT = PREFIX + "{alerts}:recent"  # list of the latest alert payloads (JSON), newest first


def alert_once(identity: str) -> str:
    """Set (NX, with a TTL) by the replica that sends an alert: the others do not."""
    return f"{PREFIX}{{alerts}}:once:{identity}"


# --- operator dashboard (gateway.admin) -------------------------------------------

ADMIN_AUDIT = PREFIX + "admin:audit"  # list of the dashboard's actions (JSON), newest first


def admin_session(token_digest: str) -> str:
    """A dashboard session (msgpack, with a TTL), by the SHA-256 of its cookie token."""
    return f"{PREFIX}admin:sess:{token_digest}"


def admin_failures(address: str) -> str:
    """Failed admin logins (or bearer keys) from one address in the current window."""
    return f"{PREFIX}admin:fail:{address}"


# Counters the add path bumps in the same pipelined write as the order's outcome; one
# hash tag, so the dashboard reads a week (or an hour of minutes) in one slot.


def stats_day(day: str) -> str:
    """Hash of one UTC day (YYYY-MM-DD): placed, unknown, failed, fallback, and the
    charged and cost sums of placed orders in integer units of money.UNIT."""
    return f"{PREFIX}{{stats}}:d:{day}"


def stats_minute(minute: int) -> str:
    """Orders placed in one minute (unix time // 60), kept two hours."""
    return f"{PREFIX}{{stats}}:m:{minute}"


# --- one active order per link (gateway.state.links) --------------------------------


def link_mark(digest_hex: str) -> str:
    """The order holding a link within a service family (`"<order id>:<taken ms>:
    <service>:<client>"`, with a TTL), by the SHA-256 of family and normalised link."""
    return f"{PREFIX}link:{{{digest_hex}}}"
