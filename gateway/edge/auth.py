"""Where a request carries its API key, how a key may appear in a log, and the one
step that authenticates an API request (`authenticate`).

Which client a key belongs to is `gateway.state.clients.Directory.identify`: keys are
stored only as SHA-256 digests and looked up by digest. Whether its verdict may be
answered is `gateway.state.limits.RateLimiter.attempt`, one script in Redis.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from gateway.digest import sha256_hex
from gateway.errors import AuthError
from gateway.state.clients import ClientRecord, Directory
from gateway.state.limits import RateLimiter

log = logging.getLogger("gateway.edge")


def fingerprint(key: str) -> str:
    """A short, non-reversible tag of a key for logs."""
    return sha256_hex(key)[:8]


def presented_key(fields: Mapping[str, str], headers: Mapping[str, str]) -> str | None:
    """The key from `key`/`api`/`api_token` fields, `X-Api-Key` or `Authorization: Bearer`."""
    for name in ("key", "api", "api_token"):
        value = fields.get(name)
        if value:
            return value.strip()
    value = headers.get("x-api-key")
    if value:
        return value.strip()
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return None


async def authenticate(limiter: RateLimiter, directory: Directory, address: str,
                       key: str | None) -> ClientRecord:
    """The client `key` names, presented from `address`. AuthError for a wrong key,
    TooManyRequests while the address is blocked (a right key too).

    The key is looked up, then its verdict is decided in Redis in one step with the
    address's count (`RateLimiter.attempt`): however many attempts race, on however
    many replicas, at most AUTH_FAILURES wrong keys are answered as wrong, and no
    right key is answered once they are. A right key is never counted, so a panel's
    own concurrent calls never hold an attacker's place in the count. An address
    this replica knows to be blocked is refused before any lookup.
    """
    limiter.refuse_known(address)
    client = await directory.identify(key)
    if client is None:
        log.info("authentication failed", extra={
            "address": address, "key": fingerprint(key) if key else None})
    await limiter.attempt(address, right=client is not None)
    if client is None:
        raise AuthError()
    return client
