"""Small helpers the server tests share (conftest.py is not importable)."""

import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

from mcp import Client

from memory.log import LOG_FILE, USERS_DIR

#: The SDK client's two ways in: `server/discover` then 2026-07-28, and the `initialize` handshake.
MODES = ["auto", "legacy"]


async def call(client: Client, tool: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    """A tool's structuredContent; fails the test on a tool error."""
    result = await client.call_tool(tool, arguments or {})
    assert not result.is_error, f"{tool} failed: {result.content}"
    assert result.structured_content is not None
    return result.structured_content


async def call_error(client: Client, tool: str, arguments: dict[str, Any] | None = None) -> str:
    """The message of a tool error; fails the test if the call succeeded."""
    result = await client.call_tool(tool, arguments or {})
    assert result.is_error, f"{tool} unexpectedly succeeded: {result.structured_content}"
    return " ".join(getattr(c, "text", "") for c in result.content)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def cli_token(server: Any, user: str, *args: str) -> str:
    """What `memory token` prints for `server`, run as the operator would run it."""
    memory = Path(sys.executable).parent / "memory"
    result = subprocess.run(
        [str(memory), "token", "--data-dir", str(server.data_dir), "--user", user, "--public-url", server.url, *args],
        check=True, capture_output=True, text=True,
    )
    return result.stdout


def log_lengths(data_dir: Path) -> dict[str, int]:
    """How many events each log in the data dir holds, by folder (read-only)."""
    lengths = {}
    for path in sorted((Path(data_dir) / USERS_DIR).glob(f"*/{LOG_FILE}")):
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            lengths[path.parent.name] = db.execute("SELECT count(*) FROM events").fetchone()[0]
    return lengths


def wait_healthy(url: str, server: Any, timeout: float = 30.0) -> None:
    """Wait for a server's own address (not the public URL `ServerProcess.start` waits on) to
    answer /healthz: a second replica behind one public URL."""
    import time

    import httpx2

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx2.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx2.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not come up:\n{server.log_tail()}")
