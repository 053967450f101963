"""Tool and API calls are rate limited per person, not per address: one flood does not slow others."""

import httpx2

from memory.server.process import ServerProcess


def test_a_person_over_the_call_limit_gets_429_with_retry_after_while_another_person_is_served(tmp_path):
    with ServerProcess(tmp_path / "data", extra_args=["--call-rate-limit", "4"]) as server:
        server.wait_ready()
        alice, bob = server.token("alice"), server.token("bob")
        with httpx2.Client(base_url=server.url, timeout=30) as http:
            answers = [http.get("/api/v1/memories/search", params={"query": "x"},
                                headers={"Authorization": f"Bearer {alice}"}) for _ in range(5)]
            assert [a.status_code for a in answers] == [200, 200, 200, 200, 429]
            assert int(answers[-1].headers["retry-after"]) >= 1
            # Retry-After tells a client to wait: only a refusal carries it, while every answer says how
            # much of the limit is left.
            assert all("retry-after" not in a.headers and "ratelimit-remaining" in a.headers
                       for a in answers[:4])
            mcp = http.post("/mcp", headers={"Authorization": f"Bearer {alice}"}, json={})
            assert mcp.status_code == 429, "the limit covers /mcp too"
            assert http.get("/api/v1/memories/search", params={"query": "x"},
                            headers={"Authorization": f"Bearer {bob}"}).status_code == 200
            unauthenticated = http.get("/api/v1/memories/search", params={"query": "x"})
            assert unauthenticated.status_code == 401, "auth is checked before the limit"
