"""Settings, read once from the environment by the entry points (never at import).

Each variable is one row of `SPEC`: its name, the `Settings` field it fills, what it allows
and what it means. Reading, the error line, `serve --help` and the README's Configuration
table all come from those rows (tests/test_cli.py holds the README to them). A new setting
is a field with its default below plus one row.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class ConfigError(ValueError):
    """A setting the operator has to fix. The message is one line that names the variable."""


# The whole server's share of PostgreSQL connections, split across WEB_CONCURRENCY workers
# unless DB_POOL_MAX says otherwise. On 2 cores, 2 workers x 20 connections queued 40
# transactions on a hot event's row and sold a 500-seat rush slower than 2 x 10 did.
DB_CONNECTIONS = 20

# PostgreSQL's timeouts are int4 milliseconds; a larger value fails every connection.
PG_MS_MAX = 2_147_483_647


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str
    pool_max_size: int = 20
    acquire_timeout_ms: int = 2000
    lock_timeout_ms: int = 1000
    statement_timeout_ms: int = 5000
    idle_in_transaction_timeout_ms: int = 10000
    max_body_bytes: int = 64 * 1024
    test_hooks: bool = False
    # Read replicas: read-only routes may read here while it is at most this far behind.
    database_read_url: str = ""
    read_max_lag_ms: int = 1000
    # Observability: JSON or text log lines, /metrics, and how many events get seat gauges.
    log_format: str = "json"
    metrics: bool = True
    metrics_events: int = 100
    cors_origins: tuple[str, ...] = ()  # browser origins allowed to call the API
    compress_min_bytes: int = 1024  # gzip list bodies at least this large (0: never)
    auth_mode: str = "open"  # "open" (no authentication) or "tokens"
    auth_cache_seconds: float = 5.0  # how long a worker trusts a token lookup
    rate_signup_per_minute: int = 20  # anonymous sign-ups per client address (0: no limit)
    rate_register_per_minute: int = 60  # registration attempts per user (0: no limit)
    idempotency_ttl_hours: float = 24.0  # how long an Idempotency-Key's answer is kept
    idempotency_sweep_seconds: float = 300.0  # how often expired keys are deleted
    group_admission: bool = True  # admit concurrent registrations for an event together
    group_max: int = 100  # the most registrations one group transaction admits
    # Slow and idle clients (eventreg.protocol). 800 connections per worker stay below the
    # usual 1024 file descriptors per process, leaving room for the pool and the listener.
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 800
    max_header_bytes: int = 16 * 1024
    max_headers: int = 100
    # Tickets (eventreg.ticketcodes): the signing key as its base64url seed, or a PEM file
    # (made when missing if `ticket_key_create`); retired public keys that still verify.
    # None of them set: the app makes a key of its own at start (tests).
    ticket_signing_key: str = field(default="", repr=False)
    ticket_key_file: str = ""
    ticket_key_create: bool = False
    ticket_retired_keys: tuple[str, ...] = ()
    # Read by `python -m eventreg serve` only, not by the app.
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    access_log: bool = True

    @staticmethod
    def from_env(env: Mapping[str, str] | None = None, *, need_database: bool = True) -> Settings:
        """Every row of SPEC from `env` (default: os.environ), or ConfigError for the first
        bad one. `need_database=False` allows DATABASE_URL to be unset (then it is "")."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for var in SPEC:
            values[var.field] = var.read(env, values)
        if need_database and not values["database_url"]:
            raise ConfigError("DATABASE_URL is not set (make run sets it for you)")
        if values["auth_mode"] == "open" and not is_loopback(values["host"]):
            raise ConfigError(
                f"EVENTREG_AUTH=open is refused with HOST {values['host']!r}: anyone who can"
                " reach it could do anything; use EVENTREG_AUTH=tokens or a loopback HOST"
            )
        values["ticket_key_file"], values["ticket_key_create"] = ticket_key_file(values, env)
        return Settings(**values)


TICKET_KEY_NAME = "ticket-key.pem"  # make run's signing key, beside its database in .data/


def ticket_key_file(values: Mapping[str, Any], env: Mapping[str, str]) -> tuple[str, bool]:
    """Where the ticket signing key comes from: (key file, make it when missing).

    TICKET_SIGNING_KEY (the key itself) wins, then TICKET_KEY_FILE (which must exist). With
    neither, a server on a loopback HOST keeps its own key in EVENTREG_DATA_DIR (made on
    first start); any other HOST is refused, because several hosts that each made their own
    key would refuse each other's tickets.
    """
    if values["ticket_signing_key"]:
        return "", False
    if values["ticket_key_file"]:
        return values["ticket_key_file"], False
    if not is_loopback(values["host"]):
        raise ConfigError(
            f"HOST {values['host']!r} needs TICKET_KEY_FILE or TICKET_SIGNING_KEY: every API"
            " host must sign tickets with the same key (docs/tickets.md: Keys)"
        )
    data = Path(env.get("EVENTREG_DATA_DIR") or ".data").resolve()
    return str(data / TICKET_KEY_NAME), True


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def default_auth(host: str) -> str:
    """No authentication only where nobody else can connect."""
    return "open" if is_loopback(host) else "tokens"


