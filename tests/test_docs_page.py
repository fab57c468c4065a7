"""The /docs page in a real browser: headless Chromium loads it from a live server and
every operation of /openapi.json must be on the page (issue 13, item 1).

Chromium is Debian's `chromium` package. When it is missing and we are root (CI, a fresh
machine), the fixture installs it with apt-get; otherwise the test is skipped and says
why. `DOCS_SCREENSHOT=docs/api-docs.png` also saves the README's screenshot.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from eventreg.openapi import document, tag_of
from eventreg.routes import RESOURCES
from tests.live_server import serve

pytestmark = pytest.mark.timeout(900)  # the first run may install Chromium

APT = ["apt-get", "-o", "DPkg::Lock::Timeout=600", "-q", "-y"]


@pytest.fixture(scope="session")
def chromium() -> str:
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0:
        pytest.skip("chromium is not installed, and only root may apt-get install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    tried = subprocess.run([*APT, "install", "chromium"], capture_output=True, text=True, env=env)
    if tried.returncode != 0:  # an old or empty package list: refresh it once
        subprocess.run([*APT, "update"], capture_output=True, text=True, env=env)
        tried = subprocess.run(
            [*APT, "install", "chromium"], capture_output=True, text=True, env=env
        )
    found = shutil.which("chromium")
    if not found:
        pytest.skip(f"apt-get could not install chromium:\n{tried.stdout[-800:]}{tried.stderr}")
    return found


@pytest.fixture
def docs_url(database_url: str) -> Iterator[str]:
    with serve(database_url) as base:
        yield f"{base}/docs"


def browse(chromium: str, url: str, *args: str) -> str:
    """Chromium, headless, lets the page's scripts run (fetching /openapi.json) before it
    prints or shoots anything."""
    command = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--no-first-run", "--virtual-time-budget=20000", *args, url,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_every_operation_is_on_the_page(chromium: str, docs_url: str) -> None:
    dom = browse(chromium, docs_url, "--dump-dom")
    ids = set(re.findall(r'id="([^"]+)"', dom))
    shown = {i for i in ids if i.startswith("operations-") and not i.startswith("operations-tag-")}
    doc = document(RESOURCES)
    expected = {
        f"operations-{tag_of(path)}-{op['operationId']}"  # Swagger UI's id of an operation
        for path, item in doc["paths"].items()
        for op in item.values()
    }
    assert len(expected) >= 25
    assert shown == expected, f"missing {expected - shown}, unexpected {shown - expected}"
    if target := os.environ.get("DOCS_SCREENSHOT"):
        browse(chromium, docs_url, "--hide-scrollbars", "--window-size=1280,1400",
               f"--screenshot={Path(target).resolve()}")  # fmt: skip


def test_the_page_needs_nothing_from_elsewhere(docs_url: str) -> None:
    """Every file the page loads is ours, and the policy forbids loading any other."""
    page = httpx.get(docs_url, timeout=10)
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy
    assert "script-src 'self';" in policy
    refs = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert refs
    assert all(not re.match(r"[a-z]+:|//", ref) for ref in refs), refs
    base = docs_url.removesuffix("/docs")
    for ref in refs:
        response = httpx.get(f"{base}/{ref}", timeout=10)
        assert response.status_code == 200, ref
        assert response.headers["cache-control"] == "public, max-age=86400"
    start = httpx.get(f"{base}/docs/start.js", timeout=10).text
    assert 'url: "openapi.json"' in start
    assert "validatorUrl: null" in start  # no badge fetched from Swagger's own site
    assert httpx.get(f"{base}/docs/../pyproject.toml", timeout=10).status_code == 404
    assert httpx.get(f"{base}/docs/index.html", timeout=10).status_code == 404
