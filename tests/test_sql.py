"""The named-query loader, and every query in sql/ against the real migrated schema."""

from __future__ import annotations

import re

import asyncpg
import pytest
from _pytest.mark import ParameterSet

from eventreg import sql


def test_parse_names_statements_and_drops_descriptions() -> None:
    queries = sql.parse("-- name: one\n-- says what it does\nSELECT 1;\n\n-- name: two\nSELECT $1")
    assert dict(queries) == {"one": "SELECT 1", "two": "SELECT $1"}


def test_parse_rejects_duplicates_and_empty_queries() -> None:
    with pytest.raises(ValueError, match="defined twice"):
        sql.parse("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;")
    with pytest.raises(ValueError, match="no statement"):
        sql.parse("-- name: a\n-- only a comment\n")


def _all_queries() -> list[ParameterSet]:
    domains = sorted(p.stem for p in sql.sql_dir().glob("*.sql"))
    assert {"users", "events", "registrations"} <= set(domains)
    return [
        pytest.param(d, name, text, id=f"{d}.{name}")
        for d in domains
        for name, text in sql.load(d).items()
    ]


@pytest.mark.parametrize(("domain", "name", "text"), _all_queries())
async def test_every_query_prepares_against_the_schema(
    db: asyncpg.Connection[asyncpg.Record], domain: str, name: str, text: str
) -> None:
    """Parse, plan and type-check each statement on the migrated schema (nothing runs)."""
    assert not re.search(r"%s|\{\w*\}|'\s*\+", text), f"{domain}.{name} is not parameterized"
    await db.prepare(text)
