"""OAuthStore's accounts on a real SQLite file: a store made before accounts had ids, and what the file
holds. What every backend does with accounts and sessions: test_store_contract.py."""

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from memory.server.oauth.store import OAuthStore, oauth_db_path


def test_a_store_made_before_accounts_had_ids_keeps_its_accounts_and_gains_sessions(tmp_path: Path):
    with sqlite3.connect(oauth_db_path(tmp_path)) as old:
        old.execute("CREATE TABLE users (name TEXT PRIMARY KEY, password_hash TEXT NOT NULL, created_at REAL NOT NULL)")
        old.execute("INSERT INTO users VALUES ('alice', 'scrypt$old', 1.0)")
    old.close()

    # Two processes opening it at once (the CLI and a server) both get a working store.
    with ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(lambda _: OAuthStore(tmp_path), range(4)))

    session = stores[0].start_session("alice", 60)
    assert session and all(s.session_user(session) == "alice" for s in stores)
    assert stores[1].users() == ["alice"] and stores[2].password_hash("alice") == "scrypt$old"
    for store in stores:
        store.close()


def test_the_file_holds_a_hash_of_each_session_never_the_session_itself(tmp_path: Path):
    store = OAuthStore(tmp_path)
    store.add_user("alice", "h")
    session = store.start_session("alice", 60)
    store.close()

    assert session and session.encode() not in oauth_db_path(tmp_path).read_bytes()
