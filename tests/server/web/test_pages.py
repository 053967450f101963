"""The person's own pages against a live `memory serve`: signing in, CSRF, isolation between
people, forgetting, the timeline and revoking a connected app."""

import asyncio
import json
import uuid
from collections.abc import Iterator

import httpx2
import pytest
from server_calls import bearer, cli_token
from web_calls import PASSWORDS, Browser, connect_app, store_over_mcp

from memory.server.process import ServerProcess


@pytest.fixture()
def browser(web_server: ServerProcess) -> Iterator[Browser]:
    person = Browser(web_server.url)
    yield person
    person.close()


@pytest.fixture()
def alice(browser: Browser) -> Browser:
    assert browser.log_in("alice", PASSWORDS["alice"]).status_code == 303
    return browser


def store(server: ServerProcess, user: str, text: str, **fields) -> str:
    return asyncio.run(store_over_mcp(server.mcp_url, server.token(user), text, **fields))


@pytest.mark.parametrize("path", ["/", "/timeline", "/apps", "/export", "/memories/0190b0a0-0000-7000-8000-000000000000"])
def test_every_page_sends_a_visitor_without_a_session_to_the_login_form(browser: Browser, path: str):
    response = browser.get(path)

    assert response.status_code == 303
    assert response.headers["location"].startswith("/login?next=")


def test_a_wrong_password_is_refused_with_a_message_and_no_session(browser: Browser):
    response = browser.log_in("alice", "not-her-password")

    assert response.status_code == 401
    assert "Wrong account name or password." in response.text
    assert "memory_session" not in response.headers.get("set-cookie", "")
    assert browser.get("/").status_code == 303


def test_signing_in_sets_an_http_only_same_site_session_and_goes_where_the_person_was_going(browser: Browser):
    browser.get("/login", next="/timeline")
    response = browser.post("/login", {"username": "alice", "password": PASSWORDS["alice"], "next": "/timeline"})

    assert response.status_code == 303 and response.headers["location"] == "/timeline"
    cookie = response.headers["set-cookie"].lower()
    assert "memory_session=" in cookie and "httponly" in cookie and "samesite=lax" in cookie
    assert browser.get("/timeline").status_code == 200


def test_the_login_form_never_redirects_off_the_site(browser: Browser):
    browser.get("/login")
    response = browser.post("/login", {"username": "alice", "password": PASSWORDS["alice"],
                                       "next": "//evil.example/steal"})

    assert response.headers["location"] == "/"


def test_a_form_posted_without_its_csrf_token_is_refused_and_changes_nothing(web_server: ServerProcess, alice: Browser):
    memory_id = store(web_server, "alice", f"Alice keeps her bike in the hallway {uuid.uuid4().hex}")

    refused = alice.post(f"/memories/{memory_id}/forget", {"confirm": "yes"}, with_token=False)
    forged = alice.http.post(f"/memories/{memory_id}/forget", data={"confirm": "yes", "_csrf_token": "0" * 128})

    assert refused.status_code == 403 and forged.status_code == 403
    assert "could not be verified" in refused.text
    assert alice.get(f"/memories/{memory_id}").status_code == 200


def test_another_persons_memory_is_not_found_and_stays_untouched(web_server: ServerProcess, alice: Browser):
    secret = f"Bob door code is 4711 {uuid.uuid4().hex}"
    bobs = store(web_server, "bob", secret)

    page = alice.get(f"/memories/{bobs}")
    alice.get("/")
    forget = alice.post(f"/memories/{bobs}/forget", {"confirm": "yes"})
    edit = alice.post(f"/memories/{bobs}/edit", {"text": "mine now", "tags": ""})

    assert page.status_code == 404 and secret not in page.text
    assert forget.status_code == 404 and edit.status_code == 404
    bob = Browser(web_server.url)
    try:
        assert bob.log_in("bob", PASSWORDS["bob"]).status_code == 303
        assert secret in bob.get(f"/memories/{bobs}").text
    finally:
        bob.close()