@dataclass(frozen=True, slots=True)
class Kind:
    """What a variable allows: said for people (`rule`) and checked (`parse`, which raises
    ValueError when the text breaks the rule)."""

    rule: str
    parse: Callable[[str], Any]
    quote: Callable[[str], str] = repr  # how the error line shows the bad value


def integer(low: int, high: int | None = None) -> Kind:
    def parse(text: str) -> int:
        if not re.fullmatch(r"-?[0-9]+", text):
            raise ValueError(text)
        value = int(text)
        if value < low or (high is not None and value > high):
            raise ValueError(text)
        return value

    upto = f"from {low} to {high}" if high is not None else f"of at least {low}"
    return Kind(f"an integer {upto}", parse)


def number(low: float, *, above: bool = False) -> Kind:
    """A finite number from `low` on, or (`above`) greater than `low`."""

    def parse(text: str) -> float:
        value = float(text)  # ValueError for "soon"
        if not math.isfinite(value) or value < low or (above and value == low):
            raise ValueError(text)
        return value

    return Kind(f"a number {'above' if above else 'of at least'} {low:g}", parse)


def one_of(*choices: str) -> Kind:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(text)
        return text

    return Kind(" or ".join(choices), parse)


def _origins(text: str) -> tuple[str, ...]:
    """Comma-separated browser origins (scheme://host[:port], no path), or `*`."""
    origins = tuple(o.strip() for o in text.split(",") if o.strip())
    for origin in origins:
        if origin != "*" and not re.fullmatch(r"https?://[^/\s,]+", origin):
            raise ValueError(origin)
    return origins


def _flag(text: str) -> bool:
    if text not in ("0", "1"):
        raise ValueError(text)
    return text == "1"


def _on_off(text: str) -> bool:
    if text not in ("on", "off"):
        raise ValueError(text)
    return text == "on"


def _postgres_url(text: str) -> str:
    scheme, sep, _ = text.partition("://")
    if scheme not in ("postgres", "postgresql") or not sep:
        raise ValueError(text)
    parts = urlsplit(text)
    if "," not in parts.netloc:  # one host: its port must be a number (several: the driver's)
        _ = parts.port  # ValueError when it is not
    return text


def _without_password(text: str) -> str:
    """The URL for an error line: a password, if any, is never printed."""
    try:
        password = urlsplit(text).password
    except ValueError:
        password = None
    return repr(text.replace(f":{password}@", ":***@") if password else text)


def _seed(text: str) -> str:
    """An Ed25519 seed: 32 bytes in base64url, without padding (43 characters)."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]", text):
        raise ValueError(text)
    return text


def _public_keys(text: str) -> tuple[str, ...]:
    """Comma-separated Ed25519 public keys, each as the key set's `x` shows it."""
    keys = tuple(k.strip() for k in text.split(",") if k.strip())
    for key in keys:
        _seed(key)  # the same shape: 32 bytes in base64url
    return keys


FLAG = Kind("0 or 1", _flag)
ON_OFF = Kind("on or off", _on_off)
TEXT = Kind("a host name or IP address", str)
POSTGRES_URL = Kind("a postgresql:// URL", _postgres_url, _without_password)
ORIGINS = Kind("comma-separated origins like https://app.example.org (no path), or *", _origins)
SEED = Kind("a 32-byte key in base64url (43 characters)", _seed, lambda _: "(not shown)")
PATH = Kind("a file path", str)
PUBLIC_KEYS = Kind("comma-separated public keys in base64url (43 characters each)", _public_keys)


