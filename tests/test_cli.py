"""`python -m eventreg` as an operator meets it: a mistake is one line on stderr and an exit
code (2: a setting; 1: the database, a port, the embedded server), never a traceback; the
embedded PostgreSQL keeps its port, and `db-stop` does not pull it from under a server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from eventreg import config, devdb, migrate, spawn
from eventreg.pgcluster import Cluster, free_port

README = Path(__file__).resolve().parents[1] / "README.md"
OWN_VARIABLES = {v.name for v in config.SPEC} | {"EVENTREG_DATA_DIR"}


def eventreg(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m eventreg ARGS` with our settings cleared and `env` set. Unless `env`
    names one, the embedded server's directory cannot be created: nothing lands in `.data`."""
    clean = {k: v for k, v in os.environ.items() if k not in OWN_VARIABLES}
    clean["EVENTREG_DATA_DIR"] = "/nonexistent/eventreg-test-cli"
    return subprocess.run(
        [sys.executable, "-m", "eventreg", *args], env={**clean, **env},
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=90,
    )  # fmt: skip


def one_line(result: subprocess.CompletedProcess[str], exit_code: int, after: int = 0) -> str:
    """The single line a failed command printed (after `after` lines of progress), once
    the exit code and the count are checked."""
    lines = result.stderr.splitlines()
    assert (result.returncode, len(lines)) == (exit_code, after + 1), result.stderr
    assert all(line.startswith("eventreg: ") for line in lines)
    return lines[-1]


def closed_url() -> str:
    """A PostgreSQL URL where nothing listens."""
    return f"postgresql://postgres@127.0.0.1:{free_port()}/eventreg"


# -- help ----------------------------------------------------------------------------------
def test_top_level_help_says_what_each_command_does() -> None:
    result = eventreg("--help")
    assert result.returncode == 0
    for name, command in {"serve": "serve the API", "migrate": "apply pending migrations",
                          "psql": "psql", "db-url": "print the URL",
                          "admin": "create the first admin",
                          "db-stop": "stop the embedded PostgreSQL"}.items():  # fmt: skip
        assert any(line.split()[:1] == [name] and command in line
                   for line in result.stdout.splitlines()), (name, result.stdout)  # fmt: skip
    assert "exit codes" in result.stdout