def test_memories_stored_through_mcp_are_listed_filtered_and_searched_on_the_person_page(web_server, alice):
    marker = uuid.uuid4().hex[:8]
    tea = store(web_server, "alice", f"Alice drinks green tea every morning {marker}", tags=[f"drinks-{marker}"],
                entity=f"alice.habits{marker}")
    store(web_server, "alice", f"Alice sister lives in Lyon {marker}")

    listed = alice.get("/").text
    tagged = alice.get("/", tag=f"drinks-{marker}").text
    searched = alice.get("/", q=f"what does she drink in the morning {marker}").text

    assert f"green tea every morning {marker}" in listed and f"lives in Lyon {marker}" in listed
    assert f"green tea every morning {marker}" in tagged and f"lives in Lyon {marker}" not in tagged
    assert f"alice.habits{marker}" in tagged and f'/memories/{tea}"' in tagged
    assert f"green tea every morning {marker}" in searched.split("<article")[1]  # the best hit comes first
    assert alice.get("/", memory_type="nonsense").status_code == 400


def test_editing_on_the_page_changes_text_and_tags_and_the_history_shows_the_change(web_server, alice):
    memory_id = store(web_server, "alice", "Alice favourite colour is blue")
    alice.get(f"/memories/{memory_id}")

    response = alice.post(f"/memories/{memory_id}/edit", {"text": "Alice favourite colour is green",
                                                          "tags": "colours, likes"})
    page = alice.get(f"/memories/{memory_id}").text

    assert response.status_code == 303
    assert "favourite colour is green" in page and "colours" in page and "likes" in page
    assert "changed" in page and "web" in page  # the history names the page as the client


def test_forgetting_on_the_page_asks_first_then_erases_the_memory_and_the_timeline_shows_it_redacted(
        web_server: ServerProcess, alice: Browser):
    text = f"Alice old address was 12 Elm Street {uuid.uuid4().hex}"
    memory_id = store(web_server, "alice", text)

    confirm = alice.get(f"/memories/{memory_id}/forget")
    forgotten = alice.post(f"/memories/{memory_id}/forget", {"confirm": "yes"})
    timeline = alice.get("/timeline")

    assert "cannot be undone" in confirm.text
    assert forgotten.status_code == 303 and forgotten.headers["location"].startswith("/timeline")
    assert alice.get(f"/memories/{memory_id}").status_code == 404
    assert text not in alice.get("/").text
    assert timeline.status_code == 200 and text not in timeline.text
    assert "redacted (forgotten)" in timeline.text and "forgot" in timeline.text
    assert "Verified" in timeline.text


def test_forgetting_without_the_confirmation_does_nothing(web_server: ServerProcess, alice: Browser):
    memory_id = store(web_server, "alice", "Alice plays the cello")
    alice.get(f"/memories/{memory_id}/forget")

    response = alice.post(f"/memories/{memory_id}/forget", {})

    assert response.status_code == 400 and "confirmation" in response.text
    assert alice.get(f"/memories/{memory_id}").status_code == 200


def test_the_export_download_is_the_persons_signed_bundle(web_server: ServerProcess, alice: Browser):
    response = alice.get("/export")

    assert response.status_code == 200
    assert "memory-export.json" in response.headers["content-disposition"]
    bundle = json.loads(response.content)
    assert bundle["events"] and bundle["manifest"] and bundle["public_keys"]["keys"]


def test_revoking_a_connected_app_makes_its_access_token_fail_on_mcp(web_server: ServerProcess, browser: Browser):
    tokens = connect_app(web_server, "carol", PASSWORDS["carol"], "Carol's assistant")
    text = f"Carol stores this through her assistant {uuid.uuid4().hex}"
    memory_id = asyncio.run(store_over_mcp(web_server.mcp_url, tokens["access_token"], text))
    assert browser.log_in("carol", PASSWORDS["carol"]).status_code == 303

    # The assistant's OAuth identity and the page's are one person.
    assert text in browser.get(f"/memories/{memory_id}").text
    apps = browser.get("/apps").text
    assert "Carol&#39;s assistant" in apps or "Carol's assistant" in apps
    family = apps.split("/apps/")[1].split("/revoke")[0]
    revoked = browser.post(f"/apps/{family}/revoke")
    call = httpx2.post(web_server.mcp_url, headers={"Authorization": f"Bearer {tokens['access_token']}",
                                                    "Accept": "application/json, text/event-stream"},
                       json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, timeout=30)
    refreshed = httpx2.post(f"{web_server.url}/token", data={"grant_type": "refresh_token", "client_id": "x",
                                                              "refresh_token": tokens["refresh_token"]}, timeout=30)

    assert revoked.status_code == 303
    assert call.status_code == 401 and "revoked" in call.json()["error_description"]
    assert refreshed.status_code in (400, 401)
    assert "No app holds access" in browser.get("/apps").text


