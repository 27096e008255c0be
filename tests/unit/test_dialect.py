"""The tolerant reader against every upstream variant seen in the wild.

Each table is (what the upstream sent, what the gateway must see). Bodies go
through `dialect.decode()` first where the shape of the bytes matters (errors,
HTTP statuses, headers); the action readers then get the decoded JSON.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from gateway.errors import BadAnswer, ProviderError, Rejected, Unavailable
from gateway.models import (
    ORDER_STATUSES,
    REFILL_STATUSES,
    ItemError,
    UpstreamService,
    UpstreamStatus,
)
from gateway.upstream import dialect, values


def body(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def read(obj: Any) -> Any:
    """An answer as it arrives: HTTP 200, JSON bytes, through decode()."""
    return dialect.decode(200, body(obj), {})


# --- numbers --------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    ("0.27819", Decimal("0.27819")),
    (" 0.27819 ", Decimal("0.27819")),
    ("23501", Decimal("23501")),
    (23501, Decimal("23501")),
    (0.27819, Decimal("0.27819")),
    (1.5, Decimal("1.5")),
    (0, Decimal("0")),
    ("0", Decimal("0")),
    # very large rates in weak currencies
    ("125000000.00000", Decimal("125000000.00000")),
    (987654321987654321, Decimal("987654321987654321")),
    (1.5e9, Decimal("1500000000.0")),
    ("1e12", Decimal("1e12")),
    # junk
    ("Unknown", None),
    ("", None),
    ("NaN", None),
    ("Infinity", None),
    (None, None),
    (True, None),
    ([], None),
    ({}, None),
])
def test_decimal(value: Any, expected: Decimal | None) -> None:
    assert values.decimal(value) == expected


@pytest.mark.parametrize(("value", "expected"), [
    ("3572", "3572"),
    (3572, "3572"),
    (3572.0, "3572"),
    ("3572.0", "3572"),
    ("0", "0"),
    (0, "0"),
    ("-15", "-15"),
    ("12.5", "12.5"),
    ("Unknown", None),
    ("unknown", None),
    ("", None),
    ("N/A", None),
    (None, None),
    (False, None),
])
def test_count_text(value: Any, expected: str | None) -> None:
    assert values.count_text(value) == expected


@pytest.mark.parametrize(("value", "expected"), [
    (50, 50), ("50", 50), (" 50 ", 50), (50.0, 50), ("50.0", 50), ("1e3", 1000),
    ("50.5", None), (50.5, None), ("fifty", None), ("", None), (None, None), (True, None),
])
def test_integer(value: Any, expected: int | None) -> None:
    assert values.integer(value) == expected


# --- ids ------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    (23501, "23501"),
    ("23501", "23501"),
    (" 23501 ", "23501"),
    (23501.0, "23501"),
    ("ord_8f3a2c", "ord_8f3a2c"),
    (0, "0"),
    ("", None),
    ("   ", None),
    (None, None),
    (True, None),
    (1.5, None),
    ({"id": 1}, None),
])
def test_ident(value: Any, expected: str | None) -> None:
    assert values.ident(value) == expected


# --- order statuses -------------------------------------------------------------------

STATUS_SPELLINGS: list[tuple[str, str]] = [
    # the standard seven, and case variants of them
    *[(s, s) for s in ORDER_STATUSES],
    *[(s.lower(), s) for s in ORDER_STATUSES],
    *[(s.upper(), s) for s in ORDER_STATUSES],
    ("  Completed  ", "Completed"),
    ("In Progress", "In progress"),
    # seen in the wild
    ("Active", "In progress"),
    ("active", "In progress"),
    ("Cancelled", "Canceled"),
    ("cancelled", "Canceled"),
    ("CANCELLED", "Canceled"),
    ("CANCEL", "Canceled"),
    ("Cancel", "Canceled"),
    ("Processed", "Completed"),
    ("processed", "Completed"),
    ("Failed", "Canceled"),
    ("Fail", "Canceled"),
    ("Error", "Canceled"),
    ("FAILED", "Canceled"),
    ("COMPLETE", "Completed"),
    ("Complete", "Completed"),
    ("INPROGRESS", "In progress"),
    ("IN_PROGRESS", "In progress"),
    ("IN-PROGRESS", "In progress"),
    ("in_progress", "In progress"),
    ("inprogress", "In progress"),
    ("PARTIALLY", "Partial"),
    ("Partially", "Partial"),
    ("Partially Completed", "Partial"),
    ("partially_completed", "Partial"),
    ("REFUND", "Refunded"),
    ("Refund", "Refunded"),
    ("REFUNDED", "Refunded"),
]


@pytest.mark.parametrize(("spelling", "expected"), STATUS_SPELLINGS)
def test_order_status_spellings(spelling: str, expected: str) -> None:
    assert expected in ORDER_STATUSES
    assert values.order_status(spelling) == expected
    assert dialect.status_one(read({"status": spelling})).status == expected


@pytest.mark.parametrize("value", [None, 1, True, {}, [], "", "Gibberish"])
def test_order_status_unrecognised(value: Any) -> None:
    assert values.order_status(value) is None


def test_unknown_status_word_keeps_polling() -> None:
    """An unknown word must never be guessed as a final status."""
    assert dialect.status_one({"status": "Queued for review"}).status == "In progress"


# --- single status --------------------------------------------------------------------

@pytest.mark.parametrize(("answer", "expected"), [
    # toksmm: numbers as strings
    ({"charge": "0.27819", "start_count": "3572", "status": "Completed", "remains": "0",
      "currency": "USD"},
     UpstreamStatus("Completed", Decimal("0.27819"), "3572", "0", "USD")),
    # ints and floats
    ({"charge": 0.27819, "start_count": 3572, "status": "In progress", "remains": 10},
     UpstreamStatus("In progress", Decimal("0.27819"), "3572", "10", None)),
    ({"charge": 1, "start_count": 0.0, "status": "Partial", "remains": 250.0},
     UpstreamStatus("Partial", Decimal("1"), "0", "250", None)),
    # "remains": "Unknown" and other junk counts
    ({"charge": "1.00", "start_count": "Unknown", "status": "Pending", "remains": "Unknown"},
     UpstreamStatus("Pending", Decimal("1.00"), None, None, None)),
    ({"charge": "", "start_count": None, "status": "Pending", "remains": ""},
     UpstreamStatus("Pending", None, None, None, None)),
    # very large charge in a weak currency
    ({"charge": "123456789012.12345", "status": "Completed", "currency": "IDR"},
     UpstreamStatus("Completed", Decimal("123456789012.12345"), None, None, "IDR")),
    # testedsmm: fields in another order, only some present
    ({"status": "Completed", "charge": "1.00", "start_count": "0", "remains": "0",
      "currency": "USD"},
     UpstreamStatus("Completed", Decimal("1.00"), "0", "0", "USD")),
    ({"status": "Active"}, UpstreamStatus("In progress")),
    # a non-text currency is dropped
    ({"status": "Completed", "currency": 840}, UpstreamStatus("Completed")),
])
def test_status_one(answer: dict[str, Any], expected: UpstreamStatus) -> None:
    assert dialect.status_one(read(answer)) == expected


@pytest.mark.parametrize("answer", [[], ["Completed"], 5, None])
def test_status_one_unknown_shape(answer: Any) -> None:
    with pytest.raises(BadAnswer) as err:
        dialect.status_one(answer)
    assert err.value.raw == json.dumps(answer, separators=(",", ":"))


def test_status_one_with_error_as_status() -> None:
    with pytest.raises(Rejected, match="Incorrect order ID"):
        dialect.status_one({"status": {"error": "Incorrect order ID"}})


# --- multi status ---------------------------------------------------------------------

COMPLETED = UpstreamStatus("Completed", Decimal("0.27819"), "3572", "0", "USD")
IN_PROGRESS = UpstreamStatus("In progress", Decimal("1.44219"), "234", "10", "USD")


@pytest.mark.parametrize("answer", [
    # toksmm: object keyed by id (the standard)
    {"1": {"charge": "0.27819", "start_count": "3572", "status": "Completed", "remains": "0",
           "currency": "USD"},
     "10": {"error": "Incorrect order ID"},
     "100": {"charge": "1.44219", "start_count": "234", "status": "In progress",
             "remains": "10", "currency": "USD"}},
    # per-id error as a bare string
    {"1": {"charge": "0.27819", "start_count": "3572", "status": "Completed", "remains": "0",
           "currency": "USD"},
     "10": "Incorrect order ID",
     "100": {"charge": 1.44219, "start_count": 234, "status": "inprogress", "remains": 10,
             "currency": "USD"}},
    # testedsmm: a list of {"order": id, ...}, ids as ints or strings
    [{"order": 1, "charge": "0.27819", "start_count": "3572", "status": "Completed",
      "remains": "0", "currency": "USD"},
     {"order": "10", "error": "Incorrect order ID"},
     {"order": 100, "charge": "1.44219", "start_count": "234", "status": "IN_PROGRESS",
      "remains": "10", "currency": "USD"}],
    # per-id error as {"error": {"message": ...}} and a per-id status object error
    [{"order": 1, "charge": "0.27819", "start_count": "3572", "status": "COMPLETE",
      "remains": "0", "currency": "USD"},
     {"order": 10, "status": {"error": "Incorrect order ID"}},
     {"order": 100, "charge": "1.44219", "start_count": "234", "status": "In progress",
      "remains": "10", "currency": "USD"}],
    {"1": {"charge": "0.27819", "start_count": "3572", "status": "Completed", "remains": "0",
           "currency": "USD"},
     "10": {"error": {"code": 404, "message": "Incorrect order ID"}},
     "100": {"charge": "1.44219", "start_count": "234", "status": "In progress",
             "remains": "10", "currency": "USD"}},
])
def test_status_many(answer: Any) -> None:
    result = dialect.status_many(read(answer))
    assert result == {"1": COMPLETED, "10": ItemError("Incorrect order ID"), "100": IN_PROGRESS}
    assert isinstance(result["10"], ItemError)
    assert not isinstance(result["1"], ItemError)


def test_status_many_non_numeric_ids_and_junk_items() -> None:
    result = dialect.status_many([
        {"order": "ord_abc", "status": "Active"},
        {"status": "Completed"},  # names no id: nothing to key it by
        {"order": None, "status": "Completed"},
        "junk",
        {"order": 7, "status": "Partial", "remains": "Unknown"},
    ])
    assert result == {"ord_abc": UpstreamStatus("In progress"),
                      "7": UpstreamStatus("Partial")}


def test_status_many_every_id_failed() -> None:
    result = dialect.status_many(read({"5": "Incorrect order ID", "6": {"error": "Not found"}}))
    assert result == {"5": ItemError("Incorrect order ID"), "6": ItemError("Not found")}
    assert all(isinstance(v, ItemError) for v in result.values())


@pytest.mark.parametrize("answer", ["Completed", 5, None])
def test_status_many_unknown_shape(answer: Any) -> None:
    with pytest.raises(BadAnswer) as err:
        dialect.status_many(answer)
    assert err.value.raw == json.dumps(answer)


# --- refill ---------------------------------------------------------------------------

@pytest.mark.parametrize(("answer", "expected"), [
    ({"refill": "1"}, "1"),
    ({"refill": 1}, "1"),
    ({"refill": 5555}, "5555"),
    ({"success": "Refill request accepted", "refill": 12345}, "12345"),
    ({"status": "success", "refill": "12345"}, "12345"),
    ({"refill": "rf_91"}, "rf_91"),
    ({"refill_id": 77}, "77"),
])
def test_refill_one(answer: dict[str, Any], expected: str) -> None:
    assert dialect.refill_one(read(answer)) == expected


def test_refill_one_error_inside() -> None:
    with pytest.raises(Rejected, match="Incorrect order ID"):
        dialect.refill_one(read({"refill": {"error": "Incorrect order ID"}}))


@pytest.mark.parametrize("answer", [{"success": "ok"}, {"refill": None}, {"refill": True}, []])
def test_refill_one_unknown_shape(answer: Any) -> None:
    with pytest.raises(BadAnswer) as err:
        dialect.refill_one(answer)
    assert err.value.raw == json.dumps(answer, separators=(",", ":"))


@pytest.mark.parametrize("answer", [
    # toksmm
    [{"order": 1, "refill": 1}, {"order": 2, "refill": 2},
     {"order": 3, "refill": {"error": "Incorrect order ID"}}],
    # ids as strings, the per-item error beside the refill
    [{"order": "1", "refill": "1"}, {"order": "2", "refill": "2"},
     {"order": "3", "error": "Incorrect order ID"}],
    # keyed by order id
    {"1": {"refill": 1}, "2": {"refill": "2"}, "3": {"refill": {"error": "Incorrect order ID"}}},
    {"1": 1, "2": "2", "3": "Incorrect order ID"},
])
def test_refill_many(answer: Any) -> None:
    result = dialect.refill_many(read(answer))
    assert result == {"1": "1", "2": "2", "3": ItemError("Incorrect order ID")}
    assert isinstance(result["3"], ItemError)
    assert not isinstance(result["1"], ItemError)


def test_refill_many_testedsmm() -> None:
    assert dialect.refill_many(read([{"order": 1, "refill": 101}, {"order": 2, "refill": 102}])) \
        == {"1": "101", "2": "102"}


def test_refill_many_item_without_refill_or_error() -> None:
    result = dialect.refill_many([{"order": 4}])
    assert result == {"4": ItemError("error")}
    assert isinstance(result["4"], ItemError)


# --- refill status --------------------------------------------------------------------

REFILL_SPELLINGS: list[tuple[str, str]] = [
    *[(s, s) for s in REFILL_STATUSES],
    *[(s.upper(), s) for s in REFILL_STATUSES],
    ("in_progress", "In progress"),
    ("IN-PROGRESS", "In progress"),
    ("Processing", "In progress"),
    ("Complete", "Completed"),
    ("Canceled", "Rejected"),
    ("Cancelled", "Rejected"),
    ("Failed", "Error"),
    ("fail", "Error"),
]


@pytest.mark.parametrize(("spelling", "expected"), REFILL_SPELLINGS)
def test_refill_status_one(spelling: str, expected: str) -> None:
    assert expected in REFILL_STATUSES
    assert values.refill_status(spelling) == expected
    assert dialect.refill_status_one(read({"status": spelling})) == expected


@pytest.mark.parametrize("answer", [
    {"status": {"error": "Refill not found"}},
    {"status": "Refill not found"},
])
def test_refill_status_one_error(answer: dict[str, Any]) -> None:
    with pytest.raises(Rejected, match="Refill not found"):
        dialect.refill_status_one(read(answer))


@pytest.mark.parametrize("answer", [{"refill": 1}, [], "Completed"])
def test_refill_status_one_unknown_shape(answer: Any) -> None:
    with pytest.raises(BadAnswer) as err:
        dialect.refill_status_one(answer)
    assert err.value.raw == json.dumps(answer, separators=(",", ":"))


@pytest.mark.parametrize("answer", [
    # toksmm
    [{"refill": 1, "status": "Completed"}, {"refill": 2, "status": "Rejected"},
     {"refill": 3, "status": {"error": "Refill not found"}}],
    # testedsmm-like, ids as strings, the error beside the status
    [{"refill": "1", "status": "completed"}, {"refill": "2", "status": "REJECTED"},
     {"refill": "3", "error": "Refill not found"}],
    # keyed by refill id
    {"1": {"status": "Completed"}, "2": {"status": "Rejected"}, "3": {"error": "Refill not found"}},
    {"1": "Completed", "2": "Rejected", "3": "Refill not found"},
])
def test_refill_status_many(answer: Any) -> None:
    result = dialect.refill_status_many(read(answer))
    assert result == {"1": "Completed", "2": "Rejected", "3": ItemError("Refill not found")}
    assert isinstance(result["3"], ItemError)
    assert not isinstance(result["1"], ItemError)


# --- cancel ---------------------------------------------------------------------------

@pytest.mark.parametrize(("answer", "expected"), [
    # toksmm
    ([{"order": 9, "cancel": {"error": "Incorrect order ID"}}, {"order": 2, "cancel": 1}],
     {"9": ItemError("Incorrect order ID"), "2": True}),
    ([{"order": 2, "cancel": "1"}, {"order": 3, "cancel": 0}],
     {"2": True, "3": False}),
    # testedsmm
    ([{"order": 1, "canceled": True}, {"order": 2, "canceled": False}],
     {"1": True, "2": False}),
    ([{"order": "1", "cancelled": "true"}], {"1": True}),
    # per-item errors in other places
    ([{"order": 4, "error": "Order cannot be canceled"}],
     {"4": ItemError("Order cannot be canceled")}),
    ([{"order": 5, "cancel": "Cancel not available"}],
     {"5": ItemError("Cancel not available")}),
    ([{"order": 6, "cancel": {"error": {"code": 1, "message": "Incorrect order ID"}}}],
     {"6": ItemError("Incorrect order ID")}),
    # keyed by order id
    ({"1": {"cancel": 1}, "2": "Incorrect order ID", "3": True},
     {"1": True, "2": ItemError("Incorrect order ID"), "3": True}),
    ([], {}),
])
def test_cancel_many(answer: Any, expected: dict[str, bool | ItemError]) -> None:
    result = dialect.cancel_many(read(answer))
    assert result == expected
    for key, value in expected.items():
        assert type(result[key]) is type(value)  # True is not ItemError("True")


# --- add ------------------------------------------------------------------------------

@pytest.mark.parametrize(("answer", "expected"), [
    ({"order": 1}, "1"),
    ({"order": "1"}, "1"),
    ({"order": 23501}, "23501"),
    ({"order": 23501.0}, "23501"),
    ({"order": 12345, "status": "success"}, "12345"),
    ({"status": "success", "order": "12345", "type": "Default"}, "12345"),
    ({"order": "ord_5f1c"}, "ord_5f1c"),
    ({"order_id": 99}, "99"),
])
def test_add(answer: dict[str, Any], expected: str) -> None:
    assert dialect.add(read(answer)) == expected


@pytest.mark.parametrize("answer", [
    {}, {"status": "success"}, {"order": None}, {"order": ""}, {"order": True}, [1], 1,
])
def test_add_unknown_shape(answer: Any) -> None:
    with pytest.raises(BadAnswer) as err:
        dialect.add(answer)
    assert err.value.raw == json.dumps(answer, separators=(",", ":"))


# --- balance --------------------------------------------------------------------------

@pytest.mark.parametrize(("answer", "expected"), [
    ({"balance": "100.84292", "currency": "USD"}, (Decimal("100.84292"), "USD")),
    ({"balance": "25.50", "currency": "USD"}, (Decimal("25.50"), "USD")),
    ({"balance": 100.84292, "currency": "RUB"}, (Decimal("100.84292"), "RUB")),
    ({"balance": 100}, (Decimal("100"), None)),
    ({"balance": "0"}, (Decimal("0"), None)),
    ({"balance": "987654321.5", "currency": "IDR"}, (Decimal("987654321.5"), "IDR")),
    ({"balance": "1.00", "currency": ""}, (Decimal("1.00"), None)),
    ({"balance": "1.00", "currency": None}, (Decimal("1.00"), None)),
])
def test_balance(answer: dict[str, Any], expected: tuple[Decimal, str | None]) -> None:
    assert dialect.balance(read(answer)) == expected


@pytest.mark.parametrize("answer", [{}, {"balance": "Unknown"}, {"amount": "1"}, [], "1"])
def test_balance_unknown_shape(answer: Any) -> None:
    with pytest.raises(BadAnswer) as err:
        dialect.balance(answer)
    assert err.value.raw == json.dumps(answer, separators=(",", ":"))


# --- services -------------------------------------------------------------------------

def svc(**kw: Any) -> dict[str, Any]:
    return {"service": 1, "name": "Followers", "type": "Default", "category": "TikTok",
            "rate": "0.90", "min": "10", "max": "10000", **kw}


def read_one(item: dict[str, Any]) -> UpstreamService:
    [service] = dialect.services(read([item]))
    return service


@pytest.mark.parametrize(("value", "expected"), [
    (1, "1"), ("1", "1"), (" 1 ", "1"), (1.0, "1"), ("svc_a", "svc_a"),
])
def test_service_id(value: Any, expected: str) -> None:
    assert read_one(svc(service=value)).service == expected


@pytest.mark.parametrize(("value", "expected"), [
    ("Default", "Default"),
    ("Package", "Package"),
    ("Custom Comments", "Custom Comments"),
    ("Custom Comments Package", "Custom Comments Package"),
    ("Mentions with Hashtags", "Mentions with Hashtags"),
    ("Comment Likes", "Comment Likes"),
    ("Comment Replies", "Comment Replies"),
    ("Poll", "Poll"),
    ("Subscriptions", "Subscriptions"),
    ("SEO", "SEO"),
    ("custom_comments", "Custom Comments"),
    ("comment_likes", "Comment Likes"),
    ("mentions_custom_list", "Mentions Custom List"),
    ("default", "Default"),
    ("package", "Package"),
    ("  Package  ", "Package"),
    ("", "Default"),
    (None, "Default"),
    (7, "Default"),
])
def test_service_type(value: Any, expected: str) -> None:
    assert values.service_type(value) == expected
    assert read_one(svc(type=value)).type == expected


def test_service_type_absent() -> None:
    item = svc()
    del item["type"]
    assert read_one(item).type == "Default"


@pytest.mark.parametrize(("value", "expected"), [
    (True, True), (False, False),
    (1, True), (0, False),
    ("1", True), ("0", False),
    ("true", True), ("false", False), ("True", True),
    ("yes", True), ("no", False),
    ("", False),
    (None, None),
    ("maybe", None),
])
def test_service_flags(value: Any, expected: bool | None) -> None:
    assert values.flag(value) is expected
    got = read_one(svc(refill=value, cancel=value, dripfeed=value))
    assert (got.refill, got.cancel, got.dripfeed) == (expected, expected, expected)


def test_service_flags_absent() -> None:
    got = read_one(svc())
    assert (got.refill, got.cancel, got.dripfeed) == (None, None, None)


@pytest.mark.parametrize(("fields", "expected"), [
    ({"desc": "Real followers"}, "Real followers"),
    ({"description": "Real followers"}, "Real followers"),
    ({"desc": "from desc", "description": "from description"}, "from desc"),
    ({"desc": "", "description": "Real followers"}, "Real followers"),
    ({"desc": None, "description": "Real followers"}, "Real followers"),
    ({}, None),
    ({"desc": ""}, None),
])
def test_service_description(fields: dict[str, Any], expected: str | None) -> None:
    assert read_one(svc(**fields)).desc == expected


FORM = {"fields": [{"name": "comments", "type": "textarea", "required": True}]}


@pytest.mark.parametrize(("fields", "expected"), [
    ({"form": FORM}, FORM),
    ({"form": [{"name": "package"}]}, [{"name": "package"}]),
    ({"form": None}, None),
    ({"form": {}}, None),
    ({"form": []}, None),
    ({"form": "not a schema"}, None),
    ({}, None),
])
def test_service_form(fields: dict[str, Any], expected: Any) -> None:
    assert read_one(svc(**fields)).form == expected


@pytest.mark.parametrize(("lo", "hi", "expected"), [
    ("10", "10000", (10, 10000)),
    (10, 10000, (10, 10000)),
    (10.0, "10000.0", (10, 10000)),
    ("50", 50, (50, 50)),
    (None, 500, (1, 500)),  # no minimum published: 1
    ("0", "500", (1, 500)),
    ("junk", "500", (1, 500)),
    ("100", None, (100, 100)),  # no maximum published: never above the minimum
    ("100", "10", (100, 100)),  # inverted: max raised to min
])
def test_service_min_max(lo: Any, hi: Any, expected: tuple[int, int]) -> None:
    got = read_one(svc(min=lo, max=hi))
    assert (got.min, got.max) == expected


@pytest.mark.parametrize(("value", "expected"), [
    ("0.90", Decimal("0.90")),
    (0.9, Decimal("0.9")),
    (5, Decimal("5")),
    ("0", Decimal("0")),
    ("125000000.00000", Decimal("125000000.00000")),  # weak currency
    (987654321987, Decimal("987654321987")),
])
def test_service_rate(value: Any, expected: Decimal) -> None:
    assert read_one(svc(rate=value)).rate == expected


def test_services_toksmm_example() -> None:
    answer = [
        {"service": 1, "name": "Followers", "type": "Default", "category": "TikTok",
         "rate": "0.90", "min": "50", "max": "10000", "refill": True, "cancel": True,
         "form": None},
        {"service": 2, "name": "Comments", "type": "Custom Comments", "category": "TikTok",
         "rate": "5.00000", "min": "10", "max": "1500", "refill": False, "cancel": True,
         "form": FORM},
    ]
    assert dialect.services(read(answer)) == [
        UpstreamService("1", "Followers", "Default", "TikTok", Decimal("0.90"), 50, 10000,
                        refill=True, cancel=True),
        UpstreamService("2", "Comments", "Custom Comments", "TikTok", Decimal("5.00000"),
                        10, 1500, refill=False, cancel=True, form=FORM),
    ]


def test_services_testedsmm_example() -> None:
    answer = [{"service": 1, "name": "Instagram Likes", "rate": "0.90", "min": 10,
               "max": 10000, "category": "Instagram"},
              {"service": "14", "name": "Comments", "type": "custom_comments",
               "category": "TikTok", "rate": "4.00", "min": 1, "max": 500, "refill": 0,
               "cancel": 1, "dripfeed": 1}]
    assert dialect.services(read(answer)) == [
        UpstreamService("1", "Instagram Likes", "Default", "Instagram", Decimal("0.90"),
                        10, 10000),
        UpstreamService("14", "Comments", "Custom Comments", "TikTok", Decimal("4.00"), 1, 500,
                        refill=False, cancel=True, dripfeed=True),
    ]


def test_services_bad_items_skipped() -> None:
    good = svc(service=5)
    answer = [
        "junk", None, 7, [good],
        svc(service=None), svc(service=""), svc(service=True), svc(service=1.5),
        {k: v for k, v in svc(service=6).items() if k != "service"},
        svc(service=7, rate="free"), svc(service=8, rate=None), svc(service=9, rate="-1"),
        svc(service=10, rate="NaN"),
        {k: v for k, v in svc(service=11).items() if k != "rate"},
        good,
    ]
    assert [s.service for s in dialect.services(read(answer))] == ["5"]


def test_services_missing_name_and_category() -> None:
    got = read_one({"service": 3, "rate": "1"})
    assert (got.name, got.category, got.min, got.max) == ("Service 3", "", 1, 1)


@pytest.mark.parametrize("wrap", [
    lambda items: items,
    lambda items: {"services": items},
    lambda items: {"data": items},
    lambda items: {str(i["service"]): i for i in items},
])
def test_services_containers(wrap: Any) -> None:
    items = [svc(service=1), svc(service=2, rate="0.5")]
    got = dialect.services(read(wrap(items)))
    assert [(s.service, s.rate) for s in got] == [("1", Decimal("0.90")), ("2", Decimal("0.5"))]


@pytest.mark.parametrize("answer", ["services", 5, None])
def test_services_unknown_shape(answer: Any) -> None:
    with pytest.raises(BadAnswer) as err:
        dialect.services(answer)
    assert err.value.raw == json.dumps(answer)


def test_services_empty() -> None:
    assert dialect.services([]) == []


# --- errors through decode() ----------------------------------------------------------

ERRORS: list[tuple[str, int, bytes, type[ProviderError], str]] = [
    ("error, HTTP 200", 200, b'{"error":"Incorrect order ID"}', Rejected, "Incorrect order ID"),
    ("error, HTTP 400", 400, b'{"error":"Missing action"}', Rejected, "Missing action"),
    ("error, HTTP 401", 401, b'{"error":"Invalid API key"}', Rejected, "Invalid API key"),
    ("error, HTTP 404", 404, b'{"error":"Incorrect order ID"}', Rejected, "Incorrect order ID"),
    ("error, HTTP 422", 422, b'{"error":"Invalid link"}', Rejected, "Invalid link"),
    ("errors as text", 200, b'{"errors":"Invalid link"}', Rejected, "Invalid link"),
    ("errors as list", 422, b'{"errors":["Invalid link","Quantity required"]}', Rejected,
     "Invalid link"),
    ("errors by field", 422, b'{"message":"The given data was invalid.",'
     b'"errors":{"link":["Invalid link"]}}', Rejected, "Invalid link"),
    ("errors as object list", 200, b'{"errors":[{"code":7,"message":"Invalid link"}]}',
     Rejected, "Invalid link"),
    ("errors as object", 200, b'{"errors":{"code":7,"message":"Invalid link"}}',
     Rejected, "Invalid link"),
    ("status fail + message", 200, b'{"status":"fail","message":"Invalid link"}', Rejected,
     "Invalid link"),
    ("status error + msg", 200, b'{"status":"error","msg":"Invalid link"}', Rejected,
     "Invalid link"),
    ("status failed + message, HTTP 400", 400,
     b'{"status":"failed","message":"Invalid link"}', Rejected, "Invalid link"),
    ("error object", 200, b'{"error":{"code":1001,"message":"Invalid link"}}', Rejected,
     "Invalid link"),
    ("error object, msg", 200, b'{"error":{"code":1001,"msg":"Invalid link"}}', Rejected,
     "Invalid link"),
    ("error object without text", 200, b'{"error":{"code":1001}}', Rejected, "error"),
    ("bare JSON string", 200, b'"Incorrect order ID"', Rejected, "Incorrect order ID"),
    ("Cloudflare 502", 502, b"<!DOCTYPE html><html><head><title>example.com | 502: Bad gateway"
     b"</title></head><body>Cloudflare Ray ID: 8a1b</body></html>", Unavailable, "HTTP 502"),
    ("Cloudflare 520", 520, b"<html><body>Web server is returning an unknown error</body>"
     b"</html>", Unavailable, "HTTP 520"),
    ("nginx 503", 503, b"<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>",
     Unavailable, "HTTP 503"),
    ("500 with JSON error", 500, b'{"error":"Internal error"}', Unavailable, "HTTP 500"),
    ("500 empty", 500, b"", Unavailable, "HTTP 500"),
    ("429 with JSON error", 429, b'{"error":"Too many requests"}', Unavailable, "HTTP 429"),
    ("HTML with 200", 200, b"<html><body>Welcome to our panel</body></html>", BadAnswer,
     "not JSON (HTTP 200)"),
    ("Cloudflare challenge 403", 403, b"<html><title>Just a moment...</title></html>",
     BadAnswer, "not JSON (HTTP 403)"),
    ("HTML 404", 404, b"<html>Not Found</html>", BadAnswer, "not JSON (HTTP 404)"),
    ("PHP warning before JSON", 200, b'<br />\n<b>Warning</b>: oops<br />{"order":1}',
     BadAnswer, "not JSON (HTTP 200)"),
    ("empty body", 200, b"", BadAnswer, "empty answer (HTTP 200)"),
    ("whitespace body", 200, b" \r\n\t", BadAnswer, "empty answer (HTTP 200)"),
    ("empty body, HTTP 400", 400, b"", BadAnswer, "empty answer (HTTP 400)"),
    ("truncated JSON", 200, b'{"order":', BadAnswer, "not JSON (HTTP 200)"),
    ("HTTP 400 without an error", 400, b'{"order":1}', BadAnswer,
     "HTTP 400 without an error message"),
]


@pytest.mark.parametrize(("status", "raw", "kind", "message"),
                         [row[1:] for row in ERRORS], ids=[row[0] for row in ERRORS])
def test_decode_errors(status: int, raw: bytes, kind: type[ProviderError], message: str) -> None:
    with pytest.raises(ProviderError) as err:
        dialect.decode(status, raw, {})
    assert type(err.value) is kind
    assert err.value.message == message
    assert err.value.raw == raw.decode()


def test_decode_keeps_at_most_500_chars_of_raw() -> None:
    page = b"<html>" + b"x" * 2000 + b"</html>"
    with pytest.raises(BadAnswer) as err:
        dialect.decode(200, page, {})
    assert err.value.raw == page[:500].decode()


def test_decode_raw_survives_bad_utf8() -> None:
    with pytest.raises(BadAnswer) as err:
        dialect.decode(200, b"\xff\xfe<html>", {})
    assert err.value.raw.endswith("<html>")


@pytest.mark.parametrize(("status", "headers", "retry_after"), [
    (429, {"Retry-After": "30"}, 30.0),
    (429, {"retry-after": "2.5"}, 2.5),
    (503, {"Retry-After": "120"}, 120.0),
    (500, {"Retry-After": "-5"}, 0.0),
    (429, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),  # HTTP date: not read
    (429, {"Retry-After": ""}, None),
    (429, {}, None),
    (502, {"Content-Type": "text/html"}, None),
])
def test_decode_retry_after(status: int, headers: dict[str, str],
                            retry_after: float | None) -> None:
    with pytest.raises(Unavailable) as err:
        dialect.decode(status, b"slow down", headers)
    assert err.value.retry_after == retry_after


def test_decode_without_headers() -> None:
    with pytest.raises(Unavailable) as err:
        dialect.decode(503, b"", None)
    assert err.value.retry_after is None
    assert dialect.decode(200, b'{"order":1}') == {"order": 1}


@pytest.mark.parametrize(("raw", "expected"), [
    (b'{"order":1}', {"order": 1}),
    (b'  \n{"order":"1"}\n', {"order": "1"}),
    (b'\xef\xbb\xbf{"order":1}', {"order": 1}),  # UTF-8 byte order mark from a PHP file
    (b"[]", []),
    (b'{"error":""}', {"error": ""}),  # an empty error is no error
    (b'{"errors":[]}', {"errors": []}),
    (b'{"status":"success","order":5}', {"status": "success", "order": 5}),
    (b'{"status":"Fail","charge":"0"}', {"status": "Fail", "charge": "0"}),  # an order status
])
def test_decode_passes_answers_through(raw: bytes, expected: Any) -> None:
    assert dialect.decode(200, raw, {}) == expected


# --- which rejections are worth another provider --------------------------------------

ELSEWHERE = [
    "Not enough funds on balance",
    "Not enough funds",
    "Insufficient funds",
    "Insufficient balance",
    "Your balance is too low",
    "Service disabled",
    "This service is disabled",
    "Service not found",
    "Incorrect service ID",
    "Service is not available",
    "Service temporarily unavailable",
    "Quantity less than minimal 50",
    "Quantity more than maximal 10000",
    "Minimum quantity is 100",
    "Maximum quantity is 5000",
    "Quantity below minimum",
    "Quantity above maximum",
    "You have active order with this link. Please wait until order being completed.",
    "You have an active order with this link",
    "Rate limited",
    "Rate limit exceeded",
    "Rate-limited, slow down",
    "rate_limit_exceeded",
    "Ratelimit reached",
    "Too many requests",
    "Too Many Attempts.",
    "Maintenance",
    "Site is under maintenance",
    "API is in maintenance mode, try again later",
    "Invalid API key",
]

NOT_ELSEWHERE = [
    "Invalid link",
    "Incorrect link",
    "Link is invalid",
    "Incorrect order ID",
    "Order not found",
    "Incorrect request",
    "Invalid Request",
    "Refill not found",
    "Link is private",
    "Account is private",
    "Order already completed",
]


@pytest.mark.parametrize("message", ELSEWHERE)
def test_rejected_elsewhere(message: str) -> None:
    for raw in (body({"error": message}), body({"status": "fail", "message": message}),
                body({"error": {"code": 1, "message": message}}), body({"errors": [message]})):
        with pytest.raises(Rejected) as err:
            dialect.decode(200, raw, {})
        assert err.value.message == message
        assert err.value.elsewhere is True
    assert dialect.rejection(message).elsewhere is True


@pytest.mark.parametrize("message", NOT_ELSEWHERE)
def test_rejected_here(message: str) -> None:
    for status in (200, 400, 404, 422):
        with pytest.raises(Rejected) as err:
            dialect.decode(status, body({"error": message}), {})
        assert err.value.message == message
        assert err.value.elsewhere is False
    assert dialect.rejection(message).elsewhere is False


def test_rejection_keeps_raw() -> None:
    raw = body({"error": "Invalid link", "code": 17})
    with pytest.raises(Rejected) as err:
        dialect.decode(200, raw, {})
    assert err.value.raw == raw.decode()


# --- error_message directly -----------------------------------------------------------

@pytest.mark.parametrize(("obj", "expected"), [
    ("Incorrect order ID", "Incorrect order ID"),
    ({"error": "Incorrect order ID"}, "Incorrect order ID"),
    ({"error": {"code": 5, "message": "Incorrect order ID"}}, "Incorrect order ID"),
    ({"error": {"code": 5, "text": "Incorrect order ID"}}, "Incorrect order ID"),
    ({"errors": {"order": ["Incorrect order ID"]}}, "Incorrect order ID"),
    ({"errors": [{"error": "Incorrect order ID"}]}, "Incorrect order ID"),
    ({"errors": [{"detail": "Incorrect order ID"}]}, "Incorrect order ID"),
    ({"status": "fail", "message": "Incorrect order ID"}, "Incorrect order ID"),
    ({"status": "Fail"}, None),  # an order status, not an error
    ({"status": "Completed", "message": "done"}, None),
    ({"error": ""}, None),
    ({"errors": []}, None),
    ({"errors": {}}, None),
    ({"order": 1}, None),
    (None, None),
    ([{"error": "x"}], None),
    (5, None),
])
def test_error_message(obj: Any, expected: str | None) -> None:
    assert dialect.error_message(obj) == expected


def test_item_error_is_typed_not_text() -> None:
    err = ItemError("Incorrect order ID")
    assert not isinstance(err, str)  # a per-id error can never pass for an upstream id
    assert err.message == "Incorrect order ID"
    assert err == ItemError("Incorrect order ID")
