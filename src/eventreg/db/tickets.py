"""Tickets and check-in: a registration's signed code, scans at the door, offline uploads,
undo, the summary, the revoked list, and door tokens.

Locks: a check-in share-locks its registration row and nothing else. Cancelling updates
that row, so a cancellation and a check-in of the same ticket take turns, while check-ins
of different tickets (and of different events) never wait for each other: a check-in never
locks the event row, which every registration and cancellation of the event queues for.
The unique index check_ins_one_live_per_registration makes a second live check-in
impossible, and a trigger refuses a check-in of a registration that did not hold its seat
at the scan time (migrations/0009.tickets.sql).

Authorization: the event's organizer, an admin, or a door token of this event scans and
reads the summary and the revoked list; only the organizer or an admin undoes a check-in
or makes door tokens. A ticket is read by its holder, the organizer and admins.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import asyncpg

from eventreg import sql, ticketcodes
from eventreg.caller import Caller
from eventreg.db import Conn, atomic, rows, tokens
from eventreg.db.rows import Row
from eventreg.errors import (
    ApiError,
    CheckInNotFound,
    EventNotFound,
    Forbidden,
    InvalidTicket,
    RegistrationNotFound,
    ScanInFuture,
    TicketCancelled,
    TicketNotIssued,
    WrongEvent,
)
from eventreg.structs import (
    BatchResult,
    CheckIn,
    CheckInCode,
    CheckInSummary,
    DoorTokenRequest,
    OfflineScan,
    RevokedTickets,
    Scanner,
    ScanOutcome,
    Ticket,
    Token,
)
from eventreg.ticketcodes import InvalidCode, Keyring

Q = sql.load("tickets")
REVOKED_LAG_SECONDS = 60  # how far next_since trails the clock (see revoked_since)
FUTURE_SLACK = timedelta(minutes=5)  # a scanner's clock may run this much ahead


# -- tickets ---------------------------------------------------------------------------------
async def ticket(conn: Conn, caller: Caller, keys: Keyring, registration_id: int) -> Ticket:
    """The signed code of an active registration, for its holder, the organizer or admins."""
    row = await conn.fetchrow(Q["registration_for_ticket"], registration_id)
    if row is None or not (
        caller.is_user(row["user_id"]) or caller.organizes(row["e_organizer_id"])
    ):
        raise RegistrationNotFound(f"registration {registration_id} does not exist")
    if row["status"] != "active":
        raise TicketNotIssued(f"registration {registration_id} waits for a seat; no ticket yet")
    path = f"/api/v1/registrations/{registration_id}/ticket"
    return Ticket(
        registration_id=registration_id, code=keys.sign(registration_id, row["event_id"]),
        status=row["status"], holder_name=row["holder_name"],
        event=rows.event(row, "e_", "event_id"), checked_in_at=row["checked_in_at"],
        qr_svg=f"{path}.svg", qr_png=f"{path}.png",
    )  # fmt: skip


def genuine(keys: Keyring, code: str, event_id: int) -> ticketcodes.Ticket:
    """The ticket a code carries, if it is genuine and for this event."""
    try:
        found = keys.verify(code)
    except InvalidCode as exc:
        raise InvalidTicket(f"not a genuine ticket: {exc}", field="code") from None
    if found.event_id != event_id:
        raise WrongEvent(f"this ticket is for event {found.event_id}, not event {event_id}")
    return found


async def _may_scan(conn: Conn, caller: Caller, event_id: int) -> None:
    organizer = await conn.fetchval(Q["event_for_check_in"], event_id)
    if organizer is None:
        raise EventNotFound(f"event {event_id} does not exist")
    if not caller.checks_in_at(event_id, organizer):
        raise Forbidden(f"only the organizer of event {event_id}, an admin or its door tokens")


def _admissible(row: Row | None, found: ticketcodes.Ticket, scanned_at: datetime | None) -> str:
    """The holder's name if the registration held its seat at `scanned_at` (None: now)."""
    rid = found.registration_id
    if row is None or row["event_id"] != found.event_id:
        raise InvalidTicket(f"not a genuine ticket: no registration {rid}", field="code")
    if row["status"] == "waitlisted":
        raise TicketNotIssued(f"registration {rid} waits for a seat; it has no ticket")
    cancelled = row["status"] == "cancelled"
    if cancelled and (scanned_at is None or row["cancelled_at"] <= scanned_at):
        when = row["cancelled_at"].isoformat(timespec="seconds")
        raise TicketCancelled(f"registration {rid} was cancelled at {when}")
    name: str = row["holder_name"]
    return name


