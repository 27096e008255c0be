"""The panels: concurrent clients that add, poll, refill and cancel, and remember
every answer they were given.

Each logical order has its own link. Half carry an Idempotency-Key (as a header or
as the `idempotency_key` field; a few are fired at two replicas at once, as a
panel whose cron overlapped itself). A keyed panel that is told to retry, or
loses the connection, retries with the same key; a panel without a key gives up
(re-sending would be its own double order: what the gateway must never invite).
A request that provably never arrived (connection refused: a replica is down)
goes to another replica.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from chaos.config import KEYS, LEDGER_CLIENT, OPERATOR_CLIENT, SERVICES, Plan

FINAL = frozenset({"order", "not_confirmed", "error"})
MAX_TRIES = 6
BATCH = 100


@dataclass
class Answer:
    """What one request got. kind: order | not_confirmed | error (final) | retry (an
    answer inviting a retry) | dropped (no answer: reset or timeout) | unreached."""

    kind: str
    replica: int
    status: int | None
    text: str
    order: int | None
    t: float  # when it was sent, seconds into the load
    took: float = 0.0


@dataclass
class Logical:
    """One order as a panel means it: one link, however many requests it took."""

    n: int
    client: str
    link: str
    service: int
    quantity: int
    key: str | None
    key_in_header: bool
    answers: list[Answer] = field(default_factory=list)

    @property
    def heard(self) -> list[Answer]:
        return [a for a in self.answers if a.kind != "unreached"]

    @property
    def ids(self) -> set[int]:
        return {a.order for a in self.answers if a.order is not None}

    @property
    def settled(self) -> bool:
        return any(a.kind in FINAL for a in self.answers)


def classify(status: int, body: Any, replica: int, t: float) -> Answer:
    if isinstance(body, dict) and isinstance(body.get("order"), int) and status == 200:
        return Answer("order", replica, status, "", body["order"], t)
    text = str(body.get("error")) if isinstance(body, dict) and "error" in body else str(body)
    if "do not resend" in text:
        kind = "not_confirmed"
    elif "try again" in text or status in (429, 502, 503, 504) or status >= 500:
        kind = "retry"
    else:
        kind = "error"
    return Answer(kind, replica, status, text[:200], None, t)


class Load:
    def __init__(self, replica_apis: list[str], plan: Plan, run_tag: str, seed: int) -> None:
        self.apis = replica_apis
        self.plan = plan
        self.tag = run_tag
        self.rng = random.Random(seed)
        self.orders: list[Logical] = []
        self.given: dict[str, list[int]] = {LEDGER_CLIENT: [], OPERATOR_CLIENT: []}
        self.requests: Counter[str] = Counter()
        # given ids a later status called unknown: id -> (seconds into the load, replica)
        self.lost: dict[int, tuple[float, int]] = {}
        self.t0 = time.monotonic()
        self.t0_wall = time.time()  # `t` of answers and faults counts from here
        self._tasks: list[asyncio.Task[None]] = []
        self._running = asyncio.Event()  # cleared: the panels wait (the gateway is idle)
        self._running.set()
        self._in_flight = 0
        self.http = httpx.AsyncClient(
            timeout=plan.client_timeout_s,
            limits=httpx.Limits(max_connections=4 * plan.workers + 16))

    async def aclose(self) -> None:
        await self.http.aclose()

    # --- the load ----------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self._tasks = [asyncio.create_task(self._worker(stop))
                       for _ in range(self.plan.workers)]
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def abandon(self) -> None:
        """The panels hang up on whatever is still in flight (recorded as dropped)."""
        for task in self._tasks:
            task.cancel()

    async def pause(self, within_s: float = 30.0) -> None:
        """The panels stop sending; back once what they had in flight is answered."""
        self._running.clear()
        deadline = time.monotonic() + within_s
        while self._in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    def resume(self) -> None:
        self._running.set()

    async def probe(self, count: int) -> list[Answer]:
        """`count` balance requests of the prepaid client, over every replica in turn
        (each reads Redis); those not answered 200."""
        data = {"key": KEYS[LEDGER_CLIENT], "action": "balance"}
        answers = [await self._post("balance (probe)", n % len(self.apis), data, {})
                   for n in range(count)]
        return [a for a in answers if a.status != 200]

    async def _worker(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._running.wait()
            self._in_flight += 1
            try:
                await self._one(stop)
            finally:
                self._in_flight -= 1

    async def _one(self, stop: asyncio.Event) -> None:
        roll = self.rng.random()
        if roll < 0.55:
            await self._place(self._new_order(), stop)
        elif roll < 0.85:
            await self._status()
        elif roll < 0.93:
            await self._other("cancel", "orders")
        else:
            await self._other("refill", "order")

    def _new_order(self) -> Logical:
        n = len(self.orders)
        keyed = self.rng.random() < 0.5
        partial = "partial-" if self.rng.random() < 0.15 else ""
        order = Logical(
            n=n, client=LEDGER_CLIENT if self.rng.random() < 0.5 else OPERATOR_CLIENT,
            link=f"https://chaos.example/{self.tag}/{partial}{n}",
            service=self.rng.choice(SERVICES), quantity=self.rng.randrange(100, 501, 50),
            key=f"chaos-{self.tag}-{n}" if keyed else None,
            key_in_header=self.rng.random() < 0.5)
        self.orders.append(order)
        return order

    async def _place(self, order: Logical, stop: asyncio.Event | None) -> None:
        """Send the add until a final answer, as the panel's policy allows."""
        tries, replica = 0, self._replica()
        while tries < MAX_TRIES and not (tries and stop is not None and stop.is_set()):
            if order.key is not None and self.rng.random() < 0.05:  # an overlapping cron
                first, second = self.rng.sample(range(len(self.apis)), 2)
                answers = list(await asyncio.gather(self._add(order, first),
                                                    self._add(order, second)))
            else:
                answers = [await self._add(order, replica)]
            replica = self._replica(avoid=replica)
            order.answers.extend(answers)
            for a in answers:
                if a.order is not None:
                    self.given[order.client].append(a.order)
            if order.settled:
                return
            tries += 1
            if all(a.kind == "unreached" for a in answers):
                await asyncio.sleep(0.05)
                continue
            if order.key is None or (stop is not None and stop.is_set()):
                return
            await asyncio.sleep(min(2.0, 0.1 * 2 ** tries) * (0.5 + self.rng.random()))

    async def _add(self, order: Logical, replica: int, timeout: float | None = None) -> Answer:
        data = {"key": KEYS[order.client], "action": "add", "service": str(order.service),
                "link": order.link, "quantity": str(order.quantity)}
        headers = {}
        if order.key is not None and order.key_in_header:
            headers["Idempotency-Key"] = order.key
        elif order.key is not None:
            data["idempotency_key"] = order.key
        return await self._post("add", replica, data, headers, timeout)

    async def _status(self) -> None:
        client = self.rng.choice((LEDGER_CLIENT, OPERATOR_CLIENT))
        given = self.given[client]
        if not given:
            await asyncio.sleep(0.01)
            return
        ids = self.rng.sample(given, min(len(given), self.rng.choice((1, 1, 5, 20))))
        await self.poll(client, ids, self._replica())

    async def _other(self, action: str, field_name: str) -> None:
        client = self.rng.choice((LEDGER_CLIENT, OPERATOR_CLIENT))
        if not self.given[client]:
            await asyncio.sleep(0.01)
            return
        oid = self.rng.choice(self.given[client])
        await self._post(action, self._replica(),
                         {"key": KEYS[client], "action": action, field_name: str(oid)}, {})

    # --- after the load ------------------------------------------------------------

    async def retry_keyed(self) -> int:
        """Keyed panels retry every order they never got a final answer for, with the
        same key (the next cron run), until `plan.retry_s` is up. How many stay open."""
        deadline = time.monotonic() + self.plan.retry_s
        gate = asyncio.Semaphore(self.plan.workers)

        async def retry(order: Logical) -> None:
            async with gate:
                while not order.settled and time.monotonic() < deadline:
                    left = min(self.plan.client_timeout_s, deadline - time.monotonic())
                    order.answers.append(await self._add(order, self._replica(), left))
                    if order.answers[-1].order is not None:
                        self.given[order.client].append(order.answers[-1].order)
                    if not order.settled:
                        await asyncio.sleep(0.5)

        open_ = [o for o in self.orders if o.key is not None and not o.settled]
        await asyncio.gather(*(retry(o) for o in open_))
        return sum(1 for o in open_ if not o.settled)

    async def poll_all(self, ids: dict[str, list[int]]) -> dict[int, Any]:
        """A status answer (or an error text) for every id, 100 per request."""
        out: dict[int, Any] = {}
        for client, client_ids in ids.items():
            for i in range(0, len(client_ids), BATCH):
                batch = client_ids[i:i + BATCH]
                out.update(await self.poll(client, batch, i // BATCH % len(self.apis)))
        return out

    async def poll(self, client: str, ids: list[int], replica: int) -> dict[int, Any]:
        data = {"key": KEYS[client], "action": "status"}
        if len(ids) == 1:
            data["order"] = str(ids[0])
        else:
            data["orders"] = ",".join(map(str, ids))
        t = round(time.monotonic() - self.t0, 2)
        body = await self._request("status", replica, data, {})
        if len(ids) == 1:
            answers = {ids[0]: body}
        elif isinstance(body, dict) and all(str(i) in body for i in ids):
            answers = {i: body[str(i)] for i in ids}
        else:
            answers = {i: body for i in ids}
        for oid, answer in answers.items():
            if isinstance(answer, dict) and answer.get("error") == "Incorrect order ID":
                self.lost.setdefault(oid, (t, replica))
        return answers

    # --- HTTP ----------------------------------------------------------------------

    def _replica(self, avoid: int | None = None) -> int:
        choices = [i for i in range(len(self.apis)) if i != avoid] or [0]
        return self.rng.choice(choices)

    async def _post(self, action: str, replica: int, data: dict[str, str],
                    headers: dict[str, str], timeout: float | None = None) -> Answer:
        t = time.monotonic() - self.t0
        try:
            r = await self.http.post(self.apis[replica], data=data, headers=headers,
                                     timeout=timeout or self.plan.client_timeout_s)
        except asyncio.CancelledError:  # abandon(): the panel hung up; its worker ends
            answer = Answer("dropped", replica, None, "hung up: the load ended", None, t)
        except httpx.ConnectError as exc:
            answer = Answer("unreached", replica, None, type(exc).__name__, None, t)
        except httpx.HTTPError as exc:
            answer = Answer("dropped", replica, None, type(exc).__name__, None, t)
        else:
            try:
                body: Any = r.json()
            except ValueError:
                body = r.text[:200]
            answer = classify(r.status_code, body, replica, t)
        answer.took = round(time.monotonic() - self.t0 - t, 3)
        self.requests[f"{action}: {answer.kind}"] += 1
        return answer

    async def _request(self, action: str, replica: int, data: dict[str, str],
                       headers: dict[str, str]) -> Any:
        try:
            r = await self.http.post(self.apis[replica], data=data, headers=headers)
            body: Any = r.json()
        except asyncio.CancelledError:
            return {"error": "hung up: the load ended"}
        except (httpx.HTTPError, ValueError) as exc:
            self.requests[f"{action}: {type(exc).__name__}"] += 1
            return {"error": type(exc).__name__}
        self.requests[f"{action}: {r.status_code}"] += 1
        return body
