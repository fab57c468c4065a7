"""The database `make run` uses: $DATABASE_URL, or else an embedded server in `.data/`.

The embedded server's data survives restarts, and so does its port (see Cluster). A server
left running by a killed process is found through its postmaster.pid and adopted rather than
blocking the next start. The process that started it (its owner, in `.data/pg.owner`) stops
it on exit; `db-stop` refuses to pull it from under a live owner unless forced.
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


class InUse(Exception):
    """The embedded server has a live owner (a `make run`, say) and stopping was not forced."""


def owner() -> int | None:
    """The pid of the live process that will stop the server, or None (none, or it died)."""
    try:
        pid = int(_owner_file().read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _claim() -> bool:
    """Become the process that stops the server, unless a live process already is."""
    if (pid := owner()) is not None and pid != os.getpid():
        return False
    # no owner, or it died (a killed `make run`): the server is ours now
    _owner_file().write_text(str(os.getpid()))
    return True


def _command_of(pid: int) -> str:
    """`python -m eventreg serve` for a pid, as an error line can name it."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return "a process"
    return " ".join([Path(argv[0]).name, *argv[1:]]).strip()


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
    """The owner's stop, on its way out."""
    embedded().stop()
    _owner_file().unlink(missing_ok=True)


def stop_for_operator(*, force: bool = False) -> None:
    """`db-stop`: stop the server, but not from under a live owner unless `force`.

    A forced stop keeps the owner's claim: the owner still stops the server when it exits,
    and a `make migrate` that starts it again meanwhile leaves it running for the owner,
    whose pool finds it on the same port."""
    pid = owner()
    if pid is None or pid == os.getpid():
        stop_embedded()
    elif force:
        embedded().stop()
    else:
        raise InUse(
            f"the embedded PostgreSQL is in use by `{_command_of(pid)}` (pid {pid}); stop"
            " that first, or stop the database anyway with --force"
            " (make db-stop ARGS=--force)"
        )
