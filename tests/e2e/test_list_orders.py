"""List-driven orders over HTTP: an order made of a list (comment lines, usernames,
hashtags) is charged, sent upstream and refunded on the list's length; a `quantity`
that disagrees with the list is refused before anything is sent or charged.

One simulator (toksmm dialect) with a catalog of every list-driven type and one
gateway process over it, for the module; each test looks only at its own order.
Markup 1.5: every client rate below is the upstream rate x 1.5.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from harness import ROOT, Gateway, Sim, provider

CATALOG = [
    {"service": 31, "name": "Comments", "type": "Custom Comments", "category": "TikTok",
     "rate": "5.00", "min": 1, "max": 1500, "refill": 0, "cancel": 1},
    {"service": 32, "name": "Replies", "type": "Comment Replies", "category": "TikTok",
     "rate": "6.00", "min": 1, "max": 1000, "refill": 0, "cancel": 1},
    {"service": 33, "name": "Mentions", "type": "Mentions Custom List",
     "category": "Instagram", "rate": "3.00", "min": 10, "max": 2000, "refill": 0,
     "cancel": 0},
    {"service": 34, "name": "Mentions #", "type": "Mentions with Hashtags",
     "category": "Instagram", "rate": "2.00", "min": 1, "max": 1000, "refill": 0,
     "cancel": 0},
    {"service": 35, "name": "Mentions", "type": "Mentions", "category": "Instagram",
     "rate": "4.00", "min": 1, "max": 1000, "refill": 0, "cancel": 0},
    {"service": 36, "name": "Mentions followers", "type": "Mentions User Followers",
     "category": "Instagram", "rate": "1.00", "min": 10, "max": 10000, "refill": 0,
     "cancel": 0},
]
# gateway service id -> (type, upstream service)
SERVICES = {1: ("Custom Comments", 31), 2: ("Comment Replies", 32),
            3: ("Mentions Custom List", 33), 4: ("Mentions with Hashtags", 34),
            5: ("Mentions", 35), 6: ("Mentions User Followers", 36)}


@pytest.fixture(scope="module")
def lists(tmp_path_factory: pytest.TempPathFactory,
          redis_base: str) -> Iterator[tuple[Gateway, Sim]]:
    tmp = tmp_path_factory.mktemp("lists")
    catalog = tmp / "catalog.json"
    catalog.write_text(json.dumps(CATALOG))
    sim = Sim("toksmm", "--progress-s", "3600", "--catalog", str(catalog))
    config: dict[str, Any] = {
        "gateway": {"currency": "USD", "markup": "1.5", "order_id_start": 5000,
                    "balance_cache_s": 0, "status_cache_s": 0},
        "clients": [{"name": "alice", "key": "alice-key"}],
        "providers": [provider("prov-a", sim)],
        "services": [{"id": sid, "name": kind, "category": "Instagram", "type": kind,
                      "upstreams": [{"provider": "prov-a", "service": upstream}]}
                     for sid, (kind, upstream) in SERVICES.items()],
    }
    try:
        gw = Gateway(config, _own_database(redis_base), tmp / "gw")
    except BaseException:
        sim.stop()
        raise
    try:
        yield gw, sim
    finally:
        gw.stop()
        sim.stop()


def _own_database(redis_base: str) -> str:
    """A database handed out by tests/conftest.py (as `fresh_redis` does), for the module."""
    shared = next(m for m in list(sys.modules.values())
                  if getattr(m, "__file__", None) == str(ROOT / "tests" / "conftest.py"))
    url: str = shared.with_db(redis_base, next(shared._dbs))
    return url


def create_client(redis_url: str, name: str, credit: str) -> str:
    """A prepaid client made with the operator's command; its key."""
    out = subprocess.run([sys.executable, "-m", "gateway", "keys", "create", "--name", name,
                          "--credit", credit], cwd=ROOT, env={**os.environ, "REDIS_URL": redis_url},
                         capture_output=True, text=True, check=True).stdout
    return next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("key:"))


def upstream_order(sim: Sim, link: str) -> dict[str, Any]:
    [order] = [o for o in sim.orders() if o["link"] == link]
    return order


def partial(gw: Gateway, sim: Sim, link: str, order: int, remains: int,
            key: str = "alice-key") -> dict[str, Any]:
    sim.control(f"orders/{upstream_order(sim, link)['order']}",
                {"status": "Partial", "remains": remains})
    answer: dict[str, Any] = gw.call(key=key, action="status", order=order)
    assert answer["status"] == "Partial"
    return answer


def refused(gw: Gateway, sim: Sim, link: str, **fields: Any) -> str:
    answer = gw.call(action="add", link=link, **fields)
    assert [o for o in sim.orders() if o["link"] == link] == [], "nothing went upstream"
    return str(answer["error"])


def lines(prefix: str, count: int) -> str:
    return "\n".join(f"{prefix}{i}" for i in range(count))


def test_custom_comments_count_their_lines(lists: tuple[Gateway, Sim]) -> None:
    gw, sim = lists
    assert refused(gw, sim, "cc-1", service=1, quantity=1, comments="hi,hello,good video") == (
        "Incorrect quantity: comments has 3 entries, so quantity must be 3 or left out "
        "(sent: 1)")
    order = gw.call(action="add", service=1, link="cc-2", quantity=40,
                    comments=lines("nice ", 40))["order"]
    sent = upstream_order(sim, "cc-2")
    assert (sent["quantity"], sent["params"]["quantity"]) == (40, "40")
    assert gw.call(action="status", order=order)["charge"] == "0.30000"  # 7.50 x 40 / 1000
    answer = partial(gw, sim, "cc-2", order, remains=10)
    assert (answer["charge"], answer["remains"]) == ("0.22500", "10")  # 0.075 back


