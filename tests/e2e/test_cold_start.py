"""A gateway process started while a provider is down, with nothing cached: it never
answers `services` with a shrunken list, and says it is not ready until the list
comes (then the same process serves the whole catalog)."""

from __future__ import annotations

import httpx

from gateway.state.embedded import free_port
from harness import Gateway, Sim, base_config, provider


def test_cold_start_with_a_provider_down(sims, fresh_redis, tmp_path):
    a, b = sims
    a.reset()
    b.reset()
    config = base_config(a, b)
    dead = Sim.__new__(Sim)
    dead.api = f"http://127.0.0.1:{free_port()}/api/v2"  # nothing listens there
    config["providers"][1] = provider("prov-b", dead, timeout_s=1)
    gw = Gateway(config, fresh_redis, tmp_path)
    try:
        r = gw.post(action="services")
        assert r.status_code == 503
        assert r.json() == {"error": "Service list is not available yet, try again later"}
        ready = httpx.get(f"http://127.0.0.1:{gw.port}/readyz")
        assert ready.status_code == 503 and ready.json()["ready"] is False
        assert '"provider": "prov-b"' in gw.log() or '"provider":"prov-b"' in gw.log()
        assert httpx.get(f"http://127.0.0.1:{gw.port}/healthz").status_code == 200
        # orders for services another provider lists still go through
        assert "order" in gw.call(action="add", service=3, link="https://t/x", quantity=1000)
    finally:
        gw.stop()
