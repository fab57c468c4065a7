"""Run the event registration API and look after its database (`make run` and friends)."""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from eventreg import config, devdb, migrate
from eventreg.config import ConfigError, Settings
from eventreg.pgcluster import PortTaken, bin_dir, bind_error

EXIT_CODES = """\
exit codes:
  0  done
  1  something outside stood in the way: the database (unreachable, refused the password,
     no such database), the port (in use), or the embedded PostgreSQL (in use, its port
     taken); one line says which
  2  a setting or an argument is invalid; one line names it and says what is allowed

Settings are environment variables: `python -m eventreg serve --help` lists them."""


class CannotRun(Exception):
    """Something outside the settings is in the way; the message is one line."""


class BadArgument(ValueError):
    """A command-line value argparse cannot judge (an email's shape, say); one line."""


# Each becomes one line on stderr and exit code 1, never a traceback.
OBSTACLES = (CannotRun, migrate.DatabaseUnavailable, devdb.InUse, PortTaken)


def say(message: str) -> None:
    print(f"eventreg: {message}", file=sys.stderr, flush=True)


@contextmanager
def database(url: str) -> Iterator[str]:
    """`url` (DATABASE_URL) once a first connection works, or, when it is "", the embedded
    server, started here and stopped on the way out."""
    if url:
        migrate.check_connection(url)
        yield url
        return
    say(f"DATABASE_URL is unset: using the embedded PostgreSQL in {devdb.data_dir()}")
    url, started = devdb.start_embedded()
    owner = "" if started else f" (used by pid {devdb.owner()}, which stops it)"
    say(f"embedded PostgreSQL is up: {url}{owner}")
    try:
        yield url
    finally:
        if started:
            devdb.stop_embedded()
            say("embedded PostgreSQL stopped")


def apply_migrations(url: str) -> None:
    applied = migrate.apply(url)
    say(f"migrations applied: {', '.join(applied)}" if applied else "schema is up to date")


def check_listen(host: str, port: int) -> None:
    """Say now, before starting anything, when uvicorn could not listen on host:port."""
    if (error := bind_error(host, port)) is None:
        return
    if error.errno == errno.EADDRINUSE:
        raise CannotRun(f"PORT {port} on {host} is already in use; stop what listens there or"
                        " choose another PORT")  # fmt: skip
    raise CannotRun(f"cannot listen on HOST {host} PORT {port}: {error.strerror or error}")


def _exit_on_sigterm() -> None:
    """uvicorn re-raises SIGTERM after its graceful shutdown; make that an exit that runs
    our `finally` blocks (stopping the embedded database) instead of an abrupt death."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


@contextmanager
def metrics_dir() -> Iterator[None]:
    """A fresh PROMETHEUS_MULTIPROC_DIR for this start, where every worker keeps its counts
    (eventreg.metrics); removed on the way out. One given in the environment is used, its
    old counts deleted first. Set before anything imports prometheus_client."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    path = Path(given) if given else Path(tempfile.mkdtemp(prefix="eventreg-metrics-"))
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("*.db"):
        old.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    try:
        yield
    finally:
        if not given:
            shutil.rmtree(path, ignore_errors=True)


def serve(_: argparse.Namespace) -> None:
    settings = Settings.from_env(need_database=False)  # every setting, before anything starts
    check_listen(settings.host, settings.port)
    _exit_on_sigterm()
    signing_key(settings)  # before the database: a host without a usable key must not start
    with metrics_dir():
        run_server(settings)


def run_server(settings: Settings) -> None:
    import uvicorn

    from eventreg.logs import uvicorn_config
    from eventreg.protocol import SlowClientProtocol

    host, port, workers = settings.host, settings.port, settings.workers
    text = settings.log_format == "text"
    with database(settings.database_url) as url:
        apply_migrations(url)
        os.environ["DATABASE_URL"] = url  # the factory (and every worker) reads it
        say(
            f"serving on http://{host}:{port} with {workers} worker(s),"
            f" EVENTREG_AUTH={settings.auth_mode}; Ctrl-C stops"
        )
        uvicorn.run(
            "eventreg.app:app_from_env", factory=True, host=host, port=port, workers=workers,
            loop="uvloop", log_config=uvicorn_config(settings.log_format),
            access_log=settings.access_log and text,  # JSON request lines are eventreg's own
            http=SlowClientProtocol,  # httptools, plus the deadlines and bounds it lacks
            timeout_graceful_shutdown=10,
            # We never read the client address, so skip the per-request middleware that
            # rewrites it from X-Forwarded-* (about 1% of a worker's CPU on a cheap GET).
            proxy_headers=False,
        )  # fmt: skip


def signing_key(settings: Settings) -> None:
    """Say which key signs tickets; on a loopback host without one, make it on first start
    in the data directory and keep it (every worker then reads that file)."""
    from eventreg.app import keyring
    from eventreg.ticketcodes import create_key_file

    path = settings.ticket_key_file
    if settings.ticket_key_create and create_key_file(Path(path)):
        say(f"made a ticket signing key: {path} (keep it: the tickets it signed need it)")
    if path:
        os.environ["TICKET_KEY_FILE"] = path
    try:
        kid = keyring(settings).current_kid
    except SystemExit as exc:
        raise ConfigError(str(exc)) from None
    say(f"tickets are signed with key {kid} from {path or 'TICKET_SIGNING_KEY'}")


def ticket(args: argparse.Namespace) -> None:
    from eventreg import ticketcli

    if args.action == "verify":
        code = ticketcli.verify(args.code, args.keys)
    else:
        code = ticketcli.keygen(args.file, args.if_missing, args.seed)
    if code:
        raise SystemExit(code)


def migrate_only(_: argparse.Namespace) -> None:
    with database(config.read("DATABASE_URL")) as url:
        apply_migrations(url)


