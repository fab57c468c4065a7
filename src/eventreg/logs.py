"""Log lines: one JSON object per line (LOG_FORMAT=json), or uvicorn's lines for people.

Two kinds of JSON line, both on stdout:
- a request line, one per request the app answers (`eventreg.observe` writes it): time,
  request id, method, route template, status, duration, the caller's user id and, for an
  error, its problem code. Never a token, a header or a body.
- a log record (warnings, errors, uvicorn's start and stop): time, level, logger, message,
  and the request id and problem code when it happened during a request.

Request lines skip the logging module: they are encoded once with msgspec and written in
batches, at most twenty writes a second (RequestLines), so a busy worker makes one system
call for many lines. The logging module's records are few and keep its machinery.
"""

from __future__ import annotations

import asyncio
import logging
import logging.config
import re
import sys
import time
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

import msgspec

_encode = msgspec.json.Encoder().encode

# A proxy's request id is kept when it is 1-200 printable ASCII characters without spaces
# (UUIDs, hex, "Root=1-5e1b…"); anything else is replaced by one of ours.
REQUEST_ID = re.compile(rb"[\x21-\x7e]{1,200}")


@dataclass(slots=True)
class Current:
    """What the logs and the counters need to know about the request being served."""

    request_id: str
    code: str | None = None  # the problem code of an error answer
    promoted: int = 0  # waitlisted registrations promoted by this request's transaction


CURRENT: ContextVar[Current | None] = ContextVar("eventreg_request", default=None)


class RequestLine(msgspec.Struct, omit_defaults=True):
    """A request line's fields, in this order; `code` only for an error answer."""

    time: str
    request_id: str
    method: str
    route: str
    status: int
    duration_ms: float
    user_id: int | None
    code: str | None = None


_second: list[Any] = [-1, ""]  # the last whole second formatted, and its text


def now() -> str:
    """UTC, to the millisecond, RFC 3339 (`2026-11-29T08:58:24.038Z`); the seconds' part is
    formatted once a second."""
    moment = time.time()
    whole = int(moment)
    if whole != _second[0]:
        _second[:] = [whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))]
    return f"{_second[1]}.{int((moment - whole) * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """A log record as one JSON object; the request's id and problem code when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if (current := CURRENT.get()) is not None:
            line["request_id"] = current.request_id
            if current.code is not None:
                line["code"] = current.code
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return _encode(line).decode()


class RequestLines:
    """Request lines for one process: encoded now, written FLUSH_SECONDS later (or once
    FLUSH_LINES wait), and at shutdown: at most twenty system calls a second, however busy
    the worker. (Written at the end of each turn of the loop, a busy worker made one every
    request or two: counting and logging a request took 2.8-3.8 µs instead of 1.4-2.5 µs.)
    A worker killed outright loses at most the last FLUSH_SECONDS of lines."""

    FLUSH_SECONDS = 0.05
    FLUSH_LINES = 256

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.pending: list[bytes] = []
        self.timer: asyncio.TimerHandle | None = None

    def write(self, line: RequestLine) -> None:
        self.pending.append(_encode(line) + b"\n")
        if len(self.pending) >= self.FLUSH_LINES:
            self.flush()
        elif self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(self.FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        data, self.pending = b"".join(self.pending), []
        try:
            self.stream.write(data)
            self.stream.flush()
        except (OSError, ValueError):  # stdout closed or gone: the lines are lost, not the app
            pass


# Set by configure() in processes that serve (never by the in-process tests' apps).
REQUESTS: RequestLines | None = None


def uvicorn_config(log_format: str) -> dict[str, Any]:
    """What `serve` hands uvicorn: for json, every logger (uvicorn's too) as JSON on stdout,
    in every worker; for text, uvicorn's own configuration plus our loggers beside it."""
    from uvicorn.config import LOGGING_CONFIG

    if log_format == "text":
        config: dict[str, Any] = {**LOGGING_CONFIG, "loggers": dict(LOGGING_CONFIG["loggers"])}
        config["loggers"]["eventreg"] = {"handlers": ["default"], "level": "INFO"}
        return config
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"json": handler},
        "loggers": {
            name: {"handlers": ["json"], "level": "INFO", "propagate": False}
            for name in ("uvicorn", "uvicorn.access", "eventreg")
        },
    }


def configure(log_format: str, access_log: bool) -> None:
    """For a process that serves (`app_from_env`): JSON request lines on stdout when asked
    for, and our loggers in JSON unless something configured them already (serve did)."""
    global REQUESTS
    if log_format != "json":
        return
    if access_log and REQUESTS is None:
        REQUESTS = RequestLines(sys.stdout.buffer)
    ours = logging.getLogger("eventreg")
    if not ours.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(JsonFormatter())
        ours.addHandler(handler)
        ours.setLevel(logging.INFO)
        ours.propagate = False