def pool_max_for(workers: int) -> int:
    return max(4, DB_CONNECTIONS // workers)


@dataclass(frozen=True, slots=True)
class Var:
    """One environment variable. Its default is the Settings field's, unless `derive`
    computes it from the rows above (by field name); `shown` is the README's wording."""

    name: str
    field: str
    kind: Kind
    meaning: str
    derive: Callable[[Mapping[str, Any]], Any] | None = None
    shown: str | None = None

    def read(self, env: Mapping[str, str], above: Mapping[str, Any]) -> Any:
        raw = env.get(self.name, "")
        if raw == "":  # unset and empty mean the same: the default
            return self.derive(above) if self.derive else _DEFAULTS[self.field]
        try:
            return self.kind.parse(raw)
        except ValueError:
            message = f"{self.name} must be {self.kind.rule}, got {self.kind.quote(raw)}"
            raise ConfigError(message) from None

    def default_text(self) -> str:
        if self.shown is not None:
            return self.shown
        value = _DEFAULTS[self.field]
        if isinstance(value, bool):
            value = int(value)  # flags are written 0 and 1
        elif isinstance(value, float):
            value = f"{value:g}"  # 5, not 5.0
        return f"`{value}`"


SPEC: tuple[Var, ...] = (
    Var("DATABASE_URL", "database_url", POSTGRES_URL,
        "the PostgreSQL to use. Unset: `make run` starts the embedded server",
        derive=lambda _: "", shown="(embedded)"),
    Var("DATABASE_READ_URL", "database_read_url", POSTGRES_URL,
        "a streaming replica of `DATABASE_URL` for the read-only routes that allow it (see "
        "[Read replicas](#read-replicas-and-staleness)). Empty: everything reads the primary",
        shown="(none)"),
    Var("DATABASE_READ_MAX_LAG_MS", "read_max_lag_ms", integer(1, PG_MS_MAX),
        "the most a replica read may lag the primary; a replica further behind, down or "
        "unsure is not used, and those reads go to the primary"),
    Var("HOST", "host", TEXT, "where to listen (loopback only by default)"),
    Var("PORT", "port", integer(1, 65535), "the port to listen on"),
    Var("WEB_CONCURRENCY", "workers", integer(1),
        "uvicorn worker processes (2 suits a 2-core machine)"),
    Var("ACCESS_LOG", "access_log", FLAG, "`0` turns off the per-request log line"),
    Var("LOG_FORMAT", "log_format", one_of("json", "text"),
        "`json`: one JSON object per line (see [Logs](#logs)); `text`: uvicorn's lines for "
        "people (`make run` sets it unless you do)"),
    Var("METRICS", "metrics", ON_OFF,
        "`/metrics` in the Prometheus text format, and the counting behind it (see "
        "[Metrics](#metrics)); `off`: `/metrics` answers 404 and requests are not "
        "counted", shown="`on`"),
    Var("METRICS_EVENTS", "metrics_events", integer(0, 10_000),
        "how many events (the newest still on sale) get seat gauges in `/metrics`"),
    Var("DB_POOL_MAX", "pool_max_size", integer(1),
        "connections per worker. A hot event's lock serves a short queue better than a long "
        "one, so the default keeps about 20 in all; keep `WEB_CONCURRENCY` times this below "
        "`max_connections`",
        derive=lambda above: pool_max_for(above["workers"]),
        shown=f"{DB_CONNECTIONS} ÷ `WEB_CONCURRENCY`, at least 4"),
    Var("DB_ACQUIRE_TIMEOUT_MS", "acquire_timeout_ms", integer(1, PG_MS_MAX),
        "wait for a pooled connection; then 503"),
    Var("DB_LOCK_TIMEOUT_MS", "lock_timeout_ms", integer(0, PG_MS_MAX),
        "PostgreSQL `lock_timeout`: a lock held elsewhere becomes a 503, not a hang "
        "(`0`: wait as long as `DB_STATEMENT_TIMEOUT_MS`)"),
    Var("DB_STATEMENT_TIMEOUT_MS", "statement_timeout_ms", integer(1, PG_MS_MAX),
        "PostgreSQL `statement_timeout`"),
    Var("DB_IDLE_IN_TX_TIMEOUT_MS", "idle_in_transaction_timeout_ms", integer(0, PG_MS_MAX),
        "`idle_in_transaction_session_timeout`, a backstop for stuck transactions (`0`: off)"),
    Var("MAX_BODY_BYTES", "max_body_bytes", integer(1),
        "larger request bodies get 413 (also when chunked)"),
    Var("EVENTREG_AUTH", "auth_mode", one_of("open", "tokens"),
        "`open`: no authentication; `tokens`: every request is checked, see [Who may do "
        "what](#who-may-do-what-tokens-and-roles). `open` with a non-loopback `HOST` is refused",
        derive=lambda above: default_auth(above["host"]),
        shown="`open` on a loopback `HOST`, else `tokens`"),
    Var("AUTH_CACHE_SECONDS", "auth_cache_seconds", number(0),
        "how long a worker trusts a token lookup (the revocation delay for other workers)"),
    Var("RATE_SIGNUP_PER_MINUTE", "rate_signup_per_minute", integer(0),
        "sign-ups per client address; `0` no limit"),
    Var("RATE_REGISTER_PER_MINUTE", "rate_register_per_minute", integer(0),
        "registration attempts per user; `0` no limit"),
    Var("IDEMPOTENCY_TTL_HOURS", "idempotency_ttl_hours", number(0, above=True),
        "how long an `Idempotency-Key`'s answer is kept"),
    Var("IDEMPOTENCY_SWEEP_SECONDS", "idempotency_sweep_seconds", number(0),
        "how often expired keys are deleted (`0`: never)"),
    Var("GROUP_ADMISSION", "group_admission", ON_OFF,
        "`off`: one transaction per registration (see [Group admission]"
        "(#group-admission-a-hot-event-at-the-speed-of-the-database))", shown="`on`"),
    Var("GROUP_MAX", "group_max", integer(1),
        "the most registrations one group transaction admits"),
    Var("CORS_ORIGINS", "cors_origins", ORIGINS,
        "browser origins allowed to call the API; preflights are answered before routing. "
        "Empty: no CORS headers at all", shown="(none)"),
    Var("COMPRESS_MIN_BYTES", "compress_min_bytes", integer(0),
        "gzip list responses at least this large when the client accepts it; `0` never"),
    Var("HEADER_TIMEOUT", "header_timeout", number(0, above=True),
        "seconds for a request's headers to arrive; then 408 (see below)"),
    Var("BODY_TIMEOUT", "body_timeout", number(0, above=True),
        "seconds for a request's whole body to arrive after its headers; then 408"),
    Var("MAX_CONNECTIONS", "max_connections", integer(1),
        "open connections per worker; one opened above it gets 503. The default stays under "
        "the usual 1024 file descriptors per process, with room for the pool"),
    Var("MAX_HEADER_BYTES", "max_header_bytes", integer(1024),
        "request line and headers; a larger head gets 431"),
    Var("MAX_HEADERS", "max_headers", integer(1), "header fields; more get 431"),
    Var("TICKET_SIGNING_KEY", "ticket_signing_key", SEED,
        "the Ed25519 key that signs ticket codes (its seed: `ticket keygen FILE --seed` "
        "prints one). Every host must use the same; see [Tickets and check-in]"
        "(#tickets-and-check-in)", shown="(none)"),
    Var("TICKET_KEY_FILE", "ticket_key_file", PATH,
        "a PEM file holding that key instead (`python -m eventreg ticket keygen FILE`); it "
        "must exist. With neither set, a loopback `HOST` makes and keeps "
        "`$EVENTREG_DATA_DIR/ticket-key.pem`, and any other `HOST` is refused",
        shown="`.data/ticket-key.pem` on a loopback `HOST`"),
    Var("TICKET_RETIRED_KEYS", "ticket_retired_keys", PUBLIC_KEYS,
        "public keys (as `/.well-known/ticket-keys` shows them) of former signing keys: "
        "codes they signed stay valid until the key is removed here", shown="(none)"),
    Var("EVENTREG_TEST_HOOKS", "test_hooks", FLAG,
        "`1` enables test-only fault hooks; never set it in production"),
)  # fmt: skip

_DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in fields(Settings) if f.default is not MISSING
}


