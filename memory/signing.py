"""The server's Ed25519 signing keys: created on first start, rotated on demand, published as JWKS.

Files live in `<data_dir>/keys/` (or the directory `--keys-dir` names, shared by replicas): one PKCS#8 PEM per key (mode 0600) and `keyring.json`, which
records every key with when it was created, retired and (if it leaked) marked compromised, and
which one signs now. Retired keys stay in the published JWKS so that old events and exports keep
verifying; what a retired key may still vouch for is the verifier's to decide (`KeyStatus`).

A `KeyRing` notices when another process (`memory rotate-key`) changed the index: signing looks
at the file each time (a stat), everything else at most every `_CHECK_EVERY` seconds, so a
running server stops signing with, and trusting, a rotated-out key without a restart.
"""

import base64
import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = ["KeyRing", "KeyStatus", "KEYS_DIR", "KEYRING_FILE", "keys_dir", "key_files"]

#: The folder of `<data_dir>` holding the keys, and the index naming them (which one is active).
KEYS_DIR = "keys"
KEYRING_FILE = "keyring.json"
_INDEX = KEYRING_FILE
#: How stale a verifier's view of the key ring may be (seconds).
_CHECK_EVERY = 1.0


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _epoch(stamp: str | None) -> float | None:
    return None if stamp is None else datetime.fromisoformat(stamp).timestamp()


def _write_private(path: Path, data: bytes) -> None:
    # O_EXCL + 0600 at creation: the key is never readable by others, not even for an instant.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


class KeyStatus(NamedTuple):
    """One key as a verifier needs it: the public half, and since when (epoch seconds) it was
    retired (it vouches only for what it signed before) or compromised (it vouches for nothing new)."""

    kid: str
    public_key: Ed25519PublicKey
    retired_at: float | None
    compromised_at: float | None


class _Index(NamedTuple):
    """keyring.json as last read, with its keys: replaced whole, never changed in place, so a
    reader on another thread sees either the old index or the new one."""

    active: str
    records: tuple[dict, ...]
    private: dict[str, Ed25519PrivateKey]
    public: dict[str, Ed25519PublicKey]
    stamp: tuple[int, int, int] | None


def keys_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / KEYS_DIR


def key_files(directory: Path) -> list[str]:
    """The files a copy of the key ring in `directory` needs, the index first: a key rotated in
    while they are copied then has its file copied, but is not yet listed."""
    return [KEYRING_FILE, *sorted(p.name for p in directory.glob("*.pem"))]


