"""Client authentication: which client a request's key belongs to.

Keys are held only as SHA-256 digests. A lookup hashes the presented key and
compares digests with `hmac.compare_digest`, so neither the time taken nor the
log (which only ever sees `fingerprint()`) gives a key away.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping

from gateway.config import ClientSettings


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def fingerprint(key: str) -> str:
    """A short, non-reversible tag of a key for logs."""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


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


class Clients:
    def __init__(self, clients: Iterable[ClientSettings]) -> None:
        self._by_digest = {digest(c.key): c.name for c in clients}

    def identify(self, key: str | None) -> str | None:
        """The client's name, or None for a missing or unknown key.

        Compares against every known digest without stopping early, in constant time.
        """
        if not key:
            return None
        presented = digest(key)
        name = None
        for known, client in self._by_digest.items():
            if hmac.compare_digest(known, presented):
                name = client
        return name
