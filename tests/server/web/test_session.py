"""The web session's key and cookie settings, on a real data directory."""

import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from memory.server.web.session import csrf_config, session_config, session_key


def test_the_session_key_is_made_once_private_and_the_same_for_every_process_that_asks(tmp_path: Path):
    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: session_key(tmp_path / "keys"), range(16)))

    path = tmp_path / "keys" / "web-session.key"
    assert len(keys) == 1 and len(keys.pop()) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["web-session.key"]  # no drafts left behind


def test_cookies_are_http_only_same_site_lax_and_secure_exactly_when_the_public_url_is_https(tmp_path: Path):
    key = session_key(tmp_path / "keys")

    for url, secure in (("https://memory.example/base", True), ("http://127.0.0.1:8000", False)):
        session, csrf = session_config(key, url), csrf_config(key, url)
        assert (session.secure, csrf.cookie_secure) == (secure, secure)
        assert session.httponly and csrf.cookie_httponly
        assert session.samesite == csrf.cookie_samesite == "lax"
    assert session_config(key, "https://memory.example/base").path == "/base"
