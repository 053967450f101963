"""`use_wal`: every SQLite file the service opens goes to WAL, even while another opener holds it."""

import sqlite3
import threading
import time

import pytest

from memory.wal import use_wal


def _holding(path, seconds: float) -> threading.Thread:
    """Another connection creating the new file's schema, holding its write lock for `seconds`."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("CREATE TABLE t (x)")

    def release():
        time.sleep(seconds)
        holder.execute("COMMIT")
        holder.close()

    thread = threading.Thread(target=release)
    thread.start()
    return thread


def test_the_switch_waits_for_another_opener_of_the_new_file(tmp_path):
    path = tmp_path / "new.sqlite"
    release = _holding(path, 0.3)
    db = sqlite3.connect(path, isolation_level=None, timeout=10)
    began = time.monotonic()
    use_wal(db)
    assert time.monotonic() - began >= 0.2  # it did wait for the holder
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert db.execute("SELECT count(*) FROM t").fetchone() == (0,)  # the holder's schema is there
    release.join()


def test_a_lock_held_past_the_timeout_is_an_error_and_other_errors_are_not_retried(tmp_path):
    path = tmp_path / "new.sqlite"
    release = _holding(path, 1.0)
    db = sqlite3.connect(path, isolation_level=None, timeout=10)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        use_wal(db, timeout=0.1)
    release.join()
    db.close()
    with pytest.raises(sqlite3.ProgrammingError):  # closed: raised at once, not retried for 10 s
        use_wal(db)
