"""A full disk: a write that cannot be saved is a 507 with a message, never a 500 or half an event.

The server's data dir sits on a small tmpfs (mounted for the test; where mounting is not allowed,
the server runs under an RLIMIT_FSIZE that plays the same part). The disk is filled until stores
fail; every failure must be a 507 naming the storage problem, the log must hold exactly the
acknowledged stores (plus, at most, the failing call's own event when only the indexes could not
be written, which its message says), and once space is freed the same calls retried with their
event ids succeed without storing anything twice, and `memory verify` passes.
"""

import os
import resource
import subprocess
import uuid

import httpx2
import pytest
from hardening_util import integrity, log_rows, memory_cli, user

from memory.log import log_path
from memory.server.process import ServerProcess

pytestmark = pytest.mark.slow

FREE_AFTER_FILLING = 96 * 1024


class TmpfsDisk:
    """A 16 MB filesystem of its own; filling writes a ballast file, freeing deletes it."""

    def __init__(self, path):
        self.path = path
        path.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(path)], check=True,
                       capture_output=True)
        self._ballast = path / "ballast"

    def fill(self, server: ServerProcess, leave: int) -> None:
        fd = os.open(self._ballast, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * 65536)
        except OSError:
            pass
        finally:
            os.close(fd)
        os.truncate(self._ballast, max(0, os.path.getsize(self._ballast) - leave))

    def free(self, server: ServerProcess) -> None:
        self._ballast.unlink()

    def close(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=True)


class FileSizeLimit:
    """Where mounting is refused: the server may not grow any file beyond a limit set from outside."""

    def __init__(self, path):
        self.path = path
        path.mkdir()

    def fill(self, server: ServerProcess, leave: int) -> None:
        biggest = max(p.stat().st_size for p in self.path.rglob("*") if p.is_file())
        resource.prlimit(server.pid, resource.RLIMIT_FSIZE, (biggest + leave, resource.RLIM_INFINITY))

    def free(self, server: ServerProcess) -> None:
        resource.prlimit(server.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

    def close(self) -> None:
        pass


@pytest.fixture
def disk(tmp_path):
    try:
        made = TmpfsDisk(tmp_path / "disk")
    except subprocess.CalledProcessError:
        made = FileSizeLimit(tmp_path / "disk")
    yield made
    made.close()


def test_a_full_disk_fails_writes_with_507_keeps_the_log_whole_and_recovers_once_freed(disk, tmp_path):
    data_dir = disk.path / "data"
    # (Where a file size limit stands in for the full disk, Python ignores SIGXFSZ, so the write
    # fails with EFBIG, which SQLite reports as a full disk.)
    server = ServerProcess(data_dir, log_file=tmp_path / "server.log")
    server.start()
    try:
        server.wait_ready()
        headers = {"Authorization": f"Bearer {server.token('alice')}"}
        with httpx2.Client(base_url=server.url, timeout=30) as http:
            def store(event_id: str, n: int) -> httpx2.Response:
                return http.post("/api/v1/memories", headers=headers, json={
                    "event_id": event_id, "text": f"note {n}: " + "a long paragraph of detail " * 120})

            acked = [store(str(uuid.uuid4()), n).json()["id"] for n in range(3)]
            disk.fill(server, FREE_AFTER_FILLING)
            failed: dict[str, tuple[int, str]] = {}
            for n in range(3, 200):
                event_id = str(uuid.uuid4())
                answer = store(event_id, n)
                if answer.status_code == 201:
                    acked.append(event_id)
                    continue
                assert answer.status_code == 507, answer.text
                body = answer.json()
                assert body["error"] == "storage", body
                # Nothing written, the event written but not indexed, or (a store embeds first) the
                # indexes behind before anything was written.
                assert body["detail"].startswith(("cannot write the event log", "recorded as seq",
                                                  "cannot update the indexes")), body
                failed[event_id] = (n, body["detail"])
                if len(failed) == 4:
                    break
            assert len(failed) == 4, "the disk never filled up"
            assert http.get("/healthz").status_code == 200

            stored = [i for _, i, t in log_rows(data_dir, "alice") if t == "memory.stored"]
            recorded = [i for i, (_, detail) in failed.items() if "recorded as seq" in detail]
            assert stored[:len(acked)] == acked, "an acknowledged store is missing or out of place"
            assert set(stored[len(acked):]) <= set(recorded), "a failed store left an event it did not own up to"
            assert integrity(log_path(data_dir, user("alice"))) == "ok"

            disk.free(server)
            for event_id, (n, _) in failed.items():  # the client retries with the same id and text
                answer = store(event_id, n)
                assert answer.status_code == 201, answer.text
                assert answer.json()["id"] == event_id
            after = store(str(uuid.uuid4()), 3000)
            assert after.status_code == 201, after.text
            found = http.get("/api/v1/memories/search", params={"query": "long paragraph", "limit": 100},
                             headers=headers)
            assert found.status_code == 200
    finally:
        server.stop()

    stored = [i for _, i, t in log_rows(data_dir, "alice") if t == "memory.stored"]
    assert len(stored) == len(set(stored)), "a retry stored twice"
    assert set(stored) == set(acked) | set(failed) | {after.json()["id"]}
    seqs = [s for s, _, _ in log_rows(data_dir, "alice")]
    assert seqs == list(range(1, len(seqs) + 1))
    verified = memory_cli("verify", data_dir=data_dir)
    assert verified.returncode == 0, verified.stdout + verified.stderr
