"""Server settings: the public URL everything is built from, and whom /mcp trusts."""

import pytest

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
