"""A real `memory serve` SIGKILLed while eight clients store: every answered store survives.

Eight clients (two per person) store over REST with their own event ids; after a random number
of 201 answers the server is killed with SIGKILL, started again on the same data dir, and
killed again, three times over. Every id that got a 201 must be in its owner's log and
readable after the restart, and `memory verify` must pass.
"""

import random
import threading
import time
import uuid

import httpx2
import pytest
from hardening_util import integrity, log_rows, memory_cli, user
from threads import run_threads

from memory.log import log_path
from memory.server.process import ServerProcess

pytestmark = pytest.mark.slow

CLIENTS = 8
PEOPLE = ["ana", "ben", "cy", "dee"]
ROUNDS = 3


def store_until_the_server_dies(server: ServerProcess, client: int, acked: list[tuple[str, str]],
                                stop: threading.Event) -> None:
    person = PEOPLE[client % len(PEOPLE)]
    headers = {"Authorization": f"Bearer {server.token(person)}"}
    with httpx2.Client(base_url=server.url, timeout=30) as http:
        for i in range(10_000):
            if stop.is_set():
                return
            event_id = str(uuid.uuid4())
            # Unique across rounds: a text already stored is (rightly) answered as a duplicate.
            text = f"client {client} note {i} of {event_id}"
            try:
                answer = http.post("/api/v1/memories", headers=headers, json={"text": text, "event_id": event_id})
            except httpx2.TransportError:
                return  # the server is gone: this call got no answer, so it promised nothing
            assert answer.status_code == 201, answer.text
            assert answer.json()["id"] == event_id
            acked.append((person, event_id))


def test_a_server_killed_under_eight_writing_clients_keeps_every_answered_store(tmp_path):
    data_dir = tmp_path / "data"
    rng = random.Random()
    seed = rng.randrange(2**32)
    rng.seed(seed)
    acked: list[tuple[str, str]] = []
    for round_ in range(ROUNDS):
        server = ServerProcess(data_dir, log_file=tmp_path / "server.log").start()
        server.wait_ready()
        kill_after = len(acked) + rng.randint(10, 60)
        stop = threading.Event()

        def killer() -> None:
            while len(acked) < kill_after and server.running:
                time.sleep(0.001)
            time.sleep(rng.uniform(0, 0.05))  # land inside a call, not between two
            server.kill()
            stop.set()

        watcher = threading.Thread(target=killer)
        watcher.start()
        run_threads(CLIENTS, lambda c: store_until_the_server_dies(server, c, acked, stop))
        watcher.join(60)
        assert len(acked) >= kill_after, f"seed {seed}, round {round_}"

    for person in PEOPLE:
        assert integrity(log_path(data_dir, user(person))) == "ok"
        logged = {event_id for _, event_id, _ in log_rows(data_dir, person)}
        missing = [i for p, i in acked if p == person and i not in logged]
        assert not missing, f"seed {seed}: {person} lost acknowledged stores {missing}"

    with ServerProcess(data_dir, log_file=tmp_path / "server.log") as server, \
            httpx2.Client(base_url=server.url, timeout=30) as http:
        for person in PEOPLE:
            headers = {"Authorization": f"Bearer {server.token(person)}"}
            mine = [i for p, i in acked if p == person]
            for event_id in rng.sample(mine, min(10, len(mine))):
                assert http.get(f"/api/v1/memories/{event_id}", headers=headers).status_code == 200

    verified = memory_cli("verify", data_dir=data_dir)
    assert verified.returncode == 0, f"seed {seed}: {verified.stdout}{verified.stderr}"
