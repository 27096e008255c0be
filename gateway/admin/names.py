"""Client names: what a new one may be, and how any name travels in a path.

A new client's name is 1 to 64 ASCII letters, digits, `-`, `_` and `.`, starting
with a letter or digit: it is a path segment as it is. Clients created before that
rule may have other characters (`/`, `%`, `?`...): the dashboard's links carry every
name percent-encoded twice (`in_path`), because the server decodes a path once
before routing (a `%2F` would split the segment), and the handlers decode the
segment they are given once more (`from_path`). A name of the new kind is the same
in both forms, so `/admin/api/clients/alice` stays what it was; a script reaching
an older name sends `quote(quote(name, safe=""), safe="")`.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
RULE = ("a client name is 1 to 64 letters, digits, '-', '_' or '.', starting with "
        "a letter or digit")


def problem(name: str) -> str | None:
    """Why `name` cannot be a new client's name, or None."""
    return None if NAME.fullmatch(name) else f"{RULE}: not {name!r}"


def in_path(name: str) -> str:
    """`name` as a path segment of a dashboard link or an admin API call."""
    return quote(quote(name, safe=""), safe="")


def from_path(segment: str) -> str:
    """The client name a path segment stands for (the server decoded it once)."""
    return unquote(segment)
