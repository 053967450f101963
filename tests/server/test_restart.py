"""Stopping and starting the server on the same data directory loses nothing."""

import signal

import pytest
from server_calls import MODES, call

from memory.server.process import ServerProcess

pytestmark = pytest.mark.anyio

#: uvicorn shuts down gracefully on SIGTERM, then re-raises it: 0 or "killed by SIGTERM" both mean clean.
STOPPED_CLEANLY = (0, -signal.SIGTERM)


async def test_a_restarted_server_has_every_memory_and_accepts_the_old_token(tmp_path, connect):
    first = ServerProcess(tmp_path / "data")
    first.start()
    try:
        token = first.token("dora")
        ids = {}
        for mode in MODES:
            async with connect(token, mode, url=first.mcp_url) as client:
                await call(client, "register_entity", {"name": "garden"})
                stored = await call(client, "store_memory", {"text": f"Planted tomatoes ({mode})",
                                                             "scope": "project", "project": "garden"})
                await call(client, "set_project", {"project": "garden"})
                ids[mode] = stored["id"]
    finally:
        assert first.stop() in STOPPED_CLEANLY, first.log_tail()

    again = ServerProcess(tmp_path / "data", port=first.port)
    again.start()
    try:
        for mode in MODES:
            async with connect(token, mode, url=again.mcp_url) as client:
                fetched = await call(client, "fetch", {"id": ids[mode]})
                hits = await call(client, "search", {"query": "tomatoes"})
                info = await call(client, "get_context_info")
            assert fetched["text"] == f"Planted tomatoes ({mode})"
            assert set(ids.values()) <= {h["id"] for h in hits["results"]}
            assert info["active_project"] == "garden" and info["total_memories"] == 2
    finally:
        assert again.stop() in STOPPED_CLEANLY, again.log_tail()
