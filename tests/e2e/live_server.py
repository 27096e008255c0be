"""The real app under a real uvicorn server in a thread of the test process, served
with the gateway's own HTTP protocol (`gateway.edge.timeouts`): for what only a real
socket shows (read timeouts, peer addresses)."""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
import uvicorn
import yaml

from gateway.config import parse_settings
from gateway.edge.app import create_app
from gateway.edge.timeouts import TimedHttpToolsProtocol
from gateway.state.embedded import free_port
from harness import base_config


@contextmanager
def live_gateway(sims: tuple[Any, Any], redis_url: str, **gateway: Any) -> Iterator[str]:
    """The gateway over both simulators, on 127.0.0.1; yields its base URL."""
    a, b = sims
    flush = redis.Redis.from_url(redis_url)  # a database of its own, as every stack has
    flush.flushdb()
    flush.close()
    config = base_config(a, b, **gateway)
    settings = parse_settings(yaml.safe_dump(config, sort_keys=False), env={})
    port = free_port()
    data = tempfile.TemporaryDirectory(prefix="gw-live-")
    server = uvicorn.Server(uvicorn.Config(
        create_app(settings, redis_url, data_dir=Path(data.name)), host="127.0.0.1",
        port=port, loop="asyncio", http=TimedHttpToolsProtocol, lifespan="on",
        access_log=False, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the gateway did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        data.cleanup()
