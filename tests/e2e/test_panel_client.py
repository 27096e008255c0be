"""The standard panel client, unmodified, runs every action against the gateway."""

from __future__ import annotations

from panel_client import Api


def test_standard_client_runs_every_action(stack):
    gw, a, b = stack
    api = Api(gw.url, "alice-key")
    services = api.services()
    assert isinstance(services, list) and services[0]["service"] == 1
    first = api.order({"service": 1, "link": "https://tiktok.com/@me", "quantity": 100})
    second = api.order({"service": 2, "link": "https://tiktok.com/@me", "quantity": 100})
    assert list(first) == ["order"] and isinstance(first["order"], int)
    o1, o2 = first["order"], second["order"]
    assert api.status(o1)["status"] == "Pending"
    multi = api.multi_status([o1, o2, 1])
    assert multi[str(o1)]["status"] == "Pending"  # $multi->{'123'}
    assert multi["1"] == {"error": "Incorrect order ID"}
    b.control("orders/1", {"status": "Completed"})
    refill = api.refill(o1)
    assert isinstance(refill["refill"], int)
    refills = api.multi_refill([o1])
    assert isinstance(refills, list) and refills[0]["order"] == o1
    assert api.refill_status(refill["refill"])["status"] in ("Pending", "Completed")
    statuses = api.multi_refill_status([refill["refill"], refills[0]["refill"]])
    assert isinstance(statuses, list) and len(statuses) == 2
    canceled = api.cancel([o2])
    assert canceled == [{"order": o2, "cancel": 1}]
    balance = api.balance()
    assert balance["currency"] == "USD" and isinstance(balance["balance"], str)
    assert api.status(999999) == {"error": "Incorrect order ID"}
    assert Api(gw.url, "wrong").balance() == {"error": "Invalid API key"}
