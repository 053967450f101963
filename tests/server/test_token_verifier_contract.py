"""The `TokenVerifier` seam: one contract every implementation meets, run against each of them
(IMPLEMENTATIONS), then what is particular to the local verifier. In-process; no server needed."""

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from memory.identity import LOCAL_ISSUER, Identity
from memory.server.auth import (
    InvalidToken,
    LocalTokenVerifier,
    Principal,
    TokenVerifier,
    issue_personal_token,
    issue_token,
)
from memory.server.oauth.store import OAUTH_FILE, OAuthStore
from memory.signing import KeyRing

pytestmark = pytest.mark.anyio

ISSUER = "https://memory.example"
AUDIENCE = "https://memory.example/mcp"
PERSONAL_CAP = 90 * 86400
ACCESS_CAP = 900


@dataclass
class VerifierCase:
    """What the contract needs of an implementation: the verifier, a way to mint a token it
    should accept (claims overridable; None drops a claim), and the identity a subject maps to."""

    verifier: TokenVerifier
    mint: Callable[..., str]
    mint_foreign: Callable[[], str]
    identity_of: Callable[[str], Identity]


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "nbf": now, "exp": now + 300,
            "jti": uuid.uuid4().hex, "scope": "memories:read memories:write", "client_id": "cli"}
    return {k: v for k, v in (base | overrides).items() if v is not None}


def verifier(keys: KeyRing, store: OAuthStore, **options: Any) -> LocalTokenVerifier:
    return LocalTokenVerifier(keys, **{"issuer": ISSUER, "audience": AUDIENCE, "personal_tokens": store,
                                       "personal_token_max_ttl": PERSONAL_CAP, "access_token_max_ttl": ACCESS_CAP,
                                       **options})


def personal(keys: KeyRing, store: OAuthStore, *, ttl_seconds: int = 60, **options: Any) -> str:
    """What `memory token` makes: a personal token, registered."""
    return issue_personal_token(keys, store, **{"issuer": ISSUER, "audience": AUDIENCE, "user": "alice",
                                                "name": "cli", "scopes": [], "ttl_seconds": ttl_seconds,
                                                "max_ttl_seconds": PERSONAL_CAP, **options})


@pytest.fixture()
def store(tmp_path) -> Iterator[OAuthStore]:
    opened = OAuthStore(tmp_path)
    yield opened
    opened.close()


@pytest.fixture()
def local_case(tmp_path, store) -> VerifierCase:
    keys = KeyRing(tmp_path)
    foreign = Ed25519PrivateKey.generate()

    def mint(**overrides: Any) -> str:
        claims = _claims(**overrides)
        # A personal token, registered the way `memory token` registers it (under its client_id as name).
        if isinstance(claims.get("sub"), str):
            store.register_personal_token(claims["jti"], user=claims["sub"], name=claims["client_id"], scopes=[],
                                          created_at=time.time(), expires_at=time.time() + 300)
        return jwt.encode(claims, keys.private_key(), algorithm="EdDSA", headers={"kid": keys.active_key_id})

    def mint_foreign() -> str:
        return jwt.encode(_claims(), foreign, algorithm="EdDSA", headers={"kid": keys.active_key_id})

    return VerifierCase(verifier(keys, store, leeway_seconds=0), mint, mint_foreign,
                        lambda sub: Identity(LOCAL_ISSUER, sub))


IMPLEMENTATIONS = ["local_case"]


@pytest.fixture(params=IMPLEMENTATIONS)
def case(request: pytest.FixtureRequest) -> VerifierCase:
    return request.getfixturevalue(request.param)


