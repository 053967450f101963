"""Client ID Metadata Documents are fetched by this server because someone named a URL: the fetch
goes only to public addresses, within one overall deadline, follows no redirect, is remembered when
it fails, and the person sees a generic error while the server log says why. Against a live
`memory serve` (which allows loopback http documents, as the other metadata document tests do)."""

import ipaddress
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx2
import pytest
from oauth_calls import authorize_url, pkce

from memory.server.oauth.clients import refused_address
from memory.server.process import free_port

#: The fetch deadline of the server (`clients._FETCH_DEADLINE`), and the slack a loaded test machine needs.
DEADLINE, SLACK = 5.0, 3.0


class _SlowHost(ThreadingHTTPServer):
    daemon_threads = True
    requests: list[str]


class _SlowHandler(BaseHTTPRequestHandler):
    """/drip: a 200 whose body comes one byte every 0.3 s for a minute; /moved: a redirect."""

    server: _SlowHost

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.server.requests.append(self.path)
        if self.path.startswith("/moved"):
            self.send_response(302)
            self.send_header("Location", "/elsewhere.json")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        try:
            for _ in range(200):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.3)
        except OSError:
            pass  # the server under test hung up: that is the point

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture()
def slow_host() -> Iterator[_SlowHost]:
    host = _SlowHost(("127.0.0.1", free_port()), _SlowHandler)
    host.requests = []
    thread = threading.Thread(target=host.serve_forever, daemon=True)
    thread.start()
    yield host
    host.shutdown()
    host.server_close()


def authorize(server, client_id: str) -> tuple[httpx2.Response, float]:
    started = time.monotonic()
    with httpx2.Client(timeout=DEADLINE * 4) as http:
        answer = http.get(authorize_url(server, client_id, pkce()[1]))
    return answer, time.monotonic() - started


def logged(server, marker: str) -> list[str]:
    """The server's log lines naming `marker`, waiting a little: the log is written through a queue."""
    for _ in range(50):
        lines = [line for line in server.log_tail(1000).splitlines() if marker in line]
        if lines:
            return lines
        time.sleep(0.1)
    return []


def test_a_document_that_drips_is_given_up_at_one_overall_deadline_and_the_failure_is_remembered(
        as_server, slow_host):
    url = f"http://127.0.0.1:{slow_host.server_address[1]}/drip/{uuid.uuid4().hex}.json"
    first, took = authorize(as_server, url)
    assert first.status_code == 400 and "could not be verified" in first.text
    assert took < DEADLINE + SLACK, f"/authorize was held {took:.1f} s"
    again, took_again = authorize(as_server, url)
    assert again.status_code == 400 and took_again < 1.0
    assert len(slow_host.requests) == 1
    assert "no complete answer within 5 s" in logged(as_server, url)[0]


def test_a_document_behind_a_redirect_is_not_followed(as_server, slow_host):
    url = f"http://127.0.0.1:{slow_host.server_address[1]}/moved/{uuid.uuid4().hex}.json"
    answer, _ = authorize(as_server, url)
    assert answer.status_code == 400
    assert slow_host.requests == [f"/moved/{url.rsplit('/', 1)[1]}"]


@pytest.mark.parametrize("address", ["100.64.0.1", "10.1.2.3", "169.254.169.254", "0.0.0.0", "224.0.0.251",
                                     "[fd00::1]", "[::ffff:7f00:1]", "[64:ff9b::a9fe:a9fe]"])
def test_a_document_on_an_address_that_is_not_public_is_never_fetched_and_the_person_sees_no_details(
        as_server, address):
    marker = uuid.uuid4().hex
    answer, took = authorize(as_server, f"https://{address}/{marker}.json")
    assert answer.status_code == 400 and "could not be verified" in answer.text
    assert address.strip("[]") not in answer.text and "resolves" not in answer.text
    assert took < 2.0  # refused before any connection is tried
    lines = logged(as_server, marker)
    assert lines and "not a public address" in lines[0], lines


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2a00:1450:4001::200e"])
def test_public_addresses_are_allowed(address):
    assert not refused_address(ipaddress.ip_address(address))