# -- scans -------------------------------------------------------------------------------
async def check_in(conn: Conn, caller: Caller, keys: Keyring, event_id: int, code: str) -> CheckIn:
    """A scan at the door: the first (`checked_in`) or a later one (`already_checked_in`,
    with the first scan's time and scanner)."""
    await _may_scan(conn, caller, event_id)
    found = genuine(keys, code, event_id)
    async with atomic(conn):
        row = await conn.fetchrow(Q["share_lock_registration"], found.registration_id)
        holder = _admissible(row, found, None)
        for _ in range(3):  # a first scan undone between our two statements: try again
            try:
                added = await conn.fetchrow(
                    Q["insert_check_in"], found.registration_id, event_id, caller.token_id
                )
            except asyncpg.CheckViolationError:  # the trigger: unreachable under our lock
                rid = found.registration_id
                raise TicketCancelled(f"registration {rid} holds no seat") from None
            if added is not None:
                return _check_in(added, "checked_in", holder)
            first = await conn.fetchrow(Q["live_check_in"], found.registration_id)
            if first is not None:
                return _check_in(first, "already_checked_in", holder)
    raise TicketCancelled(f"registration {found.registration_id} could not be checked in")


def _check_in(row: Row, code: CheckInCode, holder: str) -> CheckIn:
    scanner = None
    if row["scanned_by_token_id"] is not None:
        scanner = Scanner(row["scanned_by_token_id"], row["token_name"], row["token_user_id"])
    return CheckIn(
        code=code, id=row["id"], registration_id=row["registration_id"],
        event_id=row["event_id"], holder_name=holder, checked_in_at=row["scanned_at"],
        recorded_at=row["recorded_at"], source=row["source"], scanned_by=scanner,
    )  # fmt: skip


async def upload(
    conn: Conn, caller: Caller, keys: Keyring, event_id: int, scans: Sequence[OfflineScan]
) -> BatchResult:
    """Scans made offline, in one transaction: an outcome per scan, in order. The earliest
    scan of a ticket is its check-in, so the same upload twice changes nothing."""
    await _may_scan(conn, caller, event_id)
    latest = datetime.now(UTC) + FUTURE_SLACK
    outcomes: list[ScanOutcome | None] = [None] * len(scans)
    pending: list[tuple[int, ticketcodes.Ticket, datetime]] = []
    for index, scan in enumerate(scans):
        try:
            found = genuine(keys, scan.code, event_id)
            if scan.scanned_at > latest:
                raise ScanInFuture("scanned_at is ahead of the server's clock by over 5 min")
        except ApiError as exc:
            outcomes[index] = _refused(index, exc)
        else:
            pending.append((index, found, scan.scanned_at))
    async with atomic(conn):
        ids = sorted({found.registration_id for _, found, _ in pending})
        locked = {r["id"]: r for r in await conn.fetch(Q["share_lock_registrations"], ids)}
        for index, found, scanned_at in pending:
            outcomes[index] = await _record(conn, caller, index, found, scanned_at, locked)
    return _batch(event_id, [o for o in outcomes if o is not None])


async def _record(
    conn: Conn, caller: Caller, index: int, found: ticketcodes.Ticket, scanned_at: datetime,
    locked: dict[int, Row],
) -> ScanOutcome:  # fmt: skip
    rid = found.registration_id
    try:
        holder = _admissible(locked.get(rid), found, scanned_at)
    except ApiError as exc:
        return _refused(index, exc, rid)
    for _ in range(3):  # a first scan undone between our two statements: try again
        try:
            row = await conn.fetchrow(
                Q["record_offline_scan"], rid, found.event_id, scanned_at, caller.token_id
            )
        except asyncpg.CheckViolationError:  # the trigger: unreachable under our lock
            raise TicketCancelled(f"registration {rid} held no seat when scanned") from None
        if row is not None:
            return ScanOutcome(index, 201, "checked_in", rid, _check_in(row, "checked_in", holder))
        if (first := await conn.fetchrow(Q["live_check_in"], rid)) is not None:
            done = _check_in(first, "already_checked_in", holder)
            return ScanOutcome(index, 200, "already_checked_in", rid, done)
    raise TicketCancelled(f"registration {rid} could not be checked in")


