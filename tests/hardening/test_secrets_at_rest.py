"""Secrets at rest: what the server keeps on disk is readable by its own user only, and the
authorization server keeps no password, refresh token or code a reader of its file could use.

A real server, an account made with `memory user add`, the whole OAuth flow by hand (register,
sign in, allow, exchange, refresh) and a few stores; then every file and folder's mode is
checked and the raw bytes of the AS database (and its WAL) are searched for each secret.
"""

import base64
import sqlite3
import hashlib
import re
import secrets
import stat
import subprocess
from contextlib import closing
from html import unescape
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx2
import pytest
from hardening_util import MEMORY

from memory.server.process import ServerProcess

pytestmark = pytest.mark.slow

CALLBACK = "https://chatgpt.com/connector_platform_oauth_redirect"
PASSWORD = "correct horse battery staple 42"


def form(html: str, base: str) -> tuple[str, dict[str, str]]:
    action = unescape(re.search(r'<form[^>]*action="([^"]*)"', html).group(1))
    fields = {}
    for tag in re.findall(r"<input\b[^>]*>", html):
        attrs = {k: unescape(v) for k, v in re.findall(r'(\w+)="([^"]*)"', tag)}
        if "name" in attrs:
            fields[attrs["name"]] = attrs.get("value", "")
    return urljoin(base, action), fields


def oauth_flow(server: ServerProcess, http: httpx2.Client) -> dict[str, str]:
    """Every secret the flow hands out: the code, the access and both refresh tokens."""
    client_id = http.post("/register", json={"redirect_uris": [CALLBACK], "client_name": "Secrets Test",
                                             "token_endpoint_auth_method": "none"}).json()["client_id"]
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    login = http.get("/authorize", params={
        "response_type": "code", "client_id": client_id, "redirect_uri": CALLBACK, "state": "s",
        "code_challenge": challenge, "code_challenge_method": "S256", "resource": server.mcp_url,
        "scope": "memories:read memories:write"})
    assert login.status_code == 200, login.text
    action, fields = form(login.text, str(login.url))
    consent = http.post(action, data=fields | {"username": "carol", "password": PASSWORD})
    assert consent.status_code == 200, consent.text
    action, fields = form(consent.text, str(consent.url))
    allowed = http.post(action, data=fields | {"approve": "yes"})
    assert allowed.status_code == 302, allowed.text
    code = parse_qs(urlsplit(allowed.headers["location"]).query)["code"][0]
    tokens = http.post("/token", data={"grant_type": "authorization_code", "code": code, "client_id": client_id,
                                       "redirect_uri": CALLBACK, "code_verifier": verifier}).json()
    refreshed = http.post("/token", data={"grant_type": "refresh_token", "client_id": client_id,
                                          "refresh_token": tokens["refresh_token"]}).json()
    stored = http.post("/api/v1/memories", headers={"Authorization": f"Bearer {refreshed['access_token']}"},
                       json={"text": "carol's note, kept private"})
    assert stored.status_code == 201, stored.text
    return {"code": code, "first refresh token": tokens["refresh_token"],
            "second refresh token": refreshed["refresh_token"], "access token": refreshed["access_token"]}


@pytest.fixture(scope="module")
def after_a_flow(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("secrets") / "data"
    added = subprocess.run([str(MEMORY), "user", "add", "carol", "--data-dir", str(data_dir)],
                           input=f"{PASSWORD}\n", capture_output=True, text=True)
    assert added.returncode == 0, added.stderr
    with ServerProcess(data_dir, extra_args=["--oauth-rate-limit", "1000"]) as server, \
            httpx2.Client(base_url=server.url, timeout=30, follow_redirects=False) as http:
        server.wait_ready()
        handed_out = oauth_flow(server, http)
        # Looked at while the server runs: WAL and shared-memory files exist only now.
        modes = {path.relative_to(data_dir): stat.S_IMODE(path.stat().st_mode)
                 for path in [data_dir, *data_dir.rglob("*")]}
        raw = {path.name: path.read_bytes() for path in data_dir.glob("oauth.sqlite*")}
    return data_dir, handed_out, modes, raw


def test_keys_the_as_database_and_every_log_are_private_to_the_service_user(after_a_flow):
    data_dir, _, modes, _ = after_a_flow
    names = {str(p) for p in modes}
    for must in ("keys", "oauth.sqlite", "oauth.sqlite-wal", "oauth.sqlite-shm", "users"):
        assert must in names, f"{must} should exist by now: {sorted(names)}"
    assert any(n.startswith("keys/") for n in names) and any(n.endswith("events.sqlite-wal") for n in names)
    loose = {str(path): oct(mode) for path, mode in modes.items()
             if mode & 0o077 or (mode != 0o700 and (data_dir / path).is_dir())}
    assert loose == {}, "readable by others: " + ", ".join(f"{p} {m}" for p, m in sorted(loose.items()))


def test_the_as_database_holds_no_password_code_or_refresh_token_in_the_clear(after_a_flow, tmp_path):
    data_dir, handed_out, _, raw = after_a_flow
    assert raw["oauth.sqlite"].startswith(b"SQLite format 3")
    everything = b"".join(raw.values())  # the WAL too: a row may not have reached the main file yet
    for name, secret in {"password": PASSWORD, **handed_out}.items():
        assert secret.encode() not in everything, f"the {name} is stored in the clear"

    with closing(sqlite3.connect(f"file:{data_dir / 'oauth.sqlite'}?mode=ro", uri=True)) as db:
        (password_hash,) = db.execute("SELECT password_hash FROM users WHERE name = 'carol'").fetchone()
        refresh_hashes = {h for (h,) in db.execute("SELECT hash FROM refresh")}
        code_hashes = {h for (h,) in db.execute("SELECT hash FROM codes")}
    assert password_hash.startswith("scrypt$") and PASSWORD not in password_hash
    assert len(refresh_hashes) == 2 and len(code_hashes) == 1  # one row per secret handed out, none raw
    assert not refresh_hashes & {handed_out["first refresh token"], handed_out["second refresh token"]}
    assert handed_out["code"] not in code_hashes
