"""Shared by both tiers: a real Redis.

- `REDIS_URL` if set, else an embedded redis-server (the one the project runs in
  production when no URL is given), one per test session (per xdist worker).
- `fresh_redis`: a database of its own for one test.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from gateway.state.embedded import EmbeddedRedis

EMBEDDED_DATABASES = 1024  # tests that outlive their turn (module fixtures) never share one


def _databases() -> range:
    """Databases are handed out to tests in turn (0 is left alone): 1..1023 of the
    embedded Redis, 1..15 of a `REDIS_URL` one; under pytest-xdist with one shared
    REDIS_URL, each worker takes its own share."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not os.environ.get("REDIS_URL"):
        return range(1, EMBEDDED_DATABASES)
    if not worker or count < 2:
        return range(1, 16)
    share = max(1, 15 // count)
    first = 1 + int(worker.removeprefix("gw")) * share
    return range(first, first + share)


_dbs = itertools.cycle(_databases())


def with_db(url: str, db: int) -> str:
    if url.startswith("unix://"):
        base, _, query = url.partition("?")
        kept = [q for q in query.split("&") if q and not q.startswith("db=")]
        return base + "?" + "&".join([*kept, f"db={db}"])
    return urlunsplit(urlsplit(url)._replace(path=f"/{db}"))


@pytest.fixture(scope="session")
def redis_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), databases=EMBEDDED_DATABASES)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def fresh_redis(redis_base: str) -> str:
    """A Redis URL on a database of its own, flushed by the stack that uses it."""
    return with_db(redis_base, next(_dbs))


