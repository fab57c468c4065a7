"""Every request and response body, as msgspec structs with their constraints.

Inputs forbid unknown fields, so read-only fields (`id`, `available_seats`, `created_at`) and
nested objects are rejected with 422 naming the field rather than silently ignored.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal, TypeVar, get_args

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

MAX_ID = 2**63 - 1  # ids are PostgreSQL bigint

Id = Annotated[int, Meta(ge=1, le=MAX_ID, description="A positive bigint id")]
# Whitespace as str.strip() and Python's `\s` see it, spelled out so that the patterns mean
# the same in Python (which enforces them) and in ECMA-262 (the OpenAPI document's dialect,
# whose `\s` differs: it lacks \x1c-\x1f and \x85 and adds \ufeff).
WS = r"\t\n\v\f\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# Characters that show nothing on screen: whitespace, C0/C1 controls, Unicode format
# characters (category Cf: zero-width spaces and joiners, bidi marks, tags), variation
# selectors, and letters that render blank (Hangul fillers, Khmer inherent vowels, the
# braille blank). Written out rather than derived from unicodedata, so the rule does not
# move with the Python version's Unicode tables.
INVISIBLE = (
    WS + r"\x01-\x08\x0e-\x1b\x7f-\x84\x86-\x9f\xad\u034f\u0600-\u0605\u061c\u06dd"
    r"\u070f\u0890\u0891\u08e2\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f"
    r"\u202a-\u202e\u2060-\u2064\u2066-\u206f\u2800\u3164\ufe00-\ufe0f\ufeff\uffa0"
    r"\ufff9-\ufffb"
    # Beyond the BMP as the characters themselves: ECMA-262 has no \U escape.
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f\U000e0100-\U000e01ef"
)
# Text must hold a visible character and no NUL (PostgreSQL cannot store it). `_clean`
# enforces that with readable messages; the pattern states the same rule in the OpenAPI
# document, so generated "valid" text is text the API really accepts (tests/test_openapi.py
# checks that the two agree).
TEXT_PATTERN = rf"^[{INVISIBLE}]*[^{INVISIBLE}\x00][^\x00]*$"
_VISIBLE = re.compile(rf"[^{INVISIBLE}\x00]")
EMAIL_PATTERN = rf"^[^@{WS}\x00]+@[^@{WS}\x00]+\.[^@{WS}\x00]+$"
Text = Annotated[
    str, Meta(min_length=1, max_length=255, extra_json_schema={"pattern": TEXT_PATTERN})
]
Email = Annotated[str, Meta(min_length=3, max_length=255, pattern=EMAIL_PATTERN)]
Capacity = Annotated[int, Meta(ge=1, le=1_000_000)]
Role = Literal["attendee", "organizer", "admin"]
# Output only. msgspec writes RFC 3339 but documents a bare string; the format lets
# schemathesis check every timestamp it receives.
Timestamp = Annotated[datetime, Meta(extra_json_schema={"format": "date-time"})]
RegistrationStatus = Literal["active", "waitlisted", "cancelled"]
LiveStatus = Literal["active", "waitlisted"]  # what lists filter on
# Input: an RFC 3339 instant with its offset (a time without one is ambiguous).
Instant = Annotated[datetime, Meta(tz=True, extra_json_schema={"format": "date-time"})]

T = TypeVar("T")

# What a client reads when a value does not fit (see eventreg.messages).
PATTERN_RULES = {
    "email": "email must look like name@example.org",
    "name": "name must contain a visible character and no NUL",
    "title": "title must contain a visible character and no NUL",
}
CHOICES: dict[str, tuple[str, ...]] = {
    "role": get_args(Role),
    "status": get_args(RegistrationStatus),
}


def given(value: T | UnsetType) -> T | None:
    """A patch field's value, or None when the client left it out (SQL keeps the column)."""
    return None if isinstance(value, UnsetType) else value


def _clean(struct: Struct, *fields: str) -> None:
    """Trim text fields in place; reject blanks and NUL (PostgreSQL cannot store it)."""
    for name in fields:
        value = getattr(struct, name)
        if not isinstance(value, str):
            continue
        if "\x00" in value:
            raise ValueError(f"`{name}` must not contain NUL characters")
        trimmed = value.strip()
        if not trimmed:
            raise ValueError(f"`{name}` must not be blank")
        if not _VISIBLE.search(trimmed):
            raise ValueError(f"`{name}` must contain a visible character, not only blank ones")
        msgspec.structs.force_setattr(struct, name, trimmed)


