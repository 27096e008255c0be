"""Every error the gateway raises, as one tree.

    GatewayError
    ├── ClientError            answered to the client as {"error": message}
    │   ├── AuthError          401 "Invalid API key"
    │   ├── NotFound           404 "Not Found"
    │   ├── TooManyRequests    429 "Too many requests"
    │   └── NotReady           503 the catalog is not complete yet (cold start)
    ├── ConfigError            a bad configuration file (message carries the line)
    ├── StoreUnavailable       Redis could not be reached or failed a command:
    │                          503 "Temporary error, try again later", logged once
    │                          per outage
    └── ProviderError          anything that went wrong talking to an upstream
        ├── Unreachable        the request provably never reached the provider
        ├── Ambiguous          the request may have reached it (timeout, reset)
        ├── Unavailable        it answered 5xx / 429 (read calls may retry)
        ├── BadAnswer          it answered something we cannot read (HTML, junk)
        └── Rejected           it answered a definite {"error": ...}

Foreign exceptions are translated once where they enter, and nothing deeper
catches a library's exception type: aiohttp and httpx errors in
`gateway.upstream.transport`, redis-py errors in `gateway.state.connect` (every
class of `gateway.state` is wrapped by `maps_redis_errors`). The HTTP edge turns
each branch into its answer in one table (`gateway.edge.answers`).
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of everything raised on purpose."""


class ClientError(GatewayError):
    """The client's request cannot be served; the message goes back verbatim."""

    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @classmethod
    def with_status(cls, message: str, status_code: int) -> ClientError:
        """The same answer again (a replayed idempotent request)."""
        err = cls(message)
        err.status_code = status_code
        return err


class AuthError(ClientError):
    status_code = 401

    def __init__(self, message: str = "Invalid API key") -> None:
        super().__init__(message)


class NotFound(ClientError):
    status_code = 404

    def __init__(self, message: str = "Not Found") -> None:
        super().__init__(message)


class TooManyRequests(ClientError):
    status_code = 429

    def __init__(self) -> None:
        super().__init__("Too many requests")


class NotReady(ClientError):
    """This replica cannot answer yet (e.g. a provider's list was never fetched)."""

    status_code = 503


class ConfigError(GatewayError):
    """The configuration cannot be used; str() names the file and line."""


class StoreUnavailable(GatewayError):
    """Redis failed: a connection error, a timeout, or an error reply."""

    message = "Temporary error, try again later"
    status_code = 503


class ProviderError(GatewayError):
    """Talking to an upstream failed. `raw` keeps the answer text for the log only."""

    def __init__(self, message: str, raw: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.raw = raw[:500]


class Unreachable(ProviderError):
    """Connection never made: safe to send elsewhere or again."""


class Ambiguous(ProviderError):
    """The request may have been processed: never send a write again."""


class Unavailable(ProviderError):
    """HTTP 5xx or 429. `retry_after` is the server's hint in seconds, if any."""

    def __init__(self, message: str, raw: str = "", retry_after: float | None = None) -> None:
        super().__init__(message, raw)
        self.retry_after = retry_after


class BadAnswer(ProviderError):
    """An answer in no shape we know (HTML page, empty body, unknown JSON)."""


class Rejected(ProviderError):
    """The provider answered a definite error. `elsewhere`: worth trying another."""

    def __init__(self, message: str, raw: str = "", elsewhere: bool = False) -> None:
        super().__init__(message, raw)
        self.elsewhere = elsewhere
