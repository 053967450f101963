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


def test_signing_out_and_a_new_password_end_sessions_in_every_browser_holding_the_cookie(
        web_server: ServerProcess, chromium: str):
    from playwright.sync_api import expect, sync_playwright

    name, password, new_password = f"ezra{uuid.uuid4().hex[:6]}", "ezra-browser-pw", "ezra-browser-pw-2"
    add_user(web_server.data_dir, name, password)
    login = f"{web_server.url}/login?next=%2F"

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            def signed_in(secret: str):
                context = browser.new_context()
                page = context.new_page()
                page.goto(f"{web_server.url}/login")
                page.fill("input[name=username]", name)
                page.fill("input[name=password]", secret)
                page.click("button[type=submit]")
                expect(page.locator("header .who")).to_have_text(name)
                return context, page

            laptop, page = signed_in(password)
            copied = browser.new_context()
            copied.add_cookies(laptop.cookies())
            stolen = copied.new_page()
            stolen.goto(f"{web_server.url}/")
            expect(stolen.locator("header .who")).to_have_text(name)

            page.click("text=Sign out")
            stolen.goto(f"{web_server.url}/")
            expect(stolen).to_have_url(login)

            laptop, page = signed_in(password)
            phone, other = signed_in(password)
            page.click("header >> text=Password")
            page.fill("input[name=current]", password)
            page.fill("input[name=new]", new_password)
            page.fill("input[name=confirm]", new_password)
            page.click("main button[type=submit]")
            expect(page.locator(".notice")).to_contain_text("Password changed")

            other.goto(f"{web_server.url}/timeline")
            expect(other).to_have_url(f"{web_server.url}/login?next=%2Ftimeline")
            page.goto(f"{web_server.url}/timeline")
            expect(page.locator("header .who")).to_have_text(name)
        finally:
            browser.close()
