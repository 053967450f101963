"""Who is signed in to the web pages: Litestar's encrypted cookie session and its CSRF tokens,
keyed by a secret made once per data directory.

The cookie holds only a random session id; the session itself is a row of the OAuth store, so the
server can end it (signing out, a new password, `memory user remove`) whoever holds a copy.
"""

import hashlib
import os
import secrets
from pathlib import Path
from typing import Any

from litestar.config.csrf import CSRFConfig
from litestar.connection import ASGIConnection
from litestar.middleware.session.client_side import CookieBackendConfig

from memory.server.oauth.storage import AuthStore

__all__ = ["SESSION_SECONDS", "session_key", "session_config", "csrf_config", "signed_in", "sign_in", "sign_out"]

#: A sign-in lasts this long (the session row's expiry; the cookie's max-age says the same).
SESSION_SECONDS = 12 * 3600
_KEY_FILE = "web-session.key"


def session_key(keys_dir: str | Path) -> bytes:
    """32 random bytes in `<keys_dir>/web-session.key` (0600), created on first use. Beside the
    signing keys, so replicas sharing one keys directory (`--keys-dir`) accept each other's
    sign-ins and CSRF tokens. Written aside and linked into place, so two processes starting at
    once agree on one key."""
    path = Path(keys_dir) / _KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_bytes(32))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(draft, path)
        except FileExistsError:
            pass  # another process won: use its key
        finally:
            draft.unlink()
    key = path.read_bytes()
    if len(key) != 32:
        raise RuntimeError(f"{path} must hold 32 bytes; delete it to sign everyone out and make a new one")
    return key


def _cookie_path(base_url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(base_url).path.rstrip("/") or "/"


def session_config(key: bytes, base_url: str) -> CookieBackendConfig:
    return CookieBackendConfig(secret=key, key="memory_session", max_age=SESSION_SECONDS,
                               path=_cookie_path(base_url), httponly=True, samesite="lax",
                               secure=base_url.startswith("https://"))


def csrf_config(key: bytes, base_url: str) -> CSRFConfig:
    # Its own secret, derived from the session key: one file to keep, two keys in use.
    secret = hashlib.sha256(b"memory web csrf\x00" + key).hexdigest()
    return CSRFConfig(secret=secret, cookie_name="memory_csrf", cookie_path=_cookie_path(base_url),
                      cookie_httponly=True, cookie_samesite="lax", cookie_secure=base_url.startswith("https://"))


def _session_id(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    session = connection.scope.get("session") or {}
    sid = session.get("sid")
    return sid if isinstance(sid, str) and 0 < len(sid) <= 128 else None


def signed_in(connection: ASGIConnection[Any, Any, Any, Any], store: AuthStore) -> str | None:
    """The account name of the session, while the server still holds it."""
    sid = _session_id(connection)
    return store.session_user(sid) if sid else None


def sign_in(connection: ASGIConnection[Any, Any, Any, Any], store: AuthStore, user: str) -> bool:
    """A whole new session (nothing a visitor set before signing in carries over); False when the
    account is gone."""
    sid = store.start_session(user, SESSION_SECONDS)
    if sid is None:
        connection.clear_session()
        return False
    connection.set_session({"sid": sid})
    return True


def sign_out(connection: ASGIConnection[Any, Any, Any, Any], store: AuthStore) -> None:
    sid = _session_id(connection)
    if sid:
        store.end_session(sid)
    connection.clear_session()
