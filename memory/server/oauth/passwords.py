"""Password hashes for local accounts: scrypt, salted, self-describing, compared in constant time."""

import base64
import hashlib
import hmac
import secrets

__all__ = ["hash_password", "password_matches", "MIN_PASSWORD_LENGTH", "MAX_PASSWORD_LENGTH"]

MIN_PASSWORD_LENGTH = 8
#: Long enough for any passphrase, short enough that hashing one costs what a login should.
MAX_PASSWORD_LENGTH = 1024

# n=2**15, r=8: ~50 ms and 32 MiB per guess; slow for an attacker, fine for a login form.
_N, _R, _P = 2**15, 8, 1
_MAXMEM = 64 * 1024 * 1024


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hash_password(password: str) -> str:
    if not password:
        raise ValueError("the password must not be empty")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, maxmem=_MAXMEM)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def password_matches(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                                maxmem=_MAXMEM, dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)
