"""Where a request carries its API key, and how a key may appear in a log.

Which client a key belongs to is `gateway.state.clients.Directory.identify`: keys are
stored only as SHA-256 digests and looked up by digest.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.digest import sha256_hex


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
