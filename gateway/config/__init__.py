"""The configuration: its schema, the one loader, the rules it is checked by, and
what a reload changed.

- `schema`: the msgspec Structs, one per section of `providers.yaml`.
- `load`: the loader `serve`, `check-config` and a reload all use (`check_file`,
  `load_settings`; `check_text` and `parse_settings` for text).
- `rules`: every check beyond the types, each problem with its path in the file.
- `changes`: what a reload changed (`diff`) and what it answered (`ReloadResult`).
"""

from gateway.config.changes import RESTART_ONLY, Changes, Delta, ReloadResult, diff
from gateway.config.load import check_file, check_text, load_settings, parse_settings
from gateway.config.schema import (
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_TIMEOUT_S,
    AlertSettings,
    ClientSettings,
    DurabilityName,
    ErrorStatus,
    GatewaySettings,
    MirrorSettings,
    PolicyName,
    ProviderRules,
    ProviderSettings,
    ServerName,
    ServiceSettings,
    Settings,
    TransportName,
    UpstreamRef,
)

__all__ = [
    "DEFAULT_MAX_CONCURRENCY", "DEFAULT_TIMEOUT_S", "RESTART_ONLY", "AlertSettings",
    "Changes", "ClientSettings", "Delta", "DurabilityName", "ErrorStatus", "GatewaySettings",
    "MirrorSettings", "PolicyName", "ProviderRules", "ProviderSettings", "ReloadResult",
    "ServerName", "ServiceSettings", "Settings", "TransportName", "UpstreamRef",
    "check_file", "check_text", "diff", "load_settings", "parse_settings",
]
