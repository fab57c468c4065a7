"""Bearer tokens: made, looked up by the hash of their secret, listed and revoked.

A secret is `evr_` and 43 URL-safe characters (256 random bits). Only its SHA-256 is kept:
a copy of the database lets nobody sign in. A plain hash is enough for secrets this
random; a slow password hash would only slow every cache miss.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from eventreg import sql
from eventreg.caller import Caller
from eventreg.db import Conn
from eventreg.errors import TokenNotFound
from eventreg.structs import Token, TokenRequest

Q = sql.load("tokens")
PREFIX = "evr_"
SHOWN = 8  # characters of the secret (after the prefix) kept to tell tokens apart


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


@dataclass(frozen=True, slots=True)
class Found:
    """A live token's identity, as authentication needs it."""

    token_id: int
    user_id: int
    role: str
    expires_at: datetime | None
    check_in_event_id: int | None = None  # a door token's event (issue 9)


def _new_secret() -> tuple[str, bytes, str]:
    """A secret, its hash, and the prefix kept to tell it apart in lists."""
    secret = PREFIX + secrets.token_urlsafe(32)
    return secret, digest(secret), secret[: len(PREFIX) + SHOWN]


new_secret = _new_secret  # door tokens (db/tickets.py) are made the same way


async def issue(conn: Conn, user_id: int, request: TokenRequest) -> Token:
    """A new token for the user; the answer is the only place its secret ever appears."""
    secret, hashed, shown = _new_secret()
    row = await conn.fetchrow(
        Q["insert_token"], user_id, hashed, shown, request.name, request.expires_in_days
    )
    assert row is not None
    return Token(**dict(row), token=secret)


async def replace(conn: Conn, old_digest: bytes) -> Token | None:
    """Revoke a token and give its user a new one like it (None: expired, or user gone)."""
    secret, hashed, shown = _new_secret()
    row = await conn.fetchrow(Q["replace_token"], old_digest, hashed, shown)
    return None if row is None else Token(**dict(row), token=secret)


async def authenticate(conn: Conn, secret_digest: bytes) -> Found | None:
    row = await conn.fetchrow(Q["authenticate"], secret_digest)
    if row is None:
        return None
    return Found(
        row["id"], row["user_id"], row["role"], row["expires_at"], row["check_in_event_id"]
    )


async def touch(conn: Conn, token_ids: list[int]) -> None:
    """Mark the tokens used now (at most once a minute each), in one statement whose
    commit does not wait for the disk: a lost update costs nothing."""
    await conn.execute(Q["touch_tokens"], token_ids)


async def list_page(conn: Conn, caller: Caller, after: int, limit: int) -> list[Token]:
    found = await conn.fetch(Q["list_tokens"], caller.user_id, after, limit)
    return [Token(**dict(r)) for r in found]


async def revoke(conn: Conn, caller: Caller, token_id: int) -> int:
    """The owner or an admin revokes; anyone else gets the answer for a missing token.
    Returns the owner's id."""
    only_of = None if caller.admin else caller.user_id
    owner: int | None = await conn.fetchval(Q["revoke_token"], token_id, only_of)
    if owner is None:
        raise TokenNotFound(f"token {token_id} does not exist")
    return owner


async def revoke_all_of(conn: Conn, user_id: int) -> None:
    await conn.execute(Q["revoke_user_tokens"], user_id)
