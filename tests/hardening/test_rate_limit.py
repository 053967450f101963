"""A burst over the call limit is answered at once with 429 and Retry-After, costs nothing, and
does not hold up anybody else (the per-person limit itself is in tests/server/test_call_rate_limit.py)."""

import threading

import httpx2
import pytest
from hardening_util import log_rows
from threads import run_threads

from memory.server.process import ServerProcess

pytestmark = pytest.mark.slow

LIMIT = 5


def test_a_concurrent_burst_gets_exactly_the_limit_through_and_429s_that_append_nothing(tmp_path):
    with ServerProcess(tmp_path / "data", extra_args=["--call-rate-limit", str(LIMIT)]) as server:
        server.wait_ready()
        alice, bob = ({"Authorization": f"Bearer {server.token(name)}"} for name in ("alice", "bob"))
        answers: list[httpx2.Response] = []
        bobs: list[int] = []
        lock = threading.Lock()

        def call(i: int) -> None:
            with httpx2.Client(base_url=server.url, timeout=60) as http:
                if i % 7 == 6:  # bob, in the middle of alice's burst
                    status = http.get("/api/v1/memories/search", params={"query": "x"}, headers=bob).status_code
                    with lock:
                        bobs.append(status)
                    return
                answer = http.post("/api/v1/memories", headers=alice, json={"text": f"burst note {i}"})
                with lock:
                    answers.append(answer)

        run_threads(28, call)

    statuses = sorted(a.status_code for a in answers)
    assert set(statuses) <= {201, 429}, statuses
    assert statuses.count(201) == LIMIT, statuses
    for refused in (a for a in answers if a.status_code == 429):
        assert int(refused.headers["retry-after"]) >= 1
    assert bobs == [200] * 4
    stored = [row for row in log_rows(tmp_path / "data", "alice") if row[2] == "memory.stored"]
    assert len(stored) == LIMIT, "a refused call reached the log"
