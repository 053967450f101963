"""Two real `memory serve` processes on one PostgreSQL database (`MEMORY_DATABASE_URL`), as two
replicas behind a balancer: one public URL, one key ring (a mounted secret), separate data
directories. A person's browser and an assistant land on either one at every request; accounts,
sign-ins, codes, grants and personal tokens are the database's, so it makes no difference."""

import base64
import hashlib
import secrets
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2
import pytest
from pg_replicas import PASSWORD, Replicas, running_replicas
from web_calls import _HIDDEN, csrf_token

CALLBACK = "https://chatgpt.com/connector_platform_oauth_redirect"


@pytest.fixture()
def replicas(tmp_path: Path, postgres_url: str) -> Iterator[Replicas]:
    with running_replicas(tmp_path, postgres_url) as running:
        yield running


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
    bearer = {"Authorization": f"Bearer {replicas.personal_token('script')}"}
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
