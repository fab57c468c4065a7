"""Fixtures for the reliability series: a real API process, and PostgreSQL clusters to break.

Concurrency and stress tests (C, S) use the session's cluster and a fresh database each.
Fault tests (F, R) restart or crash PostgreSQL, so each fault module gets its own cluster
(fsync and synchronous_commit on) and overrides `target_url` with a database on it.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql as pgsql

from eventreg import migrate
from eventreg.pgcluster import Cluster
from tests.reliability.harness import ApiFactory, ApiProcess, Db, connect


class FaultPg:
    """A cluster of the module's own, with a migrated template to clone databases from."""

    def __init__(self, root: Path) -> None:
        self.cluster = Cluster(root / "pg")
        self.cluster.start(fsync="on", synchronous_commit="on", max_connections="200")
        self.template = "tmpl"
        self.admin("CREATE DATABASE {}", self.template)
        migrate.apply(self.cluster.url(self.template))

    def admin(self, statement: str, *names: str) -> None:
        query = pgsql.SQL(statement).format(*map(pgsql.Identifier, names))
        with psycopg.connect(self.cluster.url(), autocommit=True) as conn:
            conn.execute(query)

    def create_database(self) -> str:
        name = f"f_{uuid.uuid4().hex[:12]}"
        self.admin("CREATE DATABASE {} TEMPLATE {}", name, self.template)
        return name


@pytest.fixture(scope="module")
def fault_pg() -> Iterator[FaultPg]:
    root = Path(tempfile.mkdtemp(prefix="eventreg-fault-"))
    pg = FaultPg(root)
    try:
        yield pg
    finally:
        pg.cluster.destroy()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def fault_database_url(fault_pg: FaultPg) -> Iterator[str]:
    name = fault_pg.create_database()
    yield fault_pg.cluster.url(name)
    if fault_pg.cluster.running_port() is None:
        fault_pg.cluster.start()
    fault_pg.admin("DROP DATABASE IF EXISTS {} WITH (FORCE)", name)


@pytest.fixture
def target_url(database_url: str) -> str:
    """The database the API serves; fault modules override this with `fault_database_url`."""
    return database_url


@pytest.fixture
async def tdb(target_url: str) -> AsyncIterator[Db]:
    async with connect(target_url) as conn:
        yield conn


@pytest.fixture
def auth() -> str:
    """EVENTREG_AUTH of the API processes: tokens, as in production. A test that also runs
    with tokens off parametrizes this name; tests/README.md lists what runs how."""
    return "tokens"


@pytest.fixture
async def api_factory(target_url: str, tmp_path: Path, auth: str) -> AsyncIterator[ApiFactory]:
    """Start API processes on `target_url`; all are stopped (SIGTERM, then SIGKILL) after."""
    started: list[ApiProcess] = []

    async def start(*, wait: bool = True, url: str = "", **env: str) -> ApiProcess:
        path = tmp_path / f"api{len(started)}.log"
        api = ApiProcess(url or target_url, path, auth=auth, **env)
        started.append(api)
        await api.start(wait=wait)
        return api

    yield start
    for api in started:
        await api.stop()


@pytest.fixture
async def api(api_factory: ApiFactory) -> ApiProcess:
    return await api_factory()
