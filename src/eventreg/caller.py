"""Who is calling: the identity every route and db function decides with.

It sits below both layers (routes authenticate, db functions authorize against the rows
they lock), so neither imports the other for it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Caller:
    user_id: int | None = None  # None: no token
    role: str | None = None
    token_id: int | None = None
    unrestricted: bool = False  # EVENTREG_AUTH=open: every rule passes, as in the reference
    # Tickets (issue 9): a door token checks tickets in at this one event and does nothing
    # else. auth.authenticate refuses it every other operation; below, it also never counts
    # as its user, an admin or an organizer, so a rule that forgot it still refuses it.
    check_in_event_id: int | None = None

    @property
    def door(self) -> bool:
        return self.check_in_event_id is not None

    @property
    def signed_in(self) -> bool:
        return self.user_id is not None or self.unrestricted

    @property
    def admin(self) -> bool:
        return self.unrestricted or (self.role == "admin" and not self.door)

    def is_user(self, user_id: int) -> bool:
        """The caller is this user, or may act as anyone."""
        return self.unrestricted or (self.user_id == user_id and not self.door)

    def may_act_for(self, user_id: int) -> bool:
        """The user themselves or an admin."""
        return self.admin or self.is_user(user_id)

    def organizes(self, organizer_id: int) -> bool:
        """The caller is the event's organizer, or an admin."""
        return self.admin or self.is_user(organizer_id)

    def checks_in_at(self, event_id: int, organizer_id: int) -> bool:
        """The event's organizer, an admin, or a door token of this event."""
        return self.check_in_event_id == event_id if self.door else self.organizes(organizer_id)


OPEN = Caller(unrestricted=True)
ANONYMOUS = Caller()

# Who an operation admits (Access.who): anyone at all, anyone with a valid token, or,
# decided against the object, the user it belongs to, the event's organizer, an admin.
ANYONE, SIGNED_IN, SELF, ORGANIZER, ADMIN = "anyone", "signed_in", "self", "organizer", "admin"
DOOR = "door"  # a door token of the event (issue 9): only operations that list it admit one


@dataclass(frozen=True, slots=True)
class Access:
    """An operation's rule, declared in the route table: the OpenAPI document shows it and
    the authorization sweep (tests/test_authorization.py) holds the code to it."""

    who: tuple[str, ...]
    refusal: int = 403  # for a signed-in caller outside `who`: 403, or 404 if the object hides
    note: str = ""  # what the rule means, for the document

    @property
    def public(self) -> bool:
        return ANYONE in self.who


PUBLIC = Access((ANYONE,), note="anyone, without a token")
