"""The MCP Apps view in a real browser. A test page plays the host as the MCP Apps spec (SEP-1865)
has it: it loads the view the running server returns on resources/read into a sandboxed iframe under
the Content-Security-Policy the view's `_meta.ui.csp` asks for, answers its `ui/initialize` with a
theme, hands it real tool results (`ui/notifications/tool-result`) and forwards the view's
`tools/call` to the server. Debian's Chromium, driven by Playwright, checks what a person sees."""

import asyncio
import concurrent.futures
import os
import shutil
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from test_browser import CHROMIUM_ARGS, chromium  # noqa: F401 - the fixture, shared

from memory.server.process import ServerProcess

WIDGET_URI = "ui://memory/cards.html"
HOST = "http://host.test"
SANDBOX = "http://sandbox.test"
#: Set to a folder (docs/) to keep the screenshots the test takes; otherwise they stay in tmp_path.
SCREENSHOTS_ENV = "MEMORY_WIDGET_SCREENSHOTS"

HOST_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Host</title><style>
  body { margin: 0; padding: 16px; font: 15px system-ui, sans-serif; width: 640px; }
  body.dark { background: #0f1115; color: #e8eaee; } body.light { background: #ffffff; color: #16181d; }
  .turn { margin: 0 0 16px; } .who { font-size: 13px; opacity: .75; margin: 0 0 4px; }
  iframe { width: 100%; height: 40px; border: 1px solid #8888; border-radius: 12px; display: block; }
</style></head><body><main id="chat"></main><script>
  window.toolCalls = []; window.openedLinks = []; window.views = [];
  const views = window.views;
  function post(view, message) { view.frame.contentWindow.postMessage({jsonrpc: "2.0", ...message}, "*"); }
  window.mount = (spec) => {
    const turn = document.createElement("section"); turn.className = "turn";
    const who = document.createElement("p"); who.className = "who"; who.textContent = spec.caption;
    const frame = document.createElement("iframe");
    frame.setAttribute("sandbox", "allow-scripts");
    frame.title = spec.caption;
    frame.src = spec.src;
    turn.append(who, frame); document.getElementById("chat").append(turn);
    views.push({frame, spec, initialized: false});
  };
  window.setTheme = (theme) => {
    document.body.className = theme;
    for (const view of views) post(view, {method: "ui/notifications/host-context-changed", params: {theme}});
  };
  window.addEventListener("message", async (event) => {
    const view = views.find((v) => v.frame.contentWindow === event.source);
    const message = event.data;
    if (!view || !message || message.jsonrpc !== "2.0") return;
    if (message.method === "ui/initialize") {
      post(view, {id: message.id, result: {
        protocolVersion: "2026-01-26", hostInfo: {name: "test-host", version: "1.0.0"},
        hostCapabilities: {serverTools: {}, openLinks: {}},
        hostContext: {theme: document.body.className, locale: "en-GB", timeZone: "UTC", displayMode: "inline",
                      platform: "web", toolInfo: {tool: view.spec.tool}},
      }});
    } else if (message.method === "ui/notifications/initialized") {
      view.initialized = true;
      post(view, {method: "ui/notifications/tool-input", params: {arguments: view.spec.arguments}});
      post(view, {method: "ui/notifications/tool-result", params: view.spec.result});
    } else if (message.method === "ui/notifications/size-changed") {
      view.frame.style.height = Math.min(message.params.height + 2, 2000) + "px";
    } else if (message.method === "tools/call") {
      window.toolCalls.push(message.params);
      const result = await window.forwardToolCall(message.params);
      post(view, {id: message.id, result});
    } else if (message.method === "ui/open-link") {
      window.openedLinks.push(message.params.url);
      post(view, {id: message.id, result: {}});
    } else if (message.id !== undefined) {
      post(view, {id: message.id, error: {code: -32601, message: "Method not found"}});
    }
  });
</script></body></html>"""


def view_policy(ui_meta: dict[str, Any]) -> str:
    """The Content-Security-Policy a host builds from a view's `_meta.ui.csp` (the spec's defaults
    plus exactly the origins the view declares)."""
    csp = ui_meta.get("csp") or {}
    resources = " ".join(csp.get("resourceDomains", []))
    connect = " ".join(csp.get("connectDomains", [])) or "'none'"
    frames = " ".join(csp.get("frameDomains", [])) or "'none'"
    bases = " ".join(csp.get("baseUriDomains", [])) or "'self'"
    return (f"default-src 'none'; script-src 'self' 'unsafe-inline' {resources}; "
            f"style-src 'self' 'unsafe-inline' {resources}; img-src 'self' data: {resources}; "
            f"font-src 'self' {resources}; media-src 'self' data: {resources}; connect-src {connect}; "
            f"frame-src {frames}; base-uri {bases}; object-src 'none'")


def wire(result: Any) -> dict[str, Any]:
    return result.model_dump(by_alias=True, mode="json", exclude_none=True)


async def over_mcp(server: ServerProcess, token: str, calls: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The view (resources/read), the tools' definitions and the wire form of each call's result."""
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        async with Client(streamable_http_client(server.mcp_url, http_client=http)) as client:
            (view,) = (await client.read_resource(WIDGET_URI)).contents
            tools = {t.name: wire(t) for t in (await client.list_tools()).tools}
            results: list[dict[str, Any]] = []
            first_id = None
            for name, arguments in calls:
                # A call may name the first stored memory as "$id".
                arguments = {k: first_id if v == "$id" else v for k, v in arguments.items()}
                result = await client.call_tool(name, arguments)
                assert not result.is_error, result.content
                results.append(wire(result))
                if name == "store_memory" and first_id is None:
                    first_id = result.structured_content["id"]
    return {"html": view.text, "ui": (view.meta or {}).get("ui", {}), "tools": tools, "results": results}


async def call_tool(server: ServerProcess, token: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        async with Client(streamable_http_client(server.mcp_url, http_client=http)) as client:
            return wire(await client.call_tool(name, arguments))


def screenshot(page: Any, path: Path) -> None:
    """The host page once every view has reported its size and painted a frame since. Not full_page:
    resizing the window for it can catch the views' out-of-process frames before they repaint."""
    page.wait_for_function("window.views.every((v) => parseInt(v.frame.style.height) > 60)")
    page.wait_for_timeout(300)
    for frame in page.frames[1:]:
        frame.evaluate("new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")
    page.screenshot(path=str(path))


def test_the_view_shows_memories_as_text_undoes_a_store_through_the_host_and_follows_the_theme(
        server: ServerProcess, chromium: str, tmp_path: Path):  # noqa: F811 - the shared fixture
    from playwright.sync_api import expect, sync_playwright

    token = server.token(f"widget-{uuid.uuid4().hex[:8]}")
    hostile = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2"> Sam takes tea <b>black</b>'
    calls: list[tuple[str, dict[str, Any]]] = [
        ("store_memory", {"text": hostile, "memory_type": "core_identity", "entity": "people.sam",
                          "tags": ["tea", "<i>prefs</i>"]}),
        ("store_memory", {"text": "Sam's standup is at 09:30 on weekdays.", "memory_type": "episodic",
                          "entity": "people.sam", "occurred_at": "2026-05-08"}),
        ("retrieve_context", {"query": "how does Sam take tea", "limit": 5}),
        ("memory_history", {"id": "$id"}),
        ("store_memory", {"text": "Sam is allergic to peanuts.", "memory_type": "core_identity"}),
    ]
    got = asyncio.run(over_mcp(server, token, calls))
    stored, _, retrieved, history, to_undo = got["results"]
    hostile_id, undo_id = stored["structuredContent"]["id"], to_undo["structuredContent"]["id"]
    views = [
        {"caption": "Retrieve relevant memories", "name": "retrieve_context", "result": retrieved},
        {"caption": "A memory's history", "name": "memory_history", "result": history},
        {"caption": "Remember something", "name": "store_memory", "result": to_undo},
    ]
    policy = view_policy(got["ui"])
    outside: list[str] = []
    forwarded: list[dict[str, Any]] = []
    refused: list[str] = []

    def route(route: Any) -> None:
        url = urlsplit(route.request.url)
        origin = f"{url.scheme}://{url.netloc}"
        if origin == HOST and url.path == "/":
            route.fulfill(status=200, content_type="text/html", body=HOST_PAGE)
        elif origin == SANDBOX and url.path == "/view":
            route.fulfill(status=200, content_type="text/html", body=got["html"],
                          headers={"Content-Security-Policy": policy})
        else:
            outside.append(route.request.url)
            route.abort()

    def forward_tool_call(params: dict[str, Any]) -> dict[str, Any]:
        forwarded.append(params)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, call_tool(server, token, params["name"], params["arguments"])).result()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 672, "height": 740})
            page.route("**/*", route)
            page.on("console", lambda message: refused.append(message.text)
                    if "Content Security Policy" in message.text or message.type == "error" else None)
            page.expose_function("forwardToolCall", forward_tool_call)
            page.goto(f"{HOST}/")
            page.evaluate("document.body.className = 'dark'")
            for n, view in enumerate(views):
                page.evaluate("window.mount", {"caption": view["caption"], "src": f"{SANDBOX}/view?n={n}",
                                               "tool": got["tools"][view["name"]],
                                               "arguments": {}, "result": view["result"]})
            cards, timeline, confirmation = (page.frame_locator(f"iframe >> nth={n}") for n in range(3))

            # The memory that holds markup shows it as text, and none of it ran.
            first = cards.locator(f"li.card[data-id='{hostile_id}']")
            expect(first.locator(".text")).to_have_text(hostile)
            expect(first.locator(".entity")).to_have_text("people.sam")
            expect(first.locator(".tag")).to_have_text(["tea", "<i>prefs</i>"])
            expect(first.locator(".score")).to_contain_text("score ")
            expect(first.locator("a")).to_have_attribute("href", f"{server.url}/memories/{hostile_id}")
            expect(cards.locator("li.card")).to_have_count(2)
            frame = next(f for f in page.frames if f.url == f"{SANDBOX}/view?n=0")
            assert frame.evaluate("[window.pwned, document.querySelectorAll('script, img, b, i').length]") \
                == [None, 1]

            expect(timeline.locator("ol.timeline li").first).to_contain_text("stored")
            expect(confirmation.locator(".stored [role=status]")).to_have_text("Stored in your memory.")
            expect(confirmation.locator(".card .text")).to_have_text("Sam is allergic to peanuts.")

            # The host passed a dark theme: the view is dark; a switch to light repaints it.
            dark = frame.evaluate("getComputedStyle(document.body).backgroundColor")
            assert dark == "rgb(23, 25, 30)"
            screenshot(page, tmp_path / "chatgpt-widget-dark.png")
            page.evaluate("window.setTheme('light')")
            expect(cards.locator("body")).to_have_css("background-color", "rgb(255, 255, 255)")

            # Opening a memory's page goes through the host, not a navigation of the sandbox.
            cards.locator(f"li.card[data-id='{hostile_id}'] a").click()
            assert page.evaluate("window.openedLinks") == [f"{server.url}/memories/{hostile_id}"]

            screenshot(page, tmp_path / "chatgpt-widget-light.png")

            confirmation.get_by_role("button", name="Undo: delete this memory again").click()
            expect(confirmation.locator(".stored [role=status]")).to_have_text("Undone: the memory was deleted.")
            assert page.evaluate("window.toolCalls") == [
                {"name": "delete_memory", "arguments": {"id": undo_id, "reason": "undone in the chat"}}]
        finally:
            browser.close()

    assert forwarded == [{"name": "delete_memory", "arguments": {"id": undo_id, "reason": "undone in the chat"}}]
    fetched = asyncio.run(call_tool(server, token, "fetch", {"id": undo_id}))
    assert fetched["structuredContent"]["metadata"]["deleted"] is True
    assert outside == [], f"the view or the host page asked for something else: {outside}"
    assert refused == [], f"the browser refused or failed parts of the view: {refused}"
    keep = os.environ.get(SCREENSHOTS_ENV)
    for name in ("chatgpt-widget-dark.png", "chatgpt-widget-light.png"):
        assert (tmp_path / name).stat().st_size > 10_000
        if keep:
            shutil.copy(tmp_path / name, Path(keep) / name)
