"""Slow and idle clients (issue 7): `python -m eventreg serve` driven over raw sockets.

The server runs with 0.5 s deadlines so the file takes seconds. Bounds are asserted with
slack, because the box has 2 shared cores: a close may come up to SLACK seconds late, never
early. Plain uvicorn fails every test here: it never closes a connection whose request is
unfinished, accepts headers of any size, and serves every connection it accepts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest

from eventreg import spawn
from eventreg.config import ConfigError, Settings

DEADLINE = 0.5  # HEADER_TIMEOUT and BODY_TIMEOUT of the server under test
SLACK = 4.0  # how late a close may be on a busy box before we call the connection kept
BOUND = 8  # MAX_CONNECTIONS of the bounded server
IDLE_CONNECTIONS = 200


@pytest.fixture(scope="module")
def server(module_database_url: str) -> Iterator[spawn.Server]:
    deadlines = {"HEADER_TIMEOUT": str(DEADLINE), "BODY_TIMEOUT": str(DEADLINE)}
    server = spawn.start(database_url=module_database_url, env=deadlines)
    yield server
    assert server.stop() == 0


@pytest.fixture(scope="module")
def bounded(module_database_url: str) -> Iterator[spawn.Server]:
    server = spawn.start(database_url=module_database_url, env={"MAX_CONNECTIONS": str(BOUND)})
    yield server
    assert server.stop() == 0


@dataclass
class Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    since: float  # when the connection opened or, after mark(), when the client last acted

    def mark(self) -> None:
        self.since = time.monotonic()

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def until_closed(self) -> tuple[bytes, float]:
        """All the server sends until it closes, and the seconds since `since`."""
        try:
            data = await asyncio.wait_for(self.reader.read(), DEADLINE + SLACK)
        except TimeoutError:
            pytest.fail(f"the server kept the connection open {DEADLINE + SLACK} s")
        return data, time.monotonic() - self.since

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), SLACK)
        status, headers = parse_head(head)
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return status, headers, body


@contextlib.asynccontextmanager
async def connect(server: spawn.Server) -> AsyncIterator[Conn]:
    url, since = urlsplit(server.url), time.monotonic()
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        yield Conn(reader, writer, since)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def request(method: str = "GET", path: str = "/health", *headers: str, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *headers]
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    status_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    fields = (line.partition(":") for line in lines)
    return int(status_line.split()[1]), {k.lower(): v.strip() for k, _, v in fields}


def assert_problem(data: bytes, status: int, code: str) -> dict[str, str]:
    """`data` is one problem+json response, and the server closes after it."""
    head, _, body = data.partition(b"\r\n\r\n")
    got, headers = parse_head(head)
    assert got == status, data[:300]
    assert headers["content-type"] == "application/problem+json"
    assert headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body)
    problem = json.loads(body)
    assert set(problem) == {"type", "title", "status", "detail", "code"}
    assert (problem["status"], problem["code"]) == (status, code)
    assert problem["type"] == f"/problems/{code.replace('_', '-')}"
    return headers


async def assert_serves(server: spawn.Server, *headers: str) -> None:
    """A normal request on a new connection still gets its 200."""
    async with connect(server) as conn:
        await conn.send(request("GET", "/health", *headers))
        status, _, body = await conn.response()
        assert (status, json.loads(body)) == (200, {"status": "ok"})


async def trickle(conn: Conn, data: bytes, every: float = 0.05) -> None:
    """Send `data` a byte at a time, each byte well within any keep-alive timeout."""
    with contextlib.suppress(OSError):
        for i in range(len(data)):
            await conn.send(data[i : i + 1])
            await asyncio.sleep(every)


async def test_idle_connections_are_closed_at_the_header_deadline(server: spawn.Server) -> None:
    async def idle() -> tuple[bytes, float]:
        async with connect(server) as conn:
            return await conn.until_closed()

    closed = await asyncio.gather(*(idle() for _ in range(IDLE_CONNECTIONS)))
    assert {data for data, _ in closed} == {b""}  # nothing was asked, so nothing is answered
    assert min(seconds for _, seconds in closed) >= DEADLINE * 0.9
    await assert_serves(server)


async def test_headers_trickled_a_byte_at_a_time_are_cut_with_408(server: spawn.Server) -> None:
    async with connect(server) as conn:
        head = request("GET", "/health", "X-Slow: " + "a" * 200)
        sender = asyncio.create_task(trickle(conn, head))
        data, seconds = await conn.until_closed()
        sender.cancel()
    assert_problem(data, 408, "request_timeout")
    assert seconds >= DEADLINE * 0.9
    await assert_serves(server)


@pytest.mark.parametrize("stalls", [True, False], ids=["stalled", "trickled"])
async def test_a_body_never_finished_is_cut_with_408(server: spawn.Server, stalls: bool) -> None:
    body = b'{"name": "Slow", "email": "slow@example.com"}' + b" " * 200
    head, _, _ = request("POST", "/api/v1/users", body=body).partition(b"\r\n\r\n")
    async with connect(server) as conn:
        await conn.send(head + b"\r\n\r\n" + body[:10])
        conn.mark()  # the body deadline runs from the end of the headers
        sender = None if stalls else asyncio.create_task(trickle(conn, body[10:]))
        data, seconds = await conn.until_closed()
        if sender:
            sender.cancel()
    assert_problem(data, 408, "request_timeout")
    assert seconds >= DEADLINE * 0.9
    await assert_serves(server)


@pytest.mark.parametrize(
    "headers",
    [
        ["X-Big: " + "a" * 16_400],
        [f"X-Many-{i}: {i}" for i in range(100)],  # 101 with Host
        ["X-Huge: " + "a" * 1_000_000],  # more than one read: httptools would buffer it all
        ["Cookie: " + "a" * 1500] * 11,  # each header small, the head too big
    ],
    ids=["one-16k-header", "101-headers", "one-1mb-header", "many-medium-headers"],
)
async def test_too_large_headers_get_431(server: spawn.Server, headers: list[str]) -> None:
    async with connect(server) as conn:
        sender = asyncio.create_task(conn.send(request("GET", "/health", *headers)))
        data, _ = await conn.until_closed()
        with contextlib.suppress(OSError):
            await sender  # the server may stop reading after its answer; that is its right
    assert_problem(data, 431, "headers_too_large")
    await assert_serves(server, *[f"X-Many-{i}: {i}" for i in range(99)])  # 100 is fine
    await assert_serves(server, "X-Big: " + "a" * 15_000)  # and so is 15 KB


async def test_only_a_new_requests_head_runs_against_the_deadline(server: spawn.Server) -> None:
    """Pipelined requests and a keep-alive gap longer than the deadline are fine (the gap
    is uvicorn's timeout_keep_alive); an unfinished head after them is cut."""
    async with connect(server) as conn:
        await conn.send(request() + request("GET", "/"))
        assert [(await conn.response())[0] for _ in range(2)] == [200, 200]
        await asyncio.sleep(DEADLINE * 2)
        await conn.send(request())
        assert (await conn.response())[0] == 200
        await conn.send(b"GET /health HTTP/1.1\r\nHost: 127")
        conn.mark()
        data, seconds = await conn.until_closed()
    assert_problem(data, 408, "request_timeout")
    assert seconds >= DEADLINE * 0.9


async def test_connections_above_the_bound_get_503(bounded: spawn.Server) -> None:
    async with contextlib.AsyncExitStack() as stack:
        held = [await stack.enter_async_context(connect(bounded)) for _ in range(BOUND)]
        for conn in held:  # each is served, then stays open (keep-alive)
            await conn.send(request())
            assert (await conn.response())[0] == 200
        async with connect(bounded) as extra:
            await extra.send(request())
            data, _ = await extra.until_closed()
        headers = assert_problem(data, 503, "too_many_connections")
        assert headers["retry-after"] == "1"
        await held[0].send(request())  # an admitted connection is still served
        assert (await held[0].response())[0] == 200
    for _ in range(50):  # the held connections are closed; the server notices soon
        async with connect(bounded) as conn:
            await conn.send(request())
            if (await conn.response())[0] == 200:
                return
        await asyncio.sleep(0.1)
    pytest.fail("the server still refuses connections after the others went away")


@pytest.mark.parametrize("raw", ["0", "-1", "soon", "nan", "inf"])
def test_a_deadline_is_a_positive_number_of_seconds(raw: str) -> None:
    env = {"DATABASE_URL": "postgresql://db"}
    with pytest.raises(ConfigError, match="BODY_TIMEOUT"):
        Settings.from_env({**env, "BODY_TIMEOUT": raw})
    assert Settings.from_env({**env, "BODY_TIMEOUT": "2.5"}).body_timeout == 2.5
