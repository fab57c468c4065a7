"""`python -m eventreg [serve|migrate|psql|db-url|db-stop]`: what `make run` and friends call."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from eventreg import devdb, migrate
from eventreg.pgcluster import bin_dir


def say(message: str) -> None:
    print(f"eventreg: {message}", file=sys.stderr, flush=True)


@contextmanager
def database() -> Iterator[str]:
    """$DATABASE_URL as is, or the embedded server, started here and stopped on the way out."""
    if url := os.environ.get("DATABASE_URL"):
        yield url
        return
    say(f"DATABASE_URL is unset: using the embedded PostgreSQL in {devdb.data_dir()}")
    url, started = devdb.start_embedded()
    say(f"embedded PostgreSQL is up: {url}" + ("" if started else " (already running)"))
    try:
        yield url
    finally:
        if started:
            devdb.stop_embedded()
            say("embedded PostgreSQL stopped")


def apply_migrations(url: str) -> None:
    applied = migrate.apply(url)
    say(f"migrations applied: {', '.join(applied)}" if applied else "schema is up to date")


def _exit_on_sigterm() -> None:
    """uvicorn re-raises SIGTERM after its graceful shutdown; make that an exit that runs
    our `finally` blocks (stopping the embedded database) instead of an abrupt death."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


def serve() -> None:
    import uvicorn

    from eventreg.protocol import SlowClientProtocol

    _exit_on_sigterm()

    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8080"))
    workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
    with database() as url:
        apply_migrations(url)
        os.environ["DATABASE_URL"] = url  # the factory (and every worker) reads it
        say(f"serving on http://{host}:{port} with {workers} worker(s); Ctrl-C stops")
        uvicorn.run(
            "eventreg.app:app_from_env", factory=True, host=host, port=port, workers=workers,
            loop="uvloop", access_log=os.environ.get("ACCESS_LOG", "1") == "1",
            http=SlowClientProtocol,  # httptools, plus the deadlines and bounds it lacks
            timeout_graceful_shutdown=10,
            # We never read the client address, so skip the per-request middleware that
            # rewrites it from X-Forwarded-* (about 1% of a worker's CPU on a cheap GET).
            proxy_headers=False,
        )  # fmt: skip


def migrate_only() -> None:
    with database() as url:
        apply_migrations(url)


def psql() -> None:
    with database() as url:
        subprocess.run([str(bin_dir() / "psql"), url], check=False)


def db_url() -> None:
    url = devdb.current_url()
    if url is None:
        raise SystemExit("no database: DATABASE_URL is unset and the embedded one is not running")
    print(url)


def db_stop() -> None:
    devdb.stop_embedded()


COMMANDS: dict[str, Callable[[], None]] = {
    "serve": serve,
    "migrate": migrate_only,
    "psql": psql,
    "db-url": db_url,
    "db-stop": db_stop,
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="eventreg", description=__doc__)
    parser.add_argument("command", choices=COMMANDS, nargs="?", default="serve")
    COMMANDS[parser.parse_args().command]()


if __name__ == "__main__":
    main()
