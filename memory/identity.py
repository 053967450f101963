"""Who a log belongs to and who acts on it.

A person is (issuer, subject). Their log's file name is a hash of that pair, never the raw
strings, so no identity can name a path outside its own file.
"""

import hashlib

import msgspec

__all__ = ["Identity", "Actor", "LOCAL_ISSUER", "user_key"]

#: The issuer of accounts of the built-in authorization server and of `memory token`. It is a
#: constant rather than the server's URL so that moving behind a proxy does not change who owns a log.
LOCAL_ISSUER = "local"


class Identity(msgspec.Struct, frozen=True):
    iss: str
    sub: str

    @property
    def key(self) -> str:
        return user_key(self.iss, self.sub)

    def __str__(self) -> str:
        return self.sub if self.iss == LOCAL_ISSUER else f"{self.iss}#{self.sub}"

    @classmethod
    def parse(cls, text: str) -> "Identity":
        """`alice` is a local account; `https://idp.example/#auth0|123` names another issuer."""
        issuer, sep, subject = text.rpartition("#")
        return cls(issuer, subject) if sep and issuer else cls(LOCAL_ISSUER, text)


class Actor(msgspec.Struct, frozen=True):
    """The principal behind an event: the token's subject and the OAuth client it came through."""

    sub: str
    client_id: str | None = None


def user_key(issuer: str, subject: str) -> str:
    return hashlib.sha256(f"{issuer}\x00{subject}".encode()).hexdigest()[:32]
