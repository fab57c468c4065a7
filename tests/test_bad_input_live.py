"""Bad input over a real socket to a real uvicorn (plan B9, B11): what the in-process tests
cannot show, such as answering 413 before a huge body arrives, and which malformed HTTP
never reaches the app at all."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.live_server import serve


@pytest.fixture
def live_url(database_url: str) -> Iterator[str]:
    with serve(database_url) as base:
        yield base


def exchange(base: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes on a fresh connection; read one response (status, headers, body)."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        while len(body) < int(headers.get("content-length", "0")):
            body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, body


def post(path: str, headers: str, body: bytes = b"") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: test\r\n{headers}\r\n".encode() + body


def test_declared_oversize_is_413_before_the_body_is_sent(live_url: str) -> None:
    """Content-Length 10 MB and one byte sent: the answer comes without waiting for the rest."""
    status, headers, body = exchange(
        live_url,
        post(
            "/api/v1/users", "Content-Type: application/json\r\nContent-Length: 10000000\r\n", b"{"
        ),
    )
    assert (status, headers["content-type"]) == (413, "application/problem+json")
    assert b'"code":"payload_too_large"' in body


def test_chunked_oversize_is_413(live_url: str) -> None:
    chunk = b"2000\r\n" + b" " * 0x2000 + b"\r\n"  # 8 KiB chunks, no Content-Length
    request = post(
        "/api/v1/events", "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
    )
    status, headers, _ = exchange(live_url, request + chunk * 10)
    assert (status, headers["content-type"]) == (413, "application/problem+json")

    def chunks() -> Iterator[bytes]:
        yield from [b" " * 8192] * 200  # 1.6 MB through an ordinary client

    response = httpx.post(
        f"{live_url}/api/v1/registrations", content=chunks(),
        headers={"content-type": "application/json"},
    )  # fmt: skip
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


def test_non_utf8_path_bytes_are_400(live_url: str) -> None:
    """%FF decodes to U+FFFD: the app's 400 invalid_id. A raw 0xFF byte in the request line
    is not HTTP, and uvicorn itself answers 400 text/plain before the app runs."""
    status, headers, body = exchange(live_url, b"GET /api/v1/users/%FF HTTP/1.1\r\nHost: t\r\n\r\n")
    assert (status, headers["content-type"]) == (400, "application/problem+json")
    assert b'"code":"invalid_id"' in body
    status, headers, _ = exchange(live_url, b"GET /api/v1/users/\xff HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status == 400
    assert headers["content-type"].startswith("text/plain")


def test_a_malformed_content_length_never_reaches_the_app(live_url: str) -> None:
    status, headers, _ = exchange(
        live_url, post("/api/v1/users", "Content-Type: application/json\r\nContent-Length: x\r\n")
    )
    assert status == 400
    assert headers["content-type"].startswith("text/plain")
