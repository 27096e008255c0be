"""The operator dashboard's own state: sessions, the audit list, failed logins.

Failed logins and admin bearer keys are counted per address under keys of their own
(`keys.admin_failures`), apart from the API's (`gateway.state.limits`): an address
locked out of one is not locked out of the other.

A session is a random token in an HttpOnly cookie; Redis keeps only its SHA-256,
with the session's CSRF token, for SESSION_TTL_S. The audit list keeps the
latest AUDIT_MAX dashboard actions (JSON), newest first.
"""

from __future__ import annotations

import secrets
from typing import Any, cast

import msgspec

from gateway.digest import sha256_hex
from gateway.state import keys, scripts
from gateway.state.connect import AnyRedis, maps_redis_errors

SESSION_TTL_S = 12 * 3600
AUDIT_MAX = 1000
MAX_FAILURES = 10  # wrong keys per address per window, then even a right key is refused
FAILURE_WINDOW_S = 300


class Session(msgspec.Struct, kw_only=True):
    csrf: str
    created: float
    flash: str = ""  # a message for the next page, shown once
    flash_error: bool = False


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(Session)
_json = msgspec.json.Encoder(enc_hook=str)


@maps_redis_errors
class AdminStore:
    def __init__(self, redis: AnyRedis) -> None:
        self._redis = redis
        self._attempt = redis.register_script(scripts.ADMIN_ATTEMPT)

    async def open_session(self, now: float) -> tuple[str, Session]:
        """A new session: its cookie token (never stored) and its record."""
        token = secrets.token_urlsafe(32)
        session = Session(csrf=secrets.token_urlsafe(32), created=now)
        await self._redis.set(keys.admin_session(sha256_hex(token)), _enc.encode(session),
                              ex=SESSION_TTL_S)
        return token, session

    async def session(self, token: str) -> Session | None:
        raw = await self._redis.get(keys.admin_session(sha256_hex(token)))
        return _dec.decode(cast(bytes, raw)) if raw is not None else None

    async def save_session(self, token: str, session: Session) -> None:
        """Store a changed session (its flash), keeping its expiry."""
        await self._redis.set(keys.admin_session(sha256_hex(token)), _enc.encode(session),
                              keepttl=True, xx=True)

    async def close_session(self, token: str) -> None:
        await self._redis.delete(keys.admin_session(sha256_hex(token)))

    async def audit(self, entry: dict[str, Any]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.lpush(keys.ADMIN_AUDIT, _json.encode(entry))
        pipe.ltrim(keys.ADMIN_AUDIT, 0, AUDIT_MAX - 1)
        await pipe.execute()

    async def audit_log(self, count: int = 50) -> list[dict[str, Any]]:
        raw = await self._redis.lrange(keys.ADMIN_AUDIT, 0, count - 1)
        return [msgspec.json.decode(item) for item in raw]

    async def attempt(self, address: str, wrong: bool) -> int:
        """One operator authentication from `address`, its key already compared, in
        one step (script ADMIN_ATTEMPT): 0 when its verdict may be answered (a wrong
        key is counted); else refused, for the window's ms left. However many race,
        at most MAX_FAILURES per window are answered as wrong."""
        return int(await self._attempt(keys=[keys.admin_failures(address)],
                                       args=[FAILURE_WINDOW_S, MAX_FAILURES,
                                             "1" if wrong else "0"]))
