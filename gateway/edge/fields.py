"""Reading a request's fields: a form, multipart or JSON-object body, as text."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import msgspec
from litestar import Request
from litestar.datastructures import UploadFile

from gateway.errors import ClientError

MAX_BODY = 64 * 1024
JSON = "application/json"
_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder()


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


async def read_fields(request: Request[Any, Any, Any]) -> dict[str, str]:
    """The request's fields from a form, multipart or JSON-object body."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        form = await request.form()
        return {k: v for k, v in form.items() if not isinstance(v, UploadFile)}
    body = await request.body()
    if len(body) > MAX_BODY:
        raise ClientError("Request body too large (64 KiB at most)")
    if ctype in ("application/x-www-form-urlencoded", "") or ctype.startswith("text/plain"):
        try:
            return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        except ValueError:
            raise ClientError("Incorrect request") from None
    if ctype == JSON or ctype.endswith("+json"):
        try:
            obj = _dec.decode(body) if body.strip() else {}
        except msgspec.DecodeError:
            raise ClientError("Incorrect request: body is not valid JSON") from None
        if not isinstance(obj, dict):
            raise ClientError("Incorrect request: JSON body must be an object")
        return {str(k): _field_text(v) for k, v in obj.items() if v is not None}
    raise ClientError("Unsupported content type: send application/x-www-form-urlencoded")
