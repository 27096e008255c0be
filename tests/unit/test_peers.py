"""The client address: the direct peer, unless it is a trusted proxy; then the
right-most untrusted hop of X-Forwarded-For, else Forwarded: for=, else X-Real-IP."""

from __future__ import annotations

import logging

import pytest

from gateway.edge.peers import parse_address, parse_networks, resolve
from inprocess import ALICE, App
from peer_client import post_from

PROXIES = parse_networks(["127.0.0.1", "10.0.0.0/8", "::1", "fd00::/8"])

CASES = [
    # (peer, headers, client address)
    # an untrusted peer is the client, whatever it says
    ("198.51.100.7", {"x-forwarded-for": "203.0.113.9"}, "198.51.100.7"),
    ("198.51.100.7", {"forwarded": "for=203.0.113.9"}, "198.51.100.7"),
    ("198.51.100.7", {"x-real-ip": "203.0.113.9"}, "198.51.100.7"),
    ("2001:db8::5", {"x-forwarded-for": "203.0.113.9"}, "2001:db8::5"),
    ("::ffff:198.51.100.7", {}, "198.51.100.7"),
    # a trusted proxy: the right-most hop that is not a trusted proxy
    ("127.0.0.1", {"x-forwarded-for": "203.0.113.9"}, "203.0.113.9"),
    ("127.0.0.1", {"x-forwarded-for": "6.6.6.6, 203.0.113.9"}, "203.0.113.9"),
    ("127.0.0.1", {"x-forwarded-for": "6.6.6.6, 203.0.113.9, 10.1.2.3"}, "203.0.113.9"),
    ("127.0.0.1", {"x-forwarded-for": "203.0.113.9:51234"}, "203.0.113.9"),
    ("127.0.0.1", {"x-forwarded-for": "[2001:db8::9]:443"}, "2001:db8::9"),
    ("127.0.0.1", {"x-forwarded-for": "2001:DB8:0::9"}, "2001:db8::9"),
    ("::1", {"x-forwarded-for": "203.0.113.9"}, "203.0.113.9"),
    ("fd00::1", {"x-forwarded-for": "::ffff:203.0.113.9"}, "203.0.113.9"),
    # every hop trusted: the left-most (a client on the proxy's own network)
    ("127.0.0.1", {"x-forwarded-for": "10.9.9.9, 10.1.1.1"}, "10.9.9.9"),
    # garbage stops the walk at the last hop known for sure
    ("127.0.0.1", {"x-forwarded-for": "unknown, 10.1.1.1"}, "10.1.1.1"),
    ("127.0.0.1", {"x-forwarded-for": "garbage"}, "127.0.0.1"),
    ("127.0.0.1", {"x-forwarded-for": ""}, "127.0.0.1"),
    ("127.0.0.1", {}, "127.0.0.1"),
    # RFC 7239
    ("127.0.0.1", {"forwarded": "for=203.0.113.9;proto=https"}, "203.0.113.9"),
    ("127.0.0.1", {"forwarded": 'for=6.6.6.6, for="[2001:db8:cafe::17]:4711"'},
     "2001:db8:cafe::17"),
    ("127.0.0.1", {"forwarded": "for=203.0.113.9, for=10.0.0.2;by=10.0.0.3"}, "203.0.113.9"),
    ("127.0.0.1", {"forwarded": "for=_hidden"}, "127.0.0.1"),
    # X-Real-IP
    ("127.0.0.1", {"x-real-ip": "203.0.113.9"}, "203.0.113.9"),
    ("127.0.0.1", {"x-real-ip": "not an address"}, "127.0.0.1"),
    # X-Forwarded-For comes first, then Forwarded, then X-Real-IP
    ("127.0.0.1", {"x-forwarded-for": "203.0.113.1", "forwarded": "for=203.0.113.2",
                   "x-real-ip": "203.0.113.3"}, "203.0.113.1"),
    ("127.0.0.1", {"forwarded": "for=203.0.113.2", "x-real-ip": "203.0.113.3"},
     "203.0.113.2"),
]


@pytest.mark.parametrize(("peer", "headers", "client"), CASES)
def test_client_address(peer: str, headers: dict[str, str], client: str) -> None:
    assert resolve(peer, headers, PROXIES) == client


def test_without_trusted_proxies_every_header_is_ignored() -> None:
    assert resolve("127.0.0.1", {"x-forwarded-for": "203.0.113.9"}, ()) == "127.0.0.1"
    assert resolve("testclient", {"x-forwarded-for": "203.0.113.9"}, PROXIES) == "testclient"


def test_repeated_headers_are_one_list() -> None:
    from litestar.datastructures import Headers

    headers = Headers([(b"x-forwarded-for", b"6.6.6.6"), (b"x-forwarded-for", b"203.0.113.9")])
    assert resolve("127.0.0.1", headers, PROXIES) == "203.0.113.9"


def test_trusted_proxies_are_checked() -> None:
    assert len(parse_networks(["192.0.2.1", "2001:db8::/32", " 10.0.0.0/8 "])) == 3
    with pytest.raises(ValueError, match="not-an-ip"):
        parse_networks(["not-an-ip"])
    with pytest.raises(ValueError, match="10.0.0.0/33"):
        parse_networks(["10.0.0.0/33"])


def test_addresses_are_read_as_proxies_write_them() -> None:
    assert str(parse_address('"[2001:db8::1]:80"')) == "2001:db8::1"
    assert str(parse_address("192.0.2.1:8080")) == "192.0.2.1"
    assert parse_address("[2001:db8::1") is None
    assert parse_address("") is None


# --- through the app ----------------------------------------------------------------


def _failed_auth_addresses(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.address for r in caplog.records  # type: ignore[attr-defined]
            if r.getMessage() == "authentication failed"]


@pytest.mark.gateway(trusted_proxies=["127.0.0.1", "::1"])
async def test_the_app_believes_only_its_trusted_proxies(app: App,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    xff = {"X-Forwarded-For": "6.6.6.6, 203.0.113.9"}
    with caplog.at_level(logging.INFO, logger="gateway.edge"):
        assert post_from(app, "127.0.0.1", xff, key="wrong", action="balance").status_code == 401
        assert post_from(app, "::1", {"X-Real-IP": "203.0.113.10"}, key="wrong",
                         action="balance").status_code == 401
        assert post_from(app, "198.51.100.7", xff, key="wrong",
                         action="balance").status_code == 401
    assert _failed_auth_addresses(caplog) == ["203.0.113.9", "203.0.113.10", "198.51.100.7"]
    ok = post_from(app, "127.0.0.1", xff, key=ALICE, action="balance")
    assert ok.status_code == 200 and "balance" in ok.json()


async def test_no_trusted_proxies_means_the_peer(app: App,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="gateway.edge"):
        post_from(app, "127.0.0.1", {"X-Forwarded-For": "203.0.113.9"}, key="wrong",
                  action="balance")
    assert _failed_auth_addresses(caplog) == ["127.0.0.1"]
