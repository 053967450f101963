"""The contract of the built-in authorization server's store (`AuthStore`), run against both backends:
SQLite (`OAuthStore`, a real file) and PostgreSQL (`PostgresOAuthStore`, the suite's real server).

`second` is another store on the same storage, as another process (the CLI beside a server) or
another replica would open it: what one writes, the other sees, and single-use steps stay single
use between the two."""

import inspect
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from memory.pgpool import open_pool
from memory.server.oauth.pgstore import PostgresOAuthStore
from memory.server.oauth.storage import AuthStore
from memory.server.oauth.store import FLOWS_COMPLETED, FLOWS_STARTED, Grant, OAuthStore, PendingRequest, RemovedAccount

Opener = Callable[[], AuthStore]


@pytest.fixture(params=["sqlite", "postgres"])
def opener(request, tmp_path) -> Iterator[Opener]:
    opened: list[AuthStore] = []

    def open_store() -> AuthStore:
        if request.param == "sqlite":
            store: AuthStore = OAuthStore(tmp_path)
        else:
            store = PostgresOAuthStore(open_pool(url), owns_pool=True)
        opened.append(store)
        return store

    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    yield open_store
    for store in opened:
        store.close()


@pytest.fixture()
def stored_bytes(request, tmp_path) -> Callable[[], bytes]:
    """Everything the backend holds, as bytes: the SQLite file with its WAL, or every row of the
    PostgreSQL tables as text."""
    def read() -> bytes:
        if request.node.callspec.params["opener"] == "sqlite":
            return b"".join(p.read_bytes() for p in sorted(tmp_path.glob("oauth.sqlite*")))
        with psycopg.connect(request.getfixturevalue("postgres_url")) as conn:
            tables = [t for (t,) in conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE 'oauth_%'")]
            return "".join(str(conn.execute(f"SELECT * FROM {t}").fetchall()) for t in tables).encode()

    return read


@pytest.fixture()
def store(opener: Opener) -> AuthStore:
    return opener()


@pytest.fixture()
def second(opener: Opener, store: AuthStore) -> AuthStore:
    return opener()


def grant(family: str, user: str, client_id: str = "app-1") -> Grant:
    return Grant(family=family, client_id=client_id, user=user, scopes=["memories:read"], resource="http://x/mcp",
                 redirect_uri="http://x/cb", challenge="c")


def test_both_backends_have_every_method_of_the_protocol(store: AuthStore):
    wanted = {name for name, _ in inspect.getmembers(AuthStore, inspect.isfunction) if not name.startswith("_")}
    assert wanted >= {"use_code", "use_refresh", "add_user", "counts"}
    for name in wanted:
        assert inspect.signature(getattr(store, name)).parameters.keys() == \
            {p for p in inspect.signature(getattr(AuthStore, name)).parameters if p != "self"}, name


# Accounts and web sessions

def test_a_session_names_its_account_until_it_ends_or_expires(store: AuthStore, second: AuthStore):
    store.add_user("alice", "h")
    kept, ended, expired = (store.start_session("alice", ttl) for ttl in (60, 60, -1))

    second.end_session(ended)

    assert store.session_user(kept) == "alice" and second.session_user(kept) == "alice"
    assert store.session_user(ended) is None and store.session_user(expired) is None
    assert store.session_user("made-up") is None and store.start_session("nobody", 60) is None


def test_a_removed_name_comes_back_only_on_purpose_and_as_a_new_account(store: AuthStore):
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
    with pytest.raises(ValueError, match="not a valid account name"):
        store.add_user("has#hash", "h")


def test_accounts_are_listed_in_name_order_and_a_new_password_ends_every_session(store: AuthStore, second: AuthStore):
    for name in ("bob", "Zed", "alice"):
        store.add_user(name, f"h-{name}")
    session = store.start_session("bob", 60)

    assert second.set_password("bob", "new") and not second.set_password("nobody", "x")

    assert store.users() == ["Zed", "alice", "bob"]  # byte order, as SQLite sorts
    assert store.password_hash("bob") == "new" and store.session_user(session) is None


def test_of_two_stores_adding_one_new_name_at_once_exactly_one_succeeds(store: AuthStore, second: AuthStore):
    barrier = threading.Barrier(2)

    def add(target: AuthStore) -> bool:
        barrier.wait()
        try:
            target.add_user("dana", f"h-{id(target)}")
            return True
        except ValueError:
            return False

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(add, [store, second]))

    assert sorted(results) == [False, True] and store.users() == ["dana"]


def test_removing_an_account_ends_its_sessions_sign_ins_codes_grants_and_tokens(store: AuthStore, second: AuthStore):
    store.add_user("erin", "h")
    session = store.start_session("erin", 60)
    store.save_pending(PendingRequest(id="p1", params={}, browser="b", csrf="c", user="erin"), 60)
    store.save_code("code-1", grant("f-code", "erin"), 60)
    store.save_refresh("refresh-1", grant("f-refresh", "erin"), 3600)
    store.register_personal_token("tok-1", user="erin", name="cli", scopes=[], created_at=time.time(),
                                  expires_at=time.time() + 60)

    assert second.remove_user("erin")

    assert store.session_user(session) is None and store.pending("p1") is None
    assert store.use_code("code-1") is None
    assert store.grant_revoked("f-refresh") and store.use_refresh("refresh-1")[1] == "revoked"
    assert store.personal_token_name("tok-1", "erin") is None and store.personal_tokens_of("erin") == []