# -- users ---------------------------------------------------------------------------------
class NewUser(Struct, frozen=True, forbid_unknown_fields=True):
    name: Text
    email: Email
    role: Role = "attendee"

    def __post_init__(self) -> None:
        _clean(self, "name", "email")


class UserPatch(Struct, frozen=True, forbid_unknown_fields=True):
    name: Text | UnsetType = UNSET
    email: Email | UnsetType = UNSET
    role: Role | UnsetType = UNSET

    def __post_init__(self) -> None:
        _clean(self, "name", "email")


class User(Struct, frozen=True):
    id: int
    name: str
    email: str
    role: Role
    created_at: Timestamp
    updated_at: Timestamp
    # Only in the answer to creating a user with EVENTREG_AUTH=tokens: its first token,
    # shown this once.
    token: str | UnsetType = UNSET


# -- events --------------------------------------------------------------------------------
class NewEvent(Struct, frozen=True, forbid_unknown_fields=True):
    title: Text
    capacity: Capacity
    organizer_id: Id
    registration_opens_at: Instant | None = None
    registration_closes_at: Instant | None = None
    cancellation_closes_at: Instant | None = None

    def __post_init__(self) -> None:
        _clean(self, "title")
        window_in_order(self.registration_opens_at, self.registration_closes_at)


def window_in_order(opens: datetime | None, closes: datetime | None) -> None:
    if opens is not None and closes is not None and opens >= closes:
        raise ValueError("`registration_closes_at` must be after `registration_opens_at`")


class EventPatch(Struct, frozen=True, forbid_unknown_fields=True):
    """Only the fields given change; a window field given as null removes that bound."""

    title: Text | UnsetType = UNSET
    capacity: Capacity | UnsetType = UNSET
    organizer_id: Id | UnsetType = UNSET
    registration_opens_at: Instant | UnsetType | None = UNSET
    registration_closes_at: Instant | UnsetType | None = UNSET
    cancellation_closes_at: Instant | UnsetType | None = UNSET

    def __post_init__(self) -> None:
        _clean(self, "title")


class Event(Struct, frozen=True):
    id: int
    title: str
    capacity: int
    available_seats: int
    organizer_id: int
    created_at: Timestamp
    updated_at: Timestamp
    organizer: User | UnsetType = UNSET
    waitlisted: int | UnsetType = UNSET  # how many wait for a seat
    registration_opens_at: Timestamp | UnsetType = UNSET  # absent: no bound
    registration_closes_at: Timestamp | UnsetType = UNSET
    cancellation_closes_at: Timestamp | UnsetType = UNSET


# -- registrations -------------------------------------------------------------------------
class RegistrationRequest(Struct, frozen=True, forbid_unknown_fields=True):
    """The body of DELETE (cancel, or leave the queue) /api/v1/registrations."""

    user_id: Id
    event_id: Id


class NewRegistration(Struct, frozen=True, forbid_unknown_fields=True):
    """The body of POST /api/v1/registrations. With `waitlist`, a full event queues the
    user (202) instead of refusing (409 event_full)."""

    user_id: Id
    event_id: Id
    waitlist: bool = False


class Registration(Struct, frozen=True):
    id: int
    user_id: int
    event_id: int
    status: RegistrationStatus
    created_at: Timestamp
    updated_at: Timestamp
    user: User | UnsetType = UNSET
    event: Event | UnsetType = UNSET
    waitlist_position: int | UnsetType = UNSET  # 1 = next to get a seat; waitlisted only
    promoted_at: Timestamp | UnsetType = UNSET  # when it left the queue for a seat
    promoted_from: int | UnsetType = UNSET  # the position it was promoted from


# -- tokens --------------------------------------------------------------------------------
TokenName = Annotated[str, Meta(max_length=100)]
Days = Annotated[int, Meta(ge=1, le=3650)]


class TokenRequest(Struct, frozen=True, forbid_unknown_fields=True):
    name: TokenName = ""
    expires_in_days: Days | None = None  # None: never expires


class Token(Struct, frozen=True):
    """A token as listed: never its secret. `prefix` is the secret's first characters."""

    id: int
    name: str
    prefix: str
    created_at: Timestamp
    expires_at: Timestamp | None
    last_used_at: Timestamp | None
    revoked_at: Timestamp | None
    token: str | UnsetType = UNSET  # the secret, only in the answer that made it
    check_in_event_id: int | None = None  # a door token's event; null: an ordinary token


