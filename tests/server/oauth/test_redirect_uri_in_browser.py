"""Redirect URIs as the browser reads them: Debian's headless Chromium, driven by Playwright, follows
the real authorization flow, and its own `new URL()` parses every redirect URI the server accepts.

The server reads URLs with Python, the browser with the WHATWG rules; where the two disagree, a code
the server meant for 127.0.0.1 lands on another host (`http://evil.example\\@127.0.0.1/callback`).
"""

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from chromium import CHROMIUM_ARGS, chromium_path
from conftest import PASSWORDS
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from oauth_calls import authorize_url, exchange, pkce

from memory.server.oauth.clients import redirect_uri_problem
from memory.server.process import free_port

REGISTERED = "http://127.0.0.1:5000/callback"
#: Each reads as 127.0.0.1 to Python's urlsplit; a browser reads some as another host.
ATTACKS = ["http://evil.example\\@127.0.0.1:{port}/callback", "http://evil.example%5C@127.0.0.1:{port}/callback",
           "http://evil.example@127.0.0.1:{port}/callback", "http://127.0.0.1:{port}\\@evil.example/callback",
           "http://127.0.0.1:{port}/callback\\..\\..\\@evil.example", "http://127.0.0.1\t:{port}/callback",
           "http://127.1:{port}/callback", "http://0x7f.0.0.1:{port}/callback", "HTTP://127.0.0.1:{port}/callback",
           "http://127.0.0.1:{port}/callback#frag", "http://127.0.0.1.:{port}/callback"]


class _Callbacks(ThreadingHTTPServer):
    seen: list[tuple[str, str]]


class _CallbackHandler(BaseHTTPRequestHandler):
    server: _Callbacks

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.server.seen.append((self.headers["Host"], self.path))
        body = b"<!doctype html><title>done</title>You may close this window."
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture()
def native_app() -> Iterator[_Callbacks]:
    """What Claude Code or Codex runs while connecting: a listener on a free loopback port."""
    app = _Callbacks(("127.0.0.1", free_port()), _CallbackHandler)
    app.seen = []
    thread = threading.Thread(target=app.serve_forever, daemon=True)
    thread.start()
    yield app
    app.shutdown()
    app.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def blank_page(browser) -> Iterator:
    page = browser.new_page()
    yield page
    page.close()


def test_the_code_lands_on_the_host_the_server_checked_and_a_disguised_redirect_is_refused_without_redirect(
        as_server, native_app, browser):
    port = native_app.server_address[1]
    with httpx2.Client(base_url=as_server.url, timeout=30) as http:
        client_id = http.post("/register", json={"client_name": "Native app", "redirect_uris": [REGISTERED],
                                                 "token_endpoint_auth_method": "none"}).json()["client_id"]
        page = browser.new_page()
        requests: list[str] = []
        page.on("request", lambda request: requests.append(request.url))

        for attack in ATTACKS:
            uri = attack.format(port=port)
            answer = page.goto(authorize_url(as_server, client_id, pkce()[1], redirect_uri=uri))
            assert answer is not None and answer.status == 400, f"{uri!r} was not refused"
            assert page.url.startswith(f"{as_server.url}/authorize"), f"{uri!r} sent the browser to {page.url}"
            assert page.locator("input[name=password]").count() == 0, f"{uri!r} got the sign-in page"
        assert all(urlsplit(url).netloc == urlsplit(as_server.url).netloc for url in requests), requests
        assert native_app.seen == []

        verifier, challenge = pkce()
        redirect = f"http://127.0.0.1:{port}/callback"
        page.goto(authorize_url(as_server, client_id, challenge, redirect_uri=redirect))
        page.fill("input[name=username]", "alice")
        page.fill("input[name=password]", PASSWORDS["alice"])
        page.click("button[type=submit]")
        page.click("button[name=approve]")
        page.wait_for_url(f"{redirect}?**")
        landed = urlsplit(page.url)
        assert (landed.hostname, landed.port, landed.path) == ("127.0.0.1", port, "/callback")
        [(host, path)] = [(host, path) for host, path in native_app.seen if path.startswith("/callback")]
        assert host == f"127.0.0.1:{port}"
        code = parse_qs(urlsplit(path).query)["code"][0]
        assert exchange(http, client_id, code, verifier, redirect_uri=redirect).status_code == 200
        page.close()


