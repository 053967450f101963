"""Server settings: the public URL everything is built from, and whom /mcp trusts."""

from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memory.server.settings import ServerSettings


def test_the_public_url_defaults_to_the_listening_address():
    settings = ServerSettings(data_dir="d", host="127.0.0.1", port=8123)
    assert settings.base_url == "http://127.0.0.1:8123"
    assert settings.resource_url == "http://127.0.0.1:8123/mcp"
    assert settings.resource_metadata_url == "http://127.0.0.1:8123/.well-known/oauth-protected-resource"
    assert settings.memory_url("abc") == "http://127.0.0.1:8123/memories/abc"


def test_a_public_url_is_the_base_of_everything_and_its_host_is_trusted():
    settings = ServerSettings(data_dir="d", port=8000, public_url="https://mem.example.com/")
    assert settings.base_url == "https://mem.example.com"
    assert settings.resource_url == "https://mem.example.com/mcp"
    hosts = settings.trusted_hosts()
    assert {"mem.example.com", "mem.example.com:443", "127.0.0.1:8000", "localhost:8000"} <= set(hosts)
    assert "https://mem.example.com" in settings.trusted_origins()


def test_extra_hosts_and_origins_are_added_not_substituted():
    settings = ServerSettings(data_dir="d", port=9000, allowed_hosts=["box.lan:9000"],
                              allowed_origins=["http://box.lan:9000"])
    assert {"box.lan:9000", "127.0.0.1:9000"} <= set(settings.trusted_hosts())
    assert {"http://box.lan:9000", "http://127.0.0.1:9000"} <= set(settings.trusted_origins())


def test_listening_on_every_interface_defaults_the_public_url_to_loopback():
    assert ServerSettings(data_dir="d", host="0.0.0.0", port=8000).base_url == "http://127.0.0.1:8000"


def test_an_ipv6_listening_address_is_bracketed_in_the_url():
    assert ServerSettings(data_dir="d", host="::1", port=8000).base_url == "http://[::1]:8000"


@pytest.mark.parametrize("url", ["ftp://mem.example", "mem.example", "https://", "https://mem.example/?x=1"])
def test_a_public_url_that_is_not_a_plain_http_url_is_refused(url):
    with pytest.raises(ValueError):
        ServerSettings(data_dir="d", public_url=url)


_LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}


@given(host=st.sampled_from(["127.0.0.1", "0.0.0.0", "localhost", "::1", "10.1.2.3", "box.lan"]),
       port=st.integers(1, 65535), public=st.sampled_from([None, "https://mem.example.com", "http://127.0.0.1:80"]),
       host_header=st.one_of(st.none(), st.text(max_size=40), st.sampled_from(
           ["localhost", "LOCALHOST:8000", "[::1]:8000", "127.0.0.1:8000", "evil.example:8000", "localhost:8001"])))
def test_only_loopback_names_on_the_same_port_and_scheme_ever_stand_for_the_base_url(host, port, public, host_header):
    settings = ServerSettings(data_dir="d", host=host, port=port, public_url=public)

    spelled = settings.base_url_for(host_header)

    assert settings.base_urls[0] == settings.base_url and spelled in settings.base_urls
    if len(settings.base_urls) > 1:
        # Only without a public URL and on a loopback base: every other spelling is loopback, http, PORT.
        assert public is None and urlsplit(settings.base_url).hostname in _LOOPBACK_NAMES
        assert all(urlsplit(url).scheme == "http" and urlsplit(url).hostname in _LOOPBACK_NAMES
                   and urlsplit(url).port == port for url in settings.base_urls)
    if spelled != settings.base_url:
        assert urlsplit(spelled).netloc == (host_header or "").strip().lower()
