"""A realistic SMM API v2 provider, simulated: an upstream for tests, demos and benchmarks.

It speaks either provider dialect (``toksmm`` or ``testedsmm``), keeps its account,
orders and refills in memory, answers over its own small HTTP server, and can be
steered and inspected through a JSON control API under ``/_sim/``.

- :mod:`~gateway.sim.catalog`: the services offered (a default catalog, or a file).
- :mod:`~gateway.sim.behaviour`: how each service misbehaves (slow starts, stalls,
  partial deliveries, refused refills and cancels), the seed and the clock.
- :mod:`~gateway.sim.state`: the account; orders progressing and refunds settling.
- :mod:`~gateway.sim.api`: the ``/api/v2`` actions and where the dialects differ.
- :mod:`~gateway.sim.control`: the ``/_sim/`` control API.
- :mod:`~gateway.sim.simulator`: the two APIs over one state, no I/O.
- :mod:`~gateway.sim.server`: the asyncio + ``httptools`` server, faults included.
- :mod:`~gateway.sim.cli`: ``python -m gateway.sim`` (``smm-gateway simulate``).
- :mod:`~gateway.sim.demo`: the config and catalog of ``smm-gateway demo``.
"""

from gateway.sim.catalog import DEFAULT_CATALOG, load_catalog
from gateway.sim.codec import SimResponse
from gateway.sim.options import SimOptions
from gateway.sim.server import serve, start_server
from gateway.sim.simulator import Simulator

__all__ = [
    "DEFAULT_CATALOG",
    "SimOptions",
    "SimResponse",
    "Simulator",
    "load_catalog",
    "serve",
    "start_server",
]
