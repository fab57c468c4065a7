"""Users: create, read, change and (soft-)delete.

Authorization: a user is visible only to themselves and to admins; to anyone else it is
missing (the same 404 as an id that does not exist), so ids cannot be probed. Only an
admin makes organizers or admins, or changes a role.
"""

from __future__ import annotations

import asyncpg

from eventreg import sql
from eventreg.caller import Caller
from eventreg.db import Conn, atomic, registrations, rows, tokens
from eventreg.errors import EmailTaken, Forbidden, OrganizerHasEvents, UserNotFound
from eventreg.structs import NewUser, TokenRequest, User, UserPatch, given

Q = sql.load("users")
FIRST_TOKEN = TokenRequest(name="first token")


def _email_taken(email: str | None) -> EmailTaken:
    return EmailTaken(f"a user with email {email!r} already exists", field="email")


def _visible(caller: Caller, user_id: int) -> None:
    if not caller.may_act_for(user_id):
        raise UserNotFound(f"user {user_id} does not exist")


async def create(conn: Conn, caller: Caller, new: NewUser) -> User:
    """Sign-up makes attendees; with tokens on, the answer carries the first token."""
    if new.role != "attendee" and not caller.admin:
        raise Forbidden(f"only an admin may create a user with role {new.role!r}", field="role")
    async with atomic(conn):
        try:
            row = await conn.fetchrow(Q["insert_user"], new.name, new.email, new.role)
        except asyncpg.UniqueViolationError:
            raise _email_taken(new.email) from None
        assert row is not None
        if caller.unrestricted:  # open mode: the reference's answer, no token
            return rows.user(row)
        token = await tokens.issue(conn, row["id"], FIRST_TOKEN)
    return rows.user(row, token=token.token or None)


async def get(conn: Conn, caller: Caller, user_id: int) -> User:
    _visible(caller, user_id)
    row = await conn.fetchrow(Q["get_user"], user_id)
    if row is None:
        raise UserNotFound(f"user {user_id} does not exist")
    return rows.user(row)


async def me(conn: Conn, caller: Caller) -> User:
    if caller.user_id is None:  # open mode has no "me"
        raise UserNotFound("there is no signed-in user without a token")
    return await get(conn, caller, caller.user_id)


async def list_page(conn: Conn, caller: Caller, after: int, limit: int) -> list[User]:
    """An admin lists everyone; anyone else, themselves."""
    only = None if caller.admin else caller.user_id
    return [rows.user(r) for r in await conn.fetch(Q["list_users"], after, limit, only)]


async def update(conn: Conn, caller: Caller, user_id: int, patch: UserPatch) -> User:
    """Change only the given fields. An organizer with live events cannot stop being one."""
    _visible(caller, user_id)
    name, email, role = given(patch.name), given(patch.email), given(patch.role)
    async with atomic(conn):
        locked = await conn.fetchrow(Q["lock_user"], user_id)
        if locked is None:
            raise UserNotFound(f"user {user_id} does not exist")
        if role not in (None, locked["role"]) and not caller.admin:
            raise Forbidden("only an admin may change a role", field="role")
        if role is not None and role != "organizer" and locked["role"] == "organizer":
            await _refuse_if_organizing(conn, user_id)
        try:
            row = await conn.fetchrow(Q["update_user"], user_id, name, email, role)
        except asyncpg.UniqueViolationError:
            raise _email_taken(email) from None
    assert row is not None
    return rows.user(row)


async def delete(conn: Conn, caller: Caller, user_id: int) -> None:
    """Soft-delete; the user's registrations are cancelled (each seat going to the head of
    its event's queue) and their tokens revoked, in one transaction."""
    _visible(caller, user_id)
    async with atomic(conn):
        if await conn.fetchrow(Q["lock_user"], user_id) is None:
            raise UserNotFound(f"user {user_id} does not exist")
        await _refuse_if_organizing(conn, user_id)
        for event in await conn.fetch(Q["lock_events_of_user_registrations"], user_id):
            await registrations.release(conn, event["id"], user_id, waiting=event["waitlisted"])
        await tokens.revoke_all_of(conn, user_id)
        await conn.execute(Q["soft_delete_user"], user_id)


async def _refuse_if_organizing(conn: Conn, user_id: int) -> None:
    if await conn.fetchval(Q["organizes_live_events"], user_id):
        raise OrganizerHasEvents(f"user {user_id} organizes live events; delete them first")
