"""Small durable-file helpers shared by the log and the snapshot store (standard library only)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

# fdatasync flushes the data and the file size (all an append or a new file needs) without the
# inode timestamps; fall back to fsync where the platform lacks it.
sync_data = getattr(os, "fdatasync", os.fsync)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte: one ``os.write`` in practice, looping only on a short write."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


TEST_MARKER = "autogrow-test: paused"
_writes: dict[str, int] = {}  # writes so far by this process, per test-hook variable


def announce_test_pause(where: str) -> None:  # pragma: no mutate block
    """Tell a test on stderr that a test hook holds this process now: one ``os.write``, so the
    line stays whole when several processes (torchrun's ranks) share the stream."""
    sys.stderr.flush()
    os.write(2, f"{TEST_MARKER} {where} (pid {os.getpid()})\n".encode())


def write_with_test_pause(
        fd: int, data: bytes | memoryview, pause_env: str) -> None:  # pragma: no mutate block
    """``write_all``, with a test hook for crash tests.

    When the environment variable ``pause_env`` holds ``SECONDS`` (every write) or
    ``SECONDS@N`` (only this process's N-th write through that hook), write half, fsync, print
    a marker line on stderr, sleep, then write the rest: a test that waits for the marker can
    SIGKILL the writer in the middle of a write for certain, with no guess about timing.
    """
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
