"""Named queries from the `sql/` folder: `-- name: x` starts query x, `--` lines describe it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

_NAME = re.compile(r"^-- name: ([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def sql_dir() -> Path:
    source_tree = Path(__file__).resolve().parents[2] / "sql"
    return source_tree if source_tree.is_dir() else Path(__file__).parent / "_sql"


def parse(text: str, origin: str = "<string>") -> Mapping[str, str]:
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [ln for ln in body.splitlines() if not ln.lstrip().startswith("--")]
        statement = "\n".join(lines).strip().rstrip(";").strip()
        if name in queries:
            raise ValueError(f"{origin}: query {name!r} is defined twice")
        if not statement:
            raise ValueError(f"{origin}: query {name!r} has no statement")
        queries[name] = statement
    return MappingProxyType(queries)


def load(domain: str) -> Mapping[str, str]:
    path = sql_dir() / f"{domain}.sql"
    return parse(path.read_text(encoding="utf-8"), str(path))
