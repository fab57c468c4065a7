"""The error vocabulary: each ApiError is one problem type with a stable code.

Routes and db functions raise these; the handlers here are the only place that turns an
exception into a response, so no raw driver text or stack trace ever reaches a client.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import ClassVar

import asyncpg
import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from eventreg import logs, metrics
from eventreg.structs import Problem

log = logging.getLogger("eventreg")
_encode = msgspec.json.Encoder().encode

RETRY_AFTER_SECONDS = "1"


class ApiError(Exception):
    status = 400
    code = "bad_request"
    title = "Bad request"
    headers: ClassVar[Mapping[str, str]] = {}

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field

    @property
    def response_headers(self) -> Mapping[str, str]:
        return self.headers


class BadRequest(ApiError):
    code, title = "malformed_json", "Malformed JSON body"


class InvalidId(ApiError):
    code, title = "invalid_id", "Invalid id in path"


class InvalidQuery(ApiError):
    code, title = "invalid_query", "Invalid query parameter"


class PayloadTooLarge(ApiError):
    status, code, title = 413, "payload_too_large", "Request body too large"


class UnsupportedMediaType(ApiError):
    status, code, title = 415, "unsupported_media_type", "Content-Type must be application/json"


class Unprocessable(ApiError):
    status, code, title = 422, "validation_failed", "Request body failed validation"


class OrganizerNotFound(Unprocessable):
    code, title = "organizer_not_found", "Organizer does not exist"


class NotAnOrganizer(Unprocessable):
    code, title = "not_an_organizer", "User is not an organizer"


class InvalidTicket(Unprocessable):
    code, title = "invalid_ticket", "Not a genuine ticket"


class ScanInFuture(Unprocessable):
    code, title = "scan_time_in_future", "Scan time is in the future"


class Unauthorized(ApiError):
    status, code, title = 401, "missing_token", "Authentication required"
    headers: ClassVar[Mapping[str, str]] = {"WWW-Authenticate": 'Bearer realm="eventreg"'}


class MissingToken(Unauthorized):
    pass


class InvalidToken(Unauthorized):
    code, title = "invalid_token", "Token is not valid"
    headers: ClassVar[Mapping[str, str]] = {
        "WWW-Authenticate": 'Bearer realm="eventreg", error="invalid_token"'
    }


class Forbidden(ApiError):
    status, code, title = 403, "forbidden", "Not allowed for this caller"


class RateLimited(ApiError):
    status, code, title = 429, "rate_limited", "Too many requests"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after

    @property
    def response_headers(self) -> Mapping[str, str]:
        return {"Retry-After": str(self.retry_after)}


class InvalidIdempotencyKey(ApiError):
    code, title = "invalid_idempotency_key", "Invalid Idempotency-Key header"


class KeyReused(ApiError):
    status, code, title = 422, "idempotency_key_reused", "Idempotency-Key used for another request"


class KeyInFlight(ApiError):
    status, code, title = 409, "idempotency_key_in_flight", "Request with this key still running"
    headers: ClassVar[Mapping[str, str]] = {"Retry-After": RETRY_AFTER_SECONDS}


class NotFound(ApiError):
    status, code, title = 404, "not_found", "Not found"


class UserNotFound(NotFound):
    code, title = "user_not_found", "User not found"


class EventNotFound(NotFound):
    code, title = "event_not_found", "Event not found"


class RegistrationNotFound(NotFound):
    code, title = "registration_not_found", "Registration not found"


class TokenNotFound(NotFound):
    code, title = "token_not_found", "Token not found"


class CheckInNotFound(NotFound):
    code, title = "check_in_not_found", "Ticket is not checked in"


class NotRegistered(NotFound):
    code, title = "not_registered", "User is not registered for this event"


class Conflict(ApiError):
    status, code, title = 409, "conflict", "Conflict"


class EventFull(Conflict):
    code, title = "event_full", "Event is full"


class AlreadyRegistered(Conflict):
    code, title = "already_registered", "User already registered for this event"


class RegistrationNotOpen(Conflict):
    code, title = "registration_not_open", "Registration has not opened yet"


class RegistrationClosed(Conflict):
    code, title = "registration_closed", "Registration has closed"


class CancellationClosed(Conflict):
    code, title = "cancellation_closed", "Cancelling has closed"


class EmailTaken(Conflict):
    code, title = "email_taken", "Email is already in use"


class CapacityBelowRegistrations(Conflict):
    code, title = "capacity_below_registrations", "Capacity below active registrations"


class OrganizerHasEvents(Conflict):
    code, title = "organizer_has_events", "User organizes live events"


class TicketCancelled(Conflict):
    code, title = "ticket_cancelled", "Ticket was cancelled"


class TicketNotIssued(Conflict):
    code, title = "ticket_not_issued", "Registration holds no seat yet"


class WrongEvent(Conflict):
    code, title = "wrong_event", "Ticket is for another event"


class Unavailable(ApiError):
    status, code, title = 503, "service_unavailable", "Service temporarily unavailable"
    cause = "database_unavailable"  # the label of eventreg_unavailable_total


class PoolTimeout(TimeoutError):
    """No pooled connection came free within DB_ACQUIRE_TIMEOUT_MS."""


class LockTimeout(TimeoutError):
    """An event's row lock was not ours within DB_LOCK_TIMEOUT_MS (the client-side bound)."""


