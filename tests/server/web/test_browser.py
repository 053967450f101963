"""The pages in a real browser: Debian's headless Chromium driven by Playwright. A person signs in
through the form, sees what their assistant stored over MCP, forgets it (after the confirmation
step) and finds the erasure in their timeline."""

import asyncio
import uuid
from pathlib import Path

import pytest
from chromium import CHROMIUM_ARGS, chromium_path
from web_calls import add_user, store_over_mcp

from memory.server.process import ServerProcess


@pytest.fixture(scope="module")
def chromium() -> str:
    return chromium_path()


def test_a_person_signs_in_sees_a_memory_from_mcp_forgets_it_and_finds_it_redacted_in_the_timeline(
        web_server: ServerProcess, chromium: str, tmp_path: Path):
    from playwright.sync_api import expect, sync_playwright

    name, password = f"dana{uuid.uuid4().hex[:6]}", "dana-browser-pw"
    add_user(web_server.data_dir, name, password)
    text = f"Dana is allergic to peanuts {uuid.uuid4().hex[:8]}"
    memory_id = asyncio.run(store_over_mcp(web_server.mcp_url, web_server.token(name), text))
    screenshot = tmp_path / "timeline.png"

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            refused: list[str] = []
            page.on("console", lambda message: refused.append(message.text)
                    if "Content Security Policy" in message.text else None)
            page.goto(f"{web_server.url}/")
            expect(page).to_have_url(f"{web_server.url}/login?next=%2F")
            # The stylesheet loaded and applies under the page's own security policy.
            expect(page.locator("body")).to_have_css("max-width", "832px")
            page.fill("input[name=username]", name)
            page.fill("input[name=password]", password)
            page.click("button[type=submit]")

            expect(page.locator(f"#m-{memory_id} .text")).to_have_text(text)
            page.click(f"#m-{memory_id} >> text=Forget…")
            expect(page.locator("body")).to_contain_text("This cannot be undone.")
            page.click("text=Forget for good")

            expect(page).to_have_url(f"{web_server.url}/timeline?done=forgotten")
            expect(page.locator("table")).to_contain_text("redacted (forgotten)")
            expect(page.locator("body")).to_contain_text("Verified")
            expect(page.locator("table")).not_to_contain_text(text)
            page.screenshot(path=str(screenshot), full_page=True)

            page.goto(f"{web_server.url}/")
            expect(page.locator("main")).not_to_contain_text(text)
        finally:
            browser.close()

    assert screenshot.exists() and screenshot.stat().st_size > 0
    assert refused == [], f"the browser refused parts of the pages: {refused}"
