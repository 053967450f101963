"""Accounts and persistence: `memory user ...`, the first-start hint, rate limits, and everything
the authorization server knows surviving a restart. Each test runs its own `memory serve`."""

import stat
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest
from conftest import add_user
from oauth_person import Person, redirect_params
from oauth_calls import CALLBACK, authorize_url, exchange, pkce, refresh

from memory.server.oauth.store import oauth_db_path
from memory.server.process import ServerProcess


def memory(*args: str, data_dir: Path, stdin: str = "") -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).parent / "memory"), *args, "--data-dir", str(data_dir)]
    return subprocess.run(command, input=stdin, capture_output=True, text=True)


def test_accounts_are_added_listed_and_removed_with_hashed_passwords_in_a_private_file(tmp_path):
    data_dir = tmp_path / "data"
    assert add_user(data_dir, "carol", "carol-secret-pw").returncode == 0
    assert add_user(data_dir, "dave", "dave-secret-pw").returncode == 0
    duplicate = add_user(data_dir, "carol", "another-pw-123")
    assert duplicate.returncode != 0 and "already exists" in duplicate.stderr
    assert add_user(data_dir, "eve#evil", "whatever-pw-1").returncode != 0
    assert add_user(data_dir, "short", "pw").returncode != 0
    assert memory("user", "list", data_dir=data_dir).stdout.split() == ["carol", "dave"]
    assert memory("user", "remove", "dave", data_dir=data_dir).returncode == 0
    assert memory("user", "list", data_dir=data_dir).stdout.split() == ["carol"]
    assert memory("user", "remove", "dave", data_dir=data_dir).returncode != 0
    database = oauth_db_path(data_dir)
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
    assert b"carol-secret-pw" not in database.read_bytes()


def test_the_first_start_without_accounts_says_how_to_create_one(tmp_path):
    with ServerProcess(tmp_path / "data") as server:
        pass
    assert "memory user add NAME" in server.log_tail()


@pytest.mark.anyio
async def test_clients_codes_and_refresh_tokens_survive_a_restart(tmp_path):
    data_dir = tmp_path / "data"
    add_user(data_dir, "alice", "alice-password-1")
    server = ServerProcess(data_dir)
    with server, httpx2.Client(base_url=server.url, follow_redirects=False) as http:
        client_id = http.post("/register", json={"redirect_uris": [CALLBACK],
                                                 "token_endpoint_auth_method": "none"}).json()["client_id"]
        verifier, challenge = pkce()
        location = await Person("alice", "alice-password-1").location_after_consent(
            authorize_url(server, client_id, challenge))
        tokens = exchange(http, client_id, redirect_params(location)["code"], verifier).json()
    with server, httpx2.Client(base_url=server.url, follow_redirects=False) as http:
        refreshed = refresh(http, client_id, tokens["refresh_token"])
        assert refreshed.status_code == 200, refreshed.text
        still_known = http.get(authorize_url(server, client_id, pkce()[1]))
        assert still_known.status_code == 200 and 'name="username"' in still_known.text
        assert http.get("/api/v1/entities", headers={
            "Authorization": f"Bearer {refreshed.json()['access_token']}"}).status_code == 200


def test_registration_token_and_login_are_rate_limited_per_address_with_retry_after(tmp_path):
    with ServerProcess(tmp_path / "data", extra_args=["--oauth-rate-limit", "3"]) as server, \
            httpx2.Client(base_url=server.url) as http:
        answers = [http.post("/register", json={"redirect_uris": [CALLBACK]}) for _ in range(4)]
        token = http.post("/token", data={"grant_type": "refresh_token", "refresh_token": "x", "client_id": "y"})
        assert [a.status_code for a in answers] == [201, 201, 201, 429]
        assert int(answers[-1].headers["retry-after"]) >= 1
        assert token.status_code == 429
        assert http.get("/authorize", params={"client_id": "y"}).status_code == 429
        assert http.get("/.well-known/oauth-authorization-server").status_code == 200


@pytest.mark.anyio
async def test_removing_an_account_cuts_off_its_tokens_at_once(as_server):
    assert add_user(as_server.data_dir, "frank", "frank-password-1").returncode == 0
    with httpx2.Client(base_url=as_server.url, follow_redirects=False) as http:
        client_id = http.post("/register", json={"redirect_uris": [CALLBACK],
                                                 "token_endpoint_auth_method": "none"}).json()["client_id"]
        verifier, challenge = pkce()
        location = await Person("frank", "frank-password-1").location_after_consent(
            authorize_url(as_server, client_id, challenge))
        tokens = exchange(http, client_id, redirect_params(location)["code"], verifier).json()
        access = {"Authorization": f"Bearer {tokens['access_token']}"}
        assert http.get("/api/v1/entities", headers=access).status_code == 200
        assert memory("user", "remove", "frank", data_dir=as_server.data_dir).returncode == 0
        assert http.get("/api/v1/entities", headers=access).status_code == 401
        assert refresh(http, client_id, tokens["refresh_token"]).status_code == 400
