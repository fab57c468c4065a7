"""The OpenAPI 3.1 document, generated from the route table and the msgspec structs.

Nothing here is written twice: paths, methods, bodies and success statuses come from
`routes.RESOURCES`; schemas from `msgspec.json.schema_components`; every error status and
its `code` values from the ApiError classes an operation declares, plus the ones the
shared helpers raise (read_json, path_id, page_params, the 503 mapping).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from eventreg.caller import ADMIN, DOOR, ORGANIZER, SELF
from eventreg.errors import (
    ApiError,
    BadRequest,
    Forbidden,
    InvalidId,
    InvalidIdempotencyKey,
    InvalidQuery,
    InvalidToken,
    KeyInFlight,
    KeyReused,
    MissingToken,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unavailable,
    Unprocessable,
    UnsupportedMediaType,
)
from eventreg.http import DEFAULT_LIMIT, MAX_LIMIT
from eventreg.structs import MAX_ID, Problem

API = "/api/v1"

if TYPE_CHECKING:
    from eventreg.routes import Operation, Resource

JSON = "application/json"
PROBLEM = "application/problem+json"
_REF = "#/components/schemas/{name}"
_PATH_PARAM = re.compile(r"{([^}]+)}")
_BODY_ERRORS = (BadRequest, PayloadTooLarge, UnsupportedMediaType, Unprocessable)
_RETRY_AFTER = {
    "description": "Seconds to wait before retrying",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9]+$"},
}
_LOCATION = {
    "description": "Where the created resource can be read",
    "required": True,
    "schema": {"type": "string"},
}
_BEARER: dict[str, list[str]] = {"bearer": []}
_SECURITY_SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "A token from sign-up or POST /api/v1/tokens (`evr_…`). Ignored when "
        "the server runs with EVENTREG_AUTH=open.",
    }
}
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Makes a retry safe: the same key with the same request gets the first "
    "answer again (with `Idempotent-Replayed: true`) and changes nothing; with another "
    "request, 422. Kept 24 h per caller. Only successes are kept.",
    # HTTP trims a field value's surrounding spaces, so a key neither starts nor ends with one.
    "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]([\\x20-\\x7e]{0,253}[\\x21-\\x7e])?$"},
}
_REPLAYED = {
    "description": "`true` when this is the stored answer to an earlier request with the "
    "same Idempotency-Key",
    "schema": {"type": "string", "enum": ["true"]},
}
_WWW_AUTHENTICATE = {
    "description": "The authentication scheme to use (RFC 6750)",
    "required": True,
    "schema": {"type": "string"},
}
_NEXT_LINK = {
    "description": 'Present when more rows remain: `<url>; rel="next"`',
    "schema": {"type": "string"},
}


def document(resources: Sequence[Resource]) -> dict[str, Any]:
    ops = [(r.path, method, op) for r in resources for method, op in r.operations.items()]
    types = [Problem] + [t for _, _, op in ops for t in (op.body, _json_response(op)) if t]
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    schema_of = dict(zip(map(_key, types), schemas, strict=True))
    ids = _operation_ids(ops)
    by_endpoint: dict[Any, str] = {}  # an endpoint's first operation id: link targets
    for path, method, op in ops:
        by_endpoint.setdefault(op.endpoint, ids[path, method])
    paths: dict[str, dict[str, Any]] = {}
    for path, method, op in ops:
        paths.setdefault(path, {})[method.lower()] = _operation(
            path, method, op, ids[path, method], schema_of, by_endpoint
        )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "eventreg",
            "version": "1.0",
            "description": "Event registration API. Errors are RFC 9457 problem details "
            "with a stable `code`; 503 answers carry `Retry-After`.",
        },
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": _SECURITY_SCHEMES},
    }


def _json_response(op: Operation) -> Any:
    """The success body's type when it is JSON (a QR image has no schema of its own)."""
    return op.response if op.media == JSON else None


class Served:
    """GET /openapi.json. `encode` runs once, when the route table is complete (at import,
    so a generator bug stops the app from starting); requests only send the bytes."""

    def __init__(self) -> None:
        self.body = b""

    def encode(self, resources: Sequence[Resource]) -> None:
        self.body = msgspec.json.encode(document(resources))

    async def __call__(self, _: Request[Any]) -> Response:
        return Response(self.body, media_type=JSON)


def _key(t: Any) -> str:
    return repr(t)


def _operation_ids(ops: list[tuple[str, str, Operation]]) -> dict[tuple[str, str], str]:
    """`<method>_<path words>`, e.g. patch_users_by_id: unique because (path, method) is."""
    ids: dict[tuple[str, str], str] = {}
    for path, method, _ in ops:
        words = path.removeprefix(API).replace("{id}", "by_id").replace(".", "_").split("/")
        ids[path, method] = "_".join([method.lower(), *(list(filter(None, words)) or ["index"])])
    return ids