def psql(_: argparse.Namespace) -> None:
    with database(config.read("DATABASE_URL")) as url:
        subprocess.run([str(bin_dir() / "psql"), url], check=False)


def db_url(_: argparse.Namespace) -> None:
    config.read("DATABASE_URL")  # a bad one is a ConfigError, not a URL to print
    url = devdb.current_url()
    if url is None:
        raise CannotRun("no database: DATABASE_URL is unset and the embedded one is not running")
    print(url)


def admin_create(args: argparse.Namespace) -> None:
    import msgspec

    from eventreg.admin import create_admin
    from eventreg.errors import ApiError
    from eventreg.messages import readable
    from eventreg.structs import NewUser

    try:  # the checks a POST /users body gets
        msgspec.convert({"name": args.name, "email": args.email, "role": "admin"}, NewUser)
    except msgspec.ValidationError as exc:
        raise BadArgument(f"admin create: {readable(str(exc))}") from None
    with database(config.read("DATABASE_URL")) as url:
        apply_migrations(url)
        try:
            user = asyncio.run(create_admin(url, args.name, args.email))
        except ApiError as exc:  # the email is taken
            raise CannotRun(f"admin create: {exc.detail}") from None
    print(msgspec.json.encode(user).decode())
    say("admin created; its token (above) is shown this once")


def db_stop(args: argparse.Namespace) -> None:
    if devdb.embedded().running_port() is None:
        say(f"the embedded PostgreSQL in {devdb.data_dir()} is not running")
        return
    devdb.stop_for_operator(force=args.force)
    say("embedded PostgreSQL stopped")


@dataclass(frozen=True, slots=True)
class Command:
    run: Callable[[argparse.Namespace], None]
    summary: str  # the line in the top-level help
    details: str  # the description in its own --help


COMMANDS: dict[str, Command] = {
    "serve": Command(serve, "migrate, then serve the API (the default command)",
                     "Check every setting and that the port is free, start the embedded "
                     "PostgreSQL unless DATABASE_URL is set, apply pending migrations, then "
                     "serve until Ctrl-C or SIGTERM (which also stops the embedded "
                     "PostgreSQL, if this command started it)."),
    "migrate": Command(migrate_only, "apply pending migrations, then exit",
                       "Apply pending migrations to DATABASE_URL, or to the embedded "
                       "PostgreSQL (started for this and stopped after, unless it was "
                       "already running)."),
    "psql": Command(psql, "open psql on the database the app uses",
                    "Open psql on DATABASE_URL, or on the embedded PostgreSQL (started for "
                    "the session if needed)."),
    "db-url": Command(db_url, "print the URL of the database the app uses",
                      "Print DATABASE_URL, or the running embedded PostgreSQL's URL; exit 1 "
                      "when there is neither."),
    "admin": Command(admin_create, "create the first admin user and print its token",
                     "admin create --name NAME --email EMAIL: create an admin user on "
                     "DATABASE_URL or the embedded PostgreSQL (migrating it first) and print "
                     "it as JSON with its first token, shown this once. Only an admin can "
                     "make another admin through the API, so the first one comes from here."),
    "ticket": Command(ticket, "check a ticket code offline, or make a signing key",
                      "ticket verify CODE --keys FILE_OR_URL: check a code against a key set "
                      "(as /.well-known/ticket-keys serves it, saved to a file or fetched "
                      "once) with no database; exit 0 genuine, 1 refused with the reason (bad "
                      "format, unknown key, bad signature), 2 the keys could not be read. "
                      "ticket keygen FILE [--if-missing] [--seed]: write a new signing key "
                      "(PEM), never over an existing file, and print its id and public key."),
    "db-stop": Command(db_stop, "stop the embedded PostgreSQL (refused while in use)",
                       "Stop the embedded PostgreSQL. While the eventreg process that started "
                       "it (make run, say) is alive, this refuses with exit code 1, because "
                       "that server would answer 503 until the database is back; --force "
                       "stops it anyway. Its port stays the same, so a server left running "
                       "recovers when the database starts again."),
}  # fmt: skip


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="eventreg", description=__doc__, epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    top.set_defaults(run=serve)  # `python -m eventreg` alone serves
    subparsers = top.add_subparsers(title="commands", metavar="COMMAND")
    for name, command in COMMANDS.items():
        sub = subparsers.add_parser(
            name, help=command.summary, description=textwrap.fill(command.details, 88),
            epilog=config.help_text() if command.run is serve else None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )  # fmt: skip
        sub.set_defaults(run=command.run)
    stop = subparsers.choices["db-stop"]
    stop.add_argument("--force", action="store_true", help="stop it even while in use")
    actions = subparsers.choices["admin"].add_subparsers(metavar="ACTION", required=True)
    create = actions.add_parser("create", help="create an admin user and print its token")
    create.add_argument("--name", required=True, help="the admin's name")
    create.add_argument("--email", required=True, help="the admin's email, unique among users")
    tickets = subparsers.choices["ticket"].add_subparsers(
        metavar="ACTION", dest="action", required=True
    )
    check = tickets.add_parser("verify", help="check a ticket code offline")
    check.add_argument("code")
    check.add_argument("--keys", required=True, help="a key set file or URL")
    make = tickets.add_parser("keygen", help="write a new signing key to a PEM file")
    make.add_argument("file")
    make.add_argument("--if-missing", action="store_true", help="an existing file is fine")
    make.add_argument("--seed", action="store_true", help="also print TICKET_SIGNING_KEY")
    return top


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        args.run(args)
    except (ConfigError, BadArgument) as exc:
        say(str(exc))
        raise SystemExit(2) from None
    except OBSTACLES as exc:
        say(str(exc))
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
