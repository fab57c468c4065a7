"""The reference README's curl walkthrough, run with curl against a real server.

Each step is the reference's request (method, path, header, body) sent by curl to a real
uvicorn process; the assertions pin the compatible status codes and JSON shapes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import httpx
import pytest

from tests.live_server import serve

JSON_HEADER = "Content-Type: application/json"

# (method, path, body or None, expected status)
FLOW: list[tuple[str, str, str | None, int]] = [
    ("GET", "/health", None, 200),
    ("POST", "/api/v1/users",
     '{\n    "name": "John Organizer",\n    "email": "john@example.com",\n'
     '    "role": "organizer"\n  }', 201),
    ("POST", "/api/v1/users",
     '{\n    "name": "Jane Attendee",\n    "email": "jane@example.com",\n'
     '    "role": "attendee"\n  }', 201),
    ("POST", "/api/v1/events",
     '{\n    "title": "Go Conference 2024",\n    "capacity": 100,\n    "organizer_id": 1\n  }',
     201),
    ("GET", "/api/v1/events", None, 200),
    ("POST", "/api/v1/registrations", '{\n    "user_id": 2,\n    "event_id": 1\n  }', 201),
    ("GET", "/api/v1/registrations/user/2", None, 200),
    ("DELETE", "/api/v1/registrations", '{\n    "user_id": 2,\n    "event_id": 1\n  }', 200),
]  # fmt: skip


def send(base: str, method: str, path: str, body: str | None) -> tuple[int, Any]:
    """Send like the README does: curl with -X, -H and -d when curl exists, else httpx."""
    if curl := shutil.which("curl"):
        argv = [curl, "-s", "-w", "\n%{http_code}", f"{base}{path}"]
        if method != "GET":
            argv[1:1] = ["-X", method]
        if body is not None:
            argv += ["-H", JSON_HEADER, "-d", body]
        out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=10).stdout
        text, _, status = out.rpartition("\n")
        return int(status), json.loads(text)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    response = httpx.request(method, f"{base}{path}", content=body, headers=headers, timeout=10)
    return response.status_code, response.json()


@pytest.mark.timeout(60)
def test_reference_readme_walkthrough(database_url: str) -> None:
    with serve(database_url) as base:
        results = [send(base, method, path, body) for method, path, body, _ in FLOW]
    assert [status for status, _ in results] == [expected for *_, expected in FLOW]
    health, organizer, attendee, event, events, registration, mine, cancelled = (
        body for _, body in results
    )
    assert health == {"status": "ok"}
    assert (organizer["id"], organizer["role"]) == (1, "organizer")
    assert (attendee["id"], attendee["role"]) == (2, "attendee")
    assert (event["id"], event["capacity"], event["available_seats"]) == (1, 100, 100)
    assert [e["organizer"]["email"] for e in events] == ["john@example.com"]
    assert (registration["user_id"], registration["event_id"]) == (2, 1)
    assert [(r["event_id"], r["event"]["available_seats"]) for r in mine] == [(1, 99)]
    assert cancelled == {"message": "registration cancelled successfully"}