def test_personal_tokens_are_listed_on_the_apps_page_and_its_form_revokes_them(web_server: ServerProcess,
                                                                               alice: Browser):
    name = f"codex-{uuid.uuid4().hex[:6]}"
    token = cli_token(web_server, "alice", "--name", name, "--ttl", "7d").strip()
    assert httpx2.get(f"{web_server.url}/api/v1/entities", headers=bearer(token), timeout=30).status_code == 200

    row = alice.get("/apps").text.split(f"<td>{name}</td>")[1].split("</tr>")[0]
    forged = alice.post(f"/apps/tokens/{name}/revoke", with_token=False)
    bob = Browser(web_server.url)
    try:
        assert bob.log_in("bob", PASSWORDS["bob"]).status_code == 303
        bob.get("/apps")
        not_bobs = bob.post(f"/apps/tokens/{name}/revoke")
    finally:
        bob.close()
    still = httpx2.get(f"{web_server.url}/api/v1/entities", headers=bearer(token), timeout=30)
    timeline = alice.get("/timeline").text
    alice.get("/apps")
    revoked = alice.post(f"/apps/tokens/{name}/revoke")
    after = httpx2.get(f"{web_server.url}/api/v1/entities", headers=bearer(token), timeout=30)

    assert "memories:read, memories:write" in row and "never" not in row  # used once: its last use is shown
    assert forged.status_code == 403 and not_bobs.status_code == 404 and still.status_code == 200
    assert f"<td>{name}</td>" in timeline  # the read names the app by its token's name
    assert revoked.status_code == 303 and revoked.headers["location"] == "/apps?done=token_revoked"
    assert after.status_code == 401
    assert f"<td>{name}</td>" not in alice.get("/apps").text


def test_signing_out_ends_the_session(alice: Browser):
    alice.get("/")

    response = alice.post("/logout")

    assert response.status_code == 303
    assert alice.get("/").status_code == 303


def test_with_an_external_identity_provider_the_pages_say_where_to_sign_in_and_take_no_password(tmp_path):
    issuer = "https://idp.example/"
    with ServerProcess(tmp_path / "data", extra_args=["--idp-issuer", issuer,
                                                      "--idp-jwks-url", "https://idp.example/jwks.json"]) as server:
        pages = [httpx2.get(f"{server.url}{path}", timeout=30, follow_redirects=False)
                 for path in ("/", "/login", "/timeline", "/apps", "/memories/0190b0a0-0000-7000-8000-000000000000")]
        login = httpx2.post(f"{server.url}/login", data={"username": "alice", "password": "x"}, timeout=30)

    assert all(page.status_code == 200 and "Sign-in happens at your identity provider" in page.text
               and issuer in page.text for page in pages)
    assert all("password" not in page.text for page in pages)
    assert login.status_code in (404, 405)


def test_the_login_form_is_rate_limited_per_address_like_the_oauth_login(tmp_path):
    with ServerProcess(tmp_path / "data", extra_args=["--oauth-rate-limit", "2"]) as server:
        browser = Browser(server.url)
        try:
            answers = [browser.log_in("alice", "wrong-password") for _ in range(3)]
        finally:
            browser.close()

    assert [a.status_code for a in answers[:2]] == [401, 401]
    assert answers[2].status_code == 429 and int(answers[2].headers["retry-after"]) >= 1
