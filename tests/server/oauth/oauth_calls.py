"""The authorization server's requests, spelled out by hand for tests that go around the SDK client."""

import base64
import hashlib
import secrets
from urllib.parse import urlencode

import httpx2

__all__ = ["CALLBACK", "pkce", "authorize_url", "exchange", "refresh"]

CALLBACK = "https://chatgpt.com/connector_platform_oauth_redirect"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    return verifier, _b64(hashlib.sha256(verifier.encode()).digest())


def authorize_url(server, client_id: str, challenge: str, **overrides: str) -> str:
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": CALLBACK, "state": "st4te",
              "code_challenge": challenge, "code_challenge_method": "S256", "resource": server.mcp_url,
              "scope": "memories:read memories:write", **overrides}
    return f"{server.url}/authorize?{urlencode({k: v for k, v in params.items() if v is not None})}"


def exchange(http, client_id: str, code: str, verifier: str, redirect_uri: str = CALLBACK) -> httpx2.Response:
    return http.post("/token", data={"grant_type": "authorization_code", "code": code, "client_id": client_id,
                                     "redirect_uri": redirect_uri, "code_verifier": verifier})


def refresh(http, client_id: str, token: str) -> httpx2.Response:
    return http.post("/token", data={"grant_type": "refresh_token", "refresh_token": token, "client_id": client_id})
