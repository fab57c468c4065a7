"""The outermost layer of the app: a request id for every request, and, when it is done,
one request line (eventreg.logs) and its counts (eventreg.metrics).

Outermost, so that it sees the answer to every request the app gets, the 500s that
Starlette's error middleware writes included. A pure ASGI wrapper rather than a Starlette
BaseHTTPMiddleware: the request's own task runs the endpoint, so the ContextVar set here
reaches the db functions (waitlist promotions are counted through it).
"""

from __future__ import annotations

import itertools
import os
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventreg import logs, metrics
from eventreg.auth import CALLER
from eventreg.config import Settings

UNMATCHED = "unmatched"  # the route label of a request no route took: bounded, not its path
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
HEADER = b"x-request-id"


def request_id(scope: Scope) -> str:
    """The proxy's X-Request-Id when it is acceptable (logs.REQUEST_ID), else a new one."""
    for name, value in scope["headers"]:
        if name == HEADER:
            if logs.REQUEST_ID.fullmatch(value):
                return str(value.decode("ascii"))
            break
    return f"{PROCESS_ID}{next(_numbers):016x}"


# New ids: 64 random bits per process, then the process's request count (32 hex digits):
# unique without a system call per request. They are names, not secrets.
PROCESS_ID = os.urandom(8).hex()
_numbers = itertools.count(1)


class Observe:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.count = settings.metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        current = logs.Current(request_id(scope))
        echo = (HEADER, current.request_id.encode())
        status = 500  # if nothing is sent at all, the client saw the connection drop

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), echo]
            await send(message)

        token = logs.CURRENT.set(current)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            logs.CURRENT.reset(token)
            self.done(scope, current, status, time.perf_counter() - start)

    def done(self, scope: Scope, current: logs.Current, status: int, seconds: float) -> None:
        route = scope.get("route")
        template = route.path if route is not None else UNMATCHED
        method = scope["method"] if scope["method"] in METHODS else "OTHER"
        if self.count:
            metrics.TALLY.add(template, method, status, seconds)
            if current.promoted and status < 400:  # the transaction that promoted committed
                metrics.registration("promoted", current.promoted)
        if logs.REQUESTS is not None:
            caller = scope.get(CALLER)
            logs.REQUESTS.write(
                logs.RequestLine(
                    logs.now(), current.request_id, method, template, status,
                    round(seconds * 1000, 2), caller.user_id if caller is not None else None,
                    current.code,
                )
            )  # fmt: skip