# -- tickets and check-in (issue 9) ----------------------------------------------------------
# Longer than any genuine code (eventreg.ticketcodes); the format itself is checked there,
# so a malformed code is a 422 invalid_ticket with the reason, not a schema error.
TicketCode = Annotated[str, Meta(min_length=1, max_length=200)]
MAX_BATCH = 1000
CheckInCode = Literal["checked_in", "already_checked_in"]
ScanSource = Literal["scan", "offline"]


class Scan(Struct, frozen=True, forbid_unknown_fields=True):
    """POST /events/{id}/check-ins: a ticket read at the door now."""

    code: TicketCode


class OfflineScan(Struct, frozen=True, forbid_unknown_fields=True):
    """A scan made while offline, uploaded later: when it was read, by the scanner's clock."""

    code: TicketCode
    scanned_at: Instant


class ScanBatch(Struct, frozen=True, forbid_unknown_fields=True):
    scans: Annotated[list[OfflineScan], Meta(min_length=1, max_length=MAX_BATCH)]


class Scanner(Struct, frozen=True):
    """Who scanned: the token used and its user."""

    token_id: int
    token_name: str
    user_id: int


class CheckIn(Struct, frozen=True):
    """A ticket's check-in. `code` says what the scan that got this answer did: the first
    scan (`checked_in`) or a later one (`already_checked_in`: the time and scanner are the
    first scan's)."""

    code: CheckInCode
    id: int
    registration_id: int
    event_id: int
    holder_name: str
    checked_in_at: Timestamp  # when the first scan read the ticket
    recorded_at: Timestamp  # when the server stored it
    source: ScanSource
    scanned_by: Scanner | None  # null with EVENTREG_AUTH=open


class ScanOutcome(Struct, frozen=True, omit_defaults=True):
    """One item of a batch, in the order sent: a check-in, or the refusal a single scan would
    get (its status and code), with a sentence for a person."""

    index: int
    status: int
    code: str
    registration_id: int | UnsetType = UNSET
    check_in: CheckIn | UnsetType = UNSET
    detail: str | UnsetType = UNSET


class BatchResult(Struct, frozen=True):
    event_id: int
    checked_in: int  # items whose scan is now their ticket's first scan
    already_checked_in: int
    refused: int
    outcomes: list[ScanOutcome]


class CheckInSummary(Struct, frozen=True):
    """One snapshot: `checked_in` counts active registrations with a live check-in, so it
    never exceeds `registered`; `not_arrived` is the difference."""

    event_id: int
    registered: int
    checked_in: int
    not_arrived: int
    as_of: Timestamp


class RevokedTickets(Struct, frozen=True):
    """Registrations of the event cancelled at or after `since` (all of them without it).
    Pass `next_since` as `since` next time: it lags the clock on purpose (see docs/tickets.md), so
    some ids come twice and none is missed."""

    event_id: int
    since: Timestamp | None
    next_since: Timestamp
    registration_ids: list[int]


class Ticket(Struct, frozen=True):
    registration_id: int
    code: str
    status: RegistrationStatus
    holder_name: str
    event: Event
    checked_in_at: Timestamp | None
    qr_svg: str  # URLs of the code as a QR image
    qr_png: str


class DoorTokenRequest(Struct, frozen=True, forbid_unknown_fields=True):
    """A door token expires: in 3 days unless said otherwise, in 30 at most (phones get lost)."""

    name: TokenName = ""
    expires_in_days: Annotated[int, Meta(ge=1, le=30)] = 3


class PublicKey(Struct, frozen=True):
    """An Ed25519 public key as a JSON Web Key (RFC 8037)."""

    kty: Literal["OKP"]
    crv: Literal["Ed25519"]
    alg: Literal["EdDSA"]
    use: Literal["sig"]
    kid: str
    x: str
    status: Literal["current", "retired"]


class TicketKeys(Struct, frozen=True):
    keys: list[PublicKey]


# -- small bodies --------------------------------------------------------------------------
class Message(Struct, frozen=True):
    message: str


class Health(Struct, frozen=True):
    status: str


class Index(Struct, frozen=True):
    message: str
    version: str
    endpoints: dict[str, str]


class Problem(Struct, frozen=True, omit_defaults=True):
    """RFC 9457 problem details plus a stable machine-readable `code`."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    field: str | UnsetType = UNSET