def _b64(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def _with_alg_none(token: str) -> str:
    _, payload, _ = token.split(".")
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{payload}."


def _tampered(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return f"{header}.{_b64(claims | {'sub': 'mallory'})}.{signature}"


# -- the contract -----------------------------------------------------------------------------


def test_a_verifier_satisfies_the_protocol(case):
    assert isinstance(case.verifier, TokenVerifier)


async def test_a_valid_token_yields_the_principal_it_stands_for(case):
    principal = await case.verifier.verify(case.mint(sub="alice", client_id="claude",
                                                     scope="memories:read memories:write"))
    assert isinstance(principal, Principal)
    assert principal.identity == case.identity_of("alice")
    assert principal.client_id == "claude"
    assert principal.scopes == frozenset({"memories:read", "memories:write"})
    assert principal.may("memories:read") and not principal.may("admin")
    assert principal.expires_at and principal.expires_at > time.time()


async def test_scopes_are_exactly_those_the_token_grants(case):
    principal = await case.verifier.verify(case.mint(scope="memories:read"))
    assert principal.scopes == frozenset({"memories:read"})
    assert (await case.verifier.verify(case.mint(scope=None))).scopes == frozenset()


async def test_two_subjects_are_two_identities(case):
    alice = await case.verifier.verify(case.mint(sub="alice"))
    bob = await case.verifier.verify(case.mint(sub="bob"))
    assert alice.identity != bob.identity


@pytest.mark.parametrize(("name", "broken"), [
    ("expired", lambda c: c.mint(iat=int(time.time()) - 600, nbf=int(time.time()) - 600,
                                 exp=int(time.time()) - 60)),
    ("not yet valid", lambda c: c.mint(nbf=int(time.time()) + 600)),
    ("for another audience", lambda c: c.mint(aud="https://other.example/mcp")),
    ("from another issuer", lambda c: c.mint(iss="https://other.example")),
    ("without exp", lambda c: c.mint(exp=None)),
    ("without sub", lambda c: c.mint(sub=None)),
    ("with an empty sub", lambda c: c.mint(sub="")),
    ("without aud", lambda c: c.mint(aud=None)),
    ("unsigned (alg none)", lambda c: _with_alg_none(c.mint())),
    ("signed by an untrusted key", lambda c: c.mint_foreign()),
    ("with a tampered payload", lambda c: _tampered(c.mint())),
    ("truncated", lambda c: c.mint()[:-10]),
    ("not a JWT", lambda c: "not-a-token"),
    ("empty", lambda c: ""),
    ("absurdly long", lambda c: "a" * 100_000),
])
async def test_anything_less_than_a_valid_token_is_invalid_token(case, name, broken):
    token = broken(case)
    with pytest.raises(InvalidToken) as raised:
        await case.verifier.verify(token)
    assert str(raised.value), name
    assert token[:40] not in str(raised.value) or not token


# -- particular to the local verifier ---------------------------------------------------------


async def test_local_tokens_map_to_the_local_issuer_whatever_url_issued_them(tmp_path, store):
    keys = KeyRing(tmp_path)
    behind_proxy = verifier(keys, store, issuer="https://new.example", audience="https://new.example/mcp")
    token = personal(keys, store, issuer="https://new.example", audience="https://new.example/mcp",
                     scopes=["memories:read"])
    assert (await behind_proxy.verify(token)).identity == Identity(LOCAL_ISSUER, "alice")


async def test_issue_token_makes_what_the_local_verifier_accepts_with_every_documented_claim(tmp_path, store):
    keys = KeyRing(tmp_path)
    token = personal(keys, store, scopes=["memories:read", "memories:write"], ttl_seconds=3600)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert set(claims) == {"exp", "iat", "nbf", "jti", "iss", "aud", "sub", "scope", "client_id"}
    assert jwt.get_unverified_header(token) == {"alg": "EdDSA", "kid": keys.active_key_id, "typ": "JWT"}
    principal = await verifier(keys, store).verify(token)
    assert principal.client_id == "cli" and principal.token_id == claims["jti"]


async def test_a_token_signed_before_a_key_rotation_still_verifies(tmp_path, store):
    keys = KeyRing(tmp_path)
    token = personal(keys, store)
    keys.rotate()
    assert (await verifier(keys, store).verify(token)).identity.sub == "alice"


async def test_an_hmac_token_keyed_with_the_public_key_is_refused(tmp_path, store):
    keys = KeyRing(tmp_path)
    public = keys.private_key().public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    # Built by hand: PyJWT itself refuses to use a public key as an HMAC secret.
    signing_input = f"{_b64({'alg': 'HS256', 'kid': keys.active_key_id})}.{_b64(_claims())}"
    mac = hmac.new(public, signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    with pytest.raises(InvalidToken):
        await verifier(keys, store).verify(forged)


async def test_clock_skew_within_the_leeway_is_tolerated(tmp_path, store):
    keys = KeyRing(tmp_path)
    claims = _claims(iat=int(time.time()) - 70, nbf=int(time.time()) - 70, exp=int(time.time()) - 10)
    store.register_personal_token(claims["jti"], user="alice", name="cli", scopes=[], created_at=claims["iat"],
                                  expires_at=claims["exp"])
    token = jwt.encode(claims, keys.private_key(), algorithm="EdDSA", headers={"kid": keys.active_key_id})
    assert await verifier(keys, store, leeway_seconds=30).verify(token)
    with pytest.raises(InvalidToken, match="expired"):
        await verifier(keys, store, leeway_seconds=0).verify(token)


async def test_a_key_rotated_by_another_process_is_picked_up_for_new_tokens(tmp_path, store):
    server_keys = KeyRing(tmp_path)
    server = verifier(server_keys, store)
    cli_keys = KeyRing(tmp_path)
    cli_keys.rotate()
    token = personal(cli_keys, store)
    assert (await server.verify(token)).identity.sub == "alice"


# -- keys: retired, compromised ---------------------------------------------------------------


def _signed_with(keys: KeyRing, store: OAuthStore, kid: str, **overrides: Any) -> str:
    """A registered personal token signed by key `kid`, whatever the ring's active key is now."""
    claims = _claims(**overrides)
    store.register_personal_token(claims["jti"], user=claims["sub"], name="cli", scopes=[],
                                  created_at=claims["iat"], expires_at=claims["exp"])
    return jwt.encode(claims, keys.private_key(kid), algorithm="EdDSA", headers={"kid": kid})


async def test_a_retired_key_verifies_only_tokens_issued_before_it_was_retired(tmp_path, store):
    keys = KeyRing(tmp_path)
    old = keys.active_key_id
    before = _signed_with(keys, store, old, iat=int(time.time()) - 5)
    keys.rotate()
    after = _signed_with(keys, store, old, iat=int(time.time()) + 1, nbf=int(time.time()))

    assert (await verifier(keys, store).verify(before)).identity.sub == "alice"
    with pytest.raises(InvalidToken, match="issued after the key that signed it was retired"):
        await verifier(keys, store).verify(after)


async def test_a_key_rotated_out_as_compromised_verifies_no_token_at_all_not_even_an_older_one(tmp_path, store):
    keys = KeyRing(tmp_path)
    old = keys.active_key_id
    before = _signed_with(keys, store, old, iat=int(time.time()) - 5)
    keys.rotate(compromised=True)

    with pytest.raises(InvalidToken, match="compromised"):
        await verifier(keys, store).verify(before)
    assert (await verifier(keys, store).verify(personal(keys, store))).identity.sub == "alice"


async def test_a_verifier_learns_of_a_compromise_marked_by_another_process_within_a_second_or_so(tmp_path, store):
    server_keys = KeyRing(tmp_path)
    server = verifier(server_keys, store)
    token = personal(server_keys, store)
    assert await server.verify(token)

    KeyRing(tmp_path).rotate(compromised=True)  # `memory rotate-key --compromised`, elsewhere

    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        try:
            await server.verify(token)
        except InvalidToken as refused:
            assert "compromised" in str(refused)
            return
        time.sleep(0.05)
    pytest.fail("the verifier still accepts a token of a key marked compromised 2.5 s later")


# -- lifetimes --------------------------------------------------------------------------------


async def test_a_personal_token_made_to_live_longer_than_the_cap_is_refused_whenever_it_was_made(tmp_path, store):
    keys = KeyRing(tmp_path)
    now = int(time.time())
    decade = _signed_with(keys, store, keys.active_key_id, iat=now, nbf=now, exp=now + 3650 * 86400)
    at_cap = _signed_with(keys, store, keys.active_key_id, iat=now, nbf=now, exp=now + PERSONAL_CAP)

    with pytest.raises(InvalidToken, match=r"lives longer than this server allows personal tokens \(90d\)"):
        await verifier(keys, store).verify(decade)
    assert await verifier(keys, store).verify(at_cap)


async def test_an_access_token_of_a_grant_is_capped_at_the_access_token_lifetime(tmp_path, store):
    keys = KeyRing(tmp_path)
    short = issue_token(keys, issuer=ISSUER, audience=AUDIENCE, subject="alice", scopes=[], ttl_seconds=ACCESS_CAP,
                        grant_id="family-1")
    long = issue_token(keys, issuer=ISSUER, audience=AUDIENCE, subject="alice", scopes=[],
                       ttl_seconds=ACCESS_CAP + 1, grant_id="family-1")

    assert (await verifier(keys, store).verify(short)).identity.sub == "alice"
    with pytest.raises(InvalidToken, match=r"allows access tokens \(15m\)"):
        await verifier(keys, store).verify(long)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lifetime=st.integers(min_value=1, max_value=2 * PERSONAL_CAP), grant=st.sampled_from([None, "family-1"]))
def test_a_token_is_accepted_exactly_when_its_lifetime_is_within_the_cap_of_its_kind(tmp_path, store, lifetime, grant):
    keys = KeyRing(tmp_path)
    now = int(time.time())
    token = _signed_with(keys, store, keys.active_key_id, iat=now, nbf=now, exp=now + lifetime, sid=grant)
    cap = PERSONAL_CAP if grant is None else ACCESS_CAP
    try:
        anyio.run(verifier(keys, store).verify, token)
    except InvalidToken as refused:
        assert lifetime > cap and "lives longer" in str(refused)
    else:
        assert lifetime <= cap


def test_issuing_a_personal_token_over_the_cap_is_refused_and_registers_nothing(tmp_path, store):
    keys = KeyRing(tmp_path)
    with pytest.raises(ValueError, match=r"at most 90d .*asked for 3650d"):
        personal(keys, store, ttl_seconds=3650 * 86400)
    assert store.personal_tokens_of("alice") == []


@pytest.mark.parametrize("name", ["", "web", "has space", "x" * 65, "../apps", "<script>"])
def test_a_personal_token_name_must_be_a_plain_word_and_not_the_web_pages_own(tmp_path, store, name):
    with pytest.raises(ValueError, match="is not a token name"):
        personal(KeyRing(tmp_path), store, name=name)


# -- registration -----------------------------------------------------------------------------


async def test_a_personal_token_that_was_never_registered_is_refused(tmp_path, store):
    """What `memory token` printed before tokens were registered: signed, unexpired, and unknown."""
    keys = KeyRing(tmp_path)
    unregistered = issue_token(keys, issuer=ISSUER, audience=AUDIENCE, subject="alice", scopes=[], ttl_seconds=60)
    with pytest.raises(InvalidToken, match="revoked or is unknown to this server"):
        await verifier(keys, store).verify(unregistered)


async def test_a_revoked_personal_token_is_refused_and_only_tokens_of_that_name_are(tmp_path, store):
    keys = KeyRing(tmp_path)
    claude, codex = personal(keys, store, name="claude-code"), personal(keys, store, name="codex")
    assert store.revoke_personal_tokens("alice", "claude-code") == 1

    with pytest.raises(InvalidToken, match="revoked"):
        await verifier(keys, store).verify(claude)
    assert (await verifier(keys, store).verify(codex)).client_id == "codex"


async def test_a_personal_token_is_good_only_for_the_person_it_was_registered_to(tmp_path, store):
    keys = KeyRing(tmp_path)
    claims = _claims(sub="mallory")
    store.register_personal_token(claims["jti"], user="alice", name="cli", scopes=[], created_at=claims["iat"],
                                  expires_at=claims["exp"])
    token = jwt.encode(claims, keys.private_key(), algorithm="EdDSA", headers={"kid": keys.active_key_id})
    with pytest.raises(InvalidToken):
        await verifier(keys, store).verify(token)


async def test_a_personal_tokens_principal_names_the_token_and_its_use_is_recorded_once_a_minute(tmp_path, store):
    keys = KeyRing(tmp_path)
    token = personal(keys, store, name="claude-code")
    server = verifier(keys, store)
    assert store.personal_tokens_of("alice")[0].last_used is None

    principal = await server.verify(token)
    first = store.personal_tokens_of("alice")[0].last_used
    await server.verify(token)

    assert principal.client_id == "claude-code"
    assert first is not None and abs(first - time.time()) < 5
    assert store.personal_tokens_of("alice")[0].last_used == first  # a second call within the minute writes nothing


def test_the_store_keeps_a_hash_of_a_personal_tokens_id_never_the_token_or_its_id(tmp_path, store):
    token = personal(KeyRing(tmp_path), store, name="claude-code")
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    store.close()

    stored = b"".join(path.read_bytes() for path in tmp_path.glob(f"{OAUTH_FILE}*"))
    assert b"claude-code" in stored
    assert jti.encode() not in stored and token.encode() not in stored
    assert hashlib.sha256(jti.encode()).hexdigest().encode() in stored
