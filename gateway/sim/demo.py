"""`smm-gateway demo`: a config for two simulated providers, one per dialect, and a catalog.

The demo starts clean on purpose: its data directory (the gateway's Redis, the
config, the catalog) is emptied at every start, and the simulated providers keep
their orders in memory only. So every run matches the docs walk-through (order
100000 first, refill 1000 first), and no order of an earlier run points at a
simulator that no longer has it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

DEMO_KEY = "demo-key"
DEMO_ADMIN_KEY = "demo-admin-key-change-me"  # the dashboard's; a real one is secret
CONFIG_NAME = "demo.yaml"
# seconds a simulated order takes from Pending through In progress to Completed:
# long enough to cancel an order by hand, short enough to refill one soon after
PROGRESS_S = 10

# The testedsmm simulator's catalog: same services, other prices and ids, so the
# demo shows routing to whichever is cheaper.
TESTED_CATALOG = [
    {"service": 101, "name": "TikTok Followers", "type": "Default", "category": "TikTok",
     "rate": "0.45", "min": 100, "max": 20000, "refill": 1, "cancel": 1, "dripfeed": 1},
    {"service": 102, "name": "TikTok Likes", "type": "Default", "category": "TikTok",
     "rate": "0.25", "min": 10, "max": 50000, "refill": 0, "cancel": 1},
    {"service": 103, "name": "TikTok Views", "type": "Default", "category": "TikTok",
     "rate": "0.008", "min": 100, "max": 2000000, "refill": 0, "cancel": 0},
    {"service": 104, "name": "TikTok Custom Comments", "type": "custom_comments",
     "category": "TikTok", "rate": "4.80", "min": 1, "max": 1000, "refill": 0, "cancel": 1},
]

DEMO_CONFIG = """\
# Written by `smm-gateway demo`: two simulated providers on loopback.
gateway:
  currency: USD
  markup: 1.25
  order_id_start: 100000
  refill_id_start: 1000
  status_cache_s: 0        # the demo asks the simulators on every status poll
  admin_key: {admin_key}   # the dashboard: http://127.0.0.1:PORT/admin/
clients:
  - name: demo
    key: {key}
providers:
  - name: sim-toksmm
    url: http://127.0.0.1:{p1}/api/v2
    key: sim
    timeout_s: 10
  - name: sim-testedsmm
    url: http://127.0.0.1:{p2}/api/v2
    key: sim
    timeout_s: 10
services:
  - id: 1
    name: TikTok Followers
    category: TikTok
    upstreams:
      - {{provider: sim-toksmm, service: 1}}
      - {{provider: sim-testedsmm, service: 101}}
  - id: 2
    name: TikTok Likes
    category: TikTok
    upstreams:
      - {{provider: sim-toksmm, service: 2}}
      - {{provider: sim-testedsmm, service: 102}}
  - id: 3
    name: TikTok Views
    category: TikTok
    price: 0.02
    upstreams:
      - {{provider: sim-toksmm, service: 3}}
      - {{provider: sim-testedsmm, service: 103}}
  - id: 4
    name: TikTok Custom Comments
    category: TikTok
    type: Custom Comments
    upstreams:
      - {{provider: sim-toksmm, service: 4}}
      - {{provider: sim-testedsmm, service: 104}}
"""


def write_demo(data_dir: Path, port: int) -> tuple[Path, list[list[str]]]:
    """Write the demo config and catalog; the simulator argument lists to start."""
    data_dir.mkdir(parents=True, exist_ok=True)
    p1, p2 = port + 1, port + 2
    catalog = data_dir / "testedsmm-catalog.json"
    catalog.write_text(json.dumps(TESTED_CATALOG, indent=2))
    config = data_dir / CONFIG_NAME
    config.write_text(DEMO_CONFIG.format(key=DEMO_KEY, p1=p1, p2=p2, admin_key=DEMO_ADMIN_KEY))
    sims = [
        ["--port", str(p1), "--dialect", "toksmm", "--progress-s", str(PROGRESS_S)],
        ["--port", str(p2), "--dialect", "testedsmm", "--catalog", str(catalog),
         "--progress-s", str(PROGRESS_S)],
    ]
    return config, sims


def clean_data_dir(data_dir: Path) -> bool:
    """Empty the demo's directory; True if there was anything to remove.

    Only a directory the demo wrote (it holds the demo config) or an empty one is
    touched: a mistyped `--data-dir` never wipes anything else.
    """
    if not data_dir.exists():
        return False
    if not data_dir.is_dir():
        raise ValueError(f"{data_dir} is not a directory")
    if not any(data_dir.iterdir()):
        return False
    if not (data_dir / CONFIG_NAME).exists():
        raise ValueError(f"{data_dir} is not a demo directory (no {CONFIG_NAME} in it): "
                         "not emptying it; give the demo a directory of its own")
    shutil.rmtree(data_dir)
    return True
