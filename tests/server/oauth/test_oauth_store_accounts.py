"""OAuthStore's accounts and web sessions on a real file: ids, removal, reclaiming, and a store made
before accounts had ids."""

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from memory.server.oauth.store import OAuthStore, RemovedAccount, oauth_db_path


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


def test_a_session_names_its_account_until_it_ends_or_expires(tmp_path: Path):
    store = OAuthStore(tmp_path)
    store.add_user("alice", "h")
    kept, ended, expired = (store.start_session("alice", ttl) for ttl in (60, 60, -1))

    store.end_session(ended)

    assert store.session_user(kept) == "alice"
    assert store.session_user(ended) is None and store.session_user(expired) is None
    assert store.session_user("made-up") is None and store.start_session("nobody", 60) is None
    assert kept.encode() not in oauth_db_path(tmp_path).read_bytes()  # only its hash is stored
    store.close()


def test_a_removed_name_comes_back_only_on_purpose_and_as_a_new_account(tmp_path: Path):
    store = OAuthStore(tmp_path)
    store.add_user("carol", "h1")
    old_session = store.start_session("carol", 60)
    assert store.remove_user("carol") and not store.remove_user("carol")

    with pytest.raises(RemovedAccount):
        store.add_user("carol", "h2")
    assert store.users() == [] and store.password_hash("carol") is None and store.was_removed("carol")

    store.add_user("carol", "h3", reclaim=True)

    assert store.users() == ["carol"] and store.password_hash("carol") == "h3" and not store.was_removed("carol")
    assert store.session_user(old_session) is None
    with pytest.raises(ValueError, match="already exists"):
        store.add_user("carol", "h4", reclaim=True)
    store.close()