class KeyRing:
    def __init__(self, data_dir: str | Path, *, keys_dir: str | Path | None = None):
        """The keys in `keys_dir`, by default `<data_dir>/keys` (replicas share one, a mounted secret)."""
        self._dir = Path(keys_dir) if keys_dir else Path(data_dir) / KEYS_DIR
        self._lock = threading.Lock()
        self._index = _Index("", (), {}, {}, None)
        self._checked_at = time.monotonic()
        self._load_or_create()

    @property
    def active_key_id(self) -> str:
        return self.signing_key()[0]

    def signing_key(self) -> tuple[str, Ed25519PrivateKey]:
        """The active key and its id, read together: a rotation in between cannot mismatch them."""
        self.refresh()
        index = self._index
        return index.active, index.private[index.active]

    def sign(self, data: bytes, kid: str | None = None) -> tuple[str, bytes]:
        """Sign with `kid` (the active key by default); name the key when it is already in the data."""
        if kid is None:
            kid, key = self.signing_key()
        else:
            key = self._index.private[kid]
        return kid, key.sign(data)

    def private_key(self, kid: str | None = None) -> Ed25519PrivateKey:
        return self.signing_key()[1] if kid is None else self._current().private[kid]

    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        return dict(self._current().public)

    def key_status(self, kid: str) -> KeyStatus | None:
        """What key `kid` may vouch for; None for a key this server never had."""
        index = self._current()
        for record in index.records:
            if record["kid"] == kid:
                return KeyStatus(kid, index.public[kid], _epoch(record.get("retired_at")),
                                 _epoch(record.get("compromised_at")))
        return None

    def jwks(self) -> dict:
        index = self._current()
        return {
            "keys": [
                {"kty": "OKP", "crv": "Ed25519", "x": _b64url(_raw_public(index.public[r["kid"]])),
                 "kid": r["kid"], "alg": "EdDSA", "use": "sig"}
                for r in index.records
            ]
        }

    def records(self) -> list[dict]:
        """Every key with when it was created, retired and compromised: the record of rotations."""
        return [{"compromised_at": None} | r for r in self._current().records]

    def rotate(self, *, compromised: bool = False) -> str:
        """Make a new key the signer; the old one is retired but stays published.

        `compromised`: the old key leaked, so from now on it vouches for nothing new (tokens it
        signed are refused whenever they were issued; events it signs later are flagged).
        Another process may have rotated since this keyring loaded: re-read the index first so
        that no key it created is dropped from it."""
        with self._lock, self._locked():
            index = self._read_index(self._index)
            now = _now()
            records = [dict(r) for r in index.records]
            for record in records:
                if record["kid"] == index.active:
                    record["retired_at"] = now
                    if compromised:
                        record["compromised_at"] = now
            kid, key = self._create_key()
            records.append({"kid": kid, "created_at": now, "retired_at": None, "compromised_at": None})
            self._index = self._save_index(_Index(kid, tuple(records), {**index.private, kid: key},
                                                  {**index.public, kid: key.public_key()}, None))
            return kid

    def refresh(self) -> bool:
        """Re-read the index if another process changed it since; whether it had."""
        self._checked_at = time.monotonic()
        try:
            stamp = _stamp(os.stat(self._dir / _INDEX))
        except FileNotFoundError:
            return False
        if stamp == self._index.stamp:
            return False
        with self._lock:
            self._index = self._read_index(self._index)
        return True

    def _current(self) -> _Index:
        if time.monotonic() - self._checked_at >= _CHECK_EVERY:
            self.refresh()
        return self._index

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
            if (self._dir / _INDEX).exists():
                self._index = self._read_index(self._index)
            else:
                kid, key = self._create_key()
                record = {"kid": kid, "created_at": _now(), "retired_at": None, "compromised_at": None}
                self._index = self._save_index(_Index(kid, (record,), {kid: key}, {kid: key.public_key()}, None))

    def _read_index(self, known: _Index) -> _Index:
        # One open file for the bytes and the stamp: the index is replaced whole (os.replace),
        # so what is read is one complete version and the stamp is that version's.
        with (self._dir / _INDEX).open("rb") as f:
            stamp = _stamp(os.fstat(f.fileno()))
            doc = json.loads(f.read())
        private, public = {}, {}
        for record in doc["keys"]:
            kid = record["kid"]
            if kid in known.private:
                private[kid], public[kid] = known.private[kid], known.public[kid]
                continue
            key = serialization.load_pem_private_key((self._dir / f"{kid}.pem").read_bytes(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError(f"{kid}.pem is not an Ed25519 key")
            private[kid], public[kid] = key, key.public_key()
        return _Index(doc["active"], tuple(doc["keys"]), private, public, stamp)

    def _create_key(self) -> tuple[str, Ed25519PrivateKey]:
        key = Ed25519PrivateKey.generate()
        kid = hashlib.sha256(_raw_public(key.public_key())).hexdigest()[:16]
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        _write_private(self._dir / f"{kid}.pem", pem)
        return kid, key

    def _save_index(self, index: _Index) -> _Index:
        tmp = self._dir / f"{_INDEX}.tmp"
        tmp.write_text(json.dumps({"active": index.active, "keys": list(index.records)}, indent=2))
        os.chmod(tmp, 0o600)
        os.replace(tmp, self._dir / _INDEX)
        return index._replace(stamp=_stamp(os.stat(self._dir / _INDEX)))


def _stamp(stat: os.stat_result) -> tuple[int, int, int]:
    # The inode changes with every os.replace: a rewrite within the mtime's granularity still shows.
    return stat.st_ino, stat.st_mtime_ns, stat.st_size
