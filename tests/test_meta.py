"""Index, health, and the JSON errors for routes and methods that do not exist."""

from __future__ import annotations

import httpx

from eventreg.app import create_app
from eventreg.config import Settings
from tests.live_server import serve


async def test_index_lists_endpoints(client: httpx.AsyncClient) -> None:
    body = (await client.get("/")).json()
    assert body["endpoints"]["registrations"] == "/api/v1/registrations"


async def test_health_asks_the_database(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_health_is_503_when_the_database_is_unreachable() -> None:
    # Nothing listens on port 1: the API still starts, and /health says so.
    with serve("postgresql://postgres@127.0.0.1:1/none", DB_ACQUIRE_TIMEOUT_MS="500") as base:
        response = httpx.get(f"{base}/health", timeout=10)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.json()["code"] == "service_unavailable"
        register = httpx.post(
            f"{base}/api/v1/registrations", json={"user_id": 1, "event_id": 1}, timeout=10
        )
        assert (register.status_code, register.json()["code"]) == (503, "service_unavailable")


async def test_unknown_route_and_wrong_method_are_json(client: httpx.AsyncClient) -> None:
    missing = await client.get("/api/v1/nope")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["code"] == "not_found"
    trailing = await client.get("/api/v1/users/")
    assert trailing.status_code == 404
    wrong = await client.patch("/api/v1/registrations")
    assert (wrong.status_code, wrong.json()["code"]) == (405, "method_not_allowed")
    assert set(wrong.headers["allow"].split(", ")) == {"POST", "DELETE"}


def test_settings_from_env_reads_limits() -> None:
    settings = Settings.from_env({"DATABASE_URL": "postgresql://x/y", "DB_LOCK_TIMEOUT_MS": "250"})
    assert (settings.lock_timeout_ms, settings.pool_max_size) == (250, 20)
    assert create_app(settings).router.redirect_slashes is False
