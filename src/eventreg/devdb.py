"""The database `make run` uses: $DATABASE_URL, or else an embedded server in `.data/`.

The embedded server's data survives restarts. A server left running by a killed process is
found through its postmaster.pid and adopted rather than blocking the next start.
"""

from __future__ import annotations

import os
from pathlib import Path

import psycopg

from eventreg.pgcluster import Cluster

DATABASE = "eventreg"


def data_dir() -> Path:
    return Path(os.environ.get("EVENTREG_DATA_DIR", ".data")).resolve() / "pg"


def embedded() -> Cluster:
    return Cluster(data_dir())


def _owner_file() -> Path:
    return data_dir().parent / "pg.owner"


def _claim() -> bool:
    """Become the process that stops the server, unless a live process already is."""
    try:
        owner = int(_owner_file().read_text())
        os.kill(owner, 0)
        if owner != os.getpid():
            return False
    except (OSError, ValueError):
        pass  # no owner, or it died (a killed `make run`): the server is ours now
    _owner_file().write_text(str(os.getpid()))
    return True


def start_embedded() -> tuple[str, bool]:
    """Start (or adopt) the embedded server and make sure our database exists.

    Returns its URL and whether this process owns it (and so stops it). A running server
    whose owner is alive, e.g. another `make run`, is used but left running.
    """
    cluster = embedded()
    cluster.start()
    started = _claim()
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
        if exists.fetchone() is None:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')  # a constant, not input
    return cluster.url(DATABASE), started


def current_url() -> str | None:
    """$DATABASE_URL, or the running embedded server's URL, or None."""
    if url := os.environ.get("DATABASE_URL"):
        return url
    cluster = embedded()
    return cluster.url(DATABASE) if cluster.running_port() is not None else None


def stop_embedded() -> None:
    embedded().stop()
    _owner_file().unlink(missing_ok=True)