def _refused(index: int, exc: ApiError, registration_id: int | None = None) -> ScanOutcome:
    if registration_id is None:
        return ScanOutcome(index, exc.status, exc.code, detail=exc.detail)
    return ScanOutcome(index, exc.status, exc.code, registration_id, detail=exc.detail)


def _batch(event_id: int, outcomes: list[ScanOutcome]) -> BatchResult:
    first = sum(o.code == "checked_in" for o in outcomes)
    again = sum(o.code == "already_checked_in" for o in outcomes)
    return BatchResult(event_id, first, again, len(outcomes) - first - again, outcomes)


# -- a registration's check-in -------------------------------------------------------------
async def get_check_in(conn: Conn, caller: Caller, registration_id: int) -> CheckIn:
    """The live check-in, for whoever may read the registration."""
    row = await conn.fetchrow(Q["live_check_in"], registration_id)
    owners = row or await conn.fetchrow(Q["registration_owners"], registration_id)
    if owners is None or not (
        caller.is_user(owners["user_id"]) or caller.organizes(owners["organizer_id"])
    ):
        raise RegistrationNotFound(f"registration {registration_id} does not exist")
    if row is None:
        raise CheckInNotFound(f"registration {registration_id} is not checked in")
    return _check_in(row, "checked_in", row["holder_name"])


async def undo(conn: Conn, caller: Caller, registration_id: int) -> None:
    """Undo a mis-scan: the ticket may be scanned again. The organizer or an admin."""
    owners = await conn.fetchrow(Q["registration_owners"], registration_id)
    if owners is None or not caller.organizes(owners["organizer_id"]):
        raise RegistrationNotFound(f"registration {registration_id} does not exist")
    if await conn.fetchval(Q["undo_check_in"], registration_id, caller.token_id) is None:
        raise CheckInNotFound(f"registration {registration_id} is not checked in")


# -- the door's view of an event -----------------------------------------------------------
async def summary(conn: Conn, caller: Caller, event_id: int) -> CheckInSummary:
    await _may_scan(conn, caller, event_id)
    row = await conn.fetchrow(Q["summary"], event_id)
    assert row is not None
    registered, checked_in = row["registered"], row["checked_in"]
    return CheckInSummary(event_id, registered, checked_in, registered - checked_in, row["as_of"])


async def revoked(
    conn: Conn, caller: Caller, event_id: int, since: datetime | None
) -> RevokedTickets:
    await _may_scan(conn, caller, event_id)
    row = await conn.fetchrow(Q["revoked_since"], event_id, since, REVOKED_LAG_SECONDS)
    assert row is not None
    return RevokedTickets(event_id, since, row["next_since"], list(row["ids"]))


# -- door tokens -------------------------------------------------------------------------------
async def _may_manage(conn: Conn, caller: Caller, event_id: int) -> None:
    organizer = await conn.fetchval(Q["event_for_check_in"], event_id)
    if organizer is None:
        raise EventNotFound(f"event {event_id} does not exist")
    if not caller.organizes(organizer):
        raise Forbidden(f"only the organizer of event {event_id} or an admin")


async def issue_door_token(
    conn: Conn, caller: Caller, event_id: int, request: DoorTokenRequest
) -> Token:
    """A token that checks tickets in at this event and does nothing else; it belongs to
    its maker (who lists and revokes it like their other tokens)."""
    if caller.user_id is None:  # open mode: nobody to own it
        raise Forbidden("tokens belong to users; EVENTREG_AUTH=open has none")
    await _may_manage(conn, caller, event_id)
    secret, hashed, shown = tokens.new_secret()
    row = await conn.fetchrow(
        Q["insert_door_token"], caller.user_id, hashed, shown, request.name,
        request.expires_in_days, event_id,
    )  # fmt: skip
    assert row is not None
    return Token(**dict(row), token=secret)


async def list_door_tokens(
    conn: Conn, caller: Caller, event_id: int, after: int, limit: int
) -> list[Token]:
    await _may_manage(conn, caller, event_id)
    return [
        Token(**dict(r)) for r in await conn.fetch(Q["list_door_tokens"], event_id, after, limit)
    ]
