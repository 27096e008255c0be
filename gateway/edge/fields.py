"""Reading a request's fields, as text: the query string, and a form, multipart or
JSON-object body on top of it (the body wins), the way PHP panels' `$_REQUEST` does.

Arrays arrive in every spelling clients use: `orders=1,2`, `orders[]=1&orders[]=2`,
`orders[0]=1&orders[1]=2` (PHP `http_build_query`, Node `qs`), `orders=1&orders=2`
(Python `requests`) and a JSON array; each becomes the comma form (`"1,2"`, in the
order sent), so the actions read one spelling. Lines fields (`comments`,
`usernames`) are joined with newlines instead.

Whatever a client sends is answered with a ClientError, never a traceback: text must
be UTF-8 without NUL bytes, at most MAX_FIELDS fields and MAX_BODY bytes (MAX_QUERY
in the query string), JSON at most MAX_JSON_DEPTH levels deep (checked before
decoding).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl

import msgspec
from litestar import Request

from gateway.edge.answers import TOO_LARGE
from gateway.errors import ClientError
from gateway.routing.params import MAX_JSON_DEPTH, json_too_deep

MAX_BODY = 64 * 1024
MAX_QUERY = 16 * 1024
MAX_FIELDS = 1000
JSON = "application/json"
MULTI = frozenset({"orders", "refills"})  # repeated plain names are joined too
LINES = frozenset({"comments", "usernames"})
_ARRAY = re.compile(r"([^\[\]]+)\[([0-9]*)\]")
_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder()

Pairs = list[tuple[str, str]]


def _field_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        return ",".join(_field_text(v) for v in value)
    return _enc.encode(value).decode()


def _form_pairs(raw: bytes) -> Pairs:
    """`a=1&b=2` as (name, value) pairs, percent-decoded; UTF-8 or a ClientError."""
    try:
        return parse_qsl(raw.decode("utf-8"), keep_blank_values=True, encoding="utf-8",
                         errors="strict", max_num_fields=MAX_FIELDS)
    except UnicodeDecodeError:
        raise ClientError("Incorrect request: fields must be UTF-8 text") from None
    except ValueError:  # more than max_num_fields
        raise ClientError(f"Incorrect request: too many fields (at most {MAX_FIELDS})") from None


def _json_pairs(body: bytes) -> Pairs:
    """A JSON object's members as pairs; an array member as `name[]` pairs."""
    if not body.strip():
        return []
    if json_too_deep(body):
        raise ClientError(f"Incorrect request: JSON nested too deeply "
                          f"(at most {MAX_JSON_DEPTH} levels)")
    try:
        obj = _dec.decode(body)
    except (msgspec.DecodeError, RecursionError):
        raise ClientError("Incorrect request: body is not valid JSON") from None
    if not isinstance(obj, dict):
        raise ClientError("Incorrect request: JSON body must be an object")
    pairs: Pairs = []
    for name, value in obj.items():
        if isinstance(value, list):
            pairs.extend((f"{name}[]", _field_text(v)) for v in value if v is not None)
        elif value is not None:
            pairs.append((str(name), _field_text(value)))
    return pairs


def collect(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Pairs as fields: arrays joined (in the order sent), otherwise the last one wins."""
    fields: dict[str, str] = {}
    arrays: dict[str, list[str]] = {}
    count = 0
    for name, value in pairs:
        count += 1
        if count > MAX_FIELDS:
            raise ClientError(f"Incorrect request: too many fields (at most {MAX_FIELDS})")
        if "\x00" in name or "\x00" in value:
            raise ClientError("Incorrect request: NUL byte in a field")
        m = _ARRAY.fullmatch(name) if "[" in name else None
        if m is not None:
            arrays.setdefault(m.group(1), []).append(value)
        elif name in MULTI:
            arrays.setdefault(name, []).append(value)
        else:
            fields[name] = value
    for name, values in arrays.items():
        if name in MULTI or name not in fields:
            fields[name] = ("\n" if name in LINES else ",").join(values)
    return fields


def query_fields(request: Request[Any, Any, Any]) -> dict[str, str]:
    """The fields of the query string (`GET /api/v2?key=..&action=..`)."""
    raw: bytes = request.scope.get("query_string", b"")
    if len(raw) > MAX_QUERY:
        raise ClientError("Incorrect request: query string too long (16 KiB at most)")
    return collect(_form_pairs(raw)) if raw else {}


async def _body_pairs(request: Request[Any, Any, Any]) -> Pairs:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        try:
            form = await request.form()
        except (UnicodeDecodeError, LookupError):  # a part's charset, or its bytes
            raise ClientError("Incorrect request: fields must be UTF-8 text") from None
        return [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
    body = await request.body()
    if len(body) > MAX_BODY:
        raise ClientError(TOO_LARGE)
    if ctype in ("application/x-www-form-urlencoded", "") or ctype.startswith("text/plain"):
        return _form_pairs(body)
    if ctype == JSON or ctype.endswith("+json"):
        return _json_pairs(body)
    if not body:  # nothing to read: the query string says it all
        return []
    raise ClientError("Unsupported content type: send application/x-www-form-urlencoded")


async def read_fields(request: Request[Any, Any, Any]) -> dict[str, str]:
    """A POST's fields: the query string's, under the body's (the body wins)."""
    fields = query_fields(request)
    fields.update(collect(await _body_pairs(request)))
    return fields
