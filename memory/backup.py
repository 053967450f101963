"""Backing up a data directory while a server writes to it, and restoring one.

Each SQLite file (every user's log, and the shared databases the caller names: the OAuth store's,
which this module does not know) is copied with SQLite's online backup API,
which yields a consistent snapshot of that file even mid-write. The signing keys are copied as
files. Projections are left out: they are rebuilt from the logs when a user is next opened.
A restore checks every restored chain with the same code `memory verify` runs.
"""

import os
import shutil
import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from memory.audit import verify_user
from memory.logs import SqliteLogDirectory, sqlite_logs as list_logs
from memory.log import LOG_FILE, USERS_DIR
from memory.signing import KEYRING_FILE, KEYS_DIR, KeyRing, key_files, keys_dir
from memory.verify_export import ChainReport

__all__ = ["BackupManifest", "BackupError", "backup", "restore", "backup_files", "read_manifest", "MANIFEST"]

MANIFEST = "backup.json"


class BackupError(Exception):
    """The backup or restore cannot proceed; the message says why."""


class BackupManifest(msgspec.Struct, kw_only=True):
    format: str = "memory-backup"
    version: int = 1
    created_at: str
    #: Relative paths of the SQLite files in the backup.
    databases: list[str]
    keys: list[str]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def backup_files(data_dir: str | Path, shared: Sequence[str] = ()) -> list[Path]:
    """The SQLite files a backup of `data_dir` copies, relative to it: every log, and each of the
    `shared` databases at its top level that exists."""
    data_dir = Path(data_dir)
    files = [folder.relative_to(data_dir) / LOG_FILE for folder, _ in list_logs(data_dir)]
    return files + [Path(name) for name in shared if (data_dir / name).exists()]


def _private_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))


def _copy_database(source: Path, target: Path) -> None:
    _private_file(target)
    src = sqlite3.connect(source, timeout=30)
    dst = sqlite3.connect(target)
    try:
        # One step: the copy is a single snapshot, however many pages a writer changes meanwhile.
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def _copy_keys(source: Path, target: Path) -> list[str]:
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    names = key_files(source)
    for name in names:
        _private_file(target / name)
        shutil.copyfile(source / name, target / name)
    return names


def _empty(directory: Path) -> bool:
    return not directory.exists() or not any(directory.iterdir())


def backup(data_dir: str | Path, output: str | Path, progress: Callable[[int], None] | None = None, *,
           shared: Sequence[str] = ()) -> BackupManifest:
    """Copy every log, the `shared` databases (file names at the top of `data_dir`) and the keys."""
    data_dir, output = Path(data_dir), Path(output)
    if not (keys_dir(data_dir) / KEYRING_FILE).exists():
        raise BackupError(f"{data_dir} is not a data directory (no {KEYS_DIR}/{KEYRING_FILE})")
    if not _empty(output):
        raise BackupError(f"{output} is not empty: back up into a new directory")
    output.mkdir(parents=True, exist_ok=True, mode=0o700)
    databases = []
    for relative in backup_files(data_dir, shared):
        _copy_database(data_dir / relative, output / relative)
        databases.append(relative.as_posix())
        if progress:
            progress(1)
    keys = _copy_keys(keys_dir(data_dir), keys_dir(output))
    manifest = BackupManifest(created_at=_now(), databases=databases, keys=keys)
    # Written last: a backup without its manifest was interrupted.
    (output / MANIFEST).write_bytes(msgspec.json.format(msgspec.json.encode(manifest)))
    return manifest


def read_manifest(backup_dir: Path) -> BackupManifest:
    try:
        return msgspec.json.decode((backup_dir / MANIFEST).read_bytes(), type=BackupManifest)
    except FileNotFoundError:
        raise BackupError(f"{backup_dir} has no {MANIFEST}: not a backup, or an interrupted one") from None
    except msgspec.DecodeError as exc:
        raise BackupError(f"{backup_dir / MANIFEST} is damaged: {exc}") from None


def _clear(data_dir: Path, shared: Sequence[str]) -> None:
    for name in (USERS_DIR, KEYS_DIR):
        shutil.rmtree(data_dir / name, ignore_errors=True)
    for name in shared:
        for sidecar in ("", "-wal", "-shm"):
            (data_dir / f"{name}{sidecar}").unlink(missing_ok=True)


def restore(backup_dir: str | Path, data_dir: str | Path, *, force: bool = False,
            progress: Callable[[int], None] | None = None, shared: Sequence[str] = ()) -> list[tuple[str, ChainReport]]:
    """Copy the backup into `data_dir`, then verify every restored log: (user, report) for each.
    `force` first removes the logs, the keys and the `shared` databases `data_dir` has."""
    backup_dir, data_dir = Path(backup_dir), Path(data_dir)
    manifest = read_manifest(backup_dir)
    if not _empty(data_dir):
        if not force:
            raise BackupError(f"{data_dir} is not empty: restore into a new directory, or pass --force to "
                              "replace its logs, keys and OAuth store")
        _clear(data_dir, shared)
    data_dir.mkdir(parents=True, exist_ok=True)
    for relative in manifest.databases:
        _copy_database(backup_dir / relative, data_dir / relative)
        if progress:
            progress(1)
    _copy_keys(keys_dir(backup_dir), keys_dir(data_dir))
    keys = KeyRing(data_dir)
    logs = SqliteLogDirectory(data_dir, keys)
    for _, owner in list_logs(data_dir):
        # Each restored log gets its head anchored anew: the backup is what the operator trusts.
        log = logs.open(owner)
        try:
            log.anchor_head()
        finally:
            log.close()
    # No projections were restored, so this checks the chains and signatures only.
    return [(str(owner), verify_user(data_dir, owner, keys, embedder=None))  # type: ignore[arg-type]
            for _, owner in list_logs(data_dir)]
