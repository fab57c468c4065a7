"""msgspec <-> Starlette glue: bounded, total JSON decoding and one shared encoder."""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from eventreg.errors import (
    BadRequest,
    InvalidId,
    InvalidQuery,
    PayloadTooLarge,
    Unprocessable,
    UnsupportedMediaType,
)
from eventreg.structs import MAX_ID

T = TypeVar("T")

_encoder = msgspec.json.Encoder()
_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}
_AT_PATH = re.compile(r" - at `\$\.?([^`]*)`$")
_UNKNOWN = re.compile(r"^Object contains unknown field `([^`]*)`")
_DIGITS = re.compile(r"[0-9]{1,19}")

DEFAULT_LIMIT, MAX_LIMIT = 100, 1000


def json(obj: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_encoder.encode(obj), status, headers, "application/json")


async def read_body(request: Request[Any], limit: int) -> bytes:
    """The body, refusing more than `limit` bytes whether or not Content-Length is sent."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request[Any], type_: type[T]) -> T:
    """Decode the body into `type_`: 415 wrong type, 413 too big, 400 malformed, 422 invalid."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaType(f"expected application/json, got {media or 'nothing'!r}")
    body = await read_body(request, request.state.settings.max_body_bytes)
    decoder = _decoders.get(type_) or _decoders.setdefault(type_, msgspec.json.Decoder(type_))
    try:
        result: T = decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise Unprocessable(str(exc), field=_field_of(str(exc))) from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    return result


def _field_of(message: str) -> str | None:
    match = _AT_PATH.search(message) or _UNKNOWN.search(message)
    return match.group(1) if match and match.group(1) else None


def path_id(request: Request[Any], name: str = "id") -> int:
    """A bigint id from the path; anything else is 400 (never a 404 route miss, never a 500)."""
    raw: str = request.path_params[name]
    if not _DIGITS.fullmatch(raw) or not 1 <= int(raw) <= MAX_ID:
        raise InvalidId(f"`{name}` must be an integer from 1 to {MAX_ID}, got {raw[:40]!r}")
    return int(raw)


def _query_int(request: Request[Any], name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not _DIGITS.fullmatch(raw) or not low <= int(raw) <= high:
        raise InvalidQuery(f"`{name}` must be an integer from {low} to {high}", field=name)
    return int(raw)


def page_params(request: Request[Any]) -> tuple[int, int]:
    """(after, limit) for keyset pagination: ids strictly greater than `after`."""
    after = _query_int(request, "after", 0, 0, MAX_ID)
    return after, _query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)


def page(request: Request[Any], items: list[Any], limit: int) -> Response:
    """A bare JSON array; when more rows remain, a Link rel="next" header points at them.

    `items` holds up to limit + 1 rows: the extra one only says that there is a next page.
    """
    headers = {}
    if len(items) > limit:
        items = items[:limit]
        url = request.url.include_query_params(after=items[-1].id, limit=limit)
        headers["Link"] = f'<{url}>; rel="next"'
    return json(items, 200, headers)
