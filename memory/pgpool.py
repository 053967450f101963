"""One psycopg connection pool per process for the stores replicas share in PostgreSQL (accounts and
grants, rate limits, the embedding cache). psycopg is the optional `[postgres]` extra: it is imported
here, when a database URL is given, never by the default SQLite install."""

from typing import Any

__all__ = ["open_pool", "create_schema", "DatabaseUnavailable", "describe_url", "error_reason"]

# A server's threads (request handlers, background embedding) each hold a connection only for one
# short transaction: a few are enough, and N replicas must stay well under max_connections.
_MIN_CONNECTIONS = 1
_MAX_CONNECTIONS = 8


def describe_url(url: str) -> str:
    """The database a URL names, for messages: never its password."""
    import psycopg

    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error:
        return "the database (its URL cannot be parsed)"
    return f"postgresql://{info.get('host', '')}:{info.get('port', '5432')}/{info.get('dbname', '')}"


def error_reason(exc: BaseException) -> str:
    """A database error for a message or a log line: its first line (PostgreSQL's own reason; the
    rest is context and hints), or its type when it says nothing."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class DatabaseUnavailable(ConnectionError):
    """The database URL names no PostgreSQL server this process can use (the message says why)."""


def open_pool(url: str, *, max_size: int = _MAX_CONNECTIONS) -> Any:
    """An open `psycopg_pool.ConnectionPool` on `url`. An unreachable database fails here, with
    PostgreSQL's own reason (a pool would only report a timeout, 30 s later)."""
    if not url.startswith(("postgresql://", "postgres://")):
        raise DatabaseUnavailable(f"the database URL must start with postgresql://, got {url.split(':', 1)[0]!r}")
    import psycopg
    from psycopg_pool import ConnectionPool

    try:
        psycopg.connect(url, connect_timeout=10).close()
    except psycopg.Error as exc:
        raise DatabaseUnavailable(f"cannot use the database at {describe_url(url)}: {error_reason(exc)}") from None
    pool = ConnectionPool(url, min_size=_MIN_CONNECTIONS, max_size=max_size, open=False,
                          kwargs={"autocommit": False}, name="memory")
    pool.open(wait=True, timeout=30)
    return pool


def create_schema(pool: Any, lock_name: str, statements: str) -> None:
    """Run CREATE ... IF NOT EXISTS statements once, however many processes start at the same time:
    PostgreSQL's IF NOT EXISTS is not safe against a concurrent creator, so each schema takes an
    advisory lock of its own for the transaction."""
    with pool.connection() as conn:
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (lock_name,))
        conn.execute(statements)
