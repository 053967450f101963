"""Tokens of an external identity provider (Auth0, Keycloak, ...): verified against its published
keys, and the caller is (that issuer, the token's subject), a log of its own.

The key set is fetched and cached (5 minutes; an unknown kid refetches at most every 30 s) by
`jwt.PyJWKClient`, always in a worker thread: a slow or
unreachable provider delays one request, never the event loop.
"""

from typing import Any

import anyio.to_thread
import jwt

from memory.identity import Identity
from memory.server.auth import InvalidToken, Principal, TokenVerifier, checked_header, decode_jwt

__all__ = ["ExternalTokenVerifier", "IssuerRoutingVerifier"]

# Asymmetric only: with a symmetric algorithm the "public" key would be the signing secret.
_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
_MAX_TOKEN_BYTES = 16384
_MAX_SUBJECT = 255


def _scopes(claims: dict[str, Any]) -> frozenset[str]:
    # Auth0 and Keycloak put a space-separated `scope`; Azure and Okta a list in `scp`.
    scope, scp = claims.get("scope"), claims.get("scp")
    if isinstance(scope, str):
        return frozenset(scope.split())
    if isinstance(scp, list) and all(isinstance(s, str) for s in scp):
        return frozenset(scp)
    if isinstance(scp, str):
        return frozenset(scp.split())
    return frozenset()


class ExternalTokenVerifier:
    def __init__(self, *, issuer: str, audience: str, jwks_url: str, leeway_seconds: int = 30,
                 jwks_client: jwt.PyJWKClient | None = None):
        self.issuer = issuer
        self.audience = audience
        self._leeway = leeway_seconds
        self._jwks = jwks_client or jwt.PyJWKClient(jwks_url, lifespan=300, timeout=5)

    async def verify(self, token: str) -> Principal:
        header = checked_header(token, max_bytes=_MAX_TOKEN_BYTES, algorithms=_ALGORITHMS)
        if not isinstance(header.get("kid"), str):
            raise InvalidToken("the token names no key (kid)")
        try:
            key = await anyio.to_thread.run_sync(self._jwks.get_signing_key, header["kid"])
        except jwt.PyJWKClientConnectionError:
            raise InvalidToken("the identity provider's keys could not be fetched") from None
        except jwt.PyJWKClientError:
            raise InvalidToken("the token was not signed by a key of the identity provider") from None
        claims = self._decode(token, key.key, header["alg"])
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject.strip() or len(subject) > _MAX_SUBJECT:
            raise InvalidToken("the token's subject is empty or too long")
        client_id = claims.get("client_id") or claims.get("azp")
        jti = claims.get("jti")
        return Principal(identity=Identity(self.issuer, subject),
                         client_id=client_id if isinstance(client_id, str) and client_id else "unknown",
                         scopes=_scopes(claims), token_id=jti if isinstance(jti, str) else None,
                         expires_at=int(claims["exp"]))

    def _decode(self, token: str, key: Any, algorithm: str) -> dict[str, Any]:
        # The algorithm must also fit the key's type: PyJWT refuses an RSA key under ES256.
        return decode_jwt(token, key, algorithm, audience=self.audience, issuer=self.issuer,
                          leeway=self._leeway, required=("exp", "sub", "aud", "iss"))


class IssuerRoutingVerifier:
    """Sends each token to the verifier of the issuer it claims; that verifier then checks everything.

    Lets `memory token` keep working for scripts while people sign in at the external provider.
    """

    def __init__(self, verifiers: dict[str, TokenVerifier]):
        self._verifiers = verifiers

    async def verify(self, token: str) -> Principal:
        try:
            issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
        except jwt.PyJWTError:
            raise InvalidToken("the token is not a JWT") from None
        verifier = self._verifiers.get(issuer) if isinstance(issuer, str) else None
        if verifier is None:
            raise InvalidToken("the token was not issued by an issuer this server trusts")
        return await verifier.verify(token)