@pytest.mark.parametrize(
    ("command", "says"),
    [("serve", "PORT "), ("migrate", "Apply pending migrations"), ("psql", "Open psql"),
     ("db-url", "Print DATABASE_URL"), ("admin", "admin create --name"), ("db-stop", "--force")],
)  # fmt: skip
def test_each_command_has_its_own_help(command: str, says: str) -> None:
    result = eventreg(command, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith(f"usage: eventreg {command} ")
    assert says in result.stdout


# -- settings: exit 2 ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("PORT", "70000", "an integer from 1 to 65535"),
        ("PORT", "abc", "an integer from 1 to 65535"),
        ("PORT", "0", "an integer from 1 to 65535"),
        ("WEB_CONCURRENCY", "0", "an integer of at least 1"),
        ("DB_POOL_MAX", "0", "an integer of at least 1"),
        ("DB_LOCK_TIMEOUT_MS", "soon", "an integer from 0 to 2147483647"),
        ("DB_STATEMENT_TIMEOUT_MS", "0", "an integer from 1 to 2147483647"),
        ("DB_ACQUIRE_TIMEOUT_MS", "1.5", "an integer from 1 to 2147483647"),
        ("MAX_BODY_BYTES", "-1", "an integer of at least 1"),
        ("ACCESS_LOG", "yes", "0 or 1"),
        ("EVENTREG_AUTH", "none", "open or tokens"),
        ("AUTH_CACHE_SECONDS", "soon", "a number of at least 0"),
        ("CORS_ORIGINS", "https://app.example.org/", config.ORIGINS.rule),
        ("HEADER_TIMEOUT", "0", "a number above 0"),
        ("MAX_HEADER_BYTES", "100", "an integer of at least 1024"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it_and_exit_2(
    name: str, value: str, allowed: str, tmp_path: Path
) -> None:
    # The database is unreachable on purpose: the setting must be refused before it is tried.
    env = {"DATABASE_URL": closed_url(), "PORT": str(free_port()), name: value}
    result = eventreg("serve", EVENTREG_DATA_DIR=str(tmp_path), **env)
    assert one_line(result, 2) == f"eventreg: {name} must be {allowed}, got {value!r}"


def test_open_access_on_a_public_address_is_refused() -> None:
    result = eventreg("serve", DATABASE_URL=closed_url(), HOST="0.0.0.0", EVENTREG_AUTH="open")
    assert one_line(result, 2).startswith("eventreg: EVENTREG_AUTH=open is refused with HOST ")


def test_a_database_url_that_is_not_postgresql_is_refused_without_its_password() -> None:
    result = eventreg("migrate", DATABASE_URL="mysql://app:hunter2@db/app")
    line = one_line(result, 2)
    assert line.startswith("eventreg: DATABASE_URL must be a postgresql:// URL, got ")
    assert "hunter2" not in line


def test_the_readme_table_is_the_settings_table() -> None:
    readme = README.read_text()
    for row in config.markdown_table().splitlines():
        assert row in readme, f"README's Configuration table lacks or differs in:\n{row}"


# -- the database: exit 1 ------------------------------------------------------------------
def test_an_unreachable_database_is_one_line() -> None:
    url = closed_url()
    line = one_line(eventreg("migrate", DATABASE_URL=url), 1)
    server = url.split("@")[1].split("/")[0]
    assert line == (
        f"eventreg: DATABASE_URL: connection refused at {server}: is PostgreSQL running there?"
    )


def test_a_missing_database_is_one_line(admin_url: str) -> None:
    name = f"no_such_db_{uuid.uuid4().hex[:8]}"
    url = f"{admin_url.rsplit('/', 1)[0]}/{name}"
    line = one_line(eventreg("migrate", DATABASE_URL=url), 1)
    assert line.startswith(f'eventreg: DATABASE_URL: database "{name}" does not exist on ')


def test_a_server_that_never_answers_is_one_line_after_the_timeout() -> None:
    """A local port that accepts TCP but never speaks PostgreSQL, in-process with a short
    timeout (the command waits CONNECT_TIMEOUT, 10 s)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        server = f"127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(migrate.DatabaseUnavailable) as caught:
            migrate.check_connection(f"postgresql://postgres@{server}/x", timeout=0.3)
    assert str(caught.value) == f"DATABASE_URL: no answer from {server} within 0.3 s"


def test_any_other_driver_error_is_its_first_line() -> None:
    with pytest.raises(migrate.DatabaseUnavailable) as caught:
        migrate.check_connection(f"{closed_url()}?sslmode=sometimes")
    assert str(caught.value).startswith("DATABASE_URL: cannot connect to 127.0.0.1:")
    assert "sslmode" in str(caught.value)


@pytest.fixture
def password_url(pg_cluster: Cluster | None) -> Iterator[str]:
    """A URL with a wrong password that the test cluster really refuses: a pg_hba.conf line
    for one made-up database asks for a password (the rest of the cluster trusts), and
    the superuser has none, so no password can be right."""
    if pg_cluster is None:
        pytest.skip("needs the suite's own cluster (TEST_DATABASE_URL is set)")
    hba = pg_cluster.datadir / "pg_hba.conf"
    original = hba.read_text()
    database = f"pw_{uuid.uuid4().hex[:8]}"
    hba.write_text(f"host {database} all 127.0.0.1/32 scram-sha-256\n{original}")
    pg_cluster.reload()
    url = pg_cluster.url(database).replace("postgres@", "postgres:wrong-secret@")
    try:
        _wait_for_password_refusal(url)
        yield url
    finally:
        hba.write_text(original)
        pg_cluster.reload()


def _wait_for_password_refusal(url: str) -> None:
    """The server re-reads pg_hba.conf shortly after the reload signal; wait for that."""
    for _ in range(100):
        try:
            psycopg.connect(url).close()
        except psycopg.OperationalError as exc:
            if "password authentication failed" in str(exc):
                return
        time.sleep(0.05)
    raise AssertionError("the cluster never asked for a password")


def test_a_refused_password_is_one_line_without_the_password(password_url: str) -> None:
    line = one_line(eventreg("migrate", DATABASE_URL=password_url), 1)
    assert "refused the password" in line
    assert 'password authentication failed for user "postgres"' in line
    assert "wrong-secret" not in line


# -- admin create ---------------------------------------------------------------------------
def test_admin_create_prints_the_first_admin_with_its_token(database_url: str) -> None:
    args = ("admin", "create", "--name", "Ada Admin", "--email", "ada@example.org")
    result = eventreg(*args, DATABASE_URL=database_url)
    assert result.returncode == 0, result.stderr
    admin = json.loads(result.stdout)
    assert (admin["role"], admin["email"]) == ("admin", "ada@example.org")
    assert admin["token"].startswith("evr_")
    again = one_line(eventreg(*args, DATABASE_URL=database_url), 1, after=1)  # after "schema…"
    assert again == "eventreg: admin create: a user with email 'ada@example.org' already exists"


def test_admin_create_checks_the_email_before_anything_starts() -> None:
    result = eventreg(
        "admin", "create", "--name", "A", "--email", "nope", DATABASE_URL=closed_url()
    )
    assert one_line(result, 2) == "eventreg: admin create: email must look like name@example.org"


# -- the port: exit 1 ----------------------------------------------------------------------
def test_a_port_in_use_is_said_before_serving(database_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = eventreg("serve", DATABASE_URL=database_url, PORT=str(port))
    assert one_line(result, 1).startswith(f"eventreg: PORT {port} on 127.0.0.1 is already in use")


# -- the embedded server -------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_the_embedded_server_keeps_its_port_across_restarts(embedded_data_dir: Path) -> None:
    first, _ = devdb.start_embedded()
    devdb.stop_embedded()
    again, _ = devdb.start_embedded()
    devdb.stop_embedded()
    assert again == first


@pytest.mark.timeout(120)
def test_a_kept_port_taken_by_another_program_is_named(embedded_data_dir: Path) -> None:
    devdb.start_embedded()
    devdb.stop_embedded()
    port = devdb.embedded().kept_port()
    assert port is not None
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        result = eventreg("migrate", EVENTREG_DATA_DIR=str(embedded_data_dir))
    line = one_line(result, 1, after=1)  # after "DATABASE_URL is unset: using …"
    assert f"127.0.0.1:{port}, the port of the PostgreSQL in {embedded_data_dir / 'pg'}" in line
    assert "is taken by another program" in line


def _wait_for_health(url: str, status: int) -> None:
    for _ in range(300):
        if spawn.probe(url) == status:
            return
        time.sleep(0.1)
    raise AssertionError(f"{url}/health never answered {status}")


@pytest.mark.timeout(180)
def test_db_stop_refuses_while_serve_uses_it_and_force_stops_it(embedded_data_dir: Path) -> None:
    server = spawn.start(timeout=60)  # `python -m eventreg serve` on the embedded server
    dir_env = {"EVENTREG_DATA_DIR": str(embedded_data_dir)}
    try:
        line = one_line(eventreg("db-stop", **dir_env), 1)
        assert f"in use by `python -m eventreg serve` (pid {server.pid})" in line
        assert "--force" in line
        assert spawn.probe(server.url) == 200  # untouched

        forced = eventreg("db-stop", "--force", **dir_env)
        assert forced.returncode == 0, forced.stderr
        assert devdb.embedded().running_port() is None
        assert spawn.probe(server.url) == 503

        # Started again by another command, on the same port: the server recovers, and that
        # command leaves the database running for the server, which still owns it.
        migrated = eventreg("migrate", **dir_env)
        assert migrated.returncode == 0, migrated.stderr
        _wait_for_health(server.url, 200)
        created = httpx.post(f"{server.url}/api/v1/users",
                             json={"name": "Back", "email": "back@example.com"})  # fmt: skip
        assert created.status_code == 201
    finally:
        assert server.stop() == 0
    assert devdb.embedded().running_port() is None  # serve stopped it on the way out
    assert eventreg("db-stop", **dir_env).returncode == 0  # nothing to stop is not an error
