"""The OpenAPI document: its shape, its agreement with the route table, and a schemathesis run."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import msgspec
import pytest
from schemathesis.specs.openapi.definitions import OPENAPI_31

from eventreg.admin import create_admin
from eventreg.openapi import document
from eventreg.routes import RESOURCES, ROUTES, docs
from eventreg.structs import TEXT_PATTERN, NewUser
from tests.live_server import serve

ST_CONFIG = Path(__file__).with_name("schemathesis.toml")
ST_HOOKS = Path(__file__).with_name("schemathesis_hooks.py")


JSON = dict[str, Any]
DOC: JSON = document(RESOURCES)
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}


def test_document_is_valid_openapi_3_1() -> None:
    validator = jsonschema_rs.Draft202012Validator(OPENAPI_31)
    assert [e.message for e in validator.iter_errors(DOC)] == []
    assert DOC["openapi"] == "3.1.0"


def test_every_route_is_documented_and_nothing_else() -> None:
    """Except the docs page and its files, which are about the API, not part of it."""
    served = {
        (route.path, method.lower())
        for route in ROUTES
        if route not in docs.ROUTES
        for method in route.methods or ()
        if method != "HEAD"  # HEAD is GET without a body; OpenAPI leaves it implicit
    }
    documented = {(path, method) for path, item in DOC["paths"].items() for method in item}
    assert served == documented
    assert ("/openapi.json", "get") in documented


def test_operation_ids_are_unique_and_links_resolve() -> None:
    operations = [op for item in DOC["paths"].values() for op in item.values()]
    ids = [op["operationId"] for op in operations]
    assert len(ids) == len(set(ids))
    targets = [
        link["operationId"]
        for op in operations
        for response in op["responses"].values()
        for link in response.get("links", {}).values()
    ]
    assert targets
    assert set(targets) <= set(ids)


def test_every_ref_resolves() -> None:
    refs = re.findall(r'"\$ref":"#/components/schemas/([^"]+)"', msgspec.json.encode(DOC).decode())
    assert refs
    assert set(refs) <= set(DOC["components"]["schemas"])


def test_errors_are_problem_json_and_success_is_json() -> None:
    for path, item in DOC["paths"].items():
        for method, op in item.items():
            for status, response in op["responses"].items():
                media = "application/problem+json" if status >= "400" else "application/json"
                if status < "400" and path.endswith((".svg", ".png")):  # QR images (issue 9)
                    media = "image/svg+xml" if path.endswith(".svg") else "image/png"
                if path == "/metrics" and status == "200":  # the Prometheus text format
                    media = "text/plain"
                assert list(response["content"]) == [media], (method, path, status)
            statuses = set(op["responses"])
            if "requestBody" in op:
                assert {"400", "413", "415", "422"} <= statuses, (method, path)
            if "{id}" in path:
                assert {"400", "404"} <= statuses, (method, path)
            if path not in ("/", "/openapi.json", "/.well-known/ticket-keys"):
                assert "503" in statuses, (method, path)
                assert "Retry-After" in op["responses"]["503"]["headers"]


async def test_served_document_is_the_generated_one(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == msgspec.json.decode(msgspec.json.encode(DOC))


@pytest.mark.parametrize(
    "text",
    [
        "a",
        " a ",
        "\u00a0x",
        "x\u3000",
        "\ufeff",
        "\u200b",
        "é",
        "\U0001f600",
        "\x1f",
        "a\x01b",
        "",
        " ",
        "\t\n",
        "\x1c\x1d\x1e\x1f\x85",
        "\u2028\u3000",
        "a\x00",
        "\x00",
        " \x00 ",
    ],
)
def test_text_pattern_agrees_with_validation(text: str) -> None:
    """TEXT_PATTERN (in the document) accepts exactly the names NewUser accepts."""
    documented = re.search(TEXT_PATTERN, text) is not None
    try:
        msgspec.convert({"name": text, "email": "a@b.co"}, NewUser)
        accepted = True
    except msgspec.ValidationError:
        accepted = False
    assert documented == accepted


@pytest.fixture
def admin_token(database_url: str) -> str:
    admin = asyncio.run(create_admin(database_url, "Schemathesis", "st@example.org"))
    assert isinstance(admin.token, str)
    return admin.token


@pytest.fixture
def live_url(database_url: str) -> Iterator[str]:
    """uvicorn serving the app on a free loopback port, against this test's database, with
    tokens on and sign-ups not limited (the run signs up hundreds of users)."""
    with serve(database_url, EVENTREG_AUTH="tokens", RATE_SIGNUP_PER_MINUTE="0") as base:
        yield base


@pytest.mark.timeout(330)
def test_schemathesis_contract(live_url: str, admin_token: str, tmp_path: Path) -> None:
    """Every phase (coverage, fuzzing, stateful) and every check passes against the document.

    Settings live in schemathesis.toml (seed 1, 25 examples per operation, one worker). The
    run is an admin's, with tokens on; the `ignored_auth` check also sends each secured
    operation without a token and with a wrong one, and wants 401.
    `positive_data_acceptance` runs through the wrapper in schemathesis_hooks.py, which
    additionally tolerates only the two organizer-reference codes. Set ST_REPORT_DIR to keep
    the JSON and HAR reports.
    """
    reports = Path(os.environ.get("ST_REPORT_DIR") or tmp_path)
    st = [str(Path(sys.executable).with_name("st")), "--config-file", str(ST_CONFIG), "run"]
    checks = ["--checks", "all", "--exclude-checks", "positive_data_acceptance"]
    report = ["--report", "json,har", "--report-dir", str(reports)]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(ST_HOOKS)}
    started = time.monotonic()
    result = subprocess.run(
        [*st, f"{live_url}/openapi.json", *checks, *report,
         "--header", f"Authorization: Bearer {admin_token}"],
        capture_output=True, text=True, timeout=300, check=False, env=env,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    summary = msgspec.json.decode(next(reports.glob("json-*.json")).read_bytes())
    cases = summary["test_cases"]
    print(f"\nschemathesis: {cases['generated']} cases, {elapsed:.1f} s", result.stderr[-3000:])
    assert result.returncode == 0, result.stdout[-20000:]
    # Every operation but GET /openapi.json, which schemathesis leaves out as the document's
    # own location (the document tests above cover it).
    operations = sum(len(r.operations) for r in RESOURCES) - 1
    assert summary["operations"]["tested"] == summary["operations"]["total"] == operations
    phases = {name: phase["status"] for name, phase in summary["phases"].items()}
    assert phases == {
        "examples": "skip",  # the document carries no examples
        "coverage": "success",
        "fuzzing": "success",
        "stateful": "success",
    }
    assert (cases["with_failures"], cases["errored"]) == (0, 0)


@pytest.mark.timeout(60)
def test_schemathesis_catches_a_lying_document(
    live_url: str, admin_token: str, tmp_path: Path
) -> None:
    """The canary: the same run against a document that lies in three ways must fail on each.

    If this ever passes, the contract test above is blind to schema and status drift, or the
    positive_data_acceptance wrapper in schemathesis_hooks.py is not running.
    """
    lying = msgspec.json.decode(msgspec.json.encode(DOC))
    lying["components"]["schemas"]["Health"]["properties"]["status"] = {"enum": ["nope"]}
    del lying["paths"]["/api/v1/users/{id}"]["get"]["responses"]["404"]
    for parameter in lying["paths"]["/api/v1/users"]["get"]["parameters"]:
        if parameter["name"] == "limit":  # the server refuses 1001..5000 with 400
            parameter["schema"]["maximum"] = 5000
    path = tmp_path / "lying.json"
    path.write_bytes(msgspec.json.encode(lying))
    st = [str(Path(sys.executable).with_name("st")), "--config-file", str(ST_CONFIG), "run"]
    only = [f"--include-operation-id={op}" for op in ("get_health", "get_users_by_id", "get_users")]
    checks = ["--checks", "all", "--exclude-checks", "positive_data_acceptance"]
    result = subprocess.run(
        [*st, str(path), "--url", live_url, *checks, "--phases", "coverage,fuzzing",
         "--max-examples", "5", *only, "--report", "json", "--report-dir", str(tmp_path),
         "--header", f"Authorization: Bearer {admin_token}"],
        capture_output=True, text=True, timeout=50, check=False,
        env={**os.environ, "SCHEMATHESIS_HOOKS": str(ST_HOOKS)},
    )  # fmt: skip
    summary = msgspec.json.decode(next(tmp_path.glob("json-*.json")).read_bytes())
    assert result.returncode != 0
    # undocumented status, response violates schema, schema-valid request rejected (wrapper)
    assert {f["code"] for f in summary["failures"]} == {"ST103", "ST108", "ST202"}
