"""Debian's headless Chromium for the browser tests, driven by Playwright (never a downloaded one)."""

import os

import pytest

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "chromium_path"]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str:
    # A missing browser is a broken test machine, not a reason to skip: fail and say how to fix it.
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium); "
                    "the browser test never downloads one")
    return CHROMIUM
