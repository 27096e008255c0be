"""SHA-256 as hex: key digests, key fingerprints for logs, ETags, order fingerprints."""

from __future__ import annotations

import hashlib


def sha256_hex(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()
