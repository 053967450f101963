"""Who is calling: bearer tokens, the verifier seam, and the middleware that enforces them.

A request's principal is (issuer, subject) plus the client it came through and what it may do.
Token verification is a seam (`TokenVerifier`): tokens this server signs itself
(`LocalTokenVerifier`: `memory token` and the built-in authorization server), and those of an
external identity provider (`memory.server.oauth.external`). Everything past
the verifier sees only a `Principal`.

This server signs two kinds of token. An access token of the built-in authorization server names
its grant (`sid`) and lives minutes. A personal token (`memory token --name NAME`, for Claude
Code, Codex or a script) names no grant; it is only good while it is registered, unrevoked, in
oauth.sqlite (`PersonalTokenRegistry`), so each one can be listed and revoked. Both kinds have a
lifetime cap the verifier enforces on `exp - iat`, whatever the token itself asks for.

This module imports no web framework: the middleware is plain ASGI, so `memory token` stays fast.
"""

import json
import re
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qsl

import jwt
import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from memory.identity import LOCAL_ISSUER, Identity
from memory.signing import KeyRing, KeyStatus

__all__ = [
    "READ_SCOPE",
    "WRITE_SCOPE",
    "ALL_SCOPES",
    "Principal",
    "InvalidToken",
    "InsufficientScope",
    "TokenVerifier",
    "LocalTokenVerifier",
    "issue_token",
    "issue_personal_token",
    "PersonalTokenRegistry",
    "valid_token_name",
    "DEFAULT_TOKEN_NAME",
    "BearerAuthMiddleware",
    "PRINCIPAL_SCOPE_KEY",
    "insufficient_scope_challenge",
    "decode_jwt",
    "checked_header",
]

READ_SCOPE = "memories:read"
WRITE_SCOPE = "memories:write"
ALL_SCOPES = (READ_SCOPE, WRITE_SCOPE)

#: Where the middleware leaves the verified principal in the ASGI scope (besides scope["user"],
#: which Litestar reads as `request.user`).
PRINCIPAL_SCOPE_KEY = "memory.principal"

_ALGORITHM = "EdDSA"
_MAX_SUBJECT = 255
_MAX_TOKEN_BYTES = 8192
#: A personal token made without `--name`.
DEFAULT_TOKEN_NAME = "cli"
_TOKEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# The person's own web pages act as client "web": no token may pass itself off as them.
_RESERVED_TOKEN_NAMES = frozenset({"web", "unknown"})
# `last_used` of a busy token is written at most this often (seconds), not on every request.
_MARK_USED_EVERY = 60.0
_MAX_MARKS = 10_000
_SELF_KEYING_HEADERS = ("jku", "jwk", "x5u", "x5c")


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """A verified caller: whose log it acts on, through which client, allowed to do what."""

    identity: Identity
    client_id: str
    scopes: frozenset[str]
    token_id: str | None = None
    expires_at: int | None = None

    def may(self, scope: str) -> bool:
        return scope in self.scopes


class InvalidToken(Exception):
    """The token proves nothing: malformed, unsigned, expired, or meant for someone else.

    The message is safe to show the caller (it goes into `error_description`).
    """


class InsufficientScope(Exception):
    """A valid token that does not grant what the call needs."""

    def __init__(self, needed: str, message: str | None = None):
        self.needed = needed
        super().__init__(message or f"this token lacks the {needed!r} scope")


@runtime_checkable
class TokenVerifier(Protocol):
    async def verify(self, token: str) -> Principal:
        """The principal a bearer token stands for; raises `InvalidToken` for anything less."""
        ...


def _scopes(claim: Any) -> frozenset[str]:
    if claim is None:
        return frozenset()
    if isinstance(claim, str):
        return frozenset(claim.split())
    if isinstance(claim, list) and all(isinstance(s, str) for s in claim):
        return frozenset(claim)
    raise InvalidToken("the token's scope claim is neither a string nor a list of strings")


def valid_token_name(name: str) -> bool:
    return bool(_TOKEN_NAME.fullmatch(name)) and name not in _RESERVED_TOKEN_NAMES


