"""Small durable-file helpers shared by the log and the snapshot store (standard library only)."""

from __future__ import annotations

import errno
import os
import shutil
import sys
import time
from pathlib import Path

from .errors import DiskFull

# fdatasync flushes the data and the file size (all an append or a new file needs) without the
# inode timestamps; fall back to fsync where the platform lacks it.
sync_data = getattr(os, "fdatasync", os.fsync)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte: one ``os.write`` in practice, looping only on a short write."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


# Errors that mean "no room": a fault of the machine, reported as DiskFull (its own exit code).
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` is an OSError that says the file system (or the quota) is full."""
    return isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS


def mount_point(path: str | os.PathLike[str]) -> Path:
    """The mount point of the file system that holds ``path`` (or would hold it)."""
    here = Path(os.path.abspath(path))
    while not here.exists() and here != here.parent:
        here = here.parent
    while not os.path.ismount(here) and here != here.parent:
        here = here.parent
    return here


def _bytes(n: float) -> str:
    if n < 1024:
        return f"{int(n)} B"
    for unit in ("KB", "MB", "GB", "TB"):
        n /= 1024
        if n < 1024:
            break
    return f"{n:.1f} {unit}"


def disk_full_message(err: OSError, path: str | os.PathLike[str] | None,
                      run_dir: str | os.PathLike[str] | None, detail: str = "") -> tuple[str, Path]:
    """One line that names the full file system and the way on, and that file system's mount
    point. ``path`` is what was being written; ``run_dir`` the run (None: not known);
    ``detail`` what became of the failed write, said last."""
    where = Path(path if path is not None else run_dir if run_dir is not None else ".")
    mount = mount_point(where)
    try:
        free = f", {_bytes(shutil.disk_usage(mount).free)} free"
    except OSError:
        free = ""
    what = "has no quota left for you" if err.errno == errno.EDQUOT else "is full"
    reason = err.strerror or os.strerror(err.errno or 0)
    head = f"the file system at {mount} {what} ({reason} writing {where}{free})"
    tail = f"; {detail}" if detail else ""
    if run_dir is None:
        return f"{head}: free space there, then run the command again{tail}", mount
    return (f"{head}: free space there, or copy {run_dir} to a disk with room, then "
            f"`autogrow resume {run_dir}` (or the copy) continues the run from its latest "
            f"snapshot{tail}", mount)


def disk_full(err: OSError, path: str | os.PathLike[str], run_dir: str | os.PathLike[str],
              detail: str = "") -> DiskFull:
    """The DiskFull error for ``err`` (raise it ``from err``)."""
    message, mount = disk_full_message(err, path, run_dir, detail)
    return DiskFull(message, path=str(path), mount=str(mount), run_dir=str(run_dir))


TEST_MARKER = "autogrow-test: paused"
_writes: dict[str, int] = {}  # writes so far by this process, per test-hook variable
_disk_full = False  # a `full` test hook fired in this process: every later write fails too


def announce_test_pause(where: str) -> None:  # pragma: no mutate block
    """Tell a test on stderr that a test hook holds this process now: one ``os.write``, so the
    line stays whole when several processes (torchrun's ranks) share the stream."""
    sys.stderr.flush()
    os.write(2, f"{TEST_MARKER} {where} (pid {os.getpid()})\n".encode())


def write_with_test_pause(
        fd: int, data: bytes | memoryview, pause_env: str) -> None:  # pragma: no mutate block
    """``write_all``, with a test hook for crash and disk-full tests.

    When the environment variable ``pause_env`` holds ``SECONDS`` (every write) or
    ``SECONDS@N`` (only this process's N-th write through that hook), write half, fsync, print
    a marker line on stderr, sleep, then write the rest: a test that waits for the marker can
    SIGKILL the writer in the middle of a write for certain, with no guess about timing.

    ``full`` (every write) or ``full@N`` (from the N-th write on) plays a disk that fills up:
    that write stores half its bytes and fails with ENOSPC, and so does every later write of
    this process through any hook (a full disk does not empty itself).
    """
    global _disk_full
    if _disk_full:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    pause = os.environ.get(pause_env)
    if not pause:
        write_all(fd, data)
        return
    seconds, _, nth = pause.partition("@")
    count = _writes[pause_env] = _writes.get(pause_env, 0) + 1
    if nth and int(nth) != count:
        write_all(fd, data)
        return
    view = memoryview(data)
    half = len(view) // 2
    write_all(fd, view[:half])
    if seconds == "full":
        _disk_full = True
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    os.fsync(fd)
    announce_test_pause(f"mid-write ({pause_env}, write {count})")
    time.sleep(float(seconds))
    write_all(fd, view[half:])


def fsync_dir(path: Path) -> None:
    """Make a create, rename or unlink inside ``path`` durable (a no-op where dirs cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
