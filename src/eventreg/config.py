"""Settings, read once from the environment by the entry points (never at import)."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from None


def _seconds(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = 0.0  # refused just below, with the same message
    if not 0 < value < float("inf"):  # also refuses "nan"
        raise SystemExit(f"{name} must be a positive number of seconds, got {raw!r}")
    return value


# The whole server's share of PostgreSQL connections, split across WEB_CONCURRENCY workers
# unless DB_POOL_MAX says otherwise. On 2 cores, 2 workers x 20 connections queued 40
# transactions on a hot event's row and sold a 500-seat rush slower than 2 x 10 did.
DB_CONNECTIONS = 20


def default_pool_max(env: dict[str, str]) -> int:
    return max(4, DB_CONNECTIONS // max(1, _int(env, "WEB_CONCURRENCY", 1)))


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def default_auth(host: str) -> str:
    """No authentication only where nobody else can connect."""
    return "open" if is_loopback(host) else "tokens"


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

    @staticmethod
    def from_env(env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        url = env.get("DATABASE_URL")
        if not url:
            raise SystemExit("DATABASE_URL is not set (make run sets it for you)")
        return Settings(
            database_url=url,
            pool_max_size=_int(env, "DB_POOL_MAX", default_pool_max(env)),
            acquire_timeout_ms=_int(env, "DB_ACQUIRE_TIMEOUT_MS", 2000),
            lock_timeout_ms=_int(env, "DB_LOCK_TIMEOUT_MS", 1000),
            statement_timeout_ms=_int(env, "DB_STATEMENT_TIMEOUT_MS", 5000),
            idle_in_transaction_timeout_ms=_int(env, "DB_IDLE_IN_TX_TIMEOUT_MS", 10000),
            max_body_bytes=_int(env, "MAX_BODY_BYTES", 64 * 1024),
            test_hooks=env.get("EVENTREG_TEST_HOOKS") == "1",
            cors_origins=tuple(
                o.strip() for o in env.get("CORS_ORIGINS", "").split(",") if o.strip()
            ),
            compress_min_bytes=_int(env, "COMPRESS_MIN_BYTES", 1024),
            auth_mode=env.get("EVENTREG_AUTH") or default_auth(env.get("HOST", "127.0.0.1")),
            auth_cache_seconds=float(env.get("AUTH_CACHE_SECONDS") or 5),
            rate_signup_per_minute=_int(env, "RATE_SIGNUP_PER_MINUTE", 20),
            rate_register_per_minute=_int(env, "RATE_REGISTER_PER_MINUTE", 60),
            idempotency_ttl_hours=float(env.get("IDEMPOTENCY_TTL_HOURS") or 24),
            idempotency_sweep_seconds=float(env.get("IDEMPOTENCY_SWEEP_SECONDS") or 300),
            group_admission=env.get("GROUP_ADMISSION", "on") != "off",
            group_max=_int(env, "GROUP_MAX", 100),
            header_timeout=_seconds(env, "HEADER_TIMEOUT", 10.0),
            body_timeout=_seconds(env, "BODY_TIMEOUT", 30.0),
            max_connections=_int(env, "MAX_CONNECTIONS", 800),
            max_header_bytes=_int(env, "MAX_HEADER_BYTES", 16 * 1024),
            max_headers=_int(env, "MAX_HEADERS", 100),
        )
