"""Rate limits over two real replicas on one PostgreSQL database: a person's calls and an address's
OAuth requests draw on one budget whichever replica answers them (memory.server.kvstore)."""

from pathlib import Path

import httpx2
from pg_replicas import Replicas, running_replicas

CALLS, OAUTH = 6, 4


def test_two_replicas_share_one_budget_for_a_persons_calls_and_one_for_an_address(tmp_path: Path, postgres_url: str):
    limits = {"MEMORY_CALL_RATE_LIMIT_PER_MINUTE": str(CALLS), "MEMORY_OAUTH_RATE_LIMIT_PER_MINUTE": str(OAUTH)}
    with running_replicas(tmp_path, postgres_url, env=limits) as replicas, httpx2.Client(timeout=30) as http:
        a, b = Replicas.direct(replicas.first), Replicas.direct(replicas.second)
        bearer = {"Authorization": f"Bearer {replicas.personal_token('script')}"}

        answers = [http.get(f"{(a, b)[i % 2]}/api/v1/memories", headers=bearer) for i in range(CALLS)]
        over = [http.get(f"{replica}/api/v1/memories", headers=bearer) for replica in (a, b)]

        assert [r.status_code for r in answers] == [200] * CALLS
        assert [int(r.headers["RateLimit-Remaining"]) for r in answers] == list(range(CALLS - 1, -1, -1))
        assert [r.status_code for r in over] == [429, 429]
        assert all(1 <= int(r.headers["Retry-After"]) <= 60 for r in over)
        # Another person has a budget of their own.
        other = {"Authorization": f"Bearer {replicas.personal_token('script', user='bob')}"}
        assert http.get(f"{b}/api/v1/memories", headers=other).status_code == 200

        register = {"redirect_uris": ["https://chatgpt.com/connector_platform_oauth_redirect"],
                    "token_endpoint_auth_method": "none"}
        registered = [http.post(f"{(b, a)[i % 2]}/register", json=register).status_code for i in range(OAUTH + 2)]
        assert registered == [201] * OAUTH + [429, 429]
