"""A person at the web pages, over plain HTTP, and the two other ways in the tests need: the MCP
SDK client with a bearer token, and an app connected through the built-in OAuth server."""

import base64
import hashlib
import re
import secrets
import subprocess
import sys
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

__all__ = ["PASSWORDS", "add_user", "Browser", "csrf_token", "store_over_mcp", "connect_app"]

# Here, not in a conftest.py of tests/server/web: a third module named `conftest` would shadow the one
# tests/server/oauth imports from when both directories are given on the command line.
PASSWORDS = {"alice": "alice-web-password", "bob": "bob-web-password", "carol": "carol-web-password"}

_CSRF = re.compile(r'name="_csrf_token" value="([^"]+)"')
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


def add_user(data_dir: Path, name: str, password: str) -> None:
    """`memory user add NAME`, as an operator runs it."""
    memory = Path(sys.executable).parent / "memory"
    subprocess.run([str(memory), "user", "add", name, "--data-dir", str(data_dir)], input=f"{password}\n",
                   capture_output=True, text=True, check=True)


def csrf_token(html: str) -> str:
    match = _CSRF.search(html)
    assert match, f"no CSRF token on the page: {html[:300]}"
    return unescape(match.group(1))


class Browser:
    """Cookies, the CSRF token of the last page seen, and no automatic redirects (tests look at them)."""

    def __init__(self, base_url: str):
        self.http = httpx2.Client(base_url=base_url, timeout=30, follow_redirects=False)
        self.token = ""

    def get(self, path: str, **params: Any) -> httpx2.Response:
        response = self.http.get(path, params=params or None)
        if "_csrf_token" in response.text:
            self.token = csrf_token(response.text)
        return response

    def post(self, path: str, data: dict[str, str] | None = None, *, with_token: bool = True) -> httpx2.Response:
        form = dict(data or {})
        if with_token:
            form["_csrf_token"] = self.token
        return self.http.post(path, data=form)

    def log_in(self, name: str, password: str) -> httpx2.Response:
        self.get("/login")
        return self.post("/login", {"username": name, "password": password, "next": "/"})

    def close(self) -> None:
        self.http.close()


async def store_over_mcp(mcp_url: str, token: str, text: str, **fields: Any) -> str:
    """Store through the SDK client as an assistant would; the new memory's id."""
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        async with Client(streamable_http_client(mcp_url, http_client=http)) as client:
            result = await client.call_tool("store_memory", {"text": text, **fields})
            assert not result.is_error, result.content
            return result.structured_content["id"]


def connect_app(server: Any, name: str, password: str, client_name: str) -> dict[str, str]:
    """Register a client, sign in and allow it on the consent page, trade the code: the token response."""
    callback = "https://chatgpt.com/connector_platform_oauth_redirect"
    with httpx2.Client(base_url=server.url, timeout=30, follow_redirects=False) as http:
        registered = http.post("/register", json={"client_name": client_name, "redirect_uris": [callback],
                                                   "token_endpoint_auth_method": "none"})
        assert registered.status_code == 201, registered.text
        client_id = registered.json()["client_id"]
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        login = http.get("/authorize?" + urlencode({
            "response_type": "code", "client_id": client_id, "redirect_uri": callback, "state": "s",
            "code_challenge": challenge, "code_challenge_method": "S256", "resource": server.mcp_url,
            "scope": "memories:read memories:write"}))
        assert login.status_code == 200, login.text
        fields = {k: unescape(v) for k, v in _HIDDEN.findall(login.text)}
        consent = http.post("/authorize/login", data={**fields, "username": name, "password": password})
        assert consent.status_code == 200, consent.text
        fields = {k: unescape(v) for k, v in _HIDDEN.findall(consent.text)}
        answer = http.post("/authorize/consent", data={**fields, "approve": "yes"})
        assert answer.status_code == 302, answer.text
        code = parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]
        tokens = http.post("/token", data={"grant_type": "authorization_code", "code": code, "client_id": client_id,
                                           "redirect_uri": callback, "code_verifier": verifier})
        assert tokens.status_code == 200, tokens.text
        return tokens.json()
