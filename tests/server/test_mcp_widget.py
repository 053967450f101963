"""The MCP Apps view and the 2025-11-25/2026-07-28 niceties, through the SDK's own client over HTTP:
the `ui` binding on four tools, the view itself on resources/read, icons, a cacheable tool list,
dedented descriptions, and `--no-widget`."""

import re
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from server_calls import MODES, call

from memory.server.config import load_settings
from memory.server.process import ServerProcess

pytestmark = pytest.mark.anyio

WIDGET_URI = "ui://memory/cards.html"
WIDGET_TOOLS = {"retrieve_context", "search", "memory_history", "store_memory"}
APP_MIME_TYPE = "text/html;profile=mcp-app"


@pytest.mark.parametrize("mode", MODES)
async def test_the_four_tools_that_show_memories_name_the_view_and_the_others_do_not(connect, alice, mode):
    async with connect(alice, mode) as client:
        tools = (await client.list_tools()).tools
    bound = {t.name: (t.meta or {}).get("ui", {}).get("resourceUri") for t in tools}
    assert {name for name, uri in bound.items() if uri} == WIDGET_TOOLS
    assert {bound[name] for name in WIDGET_TOOLS} == {WIDGET_URI}


@pytest.mark.parametrize("mode", MODES)
async def test_resources_read_returns_the_view_as_one_self_contained_mcp_app(connect, alice, mode):
    async with connect(alice, mode) as client:
        if mode == "auto":
            extensions = client.server_capabilities.extensions or {}
            assert "io.modelcontextprotocol/ui" in extensions
        listed = {r.uri: r for r in (await client.list_resources()).resources}
        (content,) = (await client.read_resource(WIDGET_URI)).contents
    assert listed[WIDGET_URI].mime_type == APP_MIME_TYPE
    assert content.uri == WIDGET_URI and content.mime_type == APP_MIME_TYPE
    # It loads nothing from anywhere: an empty CSP declaration, no src/href to another document.
    assert content.meta == {"ui": {"csp": {}, "prefersBorder": True}}
    html = content.text
    assert html.startswith("<!DOCTYPE html>") and "ui/initialize" in html and "ui/notifications/tool-result" in html
    assert not re.search(r"<[a-z]+[^>]*\s(src|href)\s*=", html, re.I), "the view's markup must load nothing"
    assert "@import" not in html and "url(" not in html and "innerHTML" not in html


@pytest.mark.parametrize("mode", MODES)
async def test_the_server_and_every_tool_have_light_and_dark_icons_the_app_serves(connect, alice, server, mode):
    async with connect(alice, mode) as client:
        info = client.server_info
        tools = (await client.list_tools()).tools
    assert info is not None and info.icons
    icon_sets = [info.icons, *(t.icons for t in tools)]
    assert all(icons and {i.theme for i in icons} == {"light", "dark"} for icons in icon_sets)
    assert all(any(i.mime_type == "image/png" for i in icons) for icons in icon_sets)
    sources = {i.src: i.mime_type for icons in icon_sets for i in icons}
    async with httpx2.AsyncClient(timeout=30) as http:
        for src, mime_type in sources.items():
            assert src.startswith(f"{server.url}/assets/")
            answer = await http.get(src)
            assert answer.status_code == 200, src
            assert answer.headers["content-type"].split(";")[0] == mime_type, src


async def test_the_tool_list_and_discovery_are_cacheable_by_everyone_for_an_hour_on_2026_07_28(connect, alice):
    async with connect(alice, "auto") as client:
        discovered = client.session.discover_result
        listed = await client.list_tools()
        info = client.server_info
    assert (listed.ttl_ms, listed.cache_scope) == (3_600_000, "public")
    # Everything a client needs before its first call comes with server/discover (and its serverInfo stamp).
    assert discovered is not None and (discovered.ttl_ms, discovered.cache_scope) == (3_600_000, "public")
    assert "io.modelcontextprotocol/ui" in (discovered.capabilities.extensions or {})
    assert discovered.instructions and "retrieve_context" in discovered.instructions
    assert info is not None and info.title == "Memory" and info.icons and info.website_url


@pytest.mark.parametrize("mode", MODES)
async def test_tool_descriptions_carry_no_source_indentation_and_stay_short(connect, alice, mode):
    async with connect(alice, mode) as client:
        tools = (await client.list_tools()).tools
    for tool in tools:
        assert tool.title and len(tool.title) <= 40, tool.name
        assert not re.search(r"\n[ \t]", tool.description), tool.name
        assert tool.description == tool.description.strip() and len(tool.description) <= 600, tool.name


@pytest.fixture(scope="module")
def server_without_widget(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("no-widget") / "data", extra_args=["--no-widget"]) as running:
        yield running


async def test_with_no_widget_no_tool_names_a_view_and_there_is_none_to_read(server_without_widget):
    token = server_without_widget.token("alice")
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        async with Client(streamable_http_client(server_without_widget.mcp_url, http_client=http)) as client:
            assert "io.modelcontextprotocol/ui" not in (client.server_capabilities.extensions or {})
            tools = (await client.list_tools()).tools
            resources = (await client.list_resources()).resources
            stored = await call(client, "store_memory", {"text": "Widget off, text as before."})
    assert len(tools) == 15 and not any((t.meta or {}).get("ui") for t in tools)
    assert resources == []
    assert stored["text"] == "Widget off, text as before."


def test_memory_widget_false_in_the_environment_turns_the_widget_off():
    assert load_settings(environ={}).settings.widget is True
    assert load_settings(environ={"MEMORY_WIDGET": "false"}).settings.widget is False
    assert load_settings({"widget": False}, environ={"MEMORY_WIDGET": "true"}).settings.widget is False


def test_the_view_ships_as_package_data():
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert '"memory.server.widget" = ["*.html", "*.css", "*.js"]' in pyproject
