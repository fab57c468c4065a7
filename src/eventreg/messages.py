"""msgspec's validation errors, said in words a person can act on.

msgspec reports what its decoder saw ("Expected `str` matching regex '^[^@…' - at `$.email`");
a client wants what to send instead ("email must look like name@example.org"). Each shape of
message msgspec produces has one rewrite here; anything unrecognised passes through as is.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from eventreg.structs import CHOICES, PATTERN_RULES

_AT = re.compile(r" - at `\$\.?([^`]*)`$")
_JSON_TYPES = {
    "int": "an integer",
    "str": "a string",
    "object": "an object",
    "array": "an array",
    "bool": "true or false",
    "float": "a number",
    "null": "null",
}


def _kind(name: str) -> str:
    return _JSON_TYPES.get(name, name)


def _wrong_type(field: str, m: re.Match[str]) -> str:
    return f"{field or 'the body'} must be {_kind(m[1])}, got {_kind(m[2])}"


def _pattern(field: str, _: re.Match[str]) -> str:
    return PATTERN_RULES.get(field, f"{field} has the wrong format")


def _enum(field: str, m: re.Match[str]) -> str:
    allowed = ", ".join(CHOICES.get(field, ()))
    return f"{field} must be one of {allowed}; got {m[1]}" if allowed else m[0]


def _bound(field: str, m: re.Match[str]) -> str:
    side = "at least" if m[2] == ">=" else "at most"
    return f"{field} must be {_kind(m[1])} {side} {m[3]}"


def _length(field: str, m: re.Match[str]) -> str:
    if m[1] == ">=" and m[2] == "1":
        return f"{field} must not be empty"
    side = "at least" if m[1] == ">=" else "at most"
    return f"{field} must be {side} {m[2]} characters long"


_REWRITES: tuple[tuple[re.Pattern[str], Callable[[str, re.Match[str]], str]], ...] = (
    (re.compile(r"^Expected `(\w+)`, got `(\w+)`$"), _wrong_type),
    (re.compile(r"^Expected `str` matching regex .*$", re.DOTALL), _pattern),
    (re.compile(r"^Invalid enum value (.*)$"), _enum),
    (re.compile(r"^Expected `(int|float)` ([<>]=) (\S+)$"), _bound),
    (re.compile(r"^Expected `str` of length ([<>]=) (\d+)$"), _length),
)
_UNKNOWN = re.compile(r"^Object contains unknown field `([^`]*)`")
_MISSING = re.compile(r"^Object missing required field `([^`]*)`")


def readable(message: str, fields: Mapping[str, object] | None = None) -> str:
    """`message` from msgspec.ValidationError, rewritten; `fields` are the body's own."""
    if m := _UNKNOWN.match(message):
        accepted = ", ".join(fields or ())
        return f"{m[1]} is not accepted here" + (f"; the fields are {accepted}" if accepted else "")
    if m := _MISSING.match(message):
        return f"{m[1]} is required"
    at = _AT.search(message)
    field, core = (at[1], message[: at.start()]) if at else ("", message)
    for shape, rewrite in _REWRITES:
        if match := shape.match(core):
            return rewrite(field, match)
    return message
