"""Fixtures: one real PostgreSQL per test session, one fresh database per test.

The server is started here (an embedded cluster in a temporary folder) unless
TEST_DATABASE_URL names an existing server to use instead. A template database is
migrated once; each test gets `CREATE DATABASE … TEMPLATE` (a few ms) and it is dropped
after, so tests never see each other's rows and may run real concurrent transactions.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import httpx
import psycopg
import pytest
from asgi_lifespan import LifespanManager
from psycopg import sql as pgsql

from eventreg import migrate
from eventreg.app import create_app
from eventreg.config import Settings
from eventreg.pgcluster import Cluster
from eventreg.ticketcodes import b64url

# The apps under test sign ticket codes with this key, so tests can sign codes too (issue 9).
TICKET_SEED = b64url(bytes(range(32)))


def _with_database(url: str, name: str) -> str:
    base, _, query = url.partition("?")
    base = base.rsplit("/", 1)[0]
    return f"{base}/{name}" + (f"?{query}" if query else "")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster | None]:
    """The session's own server, or None when TEST_DATABASE_URL points elsewhere."""
    if os.environ.get("TEST_DATABASE_URL"):
        yield None
        return
    root = Path(tempfile.mkdtemp(prefix="eventreg-test-"))
    cluster = Cluster(root / "pg")
    cluster.start(max_connections="300")
    try:
        yield cluster
    finally:
        cluster.destroy()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def admin_url(pg_cluster: Cluster | None) -> str:
    return os.environ.get("TEST_DATABASE_URL") or (pg_cluster and pg_cluster.url()) or ""


@pytest.fixture(scope="session")
def template_db(admin_url: str) -> Iterator[str]:
    name = f"eventreg_tmpl_{os.getpid()}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            pgsql.Identifier(name)))  # fmt: skip
        conn.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(name)))
    migrate.apply(_with_database(admin_url, name))  # closes its connection: templates need 0
    yield name
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            pgsql.Identifier(name)))  # fmt: skip


@contextmanager
def _cloned_database(admin_url: str, template_db: str) -> Iterator[str]:
    """A fresh, migrated database, dropped on the way out."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    ident = pgsql.Identifier(name)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(pgsql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            ident, pgsql.Identifier(template_db)))  # fmt: skip
    yield _with_database(admin_url, name)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))


@pytest.fixture
def database_url(admin_url: str, template_db: str) -> Iterator[str]:
    """A fresh, migrated database for this test only."""
    with _cloned_database(admin_url, template_db) as url:
        yield url


@pytest.fixture(scope="module")
def module_database_url(admin_url: str, template_db: str) -> Iterator[str]:
    """One database for a module whose tests share a server and write nothing that matters."""
    with _cloned_database(admin_url, template_db) as url:
        yield url


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, pool_max_size=20, ticket_signing_key=TICKET_SEED)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client wired to the app in-process (real pool, real database)."""
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c


@pytest.fixture
async def tokens_client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """Like `client`, with EVENTREG_AUTH=tokens (rate limits off: tests sign up many users)."""
    settings = Settings(
        database_url=database_url,
        auth_mode="tokens",
        rate_signup_per_minute=0,
        rate_register_per_minute=0,
        ticket_signing_key=TICKET_SEED,
    )
    async with LifespanManager(create_app(settings)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection[asyncpg.Record]]:
    """A direct connection to the test's database, for asserting on rows."""
    conn: asyncpg.Connection[asyncpg.Record] = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
def embedded_data_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """EVENTREG_DATA_DIR for `make run`'s embedded server, in a folder of this test's own;
    its server is stopped afterwards. Not under tmp_path: every pytest run that starts (any
    worktree's) resets /tmp/pytest-of-<user> to mode 0700, and as root the server runs as
    eventreg-pg, which then can no longer reach a data directory below it."""
    root = Path(tempfile.mkdtemp(prefix="eventreg-data-"))
    monkeypatch.setenv("EVENTREG_DATA_DIR", str(root))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    yield root
    Cluster(root / "pg").stop("immediate")
    shutil.rmtree(root, ignore_errors=True)