# Clients and sign-ins in progress

def test_a_client_is_kept_with_the_hash_of_its_secret_and_an_unused_one_is_forgotten_after_a_day(
        store: AuthStore, second: AuthStore, monkeypatch):
    store.save_client("confidential", {"client_name": "C"}, "s3cret")
    store.save_client("used", {"client_name": "U"}, None)
    store.save_code("code", grant("f", "alice", client_id="used"), 60)

    metadata, secret_hash = second.client("confidential")
    assert metadata == {"client_name": "C"} and secret_hash != "s3cret"
    assert second.secret_matches("s3cret", secret_hash) and not second.secret_matches("guess", secret_hash)
    assert not second.secret_matches("s3cret", None) and second.client("nobody") is None

    later = time.time() + 86400 + 60
    monkeypatch.setattr(time, "time", lambda: later)
    second.save_client("newcomer", {}, None)

    assert store.client("confidential") is None  # registered, never used, a day ago
    assert store.client("used") is not None and store.client("newcomer") is not None


def test_a_pending_sign_in_is_seen_by_the_other_store_until_dropped_or_expired(store: AuthStore, second: AuthStore):
    store.save_pending(PendingRequest(id="p1", params={"client_id": "a", "n": 1}, browser="b", csrf="c1", user=None), 60)
    store.save_pending(PendingRequest(id="p2", params={}, browser="b", csrf="c", user=None), -1)

    second.log_in_pending("p1", "alice", "c2")

    assert store.pending("p1") == PendingRequest(id="p1", params={"client_id": "a", "n": 1}, browser="b", csrf="c2",
                                                 user="alice")
    assert store.pending("p2") is None and store.pending("nope") is None
    assert second.drop_pending("p1") and not store.drop_pending("p1") and store.pending("p1") is None
    assert store.counts()[FLOWS_STARTED] == 2


# Codes

def test_a_code_is_good_once_and_its_second_use_revokes_what_the_first_issued(store: AuthStore, second: AuthStore):
    issued = grant("f1", "alice")
    store.save_code("code", issued, 60)
    store.save_code("stale", grant("f2", "alice"), -1)

    assert second.use_code("code") == (issued, True)
    store.save_refresh("refresh", issued, 3600)  # what the first redemption issued
    assert store.use_code("code") == (issued, False)

    assert second.grant_revoked("f1") and second.use_refresh("refresh")[1] == "revoked"
    assert store.use_code("stale") == (grant("f2", "alice"), False)  # expired: redeemed, but not fresh
    assert store.use_code("made-up") is None
    assert store.counts()[FLOWS_COMPLETED] == 1


def test_a_code_replayed_before_its_first_use_saved_its_refresh_token_still_revokes_it(
        store: AuthStore, second: AuthStore):
    issued = grant("f-late", "alice")
    store.save_code("code", issued, 60)
    assert store.use_code("code") == (issued, True)  # the first use, on one replica...
    assert second.use_code("code") == (issued, False)  # ...replayed on another before it saved its tokens

    store.save_refresh("late", issued, 3600)

    assert store.grant_revoked("f-late") and second.use_refresh("late")[1] == "revoked"
    store.save_refresh("other-family", grant("f-other", "alice"), 3600)
    assert not store.grant_revoked("f-other")


def test_of_many_redemptions_of_one_code_at_once_across_two_stores_exactly_one_is_fresh(
        store: AuthStore, second: AuthStore):
    store.save_code("race", grant("f-race", "alice"), 60)
    barrier = threading.Barrier(8)

    def redeem(i: int) -> bool:
        barrier.wait()
        result = (store, second)[i % 2].use_code("race")
        assert result is not None
        return result[1]

    with ThreadPoolExecutor(8) as pool:
        fresh = list(pool.map(redeem, range(8)))

    assert fresh.count(True) == 1 and store.counts()[FLOWS_COMPLETED] == 1


# Refresh tokens

def test_a_refresh_token_rotates_once_and_its_reuse_revokes_the_whole_family(store: AuthStore, second: AuthStore):
    family = grant("fam", "alice")
    store.save_refresh("r1", family, 3600)
    store.save_refresh("expired", grant("old", "alice"), -1)

    assert second.use_refresh("r1") == (Grant(family="fam", client_id="app-1", user="alice",
                                               scopes=["memories:read"], resource="http://x/mcp"), "ok")
    second.save_refresh("r2", family, 3600)
    assert store.use_refresh("r1")[1] == "reused"

    assert store.grant_revoked("fam") and second.use_refresh("r2")[1] == "revoked"
    assert store.use_refresh("expired")[1] == "expired" and store.use_refresh("made-up") is None
    assert not store.grant_revoked("old")