def test_comments_inside_the_form_count_too(lists: tuple[Gateway, Sim]) -> None:
    gw, sim = lists
    form = json.dumps({"comments": ["a", "b", "c", "d"]})
    assert refused(gw, sim, "cf-1", service=1, quantity=2, form=form).startswith(
        "Incorrect quantity: comments has 4 entries")
    order = gw.call(action="add", service=1, link="cf-2", form=form)["order"]
    assert upstream_order(sim, "cf-2")["quantity"] == 4
    assert gw.call(action="status", order=order)["charge"] == "0.03000"  # 7.50 x 4 / 1000


def test_comment_replies_count_their_lines(lists: tuple[Gateway, Sim]) -> None:
    gw, sim = lists
    assert refused(gw, sim, "cr-1", service=2, quantity=100, username="someone",
                   comments=lines("reply ", 20)).startswith(
        "Incorrect quantity: comments has 20 entries")
    order = gw.call(action="add", service=2, link="cr-2", username="someone",
                    comments=lines("reply ", 20))["order"]
    assert upstream_order(sim, "cr-2")["quantity"] == 20
    assert gw.call(action="status", order=order)["charge"] == "0.18000"  # 9.00 x 20 / 1000
    assert partial(gw, sim, "cr-2", order, remains=5)["charge"] == "0.13500"  # 0.045 back


def test_mentions_custom_list_is_charged_on_its_usernames(
        lists: tuple[Gateway, Sim]) -> None:
    """The finding: quantity=10 with 1,000 usernames was charged for 10, placed for
    1,000 and, after a Partial with 500 remaining, refunded in full."""
    gw, sim = lists
    key = create_client(gw.redis_url, "reseller", "10")
    usernames = lines("user", 1000)
    assert refused(gw, sim, "ml-1", service=3, quantity=10, usernames=usernames) == (
        "Incorrect quantity: usernames has 1000 entries, so quantity must be 1000 or left "
        "out (sent: 10)")
    assert gw.call(key=key, action="balance")["balance"] == "10.00000"
    order = gw.call(key=key, action="add", service=3, link="ml-2", quantity=1000,
                    usernames=usernames)["order"]
    sent = upstream_order(sim, "ml-2")
    assert (sent["quantity"], sent["params"]["quantity"]) == (1000, "1000")
    assert gw.call(key=key, action="balance")["balance"] == "5.50000"  # 4.50 x 1000 / 1000
    answer = partial(gw, sim, "ml-2", order, remains=500, key=key)
    assert (answer["charge"], answer["remains"]) == ("2.25000", "500")
    assert gw.call(key=key, action="balance")["balance"] == "7.75000"  # half back, once
    assert gw.call(key=key, action="status", order=order)["charge"] == "2.25000"
    assert gw.call(key=key, action="balance")["balance"] == "7.75000"


def test_mentions_with_hashtags_count_the_hashtags(lists: tuple[Gateway, Sim]) -> None:
    gw, sim = lists
    hashtags = lines("#tag", 50)
    assert refused(gw, sim, "mh-1", service=4, quantity=1000, hashtags=hashtags).startswith(
        "Incorrect quantity: hashtags has 50 entries")
    order = gw.call(action="add", service=4, link="mh-2", quantity=50,
                    hashtags=hashtags)["order"]
    sent = upstream_order(sim, "mh-2")
    assert (sent["quantity"], sent["params"]["hashtags"]) == (50, hashtags)
    assert gw.call(action="status", order=order)["charge"] == "0.15000"  # 3.00 x 50 / 1000
    assert partial(gw, sim, "mh-2", order, remains=20)["charge"] == "0.09000"  # 0.06 back


def test_mentions_count_the_usernames_before_the_hashtags(
        lists: tuple[Gateway, Sim]) -> None:
    gw, sim = lists
    assert refused(gw, sim, "mu-1", service=5, quantity=3, usernames="a,b,c,d,e",
                   hashtags="#x\n#y").startswith("Incorrect quantity: usernames has 5 entries")
    order = gw.call(action="add", service=5, link="mu-2", usernames="a,b,c,d,e",
                    hashtags="#x\n#y")["order"]
    assert upstream_order(sim, "mu-2")["quantity"] == 5
    assert gw.call(action="status", order=order)["charge"] == "0.03000"  # 6.00 x 5 / 1000
    assert partial(gw, sim, "mu-2", order, remains=5)["charge"] == "0.00000"  # all back


def test_mentions_of_one_target_keep_their_quantity(lists: tuple[Gateway, Sim]) -> None:
    """`username` (one account whose followers are mentioned) is no list."""
    gw, sim = lists
    order = gw.call(action="add", service=6, link="mf-1", quantity=500,
                    username="someone")["order"]
    assert upstream_order(sim, "mf-1")["quantity"] == 500
    assert gw.call(action="status", order=order)["charge"] == "0.75000"  # 1.50 x 500 / 1000
