"""`smm-gateway demo`: a config for two simulated providers, one per dialect, and a catalog."""

from __future__ import annotations

import json
from pathlib import Path

DEMO_KEY = "demo-key"

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
     "category": "TikTok", "rate": "4.80", "min": 5, "max": 1000, "refill": 0, "cancel": 1},
]

DEMO_CONFIG = """\
# Written by `smm-gateway demo`: two simulated providers on loopback.
gateway:
  currency: USD
  markup: 1.25
  order_id_start: 100000
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
    config = data_dir / "demo.yaml"
    config.write_text(DEMO_CONFIG.format(key=DEMO_KEY, p1=p1, p2=p2))
    sims = [
        ["--port", str(p1), "--dialect", "toksmm"],
        ["--port", str(p2), "--dialect", "testedsmm", "--catalog", str(catalog)],
    ]
    return config, sims
