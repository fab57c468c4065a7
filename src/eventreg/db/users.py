"""Users: create, read, change and (soft-)delete."""

from __future__ import annotations

import asyncpg

from eventreg import sql
from eventreg.db import Conn, rows
from eventreg.errors import EmailTaken, OrganizerHasEvents, UserNotFound
from eventreg.structs import NewUser, User, UserPatch, given

Q = sql.load("users")


def _email_taken(email: str | None) -> EmailTaken:
    return EmailTaken(f"a user with email {email!r} already exists", field="email")


async def create(conn: Conn, new: NewUser) -> User:
    try:
        row = await conn.fetchrow(Q["insert_user"], new.name, new.email, new.role)
    except asyncpg.UniqueViolationError:
        raise _email_taken(new.email) from None
    assert row is not None
    return rows.user(row)


async def get(conn: Conn, user_id: int) -> User:
    row = await conn.fetchrow(Q["get_user"], user_id)
    if row is None:
        raise UserNotFound(f"user {user_id} does not exist")
    return rows.user(row)


async def list_page(conn: Conn, after: int, limit: int) -> list[User]:
    return [rows.user(r) for r in await conn.fetch(Q["list_users"], after, limit)]


async def update(conn: Conn, user_id: int, patch: UserPatch) -> User:
    """Change only the given fields. An organizer with live events cannot stop being one."""
    name, email, role = given(patch.name), given(patch.email), given(patch.role)
    async with conn.transaction():
        locked = await conn.fetchrow(Q["lock_user"], user_id)
        if locked is None:
            raise UserNotFound(f"user {user_id} does not exist")
        if role == "attendee" and locked["role"] == "organizer":
            await _refuse_if_organizing(conn, user_id)
        try:
            row = await conn.fetchrow(Q["update_user"], user_id, name, email, role)
        except asyncpg.UniqueViolationError:
            raise _email_taken(email) from None
    assert row is not None
    return rows.user(row)


async def delete(conn: Conn, user_id: int) -> None:
    """Soft-delete; the user's active registrations are cancelled and their seats released."""
    async with conn.transaction():
        if await conn.fetchrow(Q["lock_user"], user_id) is None:
            raise UserNotFound(f"user {user_id} does not exist")
        await _refuse_if_organizing(conn, user_id)
        await conn.fetch(Q["lock_events_of_user_registrations"], user_id)
        await conn.execute(Q["cancel_user_registrations"], user_id)
        await conn.execute(Q["soft_delete_user"], user_id)


async def _refuse_if_organizing(conn: Conn, user_id: int) -> None:
    if await conn.fetchval(Q["organizes_live_events"], user_id):
        raise OrganizerHasEvents(f"user {user_id} organizes live events; delete them first")
