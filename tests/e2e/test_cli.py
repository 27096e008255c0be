"""`smm-gateway demo` serves a working gateway over two simulated providers."""

from __future__ import annotations

import httpx

from demo_process import running_demo


def test_demo_serves_every_dialect(tmp_path):
    with running_demo(tmp_path / "demo") as demo:
        url = demo.url
        # followers: the testedsmm simulator is cheaper; likes: the toksmm one
        for service in (1, 2):
            r = httpx.post(url, data={"key": "demo-key", "action": "add", "service": service,
                                      "link": "https://t/x", "quantity": 200})
            order = r.json()["order"]
            s = httpx.post(url, data={"key": "demo-key", "action": "status", "order": order})
            assert s.json()["status"] in ("Pending", "In progress", "Completed", "Partial")
        balance = httpx.post(url, data={"key": "demo-key", "action": "balance"}).json()
        assert balance["currency"] == "USD"
        out = demo.output()
    assert "demo-key" in out and "curl" in out
    assert f"http://127.0.0.1:{demo.port}/admin/" in out, "the dashboard's address"
