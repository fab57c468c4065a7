"""Records to structs. Joined queries prefix the embedded object's columns (o_, u_, e_)."""

from __future__ import annotations

from typing import Any

from asyncpg import Record
from msgspec import UNSET

from eventreg.structs import Event, Registration, User

Row = Record


def user(r: Row, prefix: str = "", id_column: str = "id", token: str | None = None) -> User:
    return User(
        id=r[id_column], name=r[prefix + "name"], email=r[prefix + "email"],
        role=r[prefix + "role"], created_at=r[prefix + "created_at"],
        updated_at=r[prefix + "updated_at"], token=UNSET if token is None else token,
    )  # fmt: skip


def event(r: Row, prefix: str = "", id_column: str = "id", organizer: bool = False) -> Event:
    return Event(
        id=r[id_column], title=r[prefix + "title"], capacity=r[prefix + "capacity"],
        available_seats=r[prefix + "available_seats"], organizer_id=r[prefix + "organizer_id"],
        created_at=r[prefix + "created_at"], updated_at=r[prefix + "updated_at"],
        organizer=user(r, "o_", "organizer_id") if organizer else UNSET,
        waitlisted=_given(r, prefix + "waitlisted"),
        registration_opens_at=_given(r, prefix + "registration_opens_at"),
        registration_closes_at=_given(r, prefix + "registration_closes_at"),
        cancellation_closes_at=_given(r, prefix + "cancellation_closes_at"),
    )  # fmt: skip


def _given(r: Row, column: str) -> Any:
    """The column's value; UNSET when the query has no such column or it is NULL."""
    value = r.get(column)
    return UNSET if value is None else value


def event_with_organizer(r: Row) -> Event:
    return event(r, organizer=True)


def registration(r: Row, *, with_user: bool = False, with_event: bool = False) -> Registration:
    return Registration(
        id=r["id"], user_id=r["user_id"], event_id=r["event_id"], status=r["status"],
        created_at=r["created_at"], updated_at=r["updated_at"],
        user=user(r, "u_", "user_id") if with_user else UNSET,
        event=event(r, "e_", "event_id") if with_event else UNSET,
        waitlist_position=_given(r, "waitlist_position"),
        promoted_at=_given(r, "promoted_at"), promoted_from=_given(r, "promoted_from"),
    )  # fmt: skip
