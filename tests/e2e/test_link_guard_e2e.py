"""One active order per link across replicas: two `smm-gateway serve` processes over
one Redis, the simulators as providers. A second order on an active link is refused
by the other replica; of concurrent orders on one link sent to both, exactly one is
placed; the link is free again once its order is seen completed."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import Gateway, Sim, two_gateways

ACTIVE = "You have active order with this link. Please wait until order being completed."


@pytest.fixture
def pair(sims: tuple[Sim, Sim], fresh_redis: str,
         tmp_path: Path) -> Iterator[tuple[Gateway, Gateway, Sim, Sim]]:
    with two_gateways(sims, fresh_redis, tmp_path, link_guard=True) as stack:
        yield stack


def add(gw: Gateway, link: str, service: int = 1) -> Any:
    return gw.call(action="add", service=service, link=link, quantity=100)


def upstream_orders(*sims: Sim, link_part: str) -> list[dict[str, Any]]:
    return [o for s in sims for o in s.orders() if link_part in o["link"]]


def test_the_other_replica_refuses_a_second_order_on_an_active_link(pair):
    one, two, a, b = pair
    first = add(one, "https://tiktok.com/@shared")
    assert "order" in first
    response = two.post(action="add", service=1, link="https://www.TikTok.com/@shared/",
                        quantity=100)
    assert (response.status_code, response.json()) == (400, {"error": ACTIVE})
    [(sim, held)] = [(s, o) for s in (a, b) for o in s.orders() if "@shared" in o["link"]]
    assert "order" in add(two, "https://tiktok.com/@shared", service=2), "another family"

    # the holder completes; a status poll on either replica records it: the link is free
    sim.control(f"orders/{held['order']}", {"status": "Completed"})
    assert two.call(action="status", order=first["order"])["status"] == "Completed"
    assert "order" in add(one, "https://tiktok.com/@shared")
    assert add(two, "https://tiktok.com/@shared") == {"error": ACTIVE}


def race(gateways: list[Gateway], link: str) -> list[Any]:
    """The same add sent by one thread per entry, all released at once."""
    answers: list[Any] = []
    lock = threading.Lock()
    start = threading.Barrier(len(gateways))

    def send(gw: Gateway) -> None:
        start.wait()
        answer = add(gw, link)
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=send, args=(gw,)) for gw in gateways]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


def test_concurrent_orders_on_one_link_to_both_replicas_exactly_one_is_placed(pair):
    one, two, a, b = pair
    for n in range(3):
        answers = race([one, two] * 4, f"https://tiktok.com/@race{n}")
        placed = [x for x in answers if "order" in x]
        assert len(placed) == 1, answers
        assert all(x == {"error": ACTIVE} for x in answers if "order" not in x), answers
        assert len(upstream_orders(a, b, link_part=f"@race{n}")) == 1
