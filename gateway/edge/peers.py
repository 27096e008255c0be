"""Who is calling: the address a request comes from.

The direct peer is the client, unless it is one of `gateway.trusted_proxies`
(addresses or networks, IPv4 and IPv6). From a trusted proxy, the client is read
from the headers such a proxy sets, in this order:

- `X-Forwarded-For`: the right-most hop that is not itself a trusted proxy (every
  proxy appends the address it saw, so anything further left may be forged);
- `Forwarded: for=...` (RFC 7239), read the same way;
- `X-Real-IP`: one address, as the proxy saw it.

A header that is missing, empty or unreadable leaves the peer's address (or the
left-most trusted hop). Behind a trusted proxy, addresses come back normalised
(`::ffff:10.0.0.1` -> `10.0.0.1`, IPv6 compressed); with no trusted proxy the peer
is used as the server reports it (one listener reports one client one way).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any

from litestar import Request
from litestar.datastructures import Headers

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """`trusted_proxies` as networks; raises ValueError naming a bad entry.

    Config validation may call this to reject a typo at load time.
    """
    out: list[Network] = []
    for entry in entries:
        text = str(entry).strip()
        try:
            out.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"trusted_proxies: not an IP address or network: {entry!r}"
                             ) from None
    return tuple(out)


def parse_address(text: str) -> Address | None:
    """An address as proxies write it: bare, `[v6]`, `[v6]:port`, `v4:port`, quoted."""
    text = text.strip().strip('"').strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        text = text[1:end]
    elif text.count(":") == 1:  # IPv4 with a port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_trusted(address: Address | None, networks: Sequence[Network]) -> bool:
    return address is not None and any(address in net for net in networks)


def _forwarded_for(values: list[str]) -> list[str]:
    """The `for=` values of RFC 7239 `Forwarded` headers, in hop order."""
    out: list[str] = []
    for header in values:
        for element in header.split(","):
            for pair in element.split(";"):
                name, _, value = pair.partition("=")
                if name.strip().lower() == "for":
                    out.append(value.strip())
    return out


def _split(values: list[str]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def from_chain(hops: list[str], peer: Address, networks: Sequence[Network]) -> Address:
    """The right-most hop of `hops` (then the trusted peer) that is not a trusted proxy.

    When every hop is trusted, or an unreadable hop is reached, the left-most trusted
    hop read so far is the client (that much is known for sure).
    """
    client = peer
    for hop in reversed(hops):
        address = parse_address(hop)
        if address is None:
            return client
        client = address
        if not is_trusted(address, networks):
            return address
    return client


def resolve(peer: str, headers: Any, networks: Sequence[Network]) -> str:
    """The client address of a request from `peer` carrying `headers` (a multi-dict
    with `getall`, or a plain mapping)."""
    direct = parse_address(peer)
    if direct is None:
        return peer
    if not networks or not is_trusted(direct, networks):
        return str(direct)

    def values(name: str) -> list[str]:
        getall = getattr(headers, "getall", None)
        if getall is not None:
            return list(getall(name, []))
        value = headers.get(name)
        return [value] if value else []

    hops = _split(values("x-forwarded-for"))
    if not hops:
        hops = _forwarded_for(values("forwarded"))
    if not hops:
        hops = _split(values("x-real-ip"))[-1:]
    return str(from_chain(hops, direct, networks))


def client_address(request: Request[Any, Any, Any]) -> str:
    """The real client's address: the peer, or what a trusted proxy says it saw."""
    return scope_address(request.scope, request.app.state.trusted_networks)


def scope_address(scope: Any, networks: Sequence[Network]) -> str:
    """`client_address` from an ASGI scope and the trusted networks (the app's state)."""
    client = scope.get("client")
    peer = client[0] if client else "-"
    if not networks:  # nobody is trusted: the peer, without reading a header
        return str(peer)
    return resolve(peer, Headers.from_scope(scope), networks)
