"""`make run`'s database: the embedded server starts, keeps its data, is adopted after a
crash of its owner, and is stopped when `serve` exits on SIGINT or SIGTERM."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import psycopg
import pytest

from eventreg import devdb, spawn
from eventreg.pgcluster import Cluster


@pytest.mark.timeout(120)
@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_serve_starts_and_stops_the_embedded_database(
    embedded_data_dir: Path, stop_signal: signal.Signals
) -> None:
    server = spawn.start(timeout=60)  # `python -m eventreg serve`, as `make run` runs it
    try:
        created = httpx.post(
            f"{server.url}/api/v1/users",
            json={"name": "Kept", "email": f"kept-{stop_signal.name}@example.com"},
        )
        assert created.status_code == 201
        assert devdb.embedded().running_port() is not None
    finally:
        server.process.send_signal(stop_signal)
        assert server.process.wait(timeout=30) == 0
        server.stop()  # already exited: only tidies its log
    assert devdb.embedded().running_port() is None  # the database was stopped, cleanly
    url, owned = devdb.start_embedded()  # and its data survived
    try:
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT count(*) FROM users").fetchone()
            assert row == (1,)
    finally:
        assert owned
        devdb.stop_embedded()


@pytest.mark.timeout(120)
def test_a_server_orphaned_by_a_killed_owner_is_adopted(embedded_data_dir: Path) -> None:
    url, owned = devdb.start_embedded()
    assert owned
    (embedded_data_dir / "pg.owner").write_text("999999999")  # an owner that no longer exists
    again, owned_again = devdb.start_embedded()
    assert (again, owned_again) == (url, True)  # same server, and it is ours to stop now
    devdb.stop_embedded()
    assert Cluster(embedded_data_dir / "pg").running_port() is None
