"""`python -m eventreg serve` as a child process on a free loopback port.

The load script uses it when nothing answers at its URL, and the benchmark always does, so
both drive the server exactly the way a user runs it. Stopping is a SIGTERM, which lets
uvicorn drain and then lets `serve` stop the embedded database it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from eventreg.pgcluster import free_port

HOST = "127.0.0.1"


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, wait for the graceful exit; SIGKILL only if it hangs. Returns the exit
        code. The log is deleted after a clean exit and kept (path printed) otherwise."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.process.returncode == 0:
            self.log_path.unlink(missing_ok=True)
        else:
            print(f"server log kept: {self.log_path}", file=sys.stderr)
        return self.process.returncode


def start(
    *, workers: int = 1, database_url: str | None = None, timeout: float = 90,
    env: Mapping[str, str] | None = None,
) -> Server:  # fmt: skip
    """Start `serve` and wait until /health answers 200 (the database is reachable).
    `env` adds to (or overrides) our environment, e.g. DB_POOL_MAX."""
    port = free_port()
    child_env = {**os.environ, "HOST": HOST, "PORT": str(port), "ACCESS_LOG": "0",
                 "WEB_CONCURRENCY": str(workers), **(env or {})}  # fmt: skip
    if database_url:  # else $DATABASE_URL if set, or the embedded database
        child_env["DATABASE_URL"] = database_url
    with tempfile.NamedTemporaryFile(prefix="eventreg-serve-", suffix=".log", delete=False) as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "eventreg", "serve"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=child_env,
            start_new_session=True,  # our Ctrl-C reaches us; we stop the server in order
        )  # fmt: skip
    server = Server(f"http://{HOST}:{port}", process, Path(log.name), dict(env or {}))
    try:
        wait_healthy(server, timeout)
    except BaseException:
        server.stop()
        raise
    return server


def wait_healthy(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the server exited early:\n{server.log_tail()}")
        if probe(server.url) == 200:
            return
        time.sleep(0.1)
    raise RuntimeError(
        f"the server did not become healthy in {timeout:.0f} s:\n{server.log_tail()}"
    )


def probe(url: str, path: str = "/health", timeout: float = 2.0) -> int | None:
    """The HTTP status `url` + `path` answers with, or None when nothing answers there."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + path, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return None
