"""The run's writer lock: only the writing process holds it (never a child it forks, such as a
data loader's worker), and when a second writer is refused, the message names who holds it — the
live writer, or, when the writer is gone, the processes that still hold the lock file — in the
command line's words (issue 21, item 3).

The whole-run case (a SIGKILLed ``grow`` on an image folder with loader workers, resumed at once)
is in ``tests/test_image_folder.py``; here the lock itself, with real processes and SIGKILL.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autogrow.storage import EventLog, LogLocked
from tests.conftest import autogrow_cli
from tests.test_log import env_with_repo

READERS = "(`autogrow verify` and `autogrow history` read a run while it is written)"

FORKING_WRITER = """
import os, sys
from autogrow.storage import EventLog, LogClosed
log = EventLog.open(sys.argv[1], create=True)
log.append("t", 1, {})
if os.fork() == 0:  # a child that outlives its parent, as a loader worker does for seconds
    try:
        log.append("t", 1, {})
        appended = "appended"
    except LogClosed:
        appended = "LogClosed"
    os.write(1, f"child {os.getpid()} {log.closed} {appended}\\n".encode())  # one write each:
    os.read(0, 1)  # until the test closes stdin
    os._exit(0)
os.write(1, f"parent {os.getpid()}\\n".encode())  # the two lines share the pipe
os.read(0, 1)
"""


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (an orphan that exited stays a zombie where pid 1 does not reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _wait_gone(pid: int) -> None:
    """Until ``pid`` has exited (a safety net of a minute; exiting takes milliseconds)."""
    for _ in range(1200):
        if not _alive(pid):
            return
        time.sleep(0.05)
    raise AssertionError(f"pid {pid} did not exit")


def _writer(script: str, run: Path) -> subprocess.Popen:
    """A Python process running ``script`` on ``run``: stdout to read, stdin to end it."""
    return subprocess.Popen([sys.executable, "-c", script, str(run)], env=env_with_repo(),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def test_a_forked_child_lets_go_of_the_lock_and_the_parent_keeps_it(tmp_path: Path) -> None:
    """flock belongs to the open file description that parent and child share: the child closing
    its copy (the at-fork hook) must leave the parent's lock in place, and a SIGKILL of the
    parent alone must free the run at once although the child lives on. Without the hook the
    child holds the lock until it exits (the second open below fails)."""
    run = tmp_path / "run"
    writer = _writer(FORKING_WRITER, run)
    child = None
    try:
        said = dict(writer.stdout.readline().split(" ", 1) for _ in range(2))
        pid, closed, appended = said["child"].split()
        child = int(pid)
        assert (closed, appended) == ("True", "LogClosed")  # the child cannot write the log
        assert said["parent"].strip() == str(writer.pid)
        with pytest.raises(LogLocked, match=f"another process \\(pid {writer.pid}\\)"):
            EventLog.open(run)  # the child's close released nothing of the parent's
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=60)
        assert _alive(child)
        with EventLog.open(run) as log:  # at once, beside the living child
            assert len(log) == 1
            log.append("t", 1, {})
        assert _alive(child)
    finally:
        writer.kill()
        writer.stdin.close()  # the child reads end-of-file and exits
        writer.wait(timeout=60)
        if child is not None:
            _wait_gone(child)


KEEPING_WRITER = """
import os, subprocess, sys
from autogrow.storage import EventLog
log = EventLog.open(sys.argv[1], create=True)
log.append("t", 1, {})
# a process handed the lock's descriptor on purpose (no child of autogrow's gets it)
keeper = subprocess.Popen(["sleep", "600"], pass_fds=[log._lock_fd])
print(keeper.pid, flush=True)
os.read(0, 1)
"""


def test_a_gone_writer_whose_lock_file_is_still_held_names_the_holders(tmp_path: Path) -> None:
    """The writer named in the lock file is dead, but a process it started holds the file: the
    message says the writer has ended and names that process, in the API and on the command
    line, and nothing in it is Python keyword jargon."""
    run = tmp_path / "run"
    writer = _writer(KEEPING_WRITER, run)
    keeper = None
    try:
        keeper = int(writer.stdout.readline())
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=60)
        expected = (f"the process that was writing to {run} (pid {writer.pid}) has ended, but pid "
                    f"{keeper} (sleep) still holds its lock file {run / '.lock'} (started by it "
                    f"and outliving it); wait for it to exit or stop it, then try again {READERS}")
        with pytest.raises(LogLocked) as err:
            EventLog.open(run)
        assert str(err.value) == expected
        cli = autogrow_cli("resume", str(run))
        assert (cli.returncode, cli.stderr) == (2, f"autogrow: error: {expected}\n")
    finally:
        writer.kill()
        writer.wait(timeout=60)
        if keeper is not None:
            os.kill(keeper, signal.SIGKILL)
            _wait_gone(keeper)
    with EventLog.open(run) as log:
        assert len(log) == 1


def test_a_lock_held_where_this_machine_cannot_see_says_so(tmp_path: Path) -> None:
    """A lock file naming a dead pid and held by no process this machine shows (a writer on
    another machine of a shared file system): the message says that, not a dead pid as the
    writer. (The holder here is this very process through a descriptor of its own, which the
    scan leaves out as it leaves out the opener.)"""
    with EventLog.open(tmp_path, create=True):
        pass
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert not _alive(dead.pid)
    fd = os.open(tmp_path / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{dead.pid}\n".encode(), 0)
        with pytest.raises(LogLocked) as err:
            EventLog.open(tmp_path)
    finally:
        os.close(fd)
    assert str(err.value) == (
        f"{tmp_path} is locked by a process this machine does not show (the last writer, pid "
        f"{dead.pid}, is not running here: another machine that shares this file system may be "
        f"writing to it); wait for it to finish or stop it there {READERS}")
    with EventLog.open(tmp_path):
        pass


def test_command_line_messages_speak_no_python_keywords(tmp_path: Path) -> None:
    """`autogrow resume nope` and a resume refused by the lock: one line each, exit 2, and no
    `create=True` or `readonly=True` in them (the meaning in the command line's words)."""
    missing = autogrow_cli("resume", "nope")
    assert missing.returncode == 2
    assert missing.stderr == ("autogrow: error: nope is not a run directory (no events.jsonl); "
                              "check the path (`autogrow grow --run-dir` starts a new run)\n")
    run = tmp_path / "run"
    with EventLog.open(run, create=True) as log:
        log.append("t", 1, {})
        locked = autogrow_cli("resume", str(run))
    assert locked.returncode == 2
    assert locked.stderr == (f"autogrow: error: another process (pid {os.getpid()}) is writing "
                             f"to {run}; wait for it to finish or stop it {READERS}\n")
    for proc in (missing, locked):
        assert "create=True" not in proc.stderr and "readonly=True" not in proc.stderr
