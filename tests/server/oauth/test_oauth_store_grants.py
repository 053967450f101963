"""OAuthStore as the person sees their grants: which apps hold a live refresh token, and revoking one."""

from pathlib import Path

from memory.server.oauth.store import Grant, OAuthStore


def grant(family: str, user: str, client_id: str = "app-1") -> Grant:
    return Grant(family=family, client_id=client_id, user=user, scopes=["memories:read"], resource="http://x/mcp")


def test_a_person_sees_only_their_live_grants_and_can_revoke_only_their_own(tmp_path: Path):
    store = OAuthStore(tmp_path)
    store.save_client("app-1", {"client_name": "Alice's assistant"}, None)
    store.save_refresh("alice-live", grant("f-live", "alice"), 3600)
    store.save_refresh("alice-rotated", grant("f-rotated", "alice"), 3600)
    store.use_refresh("alice-rotated")  # rotated away and never replaced: nothing live is left in it
    store.save_refresh("alice-expired", grant("f-expired", "alice"), -1)
    store.save_refresh("bob-live", grant("f-bob", "bob", "app-2"), 3600)

    listed = store.grants_of("alice")
    bobs_taken = store.revoke_grant("alice", "f-bob")
    revoked = store.revoke_grant("alice", "f-live")

    assert [(a.family, a.client_name, a.scopes) for a in listed] == [("f-live", "Alice's assistant", ["memories:read"])]
    assert not bobs_taken and not store.grant_revoked("f-bob")
    assert [a.client_name for a in store.grants_of("bob")] == ["app-2"]  # no registration row: the id names it
    assert revoked and store.grant_revoked("f-live") and store.grants_of("alice") == []
    store.close()
