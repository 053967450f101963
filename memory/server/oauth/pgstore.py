"""The built-in authorization server's store in PostgreSQL, shared by every replica of a
`--database-url` deployment: a code issued by one replica is redeemed on another, and a revocation
on one holds on all.

The same semantics as the SQLite `OAuthStore` (the contract suite runs on both), with what a single
process got from its lock now coming from the database: every method is one transaction, and the
single-use steps are one conditional UPDATE (`... WHERE NOT used RETURNING`), so of two replicas
redeeming one code or rotating one refresh token at the same moment exactly one wins. Secrets are
stored as SHA-256 hashes, as in SQLite. Tables are prefixed `oauth_` beside the event log's.
"""

import hmac
import json
import secrets
import time
from typing import Any

from memory.pgpool import create_schema
from memory.server.oauth.store import (
    FLOWS_COMPLETED,
    FLOWS_STARTED,
    UNUSED_CLIENT_SECONDS,
    ConnectedApp,
    Grant,
    PendingRequest,
    PersonalToken,
    RemovedAccount,
    _digest,
    _PERSONAL_TOKEN_KEPT_AFTER_EXPIRY,
    valid_username,
)

__all__ = ["PostgresOAuthStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS oauth_users (
    name TEXT PRIMARY KEY, password_hash TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL,
    id TEXT NOT NULL UNIQUE, removed_at DOUBLE PRECISION);
CREATE TABLE IF NOT EXISTS oauth_sessions (
    hash TEXT PRIMARY KEY, account TEXT NOT NULL, expires_at DOUBLE PRECISION NOT NULL);
CREATE INDEX IF NOT EXISTS oauth_sessions_account ON oauth_sessions (account);
CREATE TABLE IF NOT EXISTS oauth_clients (
    client_id TEXT PRIMARY KEY, metadata TEXT NOT NULL, secret_hash TEXT, created_at DOUBLE PRECISION NOT NULL,
    used BOOLEAN NOT NULL DEFAULT true);
