"""Durable storage of a run: the hash-chained event log and the safetensors snapshot store.

Storage knows records and tensors, not models or event classes. ``SnapshotStore`` and
``Snapshot`` are imported lazily so ``import autogrow.storage`` (and the log) never loads torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    DiskFull,
    InvalidDigest,
    InvalidPayload,
    LogClosed,
    LogCorrupted,
    LogLocked,
    LogMissing,
    SnapshotCorrupted,
    SnapshotMissing,
    StorageError,
)
from ._fs import TEST_MARKER, announce_test_pause, disk_full_message, fsync_dir, is_disk_full
from .log import GENESIS_HASH, LOCK_NAME, LOG_NAME, EventLog, LogRecord, TornTail, canonical_json

if TYPE_CHECKING:
    from .snapshots import Snapshot, SnapshotStore, snapshot_bytes

__all__ = [
    "DiskFull",
    "GENESIS_HASH",
    "EventLog",
    "InvalidDigest",
    "InvalidPayload",
    "LOCK_NAME",
    "LOG_NAME",
    "LogClosed",
    "LogCorrupted",
    "LogLocked",
    "LogMissing",
    "LogRecord",
    "Snapshot",
    "SnapshotCorrupted",
    "SnapshotMissing",
    "SnapshotStore",
    "StorageError",
    "TEST_MARKER",
    "TornTail",
    "announce_test_pause",
    "canonical_json",
    "disk_full_message",
    "fsync_dir",
    "is_disk_full",
    "snapshot_bytes",
]

_LAZY = {"Snapshot", "SnapshotStore", "snapshot_bytes"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import snapshots

        return getattr(snapshots, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
