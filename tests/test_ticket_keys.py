"""Ticket keys (issue 9): where the signing key comes from, make run's key file, rotation
with retired keys, and `python -m eventreg ticket verify` working offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from eventreg.app import create_app
from eventreg.config import ConfigError, Settings
from eventreg.ticketcodes import (
    Keyring,
    b64url,
    create_key_file,
    load_keyring,
    new_private_key,
    public_bytes,
    seed_of,
)
from tests.factories import make_event, make_user, register
from tests.live_server import serve

API = "/api/v1"


def test_make_runs_key_file_is_made_once_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "data" / "ticket-key.pem"
    first = load_keyring("", str(path), True, ())
    assert path.stat().st_mode & 0o777 == 0o600  # the owner's only
    assert load_keyring("", str(path), True, ()).current_kid == first.current_kid
    with ThreadPoolExecutor(8) as pool:  # workers starting at once: one key wins, all read it
        made = list(pool.map(create_key_file, [tmp_path / "race.pem"] * 8))
    assert made.count(True) == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_settings_choose_the_key_and_refuse_a_host_without_one(tmp_path: Path) -> None:
    base = {"DATABASE_URL": "postgresql://x/y", "EVENTREG_DATA_DIR": str(tmp_path)}
    local = Settings.from_env(base)
    assert (local.ticket_key_file, local.ticket_key_create) == (
        str(tmp_path / "ticket-key.pem"), True,
    )  # fmt: skip
    named = Settings.from_env({**base, "TICKET_KEY_FILE": "/keys/k.pem"})
    assert (named.ticket_key_file, named.ticket_key_create) == ("/keys/k.pem", False)
    seed = seed_of(new_private_key())
    given = Settings.from_env({**base, "HOST": "0.0.0.0", "TICKET_SIGNING_KEY": seed})
    assert given.ticket_signing_key == seed
    assert seed not in repr(given)  # the key never reaches a log through the settings
    with pytest.raises(ConfigError, match="needs TICKET_KEY_FILE or TICKET_SIGNING_KEY"):
        Settings.from_env({**base, "HOST": "0.0.0.0"})
    with pytest.raises(ValueError, match="ticket keygen"):
        load_keyring("", str(tmp_path / "missing.pem"), False, ())


async def test_rotation_old_codes_verify_until_their_key_is_removed(database_url: str) -> None:
    old, new = new_private_key(), new_private_key()
    retired = b64url(public_bytes(old.public_key()))

    def app(seed: str, *retired_keys: str) -> LifespanManager:
        return LifespanManager(create_app(Settings(
            database_url=database_url, ticket_signing_key=seed, ticket_retired_keys=retired_keys,
        )))  # fmt: skip

    async with app(seed_of(old)) as before:
        c = httpx.AsyncClient(transport=httpx.ASGITransport(app=before.app), base_url="http://t")
        event = (await make_event(c, capacity=5))["id"]
        people = [(await make_user(c))["id"] for _ in range(2)]
        regs = [(await register(c, p, event)).json()["id"] for p in people]
        old_codes = [(await c.get(f"{API}/registrations/{r}/ticket")).json()["code"] for r in regs]
    async with app(seed_of(new), retired) as after:
        c = httpx.AsyncClient(transport=httpx.ASGITransport(app=after.app), base_url="http://t")
        keys = (await c.get("/.well-known/ticket-keys")).json()["keys"]
        assert [k["status"] for k in keys] == ["current", "retired"]
        assert keys[1]["x"] == retired
        scan = await c.post(f"{API}/events/{event}/check-ins", json={"code": old_codes[0]})
        assert scan.status_code == 201  # signed by the retired key: still genuine
        fresh = (await c.get(f"{API}/registrations/{regs[1]}/ticket")).json()["code"]
        assert fresh != old_codes[1]
        assert fresh.split(".")[1] == keys[0]["kid"]  # new codes carry the new key's id
    async with app(seed_of(new)) as removed:
        c = httpx.AsyncClient(transport=httpx.ASGITransport(app=removed.app), base_url="http://t")
        scan = await c.post(f"{API}/events/{event}/check-ins", json={"code": old_codes[1]})
        assert (scan.status_code, scan.json()["code"]) == (422, "invalid_ticket")
        assert "unknown key" in scan.json()["detail"]
        assert (await c.post(f"{API}/events/{event}/check-ins", json={"code": fresh})).is_success


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventreg", "ticket", *args],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "DATABASE_URL": ""},  # nothing to reach: it works offline
    )  # fmt: skip


def test_cli_verifies_offline_and_says_why_a_code_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    made = _cli("keygen", str(key))
    assert made.returncode == 0, made.stderr
    assert _cli("keygen", str(key)).returncode == 1  # never overwritten
    assert _cli("keygen", str(key), "--if-missing").returncode == 0
    keys = load_keyring("", str(key), False, ())
    (tmp_path / "keys.json").write_text(json.dumps(keys.jwks()))
    code = keys.sign(42, 7)
    ok = _cli("verify", code, "--keys", str(tmp_path / "keys.json"))
    assert (ok.returncode, ok.stdout.strip()) == (
        0, f"valid: registration 42, event 7, signed by key {keys.current_kid}",
    )  # fmt: skip
    other = Keyring.of(new_private_key())
    forged = code.rsplit(".", 1)[0] + "." + other.sign(42, 7).rsplit(".", 1)[1]
    cases = {
        "2" + code[1:]: "rejected: bad format: unknown format version '2'",
        other.sign(42, 7): "rejected: unknown key:",
        forged: "rejected: bad signature:",
        code.replace(".42.", ".43."): "rejected: bad signature:",
        code[:-1]: "rejected: bad format:",
    }
    for bad, said in cases.items():
        result = _cli("verify", bad, "--keys", str(tmp_path / "keys.json"))
        assert result.returncode == 1
        assert result.stdout.startswith(said), result.stdout
    missing = _cli("verify", code, "--keys", str(tmp_path / "nope.json"))
    assert missing.returncode == 2


def test_cli_reads_the_keys_from_the_servers_well_known_url(database_url: str) -> None:
    seed = seed_of(new_private_key())
    keys = load_keyring(seed, "", False, ())
    with serve(database_url, TICKET_SIGNING_KEY=seed) as base:
        result = _cli("verify", keys.sign(5, 6), "--keys", f"{base}/.well-known/ticket-keys")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("valid: registration 5, event 6")