def _operation(
    path: str,
    method: str,
    op: Operation,
    operation_id: str,
    schema_of: dict[str, Any],
    by_endpoint: dict[Any, str],
) -> dict[str, Any]:
    media = {"schema": schema_of[_key(op.response)]} if op.media == JSON else {}
    success: dict[str, Any] = {"description": op.summary, "content": {op.media: media}}
    headers: dict[str, Any] = {}
    if op.paged:
        headers["Link"] = _NEXT_LINK
    if op.status == 201:
        headers["Location"] = _LOCATION
    if method in WRITES:
        headers["Idempotent-Replayed"] = _REPLAYED
    if headers:
        success["headers"] = headers
    if op.links:
        success["links"] = {
            name: {
                "operationId": by_endpoint[link.target],
                **({"parameters": dict(link.parameters)} if link.parameters else {}),
                **({"requestBody": dict(link.body)} if link.body else {}),
            }
            for name, link in op.links.items()
        }
    result: dict[str, Any] = {
        "operationId": operation_id,
        "tags": [tag_of(path)],
        "summary": op.summary,
        "description": f"Who may call it (EVENTREG_AUTH=tokens): {op.access.note}."
        + (_REPLICA_NOTE if op.replica else ""),
        # Public operations take a token too (it is checked when sent), or none.
        "security": [{}, _BEARER] if op.access.public else [_BEARER],
        "responses": {
            str(op.status): success,
            **{
                str(status): {**success, "description": meaning}
                for status, meaning in op.also.items()
            },
            **_error_responses(path, method, op),
        },
    }
    parameters = list(_parameters(path, method, op))
    if parameters:
        result["parameters"] = parameters
    if op.body is not None:
        body_schema = schema_of[_key(op.body)]
        result["requestBody"] = {"required": True, "content": {JSON: {"schema": body_schema}}}
    return result


_REPLICA_NOTE = (
    " With a read replica (DATABASE_READ_URL) this may be answered from it: at most "
    "DATABASE_READ_MAX_LAG_MS (1 s) behind the primary."
)


def tag_of(path: str) -> str:
    """The group an operation is shown in: its resource (users, events, …) or `service`."""
    words = path.removeprefix(API).split("/")
    return words[1] if path.startswith(API) else "service"


def errors_of(path: str, method: str, op: Operation) -> list[type[ApiError]]:
    """Every ApiError `op` can answer with: its own, and those of the helpers it uses."""
    found: list[type[ApiError]] = list(op.errors)
    if op.body is not None:
        found += _BODY_ERRORS
    if _PATH_PARAM.search(path):
        found += [InvalidId, NotFound]  # NotFound: a value with "/" misses the route
    if op.paged or op.query:
        found.append(InvalidQuery)
    if op.database:
        found.append(Unavailable)
    found.append(InvalidToken)  # a token that is sent is checked, on every route
    if not op.access.public:
        found.append(MissingToken)
    if op.access.refusal == 403 and any(w in op.access.who for w in (SELF, ORGANIZER, ADMIN)):
        found.append(Forbidden)
    if DOOR not in op.access.who:  # a door token is refused everything else (issue 9)
        found.append(Forbidden)
    if op.limited:
        found.append(RateLimited)
    if method in WRITES:
        found += [InvalidIdempotencyKey, KeyReused, KeyInFlight]
    return found


def _error_responses(path: str, method: str, op: Operation) -> dict[str, Any]:
    codes: dict[int, list[ApiError | type[ApiError]]] = {}
    for error in errors_of(path, method, op):
        codes.setdefault(error.status, []).append(error)
    responses: dict[str, Any] = {}
    for status, errors in sorted(codes.items()):
        narrowed = {
            "properties": {
                "status": {"const": status},
                "code": {"enum": sorted({e.code for e in errors})},
            }
        }
        response: dict[str, Any] = {
            "description": "; ".join(sorted({e.title for e in errors})),
            "content": {
                PROBLEM: {"schema": {"allOf": [{"$ref": "#/components/schemas/Problem"}, narrowed]}}
            },
        }
        if status in (429, 503) or (KeyInFlight in errors and status == 409):
            response["headers"] = {"Retry-After": _RETRY_AFTER}
        if status == 401:
            response["headers"] = {"WWW-Authenticate": _WWW_AUTHENTICATE}
        responses[str(status)] = response
    return responses


def _parameters(path: str, method: str, op: Operation) -> Iterator[dict[str, Any]]:
    if method in WRITES:
        yield _IDEMPOTENCY_KEY
    for name in _PATH_PARAM.findall(path):
        yield {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
        }
    for name, param in op.query.items():
        yield {"name": name, "in": "query", **param}
    for name, choices in op.filters.items():
        yield {
            "name": name,
            "in": "query",
            "schema": {"type": "string", "enum": list(choices), "default": choices[0]},
        }
    if op.paged:
        yield {
            "name": "after",
            "in": "query",
            "description": "Return rows with ids greater than this (keyset pagination)",
            "schema": {"type": "integer", "minimum": 0, "maximum": MAX_ID, "default": 0},
        }
        yield {
            "name": "limit",
            "in": "query",
            "description": "Page size",
            "schema": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_LIMIT,
                "default": DEFAULT_LIMIT,
            },
        }
