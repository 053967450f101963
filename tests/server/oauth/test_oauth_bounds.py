"""What an unauthenticated caller can make the authorization server store, and where its errors go:
every field of /register and /authorize is bounded (a clear 4xx, nothing stored), registrations
nobody used expire, a registered scope is a ceiling, and errors of a client that has not proven its
redirect are shown, not redirected (RFC 9700 §4.11.1). Against a live `memory serve`."""

import sqlite3
import time
from collections.abc import Iterator

import httpx2
import pytest
from conftest import PASSWORDS
from oauth_calls import CALLBACK, authorize_url, exchange, pkce
from oauth_person import Person, redirect_params

from memory.server.oauth.store import OAuthStore, oauth_db_path

LOOPBACK_CALLBACK = "http://127.0.0.1:5000/callback"


@pytest.fixture()
def http(as_server) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=as_server.url, timeout=30, follow_redirects=False) as client:
        yield client


def rows(server, table: str) -> int:
    with sqlite3.connect(oauth_db_path(server.data_dir)) as db:
        return db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def register(http, **metadata) -> httpx2.Response:
    return http.post("/register", json={"redirect_uris": [CALLBACK], "token_endpoint_auth_method": "none",
                                        **metadata})


OVERSIZED_REGISTRATIONS = {
    "a long client_name": {"client_name": "n" * 201},
    "a long logo_uri": {"logo_uri": "https://logo.example/" + "l" * 3000},
    "a long client_uri": {"client_uri": "https://client.example/" + "c" * 3000},
    "a long redirect URI": {"redirect_uris": ["https://chatgpt.com/" + "r" * 3000]},
    "eleven redirect URIs": {"redirect_uris": [f"https://chatgpt.com/cb{i}" for i in range(11)]},
    "a long scope": {"scope": "memories:read " * 20},
    "many grant types": {"grant_types": ["authorization_code"] * 50},
    "a long grant type": {"grant_types": ["authorization_code", "g" * 500]},
}


@pytest.mark.parametrize("oversize", OVERSIZED_REGISTRATIONS)
def test_an_oversized_registration_field_is_refused_with_400_and_nothing_is_stored(as_server, http, oversize):
    before = rows(as_server, "clients")
    answer = register(http, **OVERSIZED_REGISTRATIONS[oversize])
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] in ("invalid_client_metadata", "invalid_redirect_uri")
    assert "at most" in answer.json()["error_description"]
    assert rows(as_server, "clients") == before


def test_a_registration_body_over_16_kib_is_refused_before_it_is_read_and_nothing_is_stored(as_server, http):
    before = rows(as_server, "clients")
    # Under the server-wide 1 MiB cap, far over what a registration needs.
    answer = register(http, logo_uri="https://logo.example/" + "l" * (100 * 1024))
    assert answer.status_code == 413
    assert rows(as_server, "clients") == before


UNREADABLE_REGISTRATIONS = {
    "JSON nested 5000 deep": b'{"redirect_uris": ["%s"], "x": ' % CALLBACK.encode() + b"[" * 5000 + b"]" * 5000 + b"}",
    "a lone surrogate in client_name": b'{"redirect_uris": ["%s"], "token_endpoint_auth_method": "none", '
                                       b'"client_name": "\\ud800"}' % CALLBACK.encode(),
}


@pytest.mark.parametrize("body", UNREADABLE_REGISTRATIONS)
def test_a_registration_too_deep_or_holding_a_lone_surrogate_is_a_400_naming_it_and_nothing_is_stored(
        as_server, http, body):
    before = rows(as_server, "clients")
    answer = http.post("/register", content=UNREADABLE_REGISTRATIONS[body],
                       headers={"Content-Type": "application/json"})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_client_metadata"
    assert any(word in answer.json()["error_description"] for word in ("deep", "client_name"))
    assert rows(as_server, "clients") == before


OVERSIZED_REQUESTS = {
    "a 7000-character state": {"state": "s" * 7000},
    "a 7000-character code_challenge": {"code_challenge": "c" * 7000},
    "a 42-character code_challenge": {"code_challenge": "c" * 42},
    "a code_challenge outside base64url": {"code_challenge": "+/" * 21 + "="},
}


@pytest.mark.parametrize("oversize", OVERSIZED_REQUESTS)
def test_an_oversized_or_malformed_authorization_request_is_refused_with_400_and_nothing_is_stored(
        as_server, http, oversize):
    client_id = register(http).json()["client_id"]
    before = rows(as_server, "pending")
    answer = http.get(authorize_url(as_server, client_id, pkce()[1], **OVERSIZED_REQUESTS[oversize]))
    assert answer.status_code == 400 and "location" not in answer.headers
    assert "state" in answer.text or "code_challenge" in answer.text
    assert 's' * 100 not in answer.text and 'c' * 100 not in answer.text
    assert rows(as_server, "pending") == before


