"""Everything the built-in authorization server must remember, in `<data_dir>/oauth.sqlite` (mode 0600):
accounts, web sessions, registered clients, pending authorization requests, codes and refresh tokens, and
the personal tokens `memory token` issued (by the hash of their id; the token itself is never stored).

Session ids, codes and refresh tokens are stored as SHA-256 hashes: a copy of the file lets no one act as a user.
The CLI (`memory user ...`) and a running server share the file; WAL and a busy timeout let them.
"""

import hashlib
import json
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

from memory.wal import use_wal

__all__ = ["OAuthStore", "OAUTH_FILE", "oauth_db_path", "valid_username", "Grant", "PendingRequest", "ConnectedApp",
           "PersonalToken", "RemovedAccount"]

#: The store's SQLite file, at the top of the data directory (a backup copies it with the logs).
OAUTH_FILE = "oauth.sqlite"
_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, password_hash TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS clients (client_id TEXT PRIMARY KEY, metadata TEXT NOT NULL, secret_hash TEXT,
                                    created_at REAL NOT NULL, used INTEGER NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS pending (id TEXT PRIMARY KEY, params TEXT NOT NULL, browser TEXT NOT NULL,
                                    csrf TEXT NOT NULL, user TEXT, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS codes (hash TEXT PRIMARY KEY, family TEXT NOT NULL, client_id TEXT NOT NULL,
                                  redirect_uri TEXT NOT NULL, challenge TEXT NOT NULL, user TEXT NOT NULL,
                                  scopes TEXT NOT NULL, resource TEXT NOT NULL, expires_at REAL NOT NULL,
                                  used INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS refresh (hash TEXT PRIMARY KEY, family TEXT NOT NULL, client_id TEXT NOT NULL,
                                    user TEXT NOT NULL, scopes TEXT NOT NULL, resource TEXT NOT NULL,
                                    expires_at REAL NOT NULL, used INTEGER NOT NULL DEFAULT 0,
                                    revoked INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS refresh_family ON refresh (family);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

_PERSONAL_TOKENS_SCHEMA = """
CREATE TABLE IF NOT EXISTS personal_tokens (id_hash TEXT PRIMARY KEY, user TEXT NOT NULL, name TEXT NOT NULL,
                                            scopes TEXT NOT NULL, created_at REAL NOT NULL,
                                            expires_at REAL NOT NULL, last_used REAL, revoked_at REAL);
CREATE INDEX IF NOT EXISTS personal_tokens_user ON personal_tokens (user, name);
"""
# A personal token a day past its expiry is only history: forgotten when the next one is made.
_PERSONAL_TOKEN_KEPT_AFTER_EXPIRY = 86400
# What a name's account is beyond its password: an id that is new each time the name is (re)created, and
# when it was removed. A removed account keeps its row, so the name's log is never silently handed on.
_ACCOUNT_COLUMNS = {"id": "TEXT", "removed_at": "REAL"}
# Web sessions: the cookie carries a random id, the row says whose it is, so the server can end it.
_SESSIONS = ("CREATE TABLE IF NOT EXISTS sessions (hash TEXT PRIMARY KEY, account TEXT NOT NULL, "
             "expires_at REAL NOT NULL)",
             "CREATE INDEX IF NOT EXISTS sessions_account ON sessions (account)")

#: What `counts()` reports: authorization requests that reached the login page, and codes redeemed.
FLOWS_STARTED = "flows_started"
FLOWS_COMPLETED = "flows_completed"
#: A registered client that got no code within this long is forgotten: anyone may register, so
#: registrations nobody used must not pile up (its rightful owner just registers again).
UNUSED_CLIENT_SECONDS = 86400.0


def oauth_db_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / OAUTH_FILE


def valid_username(name: str) -> bool:
    # No '#': `Identity.parse` reads it as ISSUER#SUBJECT.
    return bool(_USERNAME.fullmatch(name))


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class RemovedAccount(ValueError):
    """The name belonged to an account that was removed and whose memories are still on disk."""


class PendingRequest(msgspec.Struct, frozen=True, kw_only=True):
    """An /authorize request between the login page and the consent button."""

    id: str
    params: dict[str, Any]
    browser: str
    csrf: str
    user: str | None


class Grant(msgspec.Struct, frozen=True, kw_only=True):
    """What a code or refresh token stands for."""

    family: str
    client_id: str
    user: str
    scopes: list[str]
    resource: str
    redirect_uri: str = ""
    challenge: str = ""


class ConnectedApp(msgspec.Struct, frozen=True, kw_only=True):
    """A client holding a live refresh token of one person: what the person may revoke."""

    family: str
    client_id: str
    client_name: str
    scopes: list[str]
    expires_at: float


class PersonalToken(msgspec.Struct, frozen=True, kw_only=True):
    """A live token of `memory token`, as its owner sees it (never the token itself)."""

    name: str
    scopes: list[str]
    created_at: float
    expires_at: float
    last_used: float | None


class OAuthStore:
    def __init__(self, data_dir: str | Path):
        path = oauth_db_path(data_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        os.chmod(path, 0o600)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
        use_wal(self._db)
        self._db.executescript(_SCHEMA)
        self._db.executescript(_PERSONAL_TOKENS_SCHEMA)
        self._migrate_accounts()
        self._add_client_used_column()
        for suffix in ("-wal", "-shm"):
            sidecar = Path(f"{path}{suffix}")
            if sidecar.exists():
                os.chmod(sidecar, 0o600)

    def __enter__(self) -> "OAuthStore":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction, taken up front (BEGIN IMMEDIATE): the lock keeps this process's
        threads apart, the database lock other processes (the CLI, more workers), so a check and
        the write that depends on it (a name is free; a code is unused) see no one in between."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _run(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _count(self, name: str) -> None:
        # Called with the lock held.
        self._db.execute("INSERT INTO counters VALUES (?, 1) ON CONFLICT (name) DO UPDATE SET value = value + 1",
                         (name,))

    def counts(self) -> dict[str, int]:
        """Counters since the store was created: OAuth flows started and completed, and the tool
        calls the server has tallied (`add_counts`)."""
        return {FLOWS_STARTED: 0, FLOWS_COMPLETED: 0} | dict(self._run("SELECT name, value FROM counters"))

    def add_counts(self, increments: dict[str, int]) -> None:
        with self._transaction():
            self._db.executemany(
                "INSERT INTO counters VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                list(increments.items()))

    # Accounts

    def _migrate_accounts(self) -> None:
        # A store made before accounts had ids gets the columns, and each of its accounts an id.
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                have = {row[1] for row in self._db.execute("PRAGMA table_info(users)")}
                for column, kind in _ACCOUNT_COLUMNS.items():
                    if column not in have:
                        self._db.execute(f"ALTER TABLE users ADD COLUMN {column} {kind}")
                self._db.execute("UPDATE users SET id = lower(hex(randomblob(16))) WHERE id IS NULL")
                for statement in _SESSIONS:
                    self._db.execute(statement)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def add_user(self, name: str, password_hash: str, *, reclaim: bool = False) -> None:
        """A new account with a new id. A name whose account was removed is taken again only with
        `reclaim` (its memories become the new account's); otherwise `RemovedAccount`."""
        if not valid_username(name):
            raise ValueError(f"{name!r} is not a valid account name (letters, digits, . _ @ -; at most 64)")
        with self._transaction():
            rows = self._db.execute("SELECT removed_at FROM users WHERE name = ?", (name,)).fetchall()
            if rows and rows[0][0] is None:
                raise ValueError(f"account {name!r} already exists")
            if rows and not reclaim:
                raise RemovedAccount(f"account {name!r} was removed and its memories are still here")
            self._db.execute(
                "INSERT INTO users (name, password_hash, created_at, id, removed_at) VALUES (?, ?, ?, ?, NULL) "
                "ON CONFLICT (name) DO UPDATE SET password_hash = excluded.password_hash, "
                "created_at = excluded.created_at, id = excluded.id, removed_at = NULL",
                (name, password_hash, time.time(), secrets.token_hex(16)))

    def remove_user(self, name: str) -> bool:
        """Remove the account and end everything issued to it: sessions, pending sign-ins, codes,
        grants and personal tokens, in one transaction."""
        with self._transaction():
            rows = self._db.execute("SELECT id FROM users WHERE name = ? AND removed_at IS NULL", (name,)).fetchall()
            if not rows:
                return False
            self._db.execute("UPDATE users SET removed_at = ?, password_hash = '' WHERE name = ?", (time.time(), name))
            self._db.execute("DELETE FROM sessions WHERE account = ?", (rows[0][0],))
            self._db.execute("DELETE FROM pending WHERE user = ?", (name,))
            self._db.execute("DELETE FROM codes WHERE user = ?", (name,))
            self._db.execute("UPDATE refresh SET revoked = 1 WHERE user = ?", (name,))
            now = time.time()
            self._db.execute("UPDATE personal_tokens SET revoked_at = ? WHERE user = ? AND revoked_at IS NULL "
                             "AND expires_at >= ?", (now, name, now))
        return True

    def was_removed(self, name: str) -> bool:
        return bool(self._run("SELECT 1 FROM users WHERE name = ? AND removed_at IS NOT NULL", (name,)))

    def users(self) -> list[str]:
        return [name for (name,) in self._run("SELECT name FROM users WHERE removed_at IS NULL ORDER BY name")]

    def password_hash(self, name: str) -> str | None:
        rows = self._run("SELECT password_hash FROM users WHERE name = ? AND removed_at IS NULL", (name,))
        return rows[0][0] if rows else None

    def set_password(self, name: str, password_hash: str) -> bool:
        """A new password; every web session of the account ends with the old one."""
        with self._transaction():
            rows = self._db.execute("UPDATE users SET password_hash = ? WHERE name = ? AND removed_at IS NULL "
                                    "RETURNING id", (password_hash, name)).fetchall()
            if rows:
                self._db.execute("DELETE FROM sessions WHERE account = ?", (rows[0][0],))
        return bool(rows)

    # Web sessions

    def start_session(self, name: str, ttl: float) -> str | None:
        """A new session of the live account `name`: the secret for its cookie (only its hash is kept)."""
        session = secrets.token_urlsafe(32)
        now = time.time()
        with self._transaction():
            self._db.execute("DELETE FROM sessions WHERE expires_at < ?", (now,))
            rows = self._db.execute("SELECT id FROM users WHERE name = ? AND removed_at IS NULL", (name,)).fetchall()
            if not rows:
                return None
            self._db.execute("INSERT INTO sessions VALUES (?, ?, ?)", (_digest(session), rows[0][0], now + ttl))
        return session

    def session_user(self, session: str) -> str | None:
        """The account name of a live session: ended, expired, or of an account since removed (or
        removed and created again) is None."""
        rows = self._run("SELECT u.name FROM sessions s JOIN users u ON u.id = s.account "
                         "WHERE s.hash = ? AND s.expires_at >= ? AND u.removed_at IS NULL",
                         (_digest(session), time.time()))
        return rows[0][0] if rows else None

    def end_session(self, session: str) -> None:
        self._run("DELETE FROM sessions WHERE hash = ?", (_digest(session),))

    # Clients

    def _add_client_used_column(self) -> None:
        # Files from before `used` existed: their clients count as used (they may hold live grants).
        if "used" not in {row[1] for row in self._db.execute("PRAGMA table_info(clients)")}:
            try:
                self._db.execute("ALTER TABLE clients ADD COLUMN used INTEGER NOT NULL DEFAULT 1")
            except sqlite3.OperationalError:
                pass  # the CLI or the server, opening the same file at the same moment, added it first

    def save_client(self, client_id: str, metadata: dict[str, Any], secret: str | None) -> None:
        now = time.time()
        with self._transaction():
            # Cleaning up here, on the one path that adds clients, keeps their number bounded without a timer.
            self._db.execute("DELETE FROM clients WHERE used = 0 AND created_at < ?", (now - UNUSED_CLIENT_SECONDS,))
            self._db.execute("INSERT OR REPLACE INTO clients (client_id, metadata, secret_hash, created_at, used) "
                             "VALUES (?, ?, ?, ?, 0)",
                             (client_id, json.dumps(metadata), _digest(secret) if secret else None, now))

    def client(self, client_id: str) -> tuple[dict[str, Any], str | None] | None:
        rows = self._run("SELECT metadata, secret_hash FROM clients WHERE client_id = ?", (client_id,))
        return (json.loads(rows[0][0]), rows[0][1]) if rows else None

    @staticmethod
    def secret_matches(secret: str, secret_hash: str | None) -> bool:
        import hmac

        return secret_hash is not None and hmac.compare_digest(_digest(secret), secret_hash)

    # Pending authorization requests

    def save_pending(self, request: PendingRequest, ttl: float) -> None:
        now = time.time()
        with self._transaction():
            self._db.execute("DELETE FROM pending WHERE expires_at < ?", (now,))
            self._db.execute("INSERT INTO pending VALUES (?, ?, ?, ?, ?, ?)",
                             (request.id, json.dumps(request.params), request.browser, request.csrf, request.user,
                              now + ttl))
            self._count(FLOWS_STARTED)

    def pending(self, request_id: str) -> PendingRequest | None:
        rows = self._run("SELECT params, browser, csrf, user FROM pending WHERE id = ? AND expires_at >= ?",
                         (request_id, time.time()))
        if not rows:
            return None
        params, browser, csrf, user = rows[0]
        return PendingRequest(id=request_id, params=json.loads(params), browser=browser, csrf=csrf, user=user)

    def log_in_pending(self, request_id: str, user: str, csrf: str) -> None:
        self._run("UPDATE pending SET user = ?, csrf = ? WHERE id = ?", (user, csrf, request_id))

    def drop_pending(self, request_id: str) -> bool:
        return bool(self._run("DELETE FROM pending WHERE id = ? RETURNING id", (request_id,)))

    # Codes

    def save_code(self, code: str, grant: Grant, ttl: float) -> None:
        # An hour past expiry a code can no longer be told apart from a guess: forget old ones.
        self._run("DELETE FROM codes WHERE expires_at < ?", (time.time() - 3600,))
        self._run("INSERT INTO codes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
                  (_digest(code), grant.family, grant.client_id, grant.redirect_uri, grant.challenge, grant.user,
                   " ".join(grant.scopes), grant.resource, time.time() + ttl))
        self._run("UPDATE clients SET used = 1 WHERE client_id = ? AND used = 0", (grant.client_id,))

    def use_code(self, code: str) -> tuple[Grant, bool] | None:
        """The code's grant and whether it was fresh; a second use revokes what the first one issued."""
        with self._transaction():
            rows = self._db.execute(
                "SELECT family, client_id, redirect_uri, challenge, user, scopes, resource, expires_at, used "
                "FROM codes WHERE hash = ?", (_digest(code),)).fetchall()
            if not rows:
                return None
            family, client_id, redirect_uri, challenge, user, scopes, resource, expires_at, used = rows[0]
            grant = Grant(family=family, client_id=client_id, redirect_uri=redirect_uri, challenge=challenge,
                          user=user, scopes=scopes.split(), resource=resource)
            if used:
                # used = 2 marks the code replayed: a token the first use saves after this is born revoked.
                self._db.execute("UPDATE codes SET used = 2 WHERE hash = ?", (_digest(code),))
                self._db.execute("UPDATE refresh SET revoked = 1 WHERE family = ?", (family,))
                return grant, False
            self._db.execute("UPDATE codes SET used = 1 WHERE hash = ?", (_digest(code),))
            fresh = expires_at >= time.time()
            if fresh:
                self._count(FLOWS_COMPLETED)
            return grant, fresh

    # Refresh tokens

    def save_refresh(self, token: str, grant: Grant, ttl: float) -> None:
        self._run("DELETE FROM refresh WHERE expires_at < ?", (time.time() - 86400,))
        # Revoked from the start when the family's code was replayed while its first use was still
        # on its way here: the replay's revocation found nothing to revoke yet.
        self._run("INSERT INTO refresh VALUES (?, ?, ?, ?, ?, ?, ?, 0, "
                  "EXISTS (SELECT 1 FROM codes WHERE family = ? AND used = 2))",
                  (_digest(token), grant.family, grant.client_id, grant.user, " ".join(grant.scopes), grant.resource,
                   time.time() + ttl, grant.family))

    def use_refresh(self, token: str) -> tuple[Grant, str] | None:
        """(grant, "ok" | "expired" | "revoked" | "reused"); a reused token revokes its whole family."""
        with self._transaction():
            rows = self._db.execute(
                "SELECT family, client_id, user, scopes, resource, expires_at, used, revoked FROM refresh "
                "WHERE hash = ?", (_digest(token),)).fetchall()
            if not rows:
                return None
            family, client_id, user, scopes, resource, expires_at, used, revoked = rows[0]
            grant = Grant(family=family, client_id=client_id, user=user, scopes=scopes.split(), resource=resource)
            if revoked:
                return grant, "revoked"
            if used:
                self._db.execute("UPDATE refresh SET revoked = 1 WHERE family = ?", (family,))
                return grant, "reused"
            self._db.execute("UPDATE refresh SET used = 1 WHERE hash = ?", (_digest(token),))
            return grant, ("ok" if expires_at >= time.time() else "expired")

    def grant_revoked(self, family: str) -> bool:
        return bool(self._run("SELECT 1 FROM refresh WHERE family = ? AND revoked = 1 LIMIT 1", (family,)))

    def revoke_refresh(self, token: str, client_id: str | None) -> None:
        with self._transaction():
            rows = self._db.execute("SELECT family, client_id FROM refresh WHERE hash = ?",
                                    (_digest(token),)).fetchall()
            # RFC 7009 §2.1: a client may only revoke its own tokens (and learns nothing either way).
            if rows and (client_id is None or rows[0][1] == client_id):
                self._db.execute("UPDATE refresh SET revoked = 1 WHERE family = ?", (rows[0][0],))

    # Grants, as the person who gave them sees them

    def grants_of(self, user: str, limit: int = 100) -> list[ConnectedApp]:
        """Grant families of `user` with a refresh token that still works, newest expiry first."""
        rows = self._run(
            "SELECT r.family, r.client_id, c.metadata, r.scopes, max(r.expires_at) FROM refresh r "
            "LEFT JOIN clients c ON c.client_id = r.client_id "
            "WHERE r.user = ? AND r.used = 0 AND r.revoked = 0 AND r.expires_at >= ? "
            "AND NOT EXISTS (SELECT 1 FROM refresh x WHERE x.family = r.family AND x.revoked = 1) "
            "GROUP BY r.family ORDER BY max(r.expires_at) DESC LIMIT ?", (user, time.time(), limit))
        # A client known by its metadata document URL has no row: its id is the best name there is.
        return [ConnectedApp(family=family, client_id=client_id,
                             client_name=json.loads(metadata).get("client_name", client_id) if metadata else client_id,
                             scopes=scopes.split(), expires_at=expires_at)
                for family, client_id, metadata, scopes, expires_at in rows]

    def revoke_grant(self, user: str, family: str) -> bool:
        """Revoke one of `user`'s grants: its refresh tokens, and through `grant_revoked` its access tokens."""
        with self._transaction():
            return bool(self._db.execute("UPDATE refresh SET revoked = 1 WHERE user = ? AND family = ?",
                                         (user, family)).rowcount)

    # Personal tokens (`memory token`): LocalTokenVerifier accepts one only while it is here, unrevoked

    def register_personal_token(self, token_id: str, *, user: str, name: str, scopes: list[str],
                                created_at: float, expires_at: float) -> None:
        with self._transaction():
            self._db.execute("DELETE FROM personal_tokens WHERE expires_at < ?",
                             (time.time() - _PERSONAL_TOKEN_KEPT_AFTER_EXPIRY,))
            self._db.execute("INSERT INTO personal_tokens VALUES (?, ?, ?, ?, ?, ?, NULL, NULL)",
                             (_digest(token_id), user, name, " ".join(scopes), created_at, expires_at))

    def personal_token_name(self, token_id: str, user: str) -> str | None:
        rows = self._run("SELECT name FROM personal_tokens WHERE id_hash = ? AND user = ? AND revoked_at IS NULL",
                         (_digest(token_id), user))
        return rows[0][0] if rows else None

    def mark_personal_token_used(self, token_id: str, when: float) -> None:
        self._run("UPDATE personal_tokens SET last_used = ? WHERE id_hash = ?", (when, _digest(token_id)))

    def personal_tokens_of(self, user: str, limit: int = 100) -> list[PersonalToken]:
        """`user`'s unrevoked, unexpired personal tokens, newest first."""
        rows = self._run("SELECT name, scopes, created_at, expires_at, last_used FROM personal_tokens "
                         "WHERE user = ? AND revoked_at IS NULL AND expires_at >= ? "
                         "ORDER BY created_at DESC, name LIMIT ?", (user, time.time(), limit))
        return [PersonalToken(name=name, scopes=scopes.split(), created_at=created_at, expires_at=expires_at,
                              last_used=last_used) for name, scopes, created_at, expires_at, last_used in rows]

    def revoke_personal_tokens(self, user: str, name: str | None = None) -> int:
        """Revoke `user`'s live tokens named `name` (all of them without a name); how many."""
        now = time.time()
        with self._transaction():
            return self._db.execute(
                "UPDATE personal_tokens SET revoked_at = ? WHERE user = ? AND revoked_at IS NULL "
                "AND expires_at >= ? AND (? IS NULL OR name = ?)", (now, user, now, name, name)).rowcount
