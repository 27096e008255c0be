"""Reading what a client sent: multi-id lists and the `add` parameter families.

Everything here is pure and raises `ClientError` with the message the client
gets. Nothing is sent upstream before these checks pass.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from gateway.digest import sha256_hex
from gateway.errors import ClientError

MAX_IDS = 100
MAX_JSON_DEPTH = 32  # a client's JSON (a body, a `form` field) nests at most this deep

# Fields forwarded upstream as they are, by parameter family.
PASSTHROUGH = (
    "usernames", "hashtags", "hashtag", "username", "media",  # mentions
    "min", "max", "posts", "old_posts", "delay", "expiry",  # subscriptions
    "answer_number",  # polls
    "groups", "keywords",
)
_INT_FIELDS = ("min", "max", "posts", "old_posts", "delay", "answer_number")
_EXPIRY = re.compile(r"[0-9]{2}/[0-9]{2}/[0-9]{4}")
# ASCII digits only: "²".isdigit() is True and int("５") is 5
_DIGITS = re.compile(r"[0-9]{1,12}")
_ID = re.compile(r"[0-9]{1,18}")
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*(?:"|$)')  # cannot fail: linear time
_BRACKETS = bytes(range(256)).translate(None, b"[]{}")
_json = msgspec.json.Decoder()


def json_too_deep(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether JSON text nests more than `limit` arrays/objects, found without decoding
    it (a decoder recurses: thousands of levels would raise RecursionError)."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    depth = 0
    for c in _JSON_STRING.sub(b"", raw).translate(None, _BRACKETS):
        depth += 1 if c in b"[{" else -1
        if depth > limit:
            return True
    return False


def decode_json(raw: str | bytes, what: str) -> Any:
    """Client-sent JSON, or ClientError `Incorrect {what}: ...` (never a traceback)."""
    data = raw.encode() if isinstance(raw, str) else raw
    if json_too_deep(data):
        raise ClientError(f"Incorrect {what}: JSON nested too deeply "
                          f"(at most {MAX_JSON_DEPTH} levels)")
    try:
        return _json.decode(data)
    except (msgspec.DecodeError, RecursionError):
        raise ClientError(f"Incorrect {what}: not valid JSON") from None


def split_ids(raw: str) -> list[str]:
    """`" 1, 2,2 ,x"` -> ["1", "2", "x"]: trimmed, blanks dropped, first occurrence kept."""
    seen: dict[str, None] = {}
    for part in raw.split(","):
        part = part.strip()
        if part:
            seen.setdefault(part, None)
    if not seen:
        raise ClientError("Incorrect request")
    if len(seen) > MAX_IDS:
        raise ClientError(f"Too many IDs, at most {MAX_IDS} per request")
    return list(seen)


def as_id(text: str) -> int | None:
    """A client-sent id as an integer, or None when it is not a plain positive number."""
    if _ID.fullmatch(text):
        value = int(text)
        return value if value > 0 else None
    return None


def _int(fields: Mapping[str, str], name: str, minimum: int = 0) -> int | None:
    raw = fields.get(name, "").strip()
    if not raw:
        return None
    if not _DIGITS.fullmatch(raw) or int(raw) < minimum:
        raise ClientError(f"Incorrect {name}: must be a whole number"
                          + (f" of at least {minimum}" if minimum else ""))
    return int(raw)


def split_list(text: str) -> list[str]:
    """Comments and usernames: one per line, or comma separated when on one line."""
    text = text.replace("\r\n", "\n").strip()
    parts = text.split("\n") if "\n" in text else text.split(",")
    return [p.strip() for p in parts if p.strip()]


def parse_form(raw: str) -> dict[str, Any]:
    value = decode_json(raw, "form")
    if not isinstance(value, dict):
        raise ClientError("Incorrect form: must be a JSON object")
    return value


@dataclass(slots=True)
class AddRequest:
    service: int
    link: str
    quantity: int  # per run
    runs: int | None = None
    interval: int | None = None
    comments: list[str] | None = None
    form: dict[str, Any] | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def fingerprint(self) -> str:
        """Same service, link, quantity and options -> same text (duplicate detection)."""
        parts = msgspec.json.encode([
            self.service, self.link, self.quantity, self.runs, self.interval, self.comments,
            sorted(self.extra.items()), sorted((self.form or {}).items())])
        return sha256_hex(parts)

    @property
    def total(self) -> int:
        return self.quantity * (self.runs or 1)

    def upstream_fields(self, upstream_service: str, wants_form: bool) -> dict[str, str]:
        """The form fields for one upstream: standard names at top level, `form` if it has one."""
        out = {"service": upstream_service, "link": self.link, "quantity": str(self.quantity)}
        if self.runs:
            out["runs"] = str(self.runs)
            out["interval"] = str(self.interval or 0)
        if self.comments is not None:
            out["comments"] = "\n".join(self.comments)
        out.update(self.extra)
        if self.form:
            if wants_form:
                form = dict(self.form)
                if self.comments is not None and "comments" in form:
                    form["comments"] = "\n".join(self.comments)
                out["form"] = msgspec.json.encode(form).decode()
            else:
                for k, v in self.form.items():
                    if k not in out and isinstance(v, (str, int, float)):
                        out[k] = str(v)
        return out


def required_form_fields(schema: Any) -> list[str]:
    fields = schema.get("fields") if isinstance(schema, Mapping) else schema
    if not isinstance(fields, list):
        return []
    return [str(f["name"]) for f in fields
            if isinstance(f, Mapping) and f.get("required") and f.get("name")]


def parse_service_id(fields: Mapping[str, str]) -> int:
    raw = fields.get("service", "").strip()
    if not raw:
        raise ClientError("Missing required parameter: service")
    sid = as_id(raw)
    if sid is None:
        raise ClientError("Incorrect service ID")
    return sid


def _extra(fields: Mapping[str, str]) -> dict[str, str]:
    """The family-specific fields passed upstream as they are, checked."""
    extra: dict[str, str] = {}
    for name in PASSTHROUGH:
        value = fields.get(name, "").strip()
        if value:
            extra[name] = value
    for name in _INT_FIELDS:
        _int(fields, name)
    if "expiry" in extra:
        if not _EXPIRY.fullmatch(extra["expiry"]):
            raise ClientError("Incorrect expiry: use DD/MM/YYYY")
        try:
            datetime.strptime(extra["expiry"], "%d/%m/%Y")
        except ValueError:
            raise ClientError("Incorrect expiry: not a real date (DD/MM/YYYY)") from None
    return extra


# The list an order of these families is made of: one unit per entry, whatever the
# client's `quantity` says (the provider counts the list too). Mentions are made of
# their `usernames` when sent, else their `hashtags`; the singular `username`,
# `hashtag` and `media` name a target, and those orders keep their quantity.
LIST_FIELDS: dict[str, tuple[str, ...]] = {
    "comments": ("comments",),
    "mention": ("usernames", "hashtags"),
}


def _list_of(name: str, fields: Mapping[str, str], form: dict[str, Any] | None) -> list[str]:
    """The entries of list field `name`, sent at the top level or inside the form."""
    source = fields.get(name, "")
    if not source.strip() and form:
        inside = form.get(name)
        if isinstance(inside, list):
            source = "\n".join(str(v) for v in inside if isinstance(v, (str, int)))
        elif isinstance(inside, str):
            source = inside
    return split_list(source)


def _ordered_list(fields: Mapping[str, str], service_family: str,
                  form: dict[str, Any] | None) -> tuple[str, list[str]] | None:
    """(field name, entries) of a list-driven order, or None when it is not one."""
    for name in LIST_FIELDS.get(service_family, ()):
        entries = _list_of(name, fields, form)
        if entries:
            return name, entries
    return None


def _quantity(fields: Mapping[str, str], service_family: str, extra: Mapping[str, str],
              form: dict[str, Any] | None) -> tuple[int, list[str] | None]:
    """(quantity, comments). A list-driven order's quantity is its list's length: the
    charge, the quantity sent upstream and the refund count the same units; a
    `quantity` that says otherwise is refused (a panel charges its customer on it)."""
    comments: list[str] | None = None
    quantity = _int(fields, "quantity", minimum=1)
    listed = _ordered_list(fields, service_family, form)
    if listed is not None:
        name, entries = listed
        if quantity is not None and quantity != len(entries):
            raise ClientError(f"Incorrect quantity: {name} has {len(entries)} entries, "
                              f"so quantity must be {len(entries)} or left out "
                              f"(sent: {quantity})")
        quantity = len(entries)
        if name == "comments":
            comments = entries
    elif service_family == "comments":
        raise ClientError("Missing required parameter: comments")
    elif service_family == "package" and quantity is None:
        quantity = 1
    elif service_family == "subscription" and quantity is None and "max" in extra:
        quantity = int(extra["max"])
    if service_family == "poll" and "answer_number" not in extra:
        raise ClientError("Missing required parameter: answer_number")
    if quantity is None:
        if "quantity" in fields and fields["quantity"].strip():
            raise ClientError("Incorrect quantity")
        raise ClientError("Missing required parameter: quantity")
    return quantity, comments


def _with_required_form(fields: Mapping[str, str], form_schema: Any,
                        form: dict[str, Any] | None) -> dict[str, Any] | None:
    """The form with every field the schema requires, taken from the top level if needed."""
    for name in required_form_fields(form_schema):
        present = (form is not None and form.get(name) not in (None, "")) or (
            fields.get(name, "").strip() != "")
        if not present:
            raise ClientError(f"Missing required form field: {name}")
        if form is None:
            form = {}
        form.setdefault(name, fields.get(name, "").strip())
    return form


def parse_add(fields: Mapping[str, str], service_family: str, form_schema: Any) -> AddRequest:
    """Validate an `add` for a service of `service_family`; quantity range is checked later."""
    service = parse_service_id(fields)
    form = parse_form(fields["form"]) if fields.get("form", "").strip() else None
    extra = _extra(fields)

    link = fields.get("link", "").strip()
    if not link and service_family == "subscription":
        link = extra.get("username", "")
    if not link:
        raise ClientError("Missing required parameter: link")

    runs = _int(fields, "runs", minimum=1)
    interval = _int(fields, "interval") if "interval" in fields else _int(fields, "intervals")
    if runs is not None and runs < 2:
        runs = None  # one run is a plain order

    quantity, comments = _quantity(fields, service_family, extra, form)
    form = _with_required_form(fields, form_schema, form)
    return AddRequest(service=service, link=link, quantity=quantity, runs=runs,
                      interval=interval, comments=comments, form=form, extra=extra)
