"""The app of a serving process, built from the environment `serve` hands it.

`smm-gateway serve` (`gateway.ops.cli`) sets `ENV_CONFIG`, `ENV_REDIS` and
`ENV_DATA`, then starts the ASGI server (`gateway.ops.servers`); the server calls
`app_factory` in the process that serves (uvicorn's factory, granian's target, a
worker's app: `gateway.ops.workers`), which builds the app from them.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from gateway.config import load_settings

ENV_CONFIG = "SMM_GATEWAY_CONFIG"
ENV_DATA = "SMM_GATEWAY_DATA"
ENV_REDIS = "REDIS_URL"
DEFAULT_DATA = "./data"


def app_factory() -> Any:
    """The app, built in the process that serves it (uvicorn's factory, granian's
    target: `gateway.ops.servers`): config path and Redis URL come from env."""
    from gateway.edge.app import create_app
    from gateway.ops import logs

    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the app listens (a config reload)
    path = Path(os.environ[ENV_CONFIG])
    settings = load_settings(path)
    logs.setup(settings.gateway.log_level)
    return create_app(settings, os.environ[ENV_REDIS], config_path=path,
                      data_dir=Path(os.environ.get(ENV_DATA) or DEFAULT_DATA), serving=True)
