"""Two real `memory serve` processes on one PostgreSQL database (`MEMORY_DATABASE_URL`), as two
replicas behind a balancer: one public URL, one key ring (a mounted secret), separate data
directories. A person's browser and an assistant land on either one at every request; accounts,
sign-ins, codes, grants and personal tokens are the database's, so it makes no difference."""

import base64
import hashlib
import secrets
import shutil
import time
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2
import pytest
from web_calls import _HIDDEN, csrf_token

from memory.pgpool import open_pool
from memory.server.auth import ALL_SCOPES, issue_personal_token
from memory.server.oauth.passwords import hash_password
from memory.server.oauth.pgstore import PostgresOAuthStore
from memory.server.process import ServerProcess, free_port
from memory.server.web.session import session_key
from memory.signing import KeyRing

CALLBACK = "https://chatgpt.com/connector_platform_oauth_redirect"
PASSWORD = "alice-replica-password"


class Replicas:
    def __init__(self, first: ServerProcess, second: ServerProcess, public_url: str, database_url: str):
        self.first, self.second = first, second
        self.public_url = public_url
        self.database_url = database_url

    @staticmethod
    def direct(server: ServerProcess) -> str:
        """The replica's own address (its settings' URL is the shared public one)."""
        return f"http://127.0.0.1:{server.port}"


@pytest.fixture()
def replicas(tmp_path: Path, postgres_url: str) -> Iterator[Replicas]:
    first_dir, second_dir = tmp_path / "a" / "data", tmp_path / "b" / "data"
    first_dir.mkdir(parents=True)
    second_dir.mkdir(parents=True)
    # One key ring for both, as a deployment mounts one secret into every replica.
    KeyRing(first_dir)
    session_key(first_dir)
    shutil.copytree(first_dir / "keys", second_dir / "keys")
    with PostgresOAuthStore(open_pool(postgres_url), owns_pool=True) as store:
        store.add_user("alice", hash_password(PASSWORD))  # what `memory user add` does with --database-url
    port = free_port()
    public_url = f"http://127.0.0.1:{port}"
    env = {"MEMORY_DATABASE_URL": postgres_url}
    first = ServerProcess(first_dir, port=port, public_url=public_url, env=env)
    second = ServerProcess(second_dir, public_url=public_url, env=env)
    with first, second:
        # `start` waited on the public URL, which is the first replica's: wait for the second's own.
        _wait_healthy(Replicas.direct(second), second)
        yield Replicas(first, second, public_url, postgres_url)


def _wait_healthy(url: str, server: ServerProcess, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx2.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx2.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not come up:\n{server.log_tail()}")


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    return verifier, base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def test_an_authorization_code_flow_hops_between_replicas_and_a_replayed_code_revokes_on_both(replicas: Replicas):
    a, b = Replicas.direct(replicas.first), Replicas.direct(replicas.second)
    # One cookie jar for both addresses, as a browser behind a balancer has.
    with httpx2.Client(timeout=30, follow_redirects=False) as browser:
        registered = browser.post(f"{a}/register", json={"client_name": "Replica test", "redirect_uris": [CALLBACK],
                                                          "token_endpoint_auth_method": "none"})
        assert registered.status_code == 201, registered.text
        client_id = registered.json()["client_id"]
        verifier, challenge = _pkce()
        login = browser.get(f"{b}/authorize?" + urlencode({
            "response_type": "code", "client_id": client_id, "redirect_uri": CALLBACK, "state": "s",
            "code_challenge": challenge, "code_challenge_method": "S256", "resource": f"{replicas.public_url}/mcp",
            "scope": "memories:read memories:write"}))
        assert login.status_code == 200, login.text
        fields = {k: unescape(v) for k, v in _HIDDEN.findall(login.text)}
        consent = browser.post(f"{a}/authorize/login", data={**fields, "username": "alice", "password": PASSWORD})
        assert consent.status_code == 200, consent.text
        fields = {k: unescape(v) for k, v in _HIDDEN.findall(consent.text)}
        answer = browser.post(f"{b}/authorize/consent", data={**fields, "approve": "yes"})
        assert answer.status_code == 302, answer.text
        code = parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]
        exchange = {"grant_type": "authorization_code", "code": code, "client_id": client_id,
                    "redirect_uri": CALLBACK, "code_verifier": verifier}

        tokens = browser.post(f"{a}/token", data=exchange)
        assert tokens.status_code == 200, tokens.text
        access = {"Authorization": f"Bearer {tokens.json()['access_token']}"}
        stored = browser.post(f"{b}/api/v1/memories", json={"text": "replicas share one grant"}, headers=access)
        assert stored.status_code == 201, stored.text
        rotated = browser.post(f"{b}/token", data={"grant_type": "refresh_token", "client_id": client_id,
                                                   "refresh_token": tokens.json()["refresh_token"]})
        assert rotated.status_code == 200, rotated.text
        assert browser.get(f"{a}/api/v1/memories", headers={
            "Authorization": f"Bearer {rotated.json()['access_token']}"}).status_code == 200

        # The code again, on the other replica: refused, and everything it issued is revoked everywhere.
        replayed = browser.post(f"{b}/token", data=exchange)
        assert replayed.status_code == 400 and replayed.json()["error"] == "invalid_grant"
        for replica in (a, b):
            assert browser.get(f"{replica}/api/v1/memories", headers=access).status_code == 401
            assert browser.get(f"{replica}/api/v1/memories", headers={
                "Authorization": f"Bearer {rotated.json()['access_token']}"}).status_code == 401


def test_a_personal_token_revoked_on_one_replica_is_refused_by_the_other(replicas: Replicas):
    a, b = Replicas.direct(replicas.first), Replicas.direct(replicas.second)
    with PostgresOAuthStore(open_pool(replicas.database_url), owns_pool=True) as store:
        token = issue_personal_token(KeyRing(replicas.first.data_dir), store, issuer=replicas.public_url,
                                     audience=f"{replicas.public_url}/mcp", user="alice", name="script",
                                     scopes=ALL_SCOPES, ttl_seconds=3600, max_ttl_seconds=86400)
    bearer = {"Authorization": f"Bearer {token}"}
    with httpx2.Client(timeout=30, follow_redirects=False) as browser:
        assert browser.get(f"{b}/api/v1/memories", headers=bearer).status_code == 200
        assert browser.get(f"{a}/api/v1/memories", headers=bearer).status_code == 200

        # Signed in on one replica, the web session holds on the other: the person revokes there.
        page = browser.get(f"{a}/login")
        signed_in = browser.post(f"{a}/login", data={"username": "alice", "password": PASSWORD, "next": "/",
                                                     "_csrf_token": csrf_token(page.text)})
        assert signed_in.status_code == 303, signed_in.text
        apps = browser.get(f"{b}/apps")
        assert apps.status_code == 200 and "script" in apps.text
        revoked = browser.post(f"{b}/apps/tokens/script/revoke", data={"_csrf_token": csrf_token(apps.text)})
        assert revoked.status_code == 303, revoked.text

        for replica in (a, b):
            refused = browser.get(f"{replica}/api/v1/memories", headers=bearer)
            assert refused.status_code == 401 and "revoked" in refused.headers["www-authenticate"]
