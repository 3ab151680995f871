"""Storage errors. Each message is one line that says what went wrong and what to do about it."""

from __future__ import annotations

from autogrow.errors import UserError


class StorageError(UserError):
    """Base of every error raised by ``autogrow.storage``."""


class LogMissing(StorageError):
    """The directory holds no event log (it is not a run directory)."""


class LogCorrupted(StorageError):
    """A complete record of the log fails to parse or to verify; the log was not modified.

    ``intact`` holds the verified records before the damage: their hash chain from genesis
    holds, so a reader may still trust them (``verify`` reports them; ``fork`` can start from
    a snapshot among them)."""

    def __init__(self, message: str, intact: tuple = ()) -> None:
        super().__init__(message)
        self.intact = intact


class LogLocked(StorageError):
    """Another writer holds the run directory's lock."""


class DiskFull(StorageError):
    """A write found the file system full (ENOSPC) or the disk quota used up (EDQUOT).

    A fault of the machine, not of the run: what was durable before it stays valid, and the run
    continues with ``autogrow resume`` once there is room. ``path`` is the file being written,
    ``mount`` the file system's mount point, ``run_dir`` the run."""

    def __init__(self, message: str, *, path: str = "", mount: str = "", run_dir: str = "") -> None:
        super().__init__(message)
        self.path = path
        self.mount = mount
        self.run_dir = run_dir


class LogClosed(StorageError):
    """The log was closed (or is read-only) and cannot be appended to."""


class InvalidPayload(StorageError, ValueError):
    """An append was refused before anything was written: the record is not plain, finite JSON."""


class SnapshotMissing(StorageError):
    """No snapshot with that digest exists in the store."""


class SnapshotCorrupted(StorageError):
    """A snapshot file's bytes do not match its digest, or do not parse as safetensors."""


class InvalidDigest(StorageError, ValueError):
    """A string that is not a lowercase sha256 hex digest was used as a snapshot name."""
