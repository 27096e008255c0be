"""`services`: the catalog as the client may see it, pre-encoded with its ETag.

Until every provider's list has been fetched once (by any replica), the answer is
an error, never a shorter list: panels disable the services that vanish from it.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from gateway import money
from gateway.actions.common import NOT_READY
from gateway.errors import NotReady
from gateway.routing.catalog import Catalog
from gateway.routing.views import etag
from gateway.state.clients import ClientRecord
from gateway.wire import ENCODER, Encoded

Signature = tuple[int, object, tuple[object, ...], tuple[int, ...]]


class Services:
    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog
        self._bodies: dict[str, tuple[Signature, Encoded]] = {}

    async def __call__(self, client: ClientRecord, fields: Mapping[str, str]) -> Encoded:
        """The gateway's own answer, or one per client with its own prices or services
        (rebuilt only when the catalog or the client's settings change)."""
        catalog = self._catalog
        if not catalog.complete:
            raise NotReady(NOT_READY)
        if client.plain:
            return Encoded(catalog.body, catalog.etag)
        signature: Signature = (catalog.version, client.markup,
                                tuple(sorted(client.prices.items())),
                                tuple(client.services or ()))
        cached = self._bodies.get(client.name)
        if cached is not None and cached[0] == signature:
            return cached[1]
        body = ENCODER.encode([
            msgspec.structs.replace(view.answer(),
                                    rate=money.wire(client.rate(view.id, view.rate)))
            for view in catalog.views.values() if client.allows(view.id)])
        answer = Encoded(body, etag(body))
        self._bodies[client.name] = (signature, answer)
        return answer