def _duration_text(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@runtime_checkable
class PersonalTokenRegistry(Protocol):
    """Where personal tokens are recorded (oauth.sqlite): by their id's hash, never the token."""

    def register_personal_token(self, token_id: str, *, user: str, name: str, scopes: list[str],
                                created_at: float, expires_at: float) -> None: ...

    def personal_token_name(self, token_id: str, user: str) -> str | None:
        """The name of `user`'s registered, unrevoked token `token_id`; None for any other."""
        ...

    def mark_personal_token_used(self, token_id: str, when: float) -> None: ...


class LocalTokenVerifier:
    """Tokens this server signed with one of its Ed25519 keys (`memory token`, its own OAuth server).

    Their subjects are local accounts: the identity is (LOCAL_ISSUER, sub) whatever URL the
    server had when it issued them, so moving behind a proxy never changes who owns a log. The
    `iss` and `aud` claims must still name this server as it is reached now.

    A retired key vouches only for tokens issued before it was retired; a key marked
    compromised (`memory rotate-key --compromised`) for none. The key ring notices a rotation by
    another process by itself (`KeyRing`), so a running server needs no restart for either.
    """

    def __init__(self, keys: KeyRing, *, issuer: str, audience: str, personal_tokens: PersonalTokenRegistry,
                 personal_token_max_ttl: int, access_token_max_ttl: int, leeway_seconds: int = 30,
                 grant_revoked: Callable[[str], bool] | None = None, aliases: Sequence[str] = ()):
        self._keys = keys
        # Other spellings of the issuer (`ServerSettings.base_urls`): a token says one of them, and
        # its audience that same server's resource under any of them.
        self._issuers = [issuer, *(a for a in aliases if a != issuer)]
        prefixed = audience.startswith(issuer)
        self._audiences = [audience, *(audience.replace(issuer, a, 1) for a in self._issuers[1:] if prefixed)]
        # Tokens of the built-in authorization server name their grant (`sid`); a grant revoked
        # (a replayed code or refresh token, /revoke, a removed account) takes its tokens with it.
        self._grant_revoked = grant_revoked
        self._personal_tokens = personal_tokens
        self._max_ttl = {"personal": personal_token_max_ttl, "access": access_token_max_ttl}
        self.issuer = issuer
        self.audience = audience
        self._leeway = leeway_seconds
        self._marked_used: dict[str, float] = {}

    def _key(self, kid: Any) -> KeyStatus:
        status = self._keys.key_status(kid) if isinstance(kid, str) else None
        # `memory rotate-key` may have run an instant ago: a kid not seen yet is worth a look at the file.
        if status is None and isinstance(kid, str) and self._keys.refresh():
            status = self._keys.key_status(kid)
        if status is None:
            raise InvalidToken("the token was not signed by a key of this server")
        return status

    async def verify(self, token: str) -> Principal:
        header = checked_header(token, max_bytes=_MAX_TOKEN_BYTES, algorithms=(_ALGORITHM,))
        key = self._key(header.get("kid"))
        claims = self._decode(token, key.public_key)
        if key.compromised_at is not None:
            raise InvalidToken("the key that signed this token was marked compromised: get a new token")
        issued = float(claims["iat"])
        if key.retired_at is not None and issued > key.retired_at:
            raise InvalidToken("the token was issued after the key that signed it was retired")
        if not isinstance(claims["aud"], str):
            # PyJWT accepts a list that contains us; a token for several resources is refused.
            raise InvalidToken(f"the token is not meant for {self.audience} alone")
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject.strip() or len(subject) > _MAX_SUBJECT:
            raise InvalidToken("the token's subject is empty or too long")
        grant = claims.get("sid")
        kind = "personal" if grant is None else "access"
        if float(claims["exp"]) - issued > self._max_ttl[kind]:
            raise InvalidToken(f"the token lives longer than this server allows {kind} tokens "
                               f"({_duration_text(self._max_ttl[kind])})")
        if grant is not None and self._grant_revoked is not None and \
                (not isinstance(grant, str) or self._grant_revoked(grant)):
            raise InvalidToken("the grant behind this token was revoked")
        jti = claims.get("jti")
        client_id = claims.get("client_id")
        if grant is None:
            client_id = self._personal_token_name(jti, subject)
        return Principal(
            identity=Identity(LOCAL_ISSUER, subject),
            client_id=client_id if isinstance(client_id, str) and client_id else "unknown",
            scopes=_scopes(claims.get("scope")),
            token_id=jti if isinstance(jti, str) else None,
            expires_at=int(claims["exp"]),
        )

    def _personal_token_name(self, jti: Any, subject: str) -> str:
        """The name a personal token was registered under; refused when it was revoked or never
        registered (made by a version before registration, or by hand with a stolen key file)."""
        name = self._personal_tokens.personal_token_name(jti, subject) if isinstance(jti, str) else None
        if name is None:
            raise InvalidToken("this personal token was revoked or is unknown to this server: "
                               "make a new one with `memory token`")
        now = time.time()
        if now - self._marked_used.get(jti, 0.0) >= _MARK_USED_EVERY:
            if len(self._marked_used) >= _MAX_MARKS:
                self._marked_used.clear()
            self._marked_used[jti] = now
            self._personal_tokens.mark_personal_token_used(jti, now)
        return name

    def _decode(self, token: str, key: Ed25519PublicKey) -> dict[str, Any]:
        return decode_jwt(token, key, _ALGORITHM, audience=self._audiences, issuer=self._issuers,
                          leeway=self._leeway, required=("exp", "iat", "sub", "aud", "iss"))


def checked_header(token: str, *, max_bytes: int, algorithms: tuple[str, ...]) -> dict[str, Any]:
    """The unverified header, refused early when it could never lead to a trusted key."""
    if len(token) > max_bytes:
        raise InvalidToken("the token is too long")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise InvalidToken("the token is not a JWT") from None
    if header.get("alg") not in algorithms:
        raise InvalidToken(f"tokens must be signed with {' or '.join(algorithms)}")
    # A token that says where to find its own key vouches for itself: never trusted here.
    if any(name in header for name in _SELF_KEYING_HEADERS):
        raise InvalidToken("tokens must not carry their own key (jku, jwk, x5u, x5c)")
    return header


def decode_jwt(token: str, key: Any, algorithm: str, *, audience: str | Sequence[str], issuer: str | Sequence[str],
               leeway: int, required: tuple[str, ...]) -> dict[str, Any]:
    """PyJWT's checks with one algorithm, its errors turned into messages a person can act on. Given
    several audiences or issuers, any one will do; messages name the first."""
    try:
        return jwt.decode(token, key=key, algorithms=[algorithm], audience=audience, issuer=issuer,
                          leeway=leeway, options={"require": list(required)})
    except jwt.ExpiredSignatureError:
        raise InvalidToken("the token has expired") from None
    except jwt.ImmatureSignatureError:
        raise InvalidToken("the token is not valid yet") from None
    except jwt.InvalidAudienceError:
        raise InvalidToken(f"the token is not meant for {_first(audience)}") from None
    except jwt.InvalidIssuerError:
        raise InvalidToken(f"the token was not issued by {_first(issuer)}") from None
    except jwt.MissingRequiredClaimError as exc:
        raise InvalidToken(f"the token has no {exc.claim!r} claim") from None
    except jwt.InvalidSignatureError:
        raise InvalidToken("the token's signature does not verify") from None
    except jwt.PyJWTError:
        raise InvalidToken("the token is malformed") from None


def _first(names: str | Sequence[str]) -> str:
    return names if isinstance(names, str) else names[0]


def issue_token(keys: KeyRing, *, issuer: str, audience: str, subject: str, scopes: Iterable[str],
                ttl_seconds: int, client_id: str = DEFAULT_TOKEN_NAME, now: int | None = None,
                grant_id: str | None = None, token_id: str | None = None) -> str:
    """A signed token, with the key ring's active key. `LocalTokenVerifier` accepts it as an access
    token when it names a grant; without one only once registered (`issue_personal_token`)."""
    if not subject or not subject.strip():
        raise ValueError("subject must not be empty")
    if ttl_seconds <= 0:
        raise ValueError("ttl must be positive")
    issued = int(time.time()) if now is None else now
    claims = {
        "iss": issuer, "sub": subject, "aud": audience, "iat": issued, "nbf": issued,
        "exp": issued + ttl_seconds, "jti": token_id or uuid.uuid4().hex,
        "scope": " ".join(dict.fromkeys(scopes)), "client_id": client_id,
    }
    if grant_id is not None:
        claims["sid"] = grant_id
    kid, key = keys.signing_key()
    return jwt.encode(claims, key, algorithm=_ALGORITHM, headers={"kid": kid})


def issue_personal_token(keys: KeyRing, registry: PersonalTokenRegistry, *, issuer: str, audience: str,
                         user: str, name: str, scopes: Iterable[str], ttl_seconds: int,
                         max_ttl_seconds: int) -> str:
    """A personal token named `name`, registered so that it can be listed and revoked.

    Raises ValueError, with a message for the person asking, for a bad name or a lifetime over the cap."""
    if not valid_token_name(name):
        raise ValueError(f"{name!r} is not a token name: use letters, digits, '.', '_' or '-' (at most 64), "
                         f"not {' or '.join(sorted(_RESERVED_TOKEN_NAMES))}")
    if ttl_seconds > max_ttl_seconds:
        raise ValueError(f"a personal token may live at most {_duration_text(max_ttl_seconds)} "
                         f"(personal_token_max_ttl_seconds); asked for {_duration_text(ttl_seconds)}")
    scopes = list(dict.fromkeys(scopes))
    issued, token_id = int(time.time()), uuid.uuid4().hex
    # Registered before it exists: a token is never out in the world without a row to revoke.
    registry.register_personal_token(token_id, user=user, name=name, scopes=scopes, created_at=issued,
                                     expires_at=issued + ttl_seconds)
    return issue_token(keys, issuer=issuer, audience=audience, subject=user, scopes=scopes,
                       ttl_seconds=ttl_seconds, client_id=name, now=issued, token_id=token_id)


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', "'")


def insufficient_scope_challenge(needed: str, resource_metadata_url: str) -> str:
    return (f'Bearer error="insufficient_scope", scope="{needed}", '
            f'resource_metadata="{resource_metadata_url}"')


class BearerAuthMiddleware:
    """Refuses a request without a valid bearer token (401 + RFC 9728 challenge); otherwise puts
    the `Principal` in the scope for the handler. Attach it to the routes that need a caller."""

    def __init__(self, app: Any, *, verifier: TokenVerifier, resource_metadata_url: str,
                 metadata_url_for: Callable[[str | None], str] | None = None):
        self.app = app
        self.verifier = verifier
        self.resource_metadata_url = resource_metadata_url
        # Given the request's Host header, the metadata URL under the same spelling of this server
        # (a client checks that the metadata's resource is the URL it called).
        self._metadata_url_for = metadata_url_for

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _token_in_query(scope):
            # RFC 6750 §2.3 / OAuth 2.1: URLs end up in logs and histories; tokens go in the header only.
            await self._refuse(scope, send, "invalid_request", "access tokens are not accepted in the query string")
            return
        token = _bearer_token(scope)
        if token is None:
            await self._refuse(scope, send, None,
                               "send an Authorization: Bearer <token> header (see resource_metadata)")
            return
        try:
            principal = await self.verifier.verify(token)
        except InvalidToken as exc:
            await self._refuse(scope, send, "invalid_token", str(exc))
            return
        scope["user"] = principal
        scope["auth"] = principal
        scope[PRINCIPAL_SCOPE_KEY] = principal
        await self.app(scope, receive, send)

    async def _refuse(self, request: dict, send: Any, error: str | None, description: str) -> None:
        metadata = self.resource_metadata_url
        if self._metadata_url_for is not None:
            metadata = self._metadata_url_for(_header(request, b"host"))
        # RFC 6750 §3.1: no error code when the request carried no credentials at all.
        scope = " ".join(ALL_SCOPES)
        challenge = f'Bearer resource_metadata="{metadata}", scope="{scope}"'
        if error:
            challenge = (f'Bearer error="{error}", error_description="{_quoted(description)}", '
                         f'resource_metadata="{metadata}", scope="{scope}"')
        body = json.dumps({"error": error or "unauthorized", "error_description": description}).encode()
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", challenge.encode()), (b"cache-control", b"no-store"),
        ]})
        await send({"type": "http.response.body", "body": body})


def _token_in_query(scope: dict) -> bool:
    query = scope.get("query_string", b"").decode("latin-1")
    return "access_token" in query and any(k == "access_token" for k, _ in parse_qsl(query))


def _header(scope: dict, wanted: bytes) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == wanted:
            return value.decode("latin-1")
    return None


def _bearer_token(scope: dict) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else None
    return None
