"""The simulated provider's services: a default catalog, and catalogs read in either
dialect's shape (ids, ``min``/``max`` and flags as numbers or strings, a ``form`` as an
object or a JSON string), normalised to :class:`Service` and written back per dialect.

An entry may also carry the service's behaviour (``start_delay_s``, ``stall_rate``,
``refuse_refill``, ...: see :mod:`gateway.sim.behaviour`); it is never shown in the
``services`` answer. Catalog files are JSON or, named ``.yaml``/``.yml``, YAML.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec
import yaml

from gateway.sim.behaviour import catalog_layer
from gateway.sim.codec import DECODE, money, to_int

DEFAULT_CATALOG: list[dict[str, Any]] = [
    {
        "service": 1,
        "name": "Followers",
        "type": "Default",
        "category": "TikTok",
        "rate": "0.50",
        "min": 50,
        "max": 10000,
        "refill": True,
        "cancel": True,
        "dripfeed": True,
    },
    {
        "service": 2,
        "name": "Likes",
        "type": "Default",
        "category": "TikTok",
        "rate": "0.20",
        "min": 10,
        "max": 50000,
        "refill": False,
        "cancel": True,
        "dripfeed": False,
    },
    {
        "service": 3,
        "name": "Views",
        "type": "Default",
        "category": "TikTok",
        "rate": "0.01",
        "min": 100,
        "max": 1000000,
        "refill": False,
        "cancel": False,
        "dripfeed": True,
    },
    {
        "service": 4,
        "name": "Custom Comments",
        "type": "Custom Comments",
        "category": "TikTok",
        "rate": "5.00",
        "min": 10,
        "max": 1500,
        "refill": False,
        "cancel": True,
        "dripfeed": False,
        "form": {"fields": [{"name": "comments", "type": "textarea", "required": True}]},
    },
    {
        "service": 5,
        "name": "Mentions",
        "type": "Mentions Custom List",
        "category": "Instagram",
        "rate": "3.00",
        "min": 10,
        "max": 1000,
        "refill": False,
        "cancel": False,
        "dripfeed": False,
    },
    {
        "service": 6,
        "name": "Package",
        "type": "Package",
        "category": "TikTok",
        "rate": "2.50",
        "min": 1,
        "max": 1,
        "refill": False,
        "cancel": False,
        "dripfeed": False,
        "form": {
            "fields": [
                {"name": "package", "type": "select", "required": True, "options": ["basic", "pro"]}
            ]
        },
    },
    {
        "service": 7,
        "name": "Poll votes",
        "type": "Poll",
        "category": "Telegram",
        "rate": "1.20",
        "min": 50,
        "max": 10000,
        "refill": False,
        "cancel": True,
        "dripfeed": False,
    },
    {
        "service": 8,
        "name": "Subscriptions",
        "type": "Subscriptions",
        "category": "Instagram",
        "rate": "4.00",
        "min": 50,
        "max": 10000,
        "refill": False,
        "cancel": True,
        "dripfeed": False,
    },
    {
        "service": 9,
        "name": "Comment Likes",
        "type": "Comment Likes",
        "category": "YouTube",
        "rate": "0.80",
        "min": 20,
        "max": 5000,
        "refill": False,
        "cancel": True,
        "dripfeed": False,
    },
]


@dataclass(frozen=True, slots=True)
class Service:
    """One service, whichever shape it was read from."""

    id: int
    name: str
    type: str
    category: str
    rate: Decimal
    min: int
    max: int
    refill: bool
    cancel: bool
    dripfeed: bool
    form: Any
    kind: str  # "default" | "comments" | "mentions" | "package"
    behaviour: Mapping[str, Any]  # the behaviour fields the entry sets


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    if isinstance(value, int | float | Decimal):
        return value != 0
    return str(value).strip().lower() in ("1", "true", "yes", "on", "y")


def _service_kind(type_: str) -> str:
    """What an add for this type counts: quantity, comment lines, usernames, or one package."""
    t = type_.lower().replace("_", " ").replace("-", " ").strip()
    if t == "package":
        return "package"
    if "comment" in t and "like" not in t:
        return "comments"
    if t == "mentions custom list":
        return "mentions"
    return "default"


def _form(raw: Mapping[str, Any]) -> Any:
    form = raw.get("form")
    if isinstance(form, str):
        try:
            form = DECODE(form) if form.strip() else None
        except msgspec.DecodeError:
            form = None
    return form or None


def normalise_service(raw: Mapping[str, Any]) -> Service:
    """Validate one catalog entry (``ValueError``/``TypeError``) and normalise it."""
    if not isinstance(raw, Mapping):
        raise TypeError(f"service entry is not an object: {raw!r}")
    sid = to_int(raw.get("service", raw.get("id")))
    if sid is None:
        raise ValueError(f"service without an integer id: {raw!r}")
    try:
        rate = Decimal(str(raw.get("rate", "0")).strip())
    except InvalidOperation as exc:
        raise ValueError(f"service {sid}: bad rate {raw.get('rate')!r}") from exc
    if not rate.is_finite() or rate < 0:
        raise ValueError(f"service {sid}: bad rate {raw.get('rate')!r}")
    lo = to_int(raw.get("min", 1))
    hi = to_int(raw.get("max", 100000))
    if lo is None or hi is None:
        raise ValueError(f"service {sid}: bad min/max")
    type_ = str(raw.get("type") or "Default")
    return Service(
        id=sid,
        name=str(raw.get("name") or f"Service {sid}"),
        type=type_,
        category=str(raw.get("category") or "Default"),
        rate=rate,
        min=lo,
        max=hi,
        refill=_to_bool(raw.get("refill")),
        cancel=_to_bool(raw.get("cancel")),
        dripfeed=_to_bool(raw.get("dripfeed")),
        form=_form(raw),
        kind=_service_kind(type_),
        behaviour=catalog_layer(raw, sid),
    )


def normalise_catalog(services: Iterable[Mapping[str, Any]]) -> dict[int, Service]:
    """Services by id; a later entry with the same id replaces an earlier one."""
    out: dict[int, Service] = {}
    for raw in services:
        svc = normalise_service(raw)
        out[svc.id] = svc
    return out


def load_catalog(path: str) -> list[dict[str, Any]]:
    """Read a catalog file: a list of services in either dialect's shape, as JSON (or
    YAML, for a file named ``.yaml``/``.yml``).

    An object with a ``services`` list is accepted too. The entries are validated
    (raises ``ValueError``/``TypeError``) and returned as read; JSON rates are parsed
    as ``Decimal``.
    """
    with open(path, encoding="utf-8") as fh:
        if path.lower().endswith((".yaml", ".yml")):
            data = yaml.safe_load(fh)
        else:
            data = json.load(fh, parse_float=Decimal)
    if isinstance(data, dict) and isinstance(data.get("services"), list):
        data = data["services"]
    if not isinstance(data, list):
        raise TypeError(f"{path}: expected a list of services")
    normalise_catalog(data)
    return data


def service_object(s: Service, toksmm: bool) -> dict[str, Any]:
    """One entry of the ``services`` answer in the dialect's shape."""
    if toksmm:
        return {
            "service": s.id,
            "name": s.name,
            "type": s.type,
            "category": s.category,
            "rate": money(s.rate, 5),
            "min": str(s.min),
            "max": str(s.max),
            "refill": s.refill,
            "cancel": s.cancel,
            "form": s.form,
        }
    return {
        "service": s.id,
        "name": s.name,
        "type": s.type,
        "category": s.category,
        "rate": money(s.rate, 2),
        "min": s.min,
        "max": s.max,
        "refill": int(s.refill),
        "cancel": int(s.cancel),
        "dripfeed": int(s.dripfeed),
    }
