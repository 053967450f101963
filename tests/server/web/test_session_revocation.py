"""Web sessions end on the server, whoever holds a copy of the cookie: at sign-out, at a new
password, and when the account is removed; and a removed name's memories never pass silently to a
new account of that name. Real cookies over HTTP against a real `memory serve` with its own data dir."""

import asyncio
import re
import subprocess
import sys
from collections.abc import Iterator
from html import unescape
from pathlib import Path

import httpx2
import pytest
from web_calls import Browser, add_user, connect_app, store_over_mcp

from memory.server.process import ServerProcess

_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


def memory(*args: str, data_dir: Path, stdin: str = "") -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).parent / "memory"), *args, "--data-dir", str(data_dir)]
    return subprocess.run(command, input=stdin, capture_output=True, text=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir = tmp_path_factory.mktemp("sessions") / "data"
    for name in ("dave", "erin", "frank", "carol"):
        add_user(data_dir, name, f"{name}-first-password")
    with ServerProcess(data_dir, extra_args=["--oauth-rate-limit", "10000"]) as running:
        running.wait_ready()
        yield running


def signed_in(server: ServerProcess, name: str, password: str | None = None) -> Browser:
    browser = Browser(server.url)
    assert browser.log_in(name, password or f"{name}-first-password").status_code == 303
    assert browser.get("/").status_code == 200
    return browser


def copy_of(server: ServerProcess, browser: Browser) -> httpx2.Client:
    """Another client holding the same cookies, as someone who copied them would."""
    thief = httpx2.Client(base_url=server.url, timeout=30, follow_redirects=False)
    for cookie in browser.http.cookies.jar:
        thief.cookies.set(cookie.name, cookie.value, domain=cookie.domain, path=cookie.path)
    return thief


def shows_memories(client: httpx2.Client) -> bool:
    response = client.get("/")
    return response.status_code == 200 and "Sign out" in response.text


def test_a_copied_session_cookie_is_refused_once_the_person_signs_out(server: ServerProcess):
    dave = signed_in(server, "dave")
    thief = copy_of(server, dave)
    assert shows_memories(thief)

    assert dave.post("/logout").status_code == 303

    refused = thief.get("/")
    assert refused.status_code == 303 and refused.headers["location"].startswith("/login")
    assert dave.get("/").status_code == 303


def test_a_new_password_from_the_command_line_ends_every_session_of_the_account(server: ServerProcess):
    first, second = signed_in(server, "erin"), signed_in(server, "erin")

    changed = memory("user", "passwd", "erin", data_dir=server.data_dir, stdin="erin-second-password\n")

    assert changed.returncode == 0, changed.stderr
    assert first.get("/").status_code == 303 and second.get("/").status_code == 303
    assert Browser(server.url).log_in("erin", "erin-first-password").status_code == 401
    assert signed_in(server, "erin", "erin-second-password").get("/timeline").status_code == 200
    assert memory("user", "passwd", "nobody", data_dir=server.data_dir, stdin="whatever-pw-1\n").returncode != 0
    assert memory("user", "passwd", "erin", data_dir=server.data_dir, stdin="short\n").returncode != 0


def test_changing_the_password_on_the_page_needs_the_current_one_and_signs_out_everywhere_else(
        server: ServerProcess):
    frank, elsewhere = signed_in(server, "frank"), signed_in(server, "frank")
    stolen = copy_of(server, frank)
    assert frank.get("/password").status_code == 200

    wrong = frank.post("/password", {"current": "not-my-password", "new": "frank-new-password",
                                     "confirm": "frank-new-password"})
    unverified = frank.post("/password", {"current": "frank-first-password", "new": "frank-new-password",
                                          "confirm": "frank-new-password"}, with_token=False)
    mismatch = frank.post("/password", {"current": "frank-first-password", "new": "frank-new-password",
                                        "confirm": "frank-other-password"})
    assert (wrong.status_code, unverified.status_code, mismatch.status_code) == (400, 403, 400)
    assert "current password is wrong" in wrong.text and "differ" in mismatch.text
    assert shows_memories(elsewhere.http)  # nothing changed yet

    frank.get("/password")
    changed = frank.post("/password", {"current": "frank-first-password", "new": "frank-new-password",
                                       "confirm": "frank-new-password"})

    assert changed.status_code == 303
    assert "Password changed" in frank.get(changed.headers["location"]).text  # this browser stays signed in
    assert elsewhere.get("/").status_code == 303 and stolen.get("/").status_code == 303
    assert Browser(server.url).log_in("frank", "frank-first-password").status_code == 401
    assert Browser(server.url).log_in("frank", "frank-new-password").status_code == 303


def _signed_in_for_consent(server: ServerProcess, name: str, password: str) -> tuple[httpx2.Client, dict[str, str]]:
    """An assistant's sign-in, stopped at the consent page: the client and the consent form's fields."""
    http = httpx2.Client(base_url=server.url, timeout=30, follow_redirects=False)
    client_id = http.post("/register", json={"redirect_uris": ["https://chatgpt.com/cb"],
                                             "token_endpoint_auth_method": "none"}).json()["client_id"]
    login = http.get("/authorize", params={
        "response_type": "code", "client_id": client_id, "redirect_uri": "https://chatgpt.com/cb",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "code_challenge_method": "S256"})
    fields = {k: unescape(v) for k, v in _HIDDEN.findall(login.text)}
    consent = http.post("/authorize/login", data={**fields, "username": name, "password": password})
    assert consent.status_code == 200, consent.text
    return http, {k: unescape(v) for k, v in _HIDDEN.findall(consent.text)}


def test_a_removed_name_is_not_taken_over_by_a_new_account_without_reclaim(server: ServerProcess):
    secret = "Carol keeps the locker code 2231"
    asyncio.run(store_over_mcp(server.mcp_url, server.token("carol"), secret))
    carol = signed_in(server, "carol")
    old_cookie = copy_of(server, carol)
    app = connect_app(server, "carol", "carol-first-password", "Carol's assistant")
    half_connected, consent = _signed_in_for_consent(server, "carol", "carol-first-password")

    assert memory("user", "remove", "carol", data_dir=server.data_dir).returncode == 0
    refused = memory("user", "add", "carol", data_dir=server.data_dir, stdin="mallory-password-1\n")

    assert refused.returncode != 0
    assert "memory user add carol --reclaim" in refused.stderr and "removed" in refused.stderr
    assert "carol" not in memory("user", "list", data_dir=server.data_dir).stdout.split()
    assert Browser(server.url).log_in("carol", "mallory-password-1").status_code == 401

    reclaimed = memory("user", "add", "carol", "--reclaim", data_dir=server.data_dir, stdin="carol-new-password\n")

    assert reclaimed.returncode == 0, reclaimed.stderr
    # Nothing issued to the removed account works for the new one: its cookie, its grants, its sign-in.
    assert old_cookie.get("/").status_code == 303 and carol.get("/").status_code == 303
    with httpx2.Client(base_url=server.url, timeout=30) as http:
        assert http.get("/api/v1/entities",
                        headers={"Authorization": f"Bearer {app['access_token']}"}).status_code == 401
    answer = half_connected.post("/authorize/consent", data={**consent, "approve": "yes"})
    assert answer.status_code != 302 and "code=" not in answer.headers.get("location", "")
    # The reclaimed account is the one the operator meant to give the memories to.
    assert secret in signed_in(server, "carol", "carol-new-password").get("/").text


def test_a_removed_name_without_memories_on_disk_can_be_added_again(server: ServerProcess):
    assert memory("user", "add", "gina", data_dir=server.data_dir, stdin="gina-password-1\n").returncode == 0
    assert memory("user", "remove", "gina", data_dir=server.data_dir).returncode == 0

    again = memory("user", "add", "gina", data_dir=server.data_dir, stdin="gina-password-2\n")

    assert again.returncode == 0, again.stderr
    assert signed_in(server, "gina", "gina-password-2").get("/").status_code == 200