# What Chromium's `new URL()` makes of a batch of URLs, in one call: [protocol, hostname, port, pathname, search].
_PARSE_IN_BROWSER = """uris => uris.map(u => {
    try { const x = new URL(u); return [x.protocol, x.hostname, x.port, x.pathname, x.search]; }
    catch (e) { return null; }
})"""
_DEFAULT_PORTS = {"http": 80, "https": 443}

_NASTY = ["\\", "@", "\t", "\n", "\r", " ", "%", "%2e", "%2E", "%41", "%5c", "%5C", "%40", "%00", "#", "?", ":", "[",
          "]", ".", "..", "/", "//", "\u00e9", "\u0430", "\uff0e", "\u3002", "\x00", "\x7f", "'", '"', "<", ">", "^",
          "`", "{", "}", "|", "0x", "0", "A", "Z", "~", "_", "-", "xn--", "@evil.example"]
_LABEL = st.text(alphabet="abcxyz0189-", min_size=1, max_size=6)
_hosts = st.one_of(
    st.sampled_from(["127.0.0.1", "localhost", "[::1]", "127.1", "0x7f.0.0.1", "0177.0.0.1", "2130706433",
                     "127.0.0.1.", "localhost.", "LOCALHOST", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]",
                     "[0:0:0:0:0:0:0:1]", "[::1%25eth0]", "1.0x7f", "a..example", "-a.example", "xn--nxasmq6b",
                     "chatgpt.com", "a.b-c.example", "1.2.3.example", "example.123", "10.0.0.256", "0"]),
    st.lists(_LABEL, min_size=1, max_size=4).map(".".join),
)
_segments = st.lists(st.text(alphabet="aZ09._~!$&'()*+,;=:@-", max_size=6), max_size=3)
_bases = st.builds(
    lambda scheme, host, port, segments, query: f"{scheme}://{host}{port}{''.join('/' + s for s in segments)}{query}",
    st.sampled_from(["http", "https"]), _hosts, st.sampled_from(["", ":5000", ":443", ":80", ":080", ":65535"]),
    _segments, st.one_of(st.just(""), st.text(alphabet="az09=&/?%", max_size=8).map(lambda q: f"?{q}")),
)


@st.composite
def _candidates(draw) -> str:
    """A plausible redirect URI with up to three nasty pieces put anywhere in it."""
    uri = draw(_bases)
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(uri)))
        uri = uri[:at] + draw(st.sampled_from(_NASTY)) + uri[at:]
    return uri


def _as_python_reads_it(uri: str) -> tuple:
    parts = urlsplit(uri)
    return (parts.scheme, parts.hostname, parts.port or _DEFAULT_PORTS.get(parts.scheme), parts.path or "/",
            f"?{parts.query}" if parts.query else "")


def _as_chromium_reads_it(parsed: list[str] | None) -> tuple | None:
    if parsed is None:
        return None
    protocol, hostname, port, path, search = parsed
    scheme = protocol.rstrip(":")
    return scheme, hostname.strip("[]"), int(port) if port else _DEFAULT_PORTS.get(scheme), path, search


@settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(batch=st.lists(_candidates(), min_size=40, max_size=40))
@example(batch=[attack.format(port=5000) for attack in ATTACKS])
@example(batch=["http://127.0.0.1:5000/callback", "http://[::1]/cb?x=1", "https://chatgpt.com/connector/oauth/c_1",
                "http://localhost:8080/a/b;c=d@e", "https://x.example/%20?q=%2F&r=/?", "https://1.2.3.4:8443/"])
def test_every_redirect_uri_the_server_accepts_reads_the_same_in_chromium(blank_page, batch):
    accepted = [uri for uri in batch if redirect_uri_problem(uri) is None]
    if not accepted:
        return
    in_browser = blank_page.evaluate(_PARSE_IN_BROWSER, accepted)
    differ = {uri: (_as_python_reads_it(uri), _as_chromium_reads_it(parsed))
              for uri, parsed in zip(accepted, in_browser, strict=True)
              if _as_python_reads_it(uri) != _as_chromium_reads_it(parsed)}
    assert differ == {}, "accepted, yet Python and Chromium read these differently (python, chromium): " + repr(differ)
