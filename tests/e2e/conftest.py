"""Fixtures of the end-to-end tier: simulator processes and gateway processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import TESTED_CATALOG, Gateway, Sim, base_config


@pytest.fixture(scope="session")
def sims(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sim, Sim]]:
    import json

    catalog = tmp_path_factory.mktemp("catalog") / "tested.json"
    catalog.write_text(json.dumps(TESTED_CATALOG))
    a = Sim("toksmm", "--progress-s", "3600")
    b = Sim("testedsmm", "--progress-s", "3600", "--catalog", str(catalog))
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


@pytest.fixture
def stack(sims: tuple[Sim, Sim], fresh_redis: str,
          tmp_path: Path) -> Iterator[tuple[Gateway, Sim, Sim]]:
    """Fresh simulators state, a fresh Redis database and a gateway over both."""
    a, b = sims
    a.reset()
    b.reset()
    gw = Gateway(base_config(a, b), fresh_redis, tmp_path / "gw")
    try:
        yield gw, a, b
    finally:
        gw.stop()