def test_of_many_rotations_of_one_refresh_token_at_once_across_two_stores_exactly_one_is_ok(
        store: AuthStore, second: AuthStore):
    store.save_refresh("race", grant("f-race", "alice"), 3600)
    barrier = threading.Barrier(8)

    def rotate(i: int) -> str:
        barrier.wait()
        result = (store, second)[i % 2].use_refresh("race")
        assert result is not None
        return result[1]

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(rotate, range(8)))

    assert outcomes.count("ok") == 1 and set(outcomes) <= {"ok", "reused", "revoked"}
    assert store.grant_revoked("f-race")  # the losers' reuse revoked the family


def test_a_client_may_revoke_only_its_own_refresh_tokens(store: AuthStore, second: AuthStore):
    store.save_refresh("mine", grant("f-mine", "alice", client_id="app-1"), 3600)

    second.revoke_refresh("mine", "app-2")
    assert not store.grant_revoked("f-mine")
    second.revoke_refresh("mine", "app-1")
    assert store.grant_revoked("f-mine")
    second.revoke_refresh("made-up", None)  # learns nothing, breaks nothing


def test_a_person_sees_only_their_live_grants_and_can_revoke_only_their_own(store: AuthStore, second: AuthStore):
    store.save_client("app-1", {"client_name": "Alice's assistant"}, None)
    store.save_refresh("alice-live", grant("f-live", "alice"), 3600)
    store.save_refresh("alice-rotated", grant("f-rotated", "alice"), 3600)
    store.use_refresh("alice-rotated")  # rotated away and never replaced: nothing live is left in it
    store.save_refresh("alice-expired", grant("f-expired", "alice"), -1)
    store.save_refresh("bob-live", grant("f-bob", "bob", "app-2"), 3600)

    listed = second.grants_of("alice")
    bobs_taken = second.revoke_grant("alice", "f-bob")
    revoked = second.revoke_grant("alice", "f-live")

    assert [(a.family, a.client_name, a.scopes) for a in listed] == [("f-live", "Alice's assistant", ["memories:read"])]
    assert not bobs_taken and not store.grant_revoked("f-bob")
    assert [a.client_name for a in store.grants_of("bob")] == ["app-2"]  # no registration row: the id names it
    assert revoked and store.grant_revoked("f-live") and store.grants_of("alice") == []


# Personal tokens and counters

def test_a_personal_token_is_known_by_its_id_until_revoked_by_name_on_either_store(store: AuthStore, second: AuthStore):
    now = time.time()
    for token_id, name, created in (("t1", "codex", now - 2), ("t2", "claude", now - 1), ("t3", "codex", now)):
        store.register_personal_token(token_id, user="alice", name=name, scopes=["memories:read"], created_at=created,
                                      expires_at=now + 60)
    store.register_personal_token("old", user="alice", name="old", scopes=[], created_at=now - 90, expires_at=now - 1)
    second.mark_personal_token_used("t2", now)

    listed = second.personal_tokens_of("alice")
    assert [(t.name, t.last_used) for t in listed] == [("codex", None), ("claude", now), ("codex", None)]
    assert listed[0].scopes == ["memories:read"] and second.personal_tokens_of("bob") == []
    assert store.personal_token_name("t1", "alice") == "codex" and store.personal_token_name("t1", "bob") is None

    assert second.revoke_personal_tokens("alice", "codex") == 2 and second.revoke_personal_tokens("alice", "codex") == 0

    assert store.personal_token_name("t1", "alice") is None and store.personal_token_name("t3", "alice") is None
    assert store.personal_token_name("t2", "alice") == "claude"
    assert store.revoke_personal_tokens("alice") == 1 and store.personal_tokens_of("alice") == []


def test_counters_add_up_across_stores(store: AuthStore, second: AuthStore):
    assert store.counts() == {FLOWS_STARTED: 0, FLOWS_COMPLETED: 0}

    store.add_counts({"calls": 2, "errors": 1})
    second.add_counts({"calls": 3})

    assert store.counts() == {FLOWS_STARTED: 0, FLOWS_COMPLETED: 0, "calls": 5, "errors": 1}


def test_no_session_code_refresh_token_or_personal_token_id_is_stored_in_the_clear(store: AuthStore, stored_bytes):
    store.add_user("alice", "scrypt$hash")
    session = store.start_session("alice", 60)
    store.save_code("code-in-the-clear-0123456789", grant("f", "alice"), 60)
    store.save_refresh("refresh-in-the-clear-0123456789", grant("f", "alice"), 60)
    store.register_personal_token("token-id-in-the-clear-0123456789", user="alice", name="cli", scopes=[],
                                  created_at=time.time(), expires_at=time.time() + 60)
    store.save_client("confidential", {}, "client-secret-in-the-clear-0123")

    held = stored_bytes()

    assert b"scrypt$hash" in held  # the dump does show what is stored
    for secret in (session, "code-in-the-clear-0123456789", "refresh-in-the-clear-0123456789",
                   "token-id-in-the-clear-0123456789", "client-secret-in-the-clear-0123"):
        assert secret.encode() not in held, secret
