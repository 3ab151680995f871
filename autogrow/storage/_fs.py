"""Small durable-file helpers shared by the log and the snapshot store (standard library only)."""

from __future__ import annotations

import os
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


def write_with_test_pause(fd: int, data: bytes | memoryview, pause_env: str) -> None:
    """``write_all``; when the environment variable ``pause_env`` holds seconds, write half,
    fsync, sleep, then write the rest, so crash tests can SIGKILL a writer mid-write."""
    pause = os.environ.get(pause_env)
    if not pause:
        write_all(fd, data)
        return
    view = memoryview(data)
    half = len(view) // 2
    write_all(fd, view[:half])
    os.fsync(fd)
    time.sleep(float(pause))
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
