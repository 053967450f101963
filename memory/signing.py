"""The server's Ed25519 signing keys: created on first start, rotated on demand, published as JWKS.

Files live in `<data_dir>/keys/`: one PKCS#8 PEM per key (mode 0600) and `keyring.json`, which
records every key with when it was created and retired, and which one signs now. Retired keys
stay in the published JWKS so that old events and exports keep verifying.
"""

import base64
import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = ["KeyRing"]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _write_private(path: Path, data: bytes) -> None:
    # O_EXCL + 0600 at creation: the key is never readable by others, not even for an instant.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


class KeyRing:
    def __init__(self, data_dir: str | Path):
        self._dir = Path(data_dir) / "keys"
        self._lock = threading.Lock()
        self._private: dict[str, Ed25519PrivateKey] = {}
        self._public: dict[str, Ed25519PublicKey] = {}
        self._records: list[dict] = []
        self._active = ""
        self._load_or_create()

    @property
    def active_key_id(self) -> str:
        return self._active

    def sign(self, data: bytes, kid: str | None = None) -> tuple[str, bytes]:
        """Sign with `kid` (the active key by default); name the key when it is already in the data."""
        kid = kid or self._active
        return kid, self._private[kid].sign(data)

    def private_key(self, kid: str | None = None) -> Ed25519PrivateKey:
        return self._private[kid or self._active]

    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        return dict(self._public)

    def jwks(self) -> dict:
        return {
            "keys": [
                {"kty": "OKP", "crv": "Ed25519", "x": _b64url(_raw_public(self._public[r["kid"]])),
                 "kid": r["kid"], "alg": "EdDSA", "use": "sig"}
                for r in self._records
            ]
        }

    def records(self) -> list[dict]:
        """Every key with when it was created and retired: the record of rotations."""
        return [dict(r) for r in self._records]

    def rotate(self) -> str:
        """Make a new key the signer; the old one is retired but stays published.

        Another process may have rotated since this keyring loaded: re-read the index first so
        that no key it created is dropped from it."""
        with self._lock, self._locked():
            self._load_index()
            now = _now()
            for record in self._records:
                if record["kid"] == self._active:
                    record["retired_at"] = now
            kid = self._create_key(now)
            self._active = kid
            self._save_index()
            return kid

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Across processes: a server and the CLI starting on a fresh data dir must agree on one key."""
        fd = os.open(self._dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def _load_or_create(self) -> None:
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self._locked():
            if (self._dir / "keyring.json").exists():
                self._load_index()
            else:
                self._active = self._create_key(_now())
                self._save_index()

    def _load_index(self) -> None:
        doc = json.loads((self._dir / "keyring.json").read_text())
        self._records = doc["keys"]
        self._active = doc["active"]
        for record in self._records:
            if record["kid"] in self._private:
                continue
            pem = (self._dir / f"{record['kid']}.pem").read_bytes()
            key = serialization.load_pem_private_key(pem, password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError(f"{record['kid']}.pem is not an Ed25519 key")
            self._private[record["kid"]] = key
            self._public[record["kid"]] = key.public_key()

    def _create_key(self, now: str) -> str:
        key = Ed25519PrivateKey.generate()
        kid = hashlib.sha256(_raw_public(key.public_key())).hexdigest()[:16]
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        _write_private(self._dir / f"{kid}.pem", pem)
        self._private[kid] = key
        self._public[kid] = key.public_key()
        self._records.append({"kid": kid, "created_at": now, "retired_at": None})
        return kid

    def _save_index(self) -> None:
        tmp = self._dir / "keyring.json.tmp"
        tmp.write_text(json.dumps({"active": self._active, "keys": self._records}, indent=2))
        os.chmod(tmp, 0o600)
        os.replace(tmp, self._dir / "keyring.json")
