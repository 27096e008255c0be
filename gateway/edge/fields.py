"""Reading a request's fields, as text: the query string, and a form, multipart or
JSON-object body on top of it (the body wins), the way PHP panels' `$_REQUEST` does.

Arrays arrive in every spelling clients use: `orders=1,2`, `orders[]=1&orders[]=2`,
`orders[0]=1&orders[1]=2` (PHP `http_build_query`, Node `qs`), `orders=1&orders=2`
(Python `requests`) and a JSON array; each becomes the comma form (`"1,2"`, in the
order sent), so the actions read one spelling. Lines fields (`comments`,
`usernames`, `hashtags`) are joined with newlines instead.

Whatever a client sends is answered with a ClientError, never a traceback: text must
be UTF-8 without NUL bytes, at most MAX_FIELDS fields and MAX_BODY bytes (MAX_QUERY
in the query string), JSON at most MAX_JSON_DEPTH levels deep (checked before
decoding).
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Iterable
from typing import Any
from urllib.parse import parse_qsl

import msgspec
from litestar._multipart import parse_content_header, parse_multipart_form
from litestar.datastructures import FormMultiDict
from litestar.exceptions import HTTPException
from litestar.types import Receive

from gateway.edge.answers import TOO_LARGE
from gateway.errors import ClientError
from gateway.routing.params import MAX_JSON_DEPTH, json_too_deep

MAX_BODY = 64 * 1024
MAX_QUERY = 16 * 1024
MAX_FIELDS = 1000
JSON = "application/json"
MULTI = frozenset({"orders", "refills"})  # repeated plain names are joined too
LINES = frozenset({"comments", "usernames", "hashtags"})
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


def query_fields(raw: bytes) -> dict[str, str]:
    """The fields of a query string (`GET /api/v2?key=..&action=..`)."""
    if len(raw) > MAX_QUERY:
        raise ClientError("Incorrect request: query string too long (16 KiB at most)")
    return collect(_form_pairs(raw)) if raw else {}


async def read_body(receive: Receive, announced: str | None) -> bytes:
    """The request body, at most MAX_BODY bytes (`announced`: its Content-Length)."""
    if announced is not None and announced.isdigit() and int(announced) > MAX_BODY:
        raise ClientError(TOO_LARGE)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away mid-body
            raise ClientError("Incorrect request")
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > MAX_BODY:
                raise ClientError(TOO_LARGE)
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _multipart_pairs(content_type: str, body: bytes) -> Pairs:
    _, options = parse_content_header(content_type)
    boundary = options.get("boundary")
    if not boundary:
        raise ClientError("Incorrect request")

    async def stream() -> AsyncGenerator[bytes, None]:
        yield body
        yield b""

    try:
        form = await parse_multipart_form(stream=stream(), boundary=boundary.encode(),
                                          multipart_form_part_limit=MAX_FIELDS)
    except (UnicodeDecodeError, LookupError):  # a part's charset, or its bytes
        raise ClientError("Incorrect request: fields must be UTF-8 text") from None
    except HTTPException:  # litestar's parser: a malformed body
        raise ClientError("Incorrect request") from None
    items = FormMultiDict.from_form_data(form).multi_items()
    return [(k, v) for k, v in items if isinstance(v, str)]


async def body_pairs(content_type: str, body: bytes) -> Pairs:
    """The fields of a POST body of this Content-Type."""
    ctype = content_type.split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        return await _multipart_pairs(content_type, body)
    if ctype in ("application/x-www-form-urlencoded", "") or ctype.startswith("text/plain"):
        return _form_pairs(body)
    if ctype == JSON or ctype.endswith("+json"):
        return _json_pairs(body)
    if not body:  # nothing to read: the query string says it all
        return []
    raise ClientError("Unsupported content type: send application/x-www-form-urlencoded")
