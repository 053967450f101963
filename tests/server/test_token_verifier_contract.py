"""The `TokenVerifier` seam: one contract every implementation meets, run against each of them
(IMPLEMENTATIONS), then what is particular to the local verifier. In-process; no server needed."""

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from memory.identity import LOCAL_ISSUER, Identity
from memory.server.auth import InvalidToken, LocalTokenVerifier, Principal, TokenVerifier, issue_token
from memory.signing import KeyRing

pytestmark = pytest.mark.anyio

ISSUER = "https://memory.example"
AUDIENCE = "https://memory.example/mcp"


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
            "jti": "j1", "scope": "memories:read memories:write", "client_id": "cli"}
    return {k: v for k, v in (base | overrides).items() if v is not None}


@pytest.fixture()
def local_case(tmp_path) -> VerifierCase:
    keys = KeyRing(tmp_path)
    foreign = Ed25519PrivateKey.generate()

    def mint(**overrides: Any) -> str:
        return jwt.encode(_claims(**overrides), keys.private_key(), algorithm="EdDSA",
                          headers={"kid": keys.active_key_id})

    def mint_foreign() -> str:
        return jwt.encode(_claims(), foreign, algorithm="EdDSA", headers={"kid": keys.active_key_id})

    return VerifierCase(LocalTokenVerifier(keys, issuer=ISSUER, audience=AUDIENCE, leeway_seconds=0), mint,
                        mint_foreign, lambda sub: Identity(LOCAL_ISSUER, sub))


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


async def test_local_tokens_map_to_the_local_issuer_whatever_url_issued_them(tmp_path):
    keys = KeyRing(tmp_path)
    behind_proxy = LocalTokenVerifier(keys, issuer="https://new.example", audience="https://new.example/mcp")
    token = issue_token(keys, issuer="https://new.example", audience="https://new.example/mcp", subject="alice",
                        scopes=["memories:read"], ttl_seconds=60)
    assert (await behind_proxy.verify(token)).identity == Identity(LOCAL_ISSUER, "alice")


async def test_issue_token_makes_what_the_local_verifier_accepts_with_every_documented_claim(tmp_path):
    keys = KeyRing(tmp_path)
    token = issue_token(keys, issuer=ISSUER, audience=AUDIENCE, subject="alice",
                        scopes=["memories:read", "memories:write"], ttl_seconds=3600, client_id="cli")
    claims = jwt.decode(token, options={"verify_signature": False})
    assert set(claims) == {"exp", "iat", "nbf", "jti", "iss", "aud", "sub", "scope", "client_id"}
    assert jwt.get_unverified_header(token) == {"alg": "EdDSA", "kid": keys.active_key_id, "typ": "JWT"}
    principal = await LocalTokenVerifier(keys, issuer=ISSUER, audience=AUDIENCE).verify(token)
    assert principal.client_id == "cli" and principal.token_id == claims["jti"]


async def test_a_token_signed_before_a_key_rotation_still_verifies(tmp_path):
    keys = KeyRing(tmp_path)
    token = issue_token(keys, issuer=ISSUER, audience=AUDIENCE, subject="alice", scopes=[], ttl_seconds=60)
    keys.rotate()
    assert (await LocalTokenVerifier(keys, issuer=ISSUER, audience=AUDIENCE).verify(token)).identity.sub == "alice"


async def test_an_hmac_token_keyed_with_the_public_key_is_refused(tmp_path):
    keys = KeyRing(tmp_path)
    public = keys.private_key().public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    # Built by hand: PyJWT itself refuses to use a public key as an HMAC secret.
    signing_input = f"{_b64({'alg': 'HS256', 'kid': keys.active_key_id})}.{_b64(_claims())}"
    mac = hmac.new(public, signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    with pytest.raises(InvalidToken):
        await LocalTokenVerifier(keys, issuer=ISSUER, audience=AUDIENCE).verify(forged)


async def test_clock_skew_within_the_leeway_is_tolerated(tmp_path):
    keys = KeyRing(tmp_path)
    token = issue_token(keys, issuer=ISSUER, audience=AUDIENCE, subject="alice", scopes=[], ttl_seconds=60,
                        now=int(time.time()) - 70)
    assert await LocalTokenVerifier(keys, issuer=ISSUER, audience=AUDIENCE, leeway_seconds=30).verify(token)
    with pytest.raises(InvalidToken, match="expired"):
        await LocalTokenVerifier(keys, issuer=ISSUER, audience=AUDIENCE, leeway_seconds=0).verify(token)


async def test_a_key_rotated_by_another_process_is_picked_up_for_new_tokens(tmp_path):
    server_keys = KeyRing(tmp_path)
    verifier = LocalTokenVerifier(server_keys, issuer=ISSUER, audience=AUDIENCE, reload_keys=lambda: KeyRing(tmp_path))
    cli_keys = KeyRing(tmp_path)
    cli_keys.rotate()
    token = issue_token(cli_keys, issuer=ISSUER, audience=AUDIENCE, subject="alice", scopes=[], ttl_seconds=60)
    assert (await verifier.verify(token)).identity.sub == "alice"