# Failures of the database or of our path to it: the client may retry, so 503.
TRANSIENT: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # includes CannotConnectNow, ConnectionDoesNotExist
    asyncpg.InterfaceError,  # "connection is closed", "another operation is in progress"
    asyncpg.InternalClientError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, query canceled (57xxx)
    asyncpg.exceptions.LockNotAvailableError,
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.exceptions.TransactionRollbackError,  # serialization failure, deadlock
    asyncpg.exceptions.IdleInTransactionSessionTimeoutError,
    asyncpg.exceptions.IdleSessionTimeoutError,
    OSError,  # refused, reset, unreachable
    TimeoutError,  # pool acquire, command timeout
)

_HTTP_CODES: Mapping[int, tuple[str, str]] = {
    404: ("not_found", "No such route"),
    405: ("method_not_allowed", "Method not allowed"),
}


def problem(
    status: int, code: str, title: str, detail: str, *, field: str | None = None
) -> Problem:
    return Problem(
        type=f"/problems/{code.replace('_', '-')}", title=title, status=status, detail=detail,
        code=code, **({"field": field} if field else {}),
    )  # fmt: skip


def problem_response(body: Problem, headers: Mapping[str, str] | None = None) -> Response:
    if (current := logs.CURRENT.get()) is not None:  # for the request's log line
        current.code = body.code
    headers = dict(headers or {})
    if body.status == 503:
        headers["Retry-After"] = RETRY_AFTER_SECONDS
    return Response(_encode(body), body.status, headers, "application/problem+json")


async def api_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    if isinstance(exc, Unavailable):  # /health's own check
        metrics.unavailable(exc.cause)
    body = problem(exc.status, exc.code, exc.title, exc.detail, field=exc.field)
    return problem_response(body, exc.response_headers)


async def http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code, title = _HTTP_CODES.get(exc.status_code, ("http_error", "HTTP error"))
    body = problem(exc.status_code, code, title, exc.detail)
    return problem_response(body, exc.headers)


def cause_of(exc: BaseException) -> str:
    """Why the database could not serve: the label of eventreg_unavailable_total."""
    for kind, cause in _CAUSES:
        if isinstance(exc, kind):
            return cause
    return "database_unavailable"


_CAUSES: tuple[tuple[type[BaseException], str], ...] = (
    (PoolTimeout, "pool_timeout"),
    (LockTimeout, "lock_timeout"),
    (asyncpg.exceptions.LockNotAvailableError, "lock_timeout"),
    (asyncpg.exceptions.QueryCanceledError, "statement_timeout"),
    (asyncpg.exceptions.TransactionRollbackError, "serialization"),
    (TimeoutError, "timeout"),
)


async def transient(request: Request, exc: Exception) -> Response:
    metrics.unavailable(cause := cause_of(exc))
    log.warning("%s %s: database unavailable (%s): %r", request.method, request.url.path,
                cause, exc)  # fmt: skip
    detail = "The database is unavailable or busy; retry shortly."
    return problem_response(problem(503, Unavailable.code, Unavailable.title, detail))


async def unexpected(request: Request, exc: Exception) -> Response:
    log.exception("%s %s failed", request.method, request.url.path)
    return problem_response(
        problem(500, "internal_error", "Internal server error", "Unexpected error; see logs.")
    )


# Starlette picks the handler by the exception's MRO; `Exception` goes to the outermost
# middleware, which logs the traceback. Transient failures are expected, so they are
# handled inside, as ordinary responses.
HANDLERS = {
    ApiError: api_error,
    HTTPException: http_error,
    **dict.fromkeys(TRANSIENT, transient),
    Exception: unexpected,
}
