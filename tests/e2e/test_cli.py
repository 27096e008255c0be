"""`smm-gateway demo` serves a working gateway over two simulated providers."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx

from gateway.state.embedded import free_port
from harness import ROOT, _stop


def test_demo_serves_every_dialect(tmp_path):
    port = free_port()
    while port + 2 > 65535:
        port = free_port()
    env_clean = {k: v for k, v in __import__("os").environ.items() if k != "REDIS_URL"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "demo", "--port", str(port),
         "--data-dir", str(tmp_path / "demo")], cwd=ROOT, env=env_clean,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/api/v2"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.post(url, data={"key": "demo-key", "action": "services"}, timeout=2)
                if r.status_code == 200 and len(r.json()) == 4:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "demo did not come up"
            assert proc.poll() is None, "demo exited"
            time.sleep(0.2)
        # followers: the testedsmm simulator is cheaper; likes: the toksmm one
        for service in (1, 2):
            r = httpx.post(url, data={"key": "demo-key", "action": "add", "service": service,
                                      "link": "https://t/x", "quantity": 200})
            order = r.json()["order"]
            s = httpx.post(url, data={"key": "demo-key", "action": "status", "order": order})
            assert s.json()["status"] in ("Pending", "In progress", "Completed", "Partial")
        balance = httpx.post(url, data={"key": "demo-key", "action": "balance"}).json()
        assert balance["currency"] == "USD"
    finally:
        _stop(proc)
    out = proc.stdout.read() if proc.stdout else ""
    assert "demo-key" in out and "curl" in out