CREATE TABLE IF NOT EXISTS oauth_pending (
    id TEXT PRIMARY KEY, params TEXT NOT NULL, browser TEXT NOT NULL, csrf TEXT NOT NULL, username TEXT,
    expires_at DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS oauth_codes (
    hash TEXT PRIMARY KEY, family TEXT NOT NULL, client_id TEXT NOT NULL, redirect_uri TEXT NOT NULL,
    challenge TEXT NOT NULL, username TEXT NOT NULL, scopes TEXT NOT NULL, resource TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL, used BOOLEAN NOT NULL DEFAULT false,
    replayed BOOLEAN NOT NULL DEFAULT false);
CREATE INDEX IF NOT EXISTS oauth_codes_family ON oauth_codes (family);
CREATE TABLE IF NOT EXISTS oauth_refresh (
    hash TEXT PRIMARY KEY, family TEXT NOT NULL, client_id TEXT NOT NULL, username TEXT NOT NULL,
    scopes TEXT NOT NULL, resource TEXT NOT NULL, expires_at DOUBLE PRECISION NOT NULL,
    used BOOLEAN NOT NULL DEFAULT false, revoked BOOLEAN NOT NULL DEFAULT false);
CREATE INDEX IF NOT EXISTS oauth_refresh_family ON oauth_refresh (family);
CREATE INDEX IF NOT EXISTS oauth_refresh_user ON oauth_refresh (username);
CREATE TABLE IF NOT EXISTS oauth_counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS oauth_personal_tokens (
    id_hash TEXT PRIMARY KEY, username TEXT NOT NULL, name TEXT NOT NULL, scopes TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION NOT NULL, last_used DOUBLE PRECISION,
    revoked_at DOUBLE PRECISION);
CREATE INDEX IF NOT EXISTS oauth_personal_tokens_user ON oauth_personal_tokens (username, name);
"""

_COUNT = ("INSERT INTO oauth_counters VALUES (%s, %s) "
          "ON CONFLICT (name) DO UPDATE SET value = oauth_counters.value + excluded.value")


class PostgresOAuthStore:
    """`pool` is a psycopg `ConnectionPool` (memory.pgpool.open_pool); the store does not own it
    unless `owns_pool`, so one pool serves every shared store of a process."""

    def __init__(self, pool: Any, *, owns_pool: bool = False):
        self._pool = pool
        self._owns_pool = owns_pool
        create_schema(pool, "memory.oauth", _SCHEMA)

    def __enter__(self) -> "PostgresOAuthStore":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_pool:
            self._pool.close()

    def _rows(self, sql: str, args: tuple = ()) -> list[tuple]:
        """One statement in a transaction of its own; its rows (none for a statement without)."""
        with self._pool.connection() as conn:
            cursor = conn.execute(sql, args)
            return cursor.fetchall() if cursor.description else []

    def counts(self) -> dict[str, int]:
        return {FLOWS_STARTED: 0, FLOWS_COMPLETED: 0} | dict(self._rows("SELECT name, value FROM oauth_counters"))

    def add_counts(self, increments: dict[str, int]) -> None:
        with self._pool.connection() as conn:
            # In key order: two replicas flushing the same counters never wait on each other in a cycle.
            conn.cursor().executemany(_COUNT, sorted(increments.items()))

    # Accounts

    def add_user(self, name: str, password_hash: str, *, reclaim: bool = False) -> None:
        if not valid_username(name):
            raise ValueError(f"{name!r} is not a valid account name (letters, digits, . _ @ -; at most 64)")
        with self._pool.connection() as conn:
            rows = conn.execute("SELECT removed_at FROM oauth_users WHERE name = %s FOR UPDATE", (name,)).fetchall()
            if rows and rows[0][0] is None:
                raise ValueError(f"account {name!r} already exists")
            if rows and not reclaim:
                raise RemovedAccount(f"account {name!r} was removed and its memories are still here")
            if rows:
                conn.execute("UPDATE oauth_users SET password_hash = %s, created_at = %s, id = %s, removed_at = NULL "
                             "WHERE name = %s", (password_hash, time.time(), secrets.token_hex(16), name))
                return
            # A name nobody had: of two replicas adding it at once, the second finds it taken.
            inserted = conn.execute("INSERT INTO oauth_users VALUES (%s, %s, %s, %s, NULL) ON CONFLICT DO NOTHING "
                                    "RETURNING name", (name, password_hash, time.time(), secrets.token_hex(16)))
            if not inserted.fetchall():
                raise ValueError(f"account {name!r} already exists")

    def remove_user(self, name: str) -> bool:
        now = time.time()
        with self._pool.connection() as conn:
            rows = conn.execute("UPDATE oauth_users SET removed_at = %s, password_hash = '' "
                                "WHERE name = %s AND removed_at IS NULL RETURNING id", (now, name)).fetchall()
            if not rows:
                return False
            conn.execute("DELETE FROM oauth_sessions WHERE account = %s", (rows[0][0],))
            conn.execute("DELETE FROM oauth_pending WHERE username = %s", (name,))
            conn.execute("DELETE FROM oauth_codes WHERE username = %s", (name,))
            conn.execute("UPDATE oauth_refresh SET revoked = true WHERE username = %s", (name,))
            conn.execute("UPDATE oauth_personal_tokens SET revoked_at = %s WHERE username = %s "
                         "AND revoked_at IS NULL AND expires_at >= %s", (now, name, now))
        return True

    def was_removed(self, name: str) -> bool:
        return bool(self._rows("SELECT 1 FROM oauth_users WHERE name = %s AND removed_at IS NOT NULL", (name,)))

    def users(self) -> list[str]:
        return [name for (name,) in self._rows(
            "SELECT name FROM oauth_users WHERE removed_at IS NULL ORDER BY name COLLATE \"C\"")]

    def password_hash(self, name: str) -> str | None:
        rows = self._rows("SELECT password_hash FROM oauth_users WHERE name = %s AND removed_at IS NULL", (name,))
        return rows[0][0] if rows else None

    def set_password(self, name: str, password_hash: str) -> bool:
        with self._pool.connection() as conn:
            rows = conn.execute("UPDATE oauth_users SET password_hash = %s WHERE name = %s AND removed_at IS NULL "
                                "RETURNING id", (password_hash, name)).fetchall()
            if rows:
                conn.execute("DELETE FROM oauth_sessions WHERE account = %s", (rows[0][0],))
        return bool(rows)

    # Web sessions

    def start_session(self, name: str, ttl: float) -> str | None:
        session = secrets.token_urlsafe(32)
        now = time.time()
        with self._pool.connection() as conn:
            conn.execute("DELETE FROM oauth_sessions WHERE expires_at < %s", (now,))
            # FOR SHARE: a removal committing meanwhile cannot leave this session behind.
            rows = conn.execute("SELECT id FROM oauth_users WHERE name = %s AND removed_at IS NULL FOR SHARE",
                                (name,)).fetchall()
            if not rows:
                return None
            conn.execute("INSERT INTO oauth_sessions VALUES (%s, %s, %s)", (_digest(session), rows[0][0], now + ttl))
        return session

    def session_user(self, session: str) -> str | None:
        rows = self._rows("SELECT u.name FROM oauth_sessions s JOIN oauth_users u ON u.id = s.account "
                          "WHERE s.hash = %s AND s.expires_at >= %s AND u.removed_at IS NULL",
                          (_digest(session), time.time()))
        return rows[0][0] if rows else None

    def end_session(self, session: str) -> None:
        self._rows("DELETE FROM oauth_sessions WHERE hash = %s", (_digest(session),))

    # Clients

    def save_client(self, client_id: str, metadata: dict[str, Any], secret: str | None) -> None:
        now = time.time()
        with self._pool.connection() as conn:
            conn.execute("DELETE FROM oauth_clients WHERE NOT used AND created_at < %s", (now - UNUSED_CLIENT_SECONDS,))
            conn.execute("INSERT INTO oauth_clients VALUES (%s, %s, %s, %s, false) ON CONFLICT (client_id) DO UPDATE "
                         "SET metadata = excluded.metadata, secret_hash = excluded.secret_hash, "
                         "created_at = excluded.created_at, used = false",
                         (client_id, json.dumps(metadata), _digest(secret) if secret else None, now))

    def client(self, client_id: str) -> tuple[dict[str, Any], str | None] | None:
        rows = self._rows("SELECT metadata, secret_hash FROM oauth_clients WHERE client_id = %s", (client_id,))
        return (json.loads(rows[0][0]), rows[0][1]) if rows else None

    @staticmethod
    def secret_matches(secret: str, secret_hash: str | None) -> bool:
        return secret_hash is not None and hmac.compare_digest(_digest(secret), secret_hash)

    # Pending authorization requests

    def save_pending(self, request: PendingRequest, ttl: float) -> None:
        now = time.time()
        with self._pool.connection() as conn:
            conn.execute("DELETE FROM oauth_pending WHERE expires_at < %s", (now,))
            conn.execute("INSERT INTO oauth_pending VALUES (%s, %s, %s, %s, %s, %s)",
                         (request.id, json.dumps(request.params), request.browser, request.csrf, request.user,
                          now + ttl))
            conn.execute(_COUNT, (FLOWS_STARTED, 1))

    def pending(self, request_id: str) -> PendingRequest | None:
        rows = self._rows("SELECT params, browser, csrf, username FROM oauth_pending WHERE id = %s AND expires_at >= %s",
                          (request_id, time.time()))
        if not rows:
            return None
        params, browser, csrf, user = rows[0]
        return PendingRequest(id=request_id, params=json.loads(params), browser=browser, csrf=csrf, user=user)

    def log_in_pending(self, request_id: str, user: str, csrf: str) -> None:
        self._rows("UPDATE oauth_pending SET username = %s, csrf = %s WHERE id = %s", (user, csrf, request_id))

    def drop_pending(self, request_id: str) -> bool:
        return bool(self._rows("DELETE FROM oauth_pending WHERE id = %s RETURNING id", (request_id,)))

    # Codes

    def save_code(self, code: str, grant: Grant, ttl: float) -> None:
        now = time.time()
        with self._pool.connection() as conn:
            conn.execute("DELETE FROM oauth_codes WHERE expires_at < %s", (now - 3600,))
            conn.execute("INSERT INTO oauth_codes VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, false, false)",
                         (_digest(code), grant.family, grant.client_id, grant.redirect_uri, grant.challenge,
                          grant.user, " ".join(grant.scopes), grant.resource, now + ttl))
            conn.execute("UPDATE oauth_clients SET used = true WHERE client_id = %s AND NOT used", (grant.client_id,))

    def use_code(self, code: str) -> tuple[Grant, bool] | None:
        columns = "family, client_id, redirect_uri, challenge, username, scopes, resource, expires_at"
        with self._pool.connection() as conn:
            # The one redemption that flips `used` wins; any other sees it used.
            rows = conn.execute(f"UPDATE oauth_codes SET used = true WHERE hash = %s AND NOT used RETURNING {columns}",
                                (_digest(code),)).fetchall()
            first = bool(rows)
            if not first:
                rows = conn.execute(f"SELECT {columns} FROM oauth_codes WHERE hash = %s", (_digest(code),)).fetchall()
                if not rows:
                    return None
            family, client_id, redirect_uri, challenge, user, scopes, resource, expires_at = rows[0]
            grant = Grant(family=family, client_id=client_id, redirect_uri=redirect_uri, challenge=challenge,
                          user=user, scopes=scopes.split(), resource=resource)
            if not first:
                # A second use: whatever the first one issued is revoked, and what it has yet to save
                # is born revoked (`save_refresh` reads `replayed` under this row's lock).
                conn.execute("UPDATE oauth_codes SET replayed = true WHERE hash = %s", (_digest(code),))
                conn.execute("UPDATE oauth_refresh SET revoked = true WHERE family = %s", (family,))
                return grant, False
            fresh = expires_at >= time.time()
            if fresh:
                conn.execute(_COUNT, (FLOWS_COMPLETED, 1))
            return grant, fresh

    # Refresh tokens

    def save_refresh(self, token: str, grant: Grant, ttl: float) -> None:
        now = time.time()
        with self._pool.connection() as conn:
            conn.execute("DELETE FROM oauth_refresh WHERE expires_at < %s", (now - 86400,))
            # FOR SHARE waits for a replay of the family's code that is under way: either it
            # committed first and this token is born revoked, or its revocation comes after and
            # finds this token.
            replayed = conn.execute("SELECT replayed FROM oauth_codes WHERE family = %s FOR SHARE",
                                    (grant.family,)).fetchall()
            conn.execute("INSERT INTO oauth_refresh VALUES (%s, %s, %s, %s, %s, %s, %s, false, %s)",
                         (_digest(token), grant.family, grant.client_id, grant.user, " ".join(grant.scopes),
                          grant.resource, now + ttl, any(r[0] for r in replayed)))

    def use_refresh(self, token: str) -> tuple[Grant, str] | None:
        columns = "family, client_id, username, scopes, resource, expires_at"
        with self._pool.connection() as conn:
            rows = conn.execute(f"UPDATE oauth_refresh SET used = true WHERE hash = %s AND NOT used AND NOT revoked "
                                f"RETURNING {columns}, false, false", (_digest(token),)).fetchall()
            if not rows:
                rows = conn.execute(f"SELECT {columns}, used, revoked FROM oauth_refresh WHERE hash = %s",
                                    (_digest(token),)).fetchall()
                if not rows:
                    return None
            family, client_id, user, scopes, resource, expires_at, used, revoked = rows[0]
            grant = Grant(family=family, client_id=client_id, user=user, scopes=scopes.split(), resource=resource)
            if revoked:
                return grant, "revoked"
            if used:
                conn.execute("UPDATE oauth_refresh SET revoked = true WHERE family = %s", (family,))
                return grant, "reused"
            return grant, ("ok" if expires_at >= time.time() else "expired")

    def grant_revoked(self, family: str) -> bool:
        return bool(self._rows("SELECT 1 FROM oauth_refresh WHERE family = %s AND revoked LIMIT 1", (family,)))

    def revoke_refresh(self, token: str, client_id: str | None) -> None:
        with self._pool.connection() as conn:
            rows = conn.execute("SELECT family, client_id FROM oauth_refresh WHERE hash = %s",
                                (_digest(token),)).fetchall()
            if rows and (client_id is None or rows[0][1] == client_id):
                conn.execute("UPDATE oauth_refresh SET revoked = true WHERE family = %s", (rows[0][0],))

    # Grants, as the person who gave them sees them

    def grants_of(self, user: str, limit: int = 100) -> list[ConnectedApp]:
        rows = self._rows(
            "SELECT r.family, min(r.client_id), min(c.metadata), min(r.scopes), max(r.expires_at) FROM oauth_refresh r "
            "LEFT JOIN oauth_clients c ON c.client_id = r.client_id "
            "WHERE r.username = %s AND NOT r.used AND NOT r.revoked AND r.expires_at >= %s "
            "AND NOT EXISTS (SELECT 1 FROM oauth_refresh x WHERE x.family = r.family AND x.revoked) "
            "GROUP BY r.family ORDER BY max(r.expires_at) DESC LIMIT %s", (user, time.time(), limit))
        return [ConnectedApp(family=family, client_id=client_id,
                             client_name=json.loads(metadata).get("client_name", client_id) if metadata else client_id,
                             scopes=scopes.split(), expires_at=expires_at)
                for family, client_id, metadata, scopes, expires_at in rows]

    def revoke_grant(self, user: str, family: str) -> bool:
        return bool(self._rows("UPDATE oauth_refresh SET revoked = true WHERE username = %s AND family = %s "
                               "RETURNING 1", (user, family)))

    # Personal tokens

    def register_personal_token(self, token_id: str, *, user: str, name: str, scopes: list[str],
                                created_at: float, expires_at: float) -> None:
        with self._pool.connection() as conn:
            conn.execute("DELETE FROM oauth_personal_tokens WHERE expires_at < %s",
                         (time.time() - _PERSONAL_TOKEN_KEPT_AFTER_EXPIRY,))
            conn.execute("INSERT INTO oauth_personal_tokens VALUES (%s, %s, %s, %s, %s, %s, NULL, NULL)",
                         (_digest(token_id), user, name, " ".join(scopes), created_at, expires_at))

    def personal_token_name(self, token_id: str, user: str) -> str | None:
        rows = self._rows("SELECT name FROM oauth_personal_tokens WHERE id_hash = %s AND username = %s "
                          "AND revoked_at IS NULL", (_digest(token_id), user))
        return rows[0][0] if rows else None

    def mark_personal_token_used(self, token_id: str, when: float) -> None:
        self._rows("UPDATE oauth_personal_tokens SET last_used = %s WHERE id_hash = %s", (when, _digest(token_id)))

    def personal_tokens_of(self, user: str, limit: int = 100) -> list[PersonalToken]:
        rows = self._rows("SELECT name, scopes, created_at, expires_at, last_used FROM oauth_personal_tokens "
                          "WHERE username = %s AND revoked_at IS NULL AND expires_at >= %s "
                          "ORDER BY created_at DESC, name COLLATE \"C\" LIMIT %s", (user, time.time(), limit))
        return [PersonalToken(name=name, scopes=scopes.split(), created_at=created_at, expires_at=expires_at,
                              last_used=last_used) for name, scopes, created_at, expires_at, last_used in rows]

    def revoke_personal_tokens(self, user: str, name: str | None = None) -> int:
        now = time.time()
        return len(self._rows(
            "UPDATE oauth_personal_tokens SET revoked_at = %s WHERE username = %s AND revoked_at IS NULL "
            "AND expires_at >= %s AND (%s::text IS NULL OR name = %s) RETURNING 1", (now, user, now, name, name)))
