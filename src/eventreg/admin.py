"""`python -m eventreg admin create`: the first admin, for whoever can reach the database.

Only an admin may make another admin through the API, so the first one comes from here.
"""

from __future__ import annotations

import asyncpg

from eventreg.caller import Caller
from eventreg.db import users
from eventreg.structs import NewUser, User

BOOTSTRAP = Caller(role="admin")  # the command line stands in for an admin


async def create_admin(database_url: str, name: str, email: str) -> User:
    """A new admin user; the answer carries its first token (shown this once)."""
    new = NewUser(name=name, email=email, role="admin")
    new.__post_init__()  # trims and checks, as decoding a request body would
    conn = await asyncpg.connect(database_url)
    try:
        return await users.create(conn, BOOTSTRAP, new)
    finally:
        await conn.close()
