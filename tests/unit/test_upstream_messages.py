"""Upstream texts reach clients only through an allow-list (`classify.public_message`):
each is classified by the one classifier and answered with a standard message; an
unknown text gets a generic answer and the raw text goes only to the log."""

from __future__ import annotations

import logging
import re

import pytest

from gateway.upstream.classify import REJECTED, UNAVAILABLE, kind, public_message

ACTIVE = "You have active order with this link. Please wait until order being completed."

TABLE = [
    # service
    ("Incorrect service ID", "Incorrect service ID"),
    ("Service not found", "Incorrect service ID"),
    ("Invalid service", "Incorrect service ID"),
    ("service_id: unknown service 881", "Incorrect service ID"),
    # quantity, with the number when the upstream gave one
    ("Quantity less than minimal 50", "Quantity less than minimal 50"),
    ("Minimum quantity is 1,000", "Quantity less than minimal 1000"),
    ("Quantity 5 is less than minimal 100", "Quantity less than minimal 100"),
    ("quantity too low", "Quantity less than minimal"),
    ("Quantity more than maximal 10000", "Quantity more than maximal 10000"),
    ("Max quantity exceeded (5000)", "Quantity more than maximal 5000"),
    ("Quantity must be at most 20000", "Quantity more than maximal 20000"),
    # an active order on the link
    (ACTIVE, ACTIVE),
    ("you have an active order with this link", ACTIVE),
    # orders and refills
    ("Incorrect order ID", "Incorrect order ID"),
    ("Order not found", "Incorrect order ID"),
    ("order_id: 99812 does not exist", "Incorrect order ID"),
    ("Invalid order", "Incorrect order ID"),
    ("Order 42 not found on 2001:db8::17", "Incorrect order ID"),
    ("Refill #77 does not exist", "Refill not found"),
    ("Refill not found", "Refill not found"),
    ("Incorrect refill ID", "Refill not found"),
    ("Order cannot be refilled", "Order cannot be refilled"),
    ("Refill is disabled for this service", "Order cannot be refilled"),
    ("Refill period expired", "Order cannot be refilled"),
    ("Order cannot be canceled", "Order cannot be canceled"),
    ("Cancel is disabled for this service", "Order cannot be canceled"),
    ("Cancellation not allowed for this order", "Order cannot be canceled"),
    # the link
    ("Invalid link", "Incorrect link"),
    ("Incorrect link", "Incorrect link"),
    ("Invalid link, see https://prov-b.example.com/help", "Incorrect link"),
    ("Link is not valid", "Incorrect link"),
    ("Invalid URL", "Incorrect link"),
    ("This account is private", "Incorrect link"),
    ("Zephyr Prov rejected the link", "Incorrect link"),
    # the provider's own state: the gateway's own message
    ("Not enough funds", UNAVAILABLE),
    ("Not enough funds on balance", UNAVAILABLE),
    ("Insufficient balance: 0.12 USD left on account PKEY-77", UNAVAILABLE),
    ("Rate limit exceeded", UNAVAILABLE),
    ("Too many requests", UNAVAILABLE),
    ("API is under maintenance", UNAVAILABLE),
    ("Temporarily unavailable, try again later", UNAVAILABLE),
    ("Service disabled", UNAVAILABLE),
    ("Service is disabled", UNAVAILABLE),
    ("Service is not available", UNAVAILABLE),
    ("Invalid API key", UNAVAILABLE),
    ("Order rejected (api_key: PKEY-4f9a1c2e8b)", UNAVAILABLE),
    # anything else: generic
    ("Upstream 10.20.30.40:8443 refused the order", REJECTED),
    ("Incorrect request", REJECTED),
    ("", REJECTED),
    ("Ошибка: что-то пошло не так", REJECTED),
    ("<html><body>502 Bad Gateway</body></html>", REJECTED),
]


@pytest.mark.parametrize(("upstream", "answer"), TABLE, ids=[t[0][:40] for t in TABLE])
def test_every_upstream_text_becomes_a_standard_message(upstream: str, answer: str) -> None:
    assert public_message(upstream, "zephyr-prov") == answer


ALLOWED = re.compile(
    r"(Incorrect service ID|Incorrect order ID|Refill not found|Incorrect link"
    r"|Order cannot be refilled|Order cannot be canceled"
    r"|Quantity (less than minimal|more than maximal)( \d+)?"
    "|" + re.escape(ACTIVE) + "|" + re.escape(UNAVAILABLE) + "|" + re.escape(REJECTED) + ")")


LEAKS = [
    ("Order rejected (api_key: PKEY-4f9a1c2e8b)", ["PKEY", "4f9a1c2e8b", "api_key"]),
    ("Upstream 10.20.30.40:8443 refused the order", ["10.20.30.40", "8443", "Upstream"]),
    ("Zephyr Prov rejected the link", ["Zephyr", "Prov"]),
    ("Quantity less than minimal 50 at zephyr-prov.example.com (key PKEY1)",
     ["zephyr", "example", "PKEY"]),
    ("Invalid link for https://panel.zephyr.io/api/v2?key=PKEY123", ["zephyr", "PKEY", "http"]),
    ("Service 12 disabled by admin@zephyr.example", ["zephyr", "admin"]),
    ("Order 42 not found on 2001:db8::17", ["2001", "db8"]),
]


@pytest.mark.parametrize(("upstream", "secrets"), LEAKS, ids=[t[0][:30] for t in LEAKS])
def test_no_key_address_or_name_ever_leaks(upstream: str, secrets: list[str],
                                           caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="gateway.upstream"):
        answer = public_message(upstream, "Zephyr Prov")
    assert ALLOWED.fullmatch(answer), answer
    for secret in secrets:
        assert secret.lower() not in answer.lower()
    # the raw text is kept for the operator, in the log only
    assert any(getattr(r, "upstream_error", None) == upstream for r in caplog.records)


def test_the_answer_is_always_one_of_the_allowed_messages() -> None:
    for upstream, _ in TABLE + [(u, "") for u, _ in LEAKS]:
        assert ALLOWED.fullmatch(public_message(upstream, "p")), upstream


def test_kinds_are_a_closed_list() -> None:
    assert kind("Not enough funds") == "unavailable"
    assert kind("Incorrect order ID") == "order"
    assert kind("no idea") == "other"
