"""Schema migrations with yoyo (plain SQL files in `migrations/`, each with a rollback)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
from yoyo import get_backend, read_migrations

CONNECT_TIMEOUT = 10  # seconds


class DatabaseUnavailable(Exception):
    """DATABASE_URL cannot be used; the message is one line that says why."""


def check_connection(database_url: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Connect once with the app's driver before migrating, so that a wrong DATABASE_URL is
    one line saying what is wrong, not a traceback from the middle of yoyo."""

    async def connect() -> None:
        await (await asyncpg.connect(database_url, timeout=timeout)).close()

    try:
        asyncio.run(connect())
    except Exception as exc:  # whatever the driver raises becomes one line
        raise DatabaseUnavailable(why_unavailable(exc, database_url, timeout)) from exc


def why_unavailable(exc: Exception, database_url: str, timeout: float = CONNECT_TIMEOUT) -> str:
    """One line for a failed connect: unreachable, refused password, no such database, or
    else the driver's own first line. Names the server, never the password."""
    server = urlsplit(database_url).netloc.rpartition("@")[2] or "localhost:5432"
    if isinstance(exc, asyncpg.InvalidPasswordError):
        why = f"PostgreSQL at {server} refused the password ({exc})"
    elif isinstance(exc, asyncpg.InvalidCatalogNameError):
        why = f"{exc} on the PostgreSQL at {server}"
    elif isinstance(exc, ConnectionRefusedError):
        why = f"connection refused at {server}: is PostgreSQL running there?"
    elif isinstance(exc, socket.gaierror):
        why = f"unknown host in {server} ({exc.strerror})"
    elif isinstance(exc, TimeoutError):
        why = f"no answer from {server} within {timeout:g} s"
    elif isinstance(exc, OSError):
        why = f"cannot reach {server}: {exc.strerror or exc}"
    elif isinstance(exc, asyncpg.PostgresError):
        why = f"PostgreSQL at {server} refused the connection: {exc}"
    else:
        why = f"cannot connect to {server}: {str(exc).strip() or type(exc).__name__}"
    return f"DATABASE_URL: {why.splitlines()[0]}"


def migrations_dir() -> Path:
    source_tree = Path(__file__).resolve().parents[2] / "migrations"
    return source_tree if source_tree.is_dir() else Path(__file__).parent / "_migrations"


def yoyo_url(database_url: str) -> str:
    """yoyo names its driver in the scheme; we use psycopg 3."""
    scheme, sep, rest = database_url.partition("://")
    if scheme not in ("postgres", "postgresql") or not sep:
        raise ValueError(f"not a PostgreSQL URL: {database_url!r}")
    return f"postgresql+psycopg://{rest}"


def _run(database_url: str, pick: str, run: str) -> list[str]:
    """Lock yoyo's table, pick migrations (backend method `pick`), `run` them; their ids.

    The connection is closed afterwards, which matters when the database is then used as a
    template (CREATE DATABASE … TEMPLATE refuses a template with sessions)."""
    backend = get_backend(yoyo_url(database_url))
    try:
        migrations = read_migrations(str(migrations_dir()))
        with backend.lock():
            chosen = getattr(backend, pick)(migrations)
            getattr(backend, run)(chosen)
        return [m.id for m in chosen]
    finally:
        backend.connection.close()


def apply(database_url: str) -> list[str]:
    """Apply pending migrations."""
    return _run(database_url, "to_apply", "apply_migrations")


def rollback_all(database_url: str) -> list[str]:
    """Roll back every applied migration, newest first."""
    return _run(database_url, "to_rollback", "rollback_migrations")
