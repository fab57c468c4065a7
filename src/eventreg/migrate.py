"""Schema migrations with yoyo (plain SQL files in `migrations/`, each with a rollback)."""

from __future__ import annotations

from pathlib import Path

from yoyo import get_backend, read_migrations


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