def read(name: str, env: Mapping[str, str] | None = None) -> Any:
    """One variable, checked by its row: for commands that need only that one."""
    (var,) = (v for v in SPEC if v.name == name)
    return var.read(os.environ if env is None else env, {})


def default_pool_max(env: Mapping[str, str]) -> int:
    """DB_POOL_MAX when it is unset, for WEB_CONCURRENCY as `env` gives it."""
    return pool_max_for(read("WEB_CONCURRENCY", env))


def help_text() -> str:
    """The settings for `serve --help`: name, default, what is allowed, meaning."""
    lines = ["settings (environment variables; an empty one counts as unset):"]
    for var in SPEC:
        lines.append(f"  {var.name:<26} default {var.default_text().replace('`', '')}")
        meaning = re.sub(r"\[([^]]+)\]\([^)]*\)", r"\1", var.meaning).replace("`", "")
        about = f"{var.kind.rule}: {meaning}"
        lines += textwrap.wrap(about, 88, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return "\n".join(lines)


def markdown_table() -> str:
    """The README's Configuration table, one row per SPEC row."""
    lines = ["| variable | default | allowed | meaning |", "|---|---|---|---|"]
    lines += [f"| `{v.name}` | {v.default_text()} | {v.kind.rule} | {v.meaning} |" for v in SPEC]
    return "\n".join(lines)