def test_an_oversized_state_is_not_echoed_to_a_loopback_redirect(as_server, http):
    client_id = register(http, redirect_uris=[LOOPBACK_CALLBACK]).json()["client_id"]
    answer = http.get(authorize_url(as_server, client_id, pkce()[1], redirect_uri=LOOPBACK_CALLBACK,
                                    state="s" * 7000))
    assert answer.status_code == 302
    back = redirect_params(answer.headers["location"])
    assert back["error"] == "invalid_request" and "state" not in back


@pytest.mark.parametrize("problem", [{"code_challenge_method": "plain"}, {"resource": "https://other.example/mcp"},
                                     {"response_type": "token"}, {"scope": "openid"}])
def test_errors_of_a_dynamically_registered_client_are_shown_not_redirected(as_server, http, problem):
    client_id = register(http).json()["client_id"]
    answer = http.get(authorize_url(as_server, client_id, pkce()[1], **problem))
    assert answer.status_code == 400 and "location" not in answer.headers
    assert "Cannot connect" in answer.text


def test_errors_of_a_loopback_client_still_go_back_to_it(as_server, http):
    client_id = register(http, redirect_uris=[LOOPBACK_CALLBACK]).json()["client_id"]
    answer = http.get(authorize_url(as_server, client_id, pkce()[1], redirect_uri=LOOPBACK_CALLBACK,
                                    resource="https://other.example/mcp"))
    assert answer.status_code == 302
    assert redirect_params(answer.headers["location"])["error"] == "invalid_target"


@pytest.mark.anyio
async def test_a_client_that_registered_read_only_cannot_obtain_write_and_gets_read_when_it_names_no_scope(
        as_server, http):
    registered = register(http, scope="memories:read", redirect_uris=[LOOPBACK_CALLBACK])
    assert registered.status_code == 201 and registered.json()["scope"] == "memories:read"
    client_id = registered.json()["client_id"]
    wider = http.get(authorize_url(as_server, client_id, pkce()[1], redirect_uri=LOOPBACK_CALLBACK,
                                   scope="memories:read memories:write"))
    assert redirect_params(wider.headers["location"])["error"] == "invalid_scope"
    verifier, challenge = pkce()
    location = await Person("alice", PASSWORDS["alice"]).location_after_consent(
        authorize_url(as_server, client_id, challenge, redirect_uri=LOOPBACK_CALLBACK, scope=None))
    tokens = exchange(http, client_id, redirect_params(location)["code"], verifier, redirect_uri=LOOPBACK_CALLBACK)
    assert tokens.json()["scope"] == "memories:read"


def test_a_registered_scope_naming_none_of_this_servers_scopes_is_refused(http):
    answer = register(http, scope="openid profile")
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_client_metadata"


@pytest.mark.anyio
async def test_a_registration_that_got_no_code_within_a_day_is_forgotten_on_the_next_registration(as_server, http):
    unused = register(http, client_name="never used").json()["client_id"]
    used = register(http, client_name="used once").json()["client_id"]
    location = await Person("alice", PASSWORDS["alice"]).location_after_consent(
        authorize_url(as_server, used, pkce()[1]))
    assert "code" in redirect_params(location)
    with sqlite3.connect(oauth_db_path(as_server.data_dir)) as db:
        db.execute("UPDATE clients SET created_at = ? WHERE client_id IN (?, ?)", (time.time() - 2 * 86400, unused,
                                                                                   used))
    assert register(http).status_code == 201  # ordinary traffic does the cleaning
    forgotten = http.get(authorize_url(as_server, unused, pkce()[1]))
    kept = http.get(authorize_url(as_server, used, pkce()[1]))
    assert forgotten.status_code == 400 and "Unknown client" in forgotten.text
    assert kept.status_code == 200 and 'name="username"' in kept.text


def test_clients_of_a_file_from_before_expiry_existed_count_as_used(tmp_path):
    path = oauth_db_path(tmp_path)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE clients (client_id TEXT PRIMARY KEY, metadata TEXT NOT NULL, secret_hash TEXT, "
                   "created_at REAL NOT NULL)")
        db.execute("INSERT INTO clients VALUES ('old', '{\"client_name\": \"old\"}', NULL, ?)",
                   (time.time() - 30 * 86400,))
    store = OAuthStore(tmp_path)
    store.save_client("new", {"client_name": "new"}, None)
    assert store.client("old") is not None and store.client("new") is not None
    store.close()


def test_a_metadata_document_holding_a_lone_surrogate_is_refused_with_a_page_not_a_500(as_server, http,
                                                                                      metadata_host):
    import uuid

    url = f"http://127.0.0.1:{metadata_host.server_address[1]}/clients/{uuid.uuid4().hex}.json"
    metadata_host.documents[url.split(str(metadata_host.server_address[1]), 1)[1]] = {
        "client_id": url, "client_name": "Broken \ud800 Assistant", "redirect_uris": [CALLBACK],
        "token_endpoint_auth_method": "none"}
    verifier, challenge = pkce()
    answer = http.get(authorize_url(as_server, url, challenge))
    assert answer.status_code == 400 and "location" not in answer.headers
    assert "Broken" not in answer.text  # the person sees a generic error, not the document
