"""A person at a browser, headless: signs in and allows (or denies) on the built-in authorization
server's pages, and the pieces the SDK's OAuth client needs around that (token storage, handlers)."""

import re
from html import unescape
from urllib.parse import parse_qs, parse_qsl, urlencode, urljoin, urlsplit

import httpx2
from mcp.client.auth import OAuthClientProvider
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

__all__ = ["Person", "MemoryTokenStorage", "oauth_provider", "form_fields", "redirect_params"]

_INPUT = re.compile(r"<input\b[^>]*>", re.I)
_ATTR = re.compile(r'(\w+)="([^"]*)"')


def form_fields(html: str) -> dict[str, str]:
    """The named inputs of the page's form, with their values (hidden ones carry the CSRF token)."""
    fields = {}
    for tag in _INPUT.findall(html):
        attrs = {k.lower(): unescape(v) for k, v in _ATTR.findall(tag)}
        if "name" in attrs:
            fields[attrs["name"]] = attrs.get("value", "")
    return fields


def form_action(html: str, base: str) -> str:
    match = re.search(r'<form[^>]*action="([^"]*)"', html, re.I)
    assert match, f"no form on the page: {html[:300]}"
    return urljoin(base, unescape(match.group(1)))


def redirect_params(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


class Person:
    """Follows an authorization URL through the login and consent forms; keeps its cookies."""

    def __init__(self, username: str, password: str, *, approve: bool = True, drop_scope: bool = False):
        self.username = username
        self.password = password
        self.approve = approve
        #: Ask as ChatGPT does when it reconnects: no scope parameter at all.
        self.drop_scope = drop_scope
        self.authorization_urls: list[str] = []
        self.consent_pages: list[str] = []
        self.final_location: str | None = None

    async def location_after_consent(self, authorization_url: str) -> str:
        async with httpx2.AsyncClient(timeout=30, follow_redirects=False) as browser:
            login = await browser.get(authorization_url)
            if login.status_code == 302:
                return login.headers["location"]
            assert login.status_code == 200, login.text
            fields = form_fields(login.text) | {"username": self.username, "password": self.password}
            consent = await browser.post(form_action(login.text, authorization_url), data=fields)
            assert consent.status_code == 200, consent.text
            self.consent_pages.append(consent.text)
            fields = form_fields(consent.text) | ({"approve": "yes"} if self.approve else {"deny": "yes"})
            answer = await browser.post(form_action(consent.text, authorization_url), data=fields)
            assert answer.status_code == 302, answer.text
            return answer.headers["location"]

    async def redirect_handler(self, authorization_url: str) -> None:
        if self.drop_scope:
            parts = urlsplit(authorization_url)
            query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "scope"])
            authorization_url = parts._replace(query=query).geturl()
        self.authorization_urls.append(authorization_url)
        self.final_location = await self.location_after_consent(authorization_url)

    async def callback_handler(self) -> AuthorizationCodeResult:
        assert self.final_location is not None
        params = redirect_params(self.final_location)
        assert "code" in params, f"no code in {self.final_location}"
        return AuthorizationCodeResult(code=params["code"], state=params.get("state"), iss=params.get("iss"))


class MemoryTokenStorage:
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None
        self.token_history: list[OAuthToken] = []

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens
        self.token_history.append(tokens)

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


def oauth_provider(mcp_url: str, person: Person, storage: MemoryTokenStorage, *, redirect_uri: str,
                   client_metadata_url: str | None = None, scope: str | None = None) -> OAuthClientProvider:
    metadata = OAuthClientMetadata(client_name="Test assistant", redirect_uris=[redirect_uri],
                                   grant_types=["authorization_code", "refresh_token"], response_types=["code"],
                                   token_endpoint_auth_method="none", scope=scope)
    provider = OAuthClientProvider(mcp_url, metadata, storage, redirect_handler=person.redirect_handler,
                                   callback_handler=person.callback_handler,
                                   client_metadata_url="https://placeholder.invalid/client.json"
                                   if client_metadata_url else None)
    if client_metadata_url:
        # The SDK insists on https for a metadata URL; the test's document is served over loopback http,
        # which the server under test accepts with --allow-loopback-client-metadata.
        provider.context.client_metadata_url = client_metadata_url
    return provider
