"""What a config reload changed, and what a reload answered.

`diff(old, new)` names the providers, services and clients added, removed or
changed, and the settings (`gateway.*`, `alerts.*`, `mirror`) that changed; those
that only a restart applies are listed apart (`RESTART_ONLY`). `ReloadResult` is
what `gateway.edge.reload` logs, records in the admin audit list and answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from gateway.config.schema import Settings

# read once when the app (or the server) is built: a reload keeps the running value
# (see docs/operations.md, "Changing the config without a restart")
RESTART_ONLY = ("gateway.admin_key", "gateway.server")


@dataclass(frozen=True, slots=True)
class Delta:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def text(self, what: str) -> str:
        parts = [f"{how} {', '.join(names)}" for how, names in
                 (("+", self.added), ("-", self.removed), ("~", self.changed)) if names]
        return f"{what} {' '.join(parts)}"


@dataclass(frozen=True, slots=True)
class Changes:
    providers: Delta = field(default_factory=Delta)
    services: Delta = field(default_factory=Delta)
    clients: Delta = field(default_factory=Delta)
    settings: list[str] = field(default_factory=list)  # dotted names, e.g. gateway.markup
    restart: list[str] = field(default_factory=list)  # of `settings`: applied at restart only

    def __bool__(self) -> bool:
        return bool(self.providers or self.services or self.clients or self.settings)

    def text(self) -> str:
        if not self:
            return "no changes"
        parts = [d.text(what) for what, d in (("providers", self.providers),
                                              ("services", self.services),
                                              ("clients", self.clients)) if d]
        if self.settings:
            parts.append("settings " + ", ".join(self.settings))
        if self.restart:
            parts.append("needs a restart: " + ", ".join(self.restart))
        return "; ".join(parts)


def _plain(value: Any) -> Any:
    return msgspec.to_builtins(value, enc_hook=str)


def _by_name(old: Sequence[Any], new: Sequence[Any], name: str) -> Delta:
    before = {str(getattr(x, name)): _plain(x) for x in old}
    after = {str(getattr(x, name)): _plain(x) for x in new}
    return Delta(added=[k for k in after if k not in before],
                 removed=[k for k in before if k not in after],
                 changed=[k for k in after if k in before and before[k] != after[k]])


def _fields(section: str, old: Any, new: Any) -> list[str]:
    a, b = _plain(old), _plain(new)
    return [f"{section}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def diff(old: Settings, new: Settings) -> Changes:
    settings = _fields("gateway", old.gateway, new.gateway) + \
        _fields("alerts", old.alerts, new.alerts)
    if _plain(old.mirror) != _plain(new.mirror):
        settings.append("mirror")
    return Changes(providers=_by_name(old.providers, new.providers, "name"),
                   services=_by_name(old.services, new.services, "id"),
                   clients=_by_name(old.clients, new.clients, "name"),
                   settings=settings, restart=[s for s in settings if s in RESTART_ONLY])


@dataclass(frozen=True, slots=True)
class ReloadResult:
    ok: bool
    at: float  # unix time the reload ended
    path: str
    actor: str  # "signal", "api" or a dashboard session
    errors: list[str] = field(default_factory=list)  # `file:line: message`, when refused
    changes: Changes = field(default_factory=Changes)
    seconds: float = 0.0

    def text(self) -> str:
        if not self.ok:
            count = len(self.errors)
            return (f"refused: {count} error{'s' if count != 1 else ''}; the running config "
                    f"stays: " + " | ".join(self.errors))
        return self.changes.text()

    def as_dict(self) -> dict[str, Any]:
        """The JSON of the admin API's answer and of the log line."""
        out: dict[str, Any] = {"ok": self.ok, "at": round(self.at, 3), "path": self.path,
                               "actor": self.actor, "seconds": round(self.seconds, 3)}
        if not self.ok:
            out["errors"] = self.errors
            return out
        c = self.changes
        out["changes"] = {what: {"added": d.added, "removed": d.removed, "changed": d.changed}
                          for what, d in (("providers", c.providers), ("services", c.services),
                                          ("clients", c.clients))}
        out["changes"]["settings"] = c.settings
        out["restart_needed"] = c.restart
        return out
