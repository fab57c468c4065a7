"""uvicorn's httptools protocol, plus the deadlines and bounds that uvicorn lacks (issue 7).

uvicorn times only the gap between requests (`timeout_keep_alive`, which any byte resets),
so a client that connects and sends nothing, trickles its headers, or never finishes a
declared body holds its connection, and a file descriptor, for as long as it likes (uvicorn
issue #157); httptools also buffers a header of any size. This subclass adds, per connection:

- HEADER_TIMEOUT: a request's headers must be complete this long after the connection
  opened (its first request) or after the request's first byte (later ones; the idle gap
  between requests stays uvicorn's keep-alive timeout);
- BODY_TIMEOUT: the whole body must be in this long after the headers;
- MAX_HEADER_BYTES and MAX_HEADERS: a larger request head gets 431;
- MAX_CONNECTIONS per worker: a connection opened while that many are open gets 503.

A missed deadline closes the connection: silently if nothing was asked yet, after a 408
otherwise. No app runs for these answers, so they are written here, in the app's
problem+json shape and with `Connection: close`; the app and its routes never see any of
this. A request that arrives whole in one read starts no timer.

Why not uvicorn's `limit_concurrency`: it counts the same set of open connections, but it
judges at every request, so once idle clients crowd in, the connections already being
served get 503 too; it counts the asking connection itself; and its 503 is plain text.
It also closes nothing, so without deadlines idle clients would hold it at its limit.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from eventreg import metrics
from eventreg.config import Settings
from eventreg.errors import problem, problem_response

# After a refusal, what the client still sends is read and dropped for this long before
# closing: closing with unread input sends a reset, which can destroy our answer unread.
LINGER_SECONDS = 2.0

Phase = Literal["opened", "head", "body"] | None


class SlowClientProtocol(HttpToolsProtocol):
    def __init__(
        self, config: Config, server_state: ServerState, app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:  # fmt: skip
        super().__init__(config, server_state, app_state, _loop)
        # uvicorn builds the protocol, not the app, so the limits come from the lifespan
        # state: the very Settings that app_from_env() read from this worker's environment,
        # published there before the worker accepts its first connection.
        self.settings: Settings = app_state["settings"]
        self.phase: Phase = None  # what the connection is waiting for, if anything
        self.phase_since = 0.0  # loop time its deadline counts from
        self.deadline: asyncio.TimerHandle | None = None
        self.admitted = True
        self.refused = False  # answered by us; the rest of the input is dropped
        self.received = 0  # bytes read on this connection
        self.head_mark = 0  # `received` after the read in which the current head began
        self.head_size = 0  # the current head's URL and header lines, as parsed
        self.head_count = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.admitted = len(self.connections) <= self.settings.max_connections
        self.enter("opened")
        self.arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self.enter(None)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        self.received += len(data)
        super().data_received(data)
        # A head spread over many reads is measured here, before httptools holds it all.
        if self.phase == "head" and not self.refused:
            self.check_head()
        if not self.refused:
            self.arm()

    # httptools callbacks. Once refused, those still to come in the same read are ignored.
    def on_message_begin(self) -> None:
        if self.refused:
            return
        super().on_message_begin()
        if self.phase == "opened":
            self.phase = "head"  # a first request is timed from the connection's opening
        else:
            self.enter("head")
        self.head_mark, self.head_size, self.head_count = self.received, 0, 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self.head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self.head_size += len(name) + len(value) + 4  # ": " and CRLF
        self.head_count += 1

    def on_headers_complete(self) -> None:
        if self.refused or self.check_head():
            return
        if not self.admitted:
            detail = f"this worker serves {self.settings.max_connections} connections at most"
            self.refuse(503, "too_many_connections", "Too many connections", detail)
            return
        self.enter("body")
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self.refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self.refused:
            self.enter(None)
            super().on_message_complete()

    # Deadlines and answers
    def enter(self, phase: Phase) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        self.phase, self.phase_since = phase, self.loop.time()

    def arm(self) -> None:
        """Set the current phase's deadline, only when a read ends with the phase unfinished."""
        if self.deadline is None and self.phase is not None:
            s = self.settings
            timeout = s.body_timeout if self.phase == "body" else s.header_timeout
            self.deadline = self.loop.call_at(self.phase_since + timeout, self.expired)

    def expired(self) -> None:
        self.deadline = None
        if self.phase == "opened" or (self.phase == "body" and self.cycle.response_complete):
            self.transport.close()  # nothing was asked, or it was answered: nothing to say
            return
        if self.phase == "body":
            part, timeout = "body", self.settings.body_timeout
        else:
            part, timeout = "headers", self.settings.header_timeout
        detail = f"the request {part} did not arrive within {timeout:g} s"
        self.refuse(408, "request_timeout", "Request timeout", detail)

    def check_head(self) -> bool:
        """Refuse with 431 (and say so) when the current head is over a bound."""
        s = self.settings
        size = max(self.head_size, self.received - self.head_mark)
        if size <= s.max_header_bytes and self.head_count <= s.max_headers:
            return False
        detail = f"at most {s.max_headers} header fields and {s.max_header_bytes} bytes"
        self.refuse(431, "headers_too_large", "Request header fields too large", detail)
        return True

    def can_answer(self) -> bool:
        """No response is under way, so an answer of ours would not garble one."""
        cycle = self.cycle
        if self.pipeline:  # an earlier request's response is under way
            return False
        if cycle is None or cycle.response_complete:
            return True
        return self.phase == "body" and not cycle.response_started  # its app awaits the body

    def refuse(self, status: int, code: str, title: str, detail: str) -> None:
        """Answer `status` and close, lingering; or just close if a response is under way."""
        answer = self.can_answer()
        self.refused = True
        self.enter(None)
        host, port = self.client or ("-", 0)
        self.logger.warning("%s:%d - %d %s: %s", host, port, status, code, detail)
        if status == 503:
            metrics.unavailable(code)  # too_many_connections
        if not answer:
            self.transport.close()
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the app waiting for this body gets a disconnect
            self.cycle.message_event.set()
        response = problem_response(problem(status, code, title, detail))
        headers = [*self.server_state.default_headers, *response.raw_headers]
        lines = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
        self.transport.write(STATUS_LINE[status] + lines + b"connection: close\r\n\r\n")
        self.transport.write(response.body)
        self.transport.write_eof()
        self.deadline = self.loop.call_later(LINGER_SECONDS, self.transport.close)
