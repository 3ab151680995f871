"""The two storage reports of issue 21, in process: the disk-full message (item 7) and the
"locked" message with the processes that hold a lock file (item 3).

``tests/test_disk_full.py`` and ``tests/test_lock.py`` check them end to end with real full disks,
forked writers and SIGKILL; these tests pin every word, figure and corner case of the same
functions in milliseconds, so the mutation run (``[tool.mutmut]``) can use them. Nothing here
reads the machine's own ``/proc`` or mount table: ``log.py`` is handed a fake ``/proc`` tree under
``tmp_path`` (its ``os`` and ``Path`` redirected there, and a pid of the test's choosing for this
process), and ``_fs.py`` a fake mount table and free-space figure.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from autogrow.errors import UserError
from autogrow.storage import DiskFull, LogLocked, StorageError, _fs
from autogrow.storage import log as storage_log

READERS = "(`autogrow verify` and `autogrow history` read a run while it is written)"
NOSPC = "No space left on device"  # glibc's strerror(ENOSPC), as test_disk_full.py has it
ME = 4242  # this process's pid, as the fake /proc and os.getpid tell it


class _Proxy:
    """A module as a function under test sees it: the attributes given replaced, the rest real."""

    def __init__(self, real: object, **replaced: object) -> None:
        self._real = real
        self.__dict__.update(replaced)

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)


# -- the disk-full message: _fs._bytes, mount_point, disk_full_message, disk_full ----------------

@pytest.mark.parametrize("n, text", [
    (0, "0 B"),
    (1, "1 B"),
    (1023, "1023 B"),
    (1023.9, "1023 B"),                 # whole bytes, cut, not rounded
    (1024, "1.0 KB"),
    (1536, "1.5 KB"),
    (1024 * 1023, "1023.0 KB"),         # divided by 1024, not 1000 or 1025
    (1024 ** 2 - 1, "1024.0 KB"),       # under 1024 KB: KB, as rounded to one decimal
    (1024 ** 2, "1.0 MB"),
    (1024 ** 2 * 1023, "1023.0 MB"),
    (1024 ** 3, "1.0 GB"),
    (int(1024 ** 3 * 2.25), "2.2 GB"),  # one decimal (2.25 rounds half to even)
    (1024 ** 3 * 1023, "1023.0 GB"),
    (1024 ** 4, "1.0 TB"),
    (1024 ** 4 * 1023, "1023.0 TB"),
    (1024 ** 5 * 2, "2048.0 TB"),       # TB is the largest unit
])
def test_free_space_is_given_in_binary_units_with_one_decimal(n: float, text: str) -> None:
    assert _fs._bytes(n) == text


@pytest.fixture
def mounts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[Path]]:
    """A mount table of two: ``/`` and ``tmp_path/disk`` (created). Returns the disk and the list
    of paths ``os.path.ismount`` was asked about, in order."""
    disk = tmp_path / "disk"
    disk.mkdir()
    asked: list[Path] = []

    def ismount(path: str | os.PathLike[str]) -> bool:
        asked.append(Path(path))
        return Path(path) in {Path("/"), disk}

    monkeypatch.setattr(_fs, "os", _Proxy(os, path=_Proxy(os.path, ismount=ismount)))
    return disk, asked


def test_the_mount_point_is_the_nearest_mounted_directory_above_a_path(
        mounts: tuple[Path, list[Path]], tmp_path: Path) -> None:
    disk, asked = mounts
    (disk / "run" / "snapshots").mkdir(parents=True)
    assert _fs.mount_point(disk / "run" / "snapshots") == disk
    assert asked == [disk / "run" / "snapshots", disk / "run", disk]
    assert _fs.mount_point(str(disk / "run")) == disk
    assert _fs.mount_point(disk) == disk
    assert _fs.mount_point(tmp_path) == Path("/")  # outside the disk: the root file system
    assert _fs.mount_point("/") == Path("/")


def test_the_mount_point_of_a_path_not_made_yet_walks_up_to_what_exists(
        mounts: tuple[Path, list[Path]]) -> None:
    """A file about to be written (and directories not made yet) is on the file system of its
    nearest existing ancestor; only existing directories are asked whether they are mounts."""
    disk, asked = mounts
    (disk / "run").mkdir()
    assert _fs.mount_point(disk / "run" / "new" / "deeper" / ".tmp-1") == disk
    assert asked == [disk / "run", disk]


def test_the_mount_point_of_a_relative_path_is_from_the_working_directory(
        mounts: tuple[Path, list[Path]], monkeypatch: pytest.MonkeyPatch) -> None:
    disk, _ = mounts
    (disk / "run").mkdir()
    monkeypatch.chdir(disk / "run")
    assert _fs.mount_point("snapshots/.tmp-1") == disk
    assert _fs.mount_point(".") == disk
    assert isinstance(_fs.mount_point("."), Path)


@pytest.fixture
def free(mounts: tuple[Path, list[Path]], monkeypatch: pytest.MonkeyPatch) -> dict:
    """``shutil.disk_usage`` as ``_fs`` sees it: ``free["bytes"]`` free on the fake disk (an
    OSError when it is an exception); every path it was asked about is in ``free["asked"]``."""
    state: dict = {"bytes": 1024 ** 3 * 3 // 2, "asked": []}

    def disk_usage(path: str | os.PathLike[str]) -> SimpleNamespace:
        state["asked"].append(path)
        if isinstance(state["bytes"], BaseException):
            raise state["bytes"]
        return SimpleNamespace(total=10 * 1024 ** 4, used=0, free=state["bytes"])

    monkeypatch.setattr(_fs, "shutil", _Proxy(_fs.shutil, disk_usage=disk_usage))
    return state


def _resume_way(run: Path) -> str:
    return (f"free space there, or copy {run} to a disk with room, then `autogrow resume {run}` "
            "(or the copy) continues the run from its latest snapshot")


def test_the_disk_full_message_names_the_file_system_its_free_space_and_the_way_on(
        mounts: tuple[Path, list[Path]], free: dict) -> None:
    disk, _ = mounts
    run = disk / "run"
    run.mkdir()
    path = run / "snapshots" / ".tmp-abc"  # not made yet: the write that failed made it
    err = OSError(errno.ENOSPC, NOSPC)
    message, mount = _fs.disk_full_message(err, path, run)
    assert message == (f"the file system at {disk} is full ({NOSPC} writing {path}, 1.5 GB free): "
                       f"{_resume_way(run)}")
    assert mount == disk and isinstance(mount, Path)
    assert free["asked"] == [disk]
    message, _ = _fs.disk_full_message(err, path, run, "the partial line was rolled back")
    assert message == (f"the file system at {disk} is full ({NOSPC} writing {path}, 1.5 GB free): "
                       f"{_resume_way(run)}; the partial line was rolled back")
    free["bytes"] = 512
    message, _ = _fs.disk_full_message(err, str(path), str(run), detail="")
    assert message == (f"the file system at {disk} is full ({NOSPC} writing {path}, 512 B free): "
                       f"{_resume_way(run)}")


def test_a_used_up_quota_is_not_called_a_full_disk(mounts: tuple[Path, list[Path]],
                                                   free: dict) -> None:
    disk, _ = mounts
    run = disk / "run"
    err = OSError(errno.EDQUOT, "Disk quota exceeded")
    message, _ = _fs.disk_full_message(err, run / "events.jsonl", run)
    assert message == (f"the file system at {disk} has no quota left for you (Disk quota exceeded "
                       f"writing {run / 'events.jsonl'}, 1.5 GB free): {_resume_way(run)}")


def test_without_a_run_the_message_says_to_run_the_command_again(
        mounts: tuple[Path, list[Path]], free: dict) -> None:
    disk, _ = mounts
    path = disk / "export" / "model.safetensors"
    err = OSError(errno.ENOSPC, NOSPC)
    message, mount = _fs.disk_full_message(err, path, None)
    assert (message, mount) == (f"the file system at {disk} is full ({NOSPC} writing {path}, "
                                "1.5 GB free): free space there, then run the command again", disk)
    message, _ = _fs.disk_full_message(err, path, None, "nothing was written")
    assert message == (f"the file system at {disk} is full ({NOSPC} writing {path}, 1.5 GB free): "
                       "free space there, then run the command again; nothing was written")


def test_the_message_names_the_path_else_the_run_else_the_working_directory(
        mounts: tuple[Path, list[Path]], free: dict, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    disk, _ = mounts
    run = disk / "run"
    other = tmp_path / "elsewhere.bin"  # on the root file system, not on the disk
    err = OSError(errno.ENOSPC, NOSPC)
    # the path written names the file system, not the run's
    message, mount = _fs.disk_full_message(err, other, run)
    assert mount == Path("/")
    assert message == (f"the file system at / is full ({NOSPC} writing {other}, 1.5 GB free): "
                       f"{_resume_way(run)}")
    # no path: the run directory
    message, mount = _fs.disk_full_message(err, None, run)
    assert mount == disk
    assert message == (f"the file system at {disk} is full ({NOSPC} writing {run}, 1.5 GB free): "
                       f"{_resume_way(run)}")
    # neither: the working directory, as "."
    monkeypatch.chdir(disk)
    message, mount = _fs.disk_full_message(err, None, None)
    assert mount == disk
    assert message == (f"the file system at {disk} is full ({NOSPC} writing ., 1.5 GB free): "
                       "free space there, then run the command again")
    assert free["asked"] == [Path("/"), disk, disk]


def test_the_free_space_is_left_out_when_it_cannot_be_read(
        mounts: tuple[Path, list[Path]], free: dict) -> None:
    disk, _ = mounts
    run = disk / "run"
    free["bytes"] = PermissionError(errno.EACCES, "Permission denied")
    message, _ = _fs.disk_full_message(OSError(errno.ENOSPC, NOSPC), run / "x", run)
    assert message == (f"the file system at {disk} is full ({NOSPC} writing {run / 'x'}): "
                       f"{_resume_way(run)}")


def test_an_error_without_its_text_gets_the_system_s_text_for_its_number(
        mounts: tuple[Path, list[Path]], free: dict) -> None:
    disk, _ = mounts
    run = disk / "run"
    message, _ = _fs.disk_full_message(OSError(errno.ENOSPC, ""), run / "x", run)
    assert message == (f"the file system at {disk} is full ({os.strerror(errno.ENOSPC)} writing "
                       f"{run / 'x'}, 1.5 GB free): {_resume_way(run)}")
    # no number either (an OSError made by hand): strerror(0), not strerror(1)
    assert os.strerror(0) != os.strerror(1)
    message, _ = _fs.disk_full_message(OSError("disk full"), run / "x", run)
    assert message == (f"the file system at {disk} is full ({os.strerror(0)} writing "
                       f"{run / 'x'}, 1.5 GB free): {_resume_way(run)}")


def test_disk_full_is_the_error_to_raise_with_that_message(
        mounts: tuple[Path, list[Path]], free: dict) -> None:
    disk, _ = mounts
    run = disk / "run"
    path = run / "events.jsonl"
    err = OSError(errno.ENOSPC, NOSPC)
    error = _fs.disk_full(err, path, run)
    assert isinstance(error, DiskFull) and isinstance(error, StorageError)
    assert isinstance(error, UserError) and error.cli is None
    assert str(error) == (f"the file system at {disk} is full ({NOSPC} writing {path}, 1.5 GB "
                          f"free): {_resume_way(run)}")
    assert (error.path, error.mount, error.run_dir) == (str(path), str(disk), str(run))
    error = _fs.disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"), run / ".lock", run,
                          "the lock file was not made")
    assert str(error) == (f"the file system at {disk} has no quota left for you (Disk quota "
                          f"exceeded writing {run / '.lock'}, 1.5 GB free): {_resume_way(run)}; "
                          "the lock file was not made")
    assert (error.path, error.mount, error.run_dir) == (str(run / ".lock"), str(disk), str(run))


def test_disk_full_attributes_default_to_empty() -> None:
    error = DiskFull("the file system at / is full")
    assert str(error) == "the file system at / is full"
    assert (error.path, error.mount, error.run_dir) == ("", "", "")
    error = DiskFull("m", path="p", mount="/m", run_dir="r")
    assert (str(error), error.path, error.mount, error.run_dir) == ("m", "p", "/m", "r")


# -- the lock holders: log._alive, lock_holders, _locked_message --------------------------------

class FakeProc:
    """A ``/proc`` tree under ``root`` that ``log.py`` reads in place of the real one: its
    ``os.listdir``, ``os.stat`` and ``Path`` see ``/proc/...`` there, its ``os.getpid`` is
    ``ME``, and its ``os.kill`` records the call and raises ``kill_error`` (if set)."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.kills: list[tuple[int, int]] = []
        self.kill_error: BaseException | None = None
        fake_os = _Proxy(os, listdir=self._listdir, stat=self._stat, getpid=lambda: ME,
                         kill=self._kill)
        monkeypatch.setattr(storage_log, "os", fake_os)
        monkeypatch.setattr(storage_log, "Path", lambda path: Path(self._at(path)))

    def _at(self, path):
        if isinstance(path, str) and (path == "/proc" or path.startswith("/proc/")):
            return str(self.root) + path[len("/proc"):]
        return path

    def _listdir(self, path="."):
        return sorted(os.listdir(self._at(path)))  # in name order: the tests can say which first

    def _stat(self, path, **kwargs):
        return os.stat(self._at(path), **kwargs)

    def _kill(self, pid: int, sig: int, /) -> None:
        self.kills.append((pid, sig))
        if self.kill_error is not None:
            raise self.kill_error

    def process(self, pid: int, *, state: str = "S", comm: str | None = "python",
                fds: dict[str, Path] | None = None, stat: str | None = None) -> None:
        """Process ``pid``: its stat line (in ``state``), its ``comm`` (None: unreadable) and its
        open files ``fds`` (name -> file; None: the fd directory cannot be read)."""
        here = self.root / str(pid)
        here.mkdir(parents=True)
        (here / "stat").write_text(
            stat if stat is not None else f"{pid} ({comm or 'x'}) {state} 1 {pid} {pid} 0 -1 4194560\n")
        if comm is None:
            (here / "comm").mkdir()  # reading it fails with IsADirectoryError
        else:
            (here / "comm").write_text(f"{comm}\n")
        if fds is None:
            (here / "fd").write_text("")  # listing it fails with NotADirectoryError
            return
        (here / "fd").mkdir()
        for name, target in fds.items():
            (here / "fd" / name).symlink_to(target)


@pytest.fixture
def proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeProc:
    root = tmp_path / "proc"
    root.mkdir()
    (root / "self").mkdir()  # and other entries that are not pids
    (root / "sys").mkdir()
    (root / "cpuinfo").write_text("")
    return FakeProc(root, monkeypatch)


def test_a_process_runs_unless_it_is_a_zombie_or_dead(proc: FakeProc) -> None:
    proc.process(100, state="R")
    proc.process(101, state="S")
    proc.process(102, state="D")
    proc.process(103, state="Z")
    proc.process(104, state="X")
    proc.process(105, stat="105 (a) Z b) S 1 105 105 0 -1\n")  # a name with ") Z " in it
    proc.process(106, stat="106 (sleep) Z 0 106 106 0 -1\n")   # its last field is not a state
    assert [storage_log._alive(pid) for pid in (100, 101, 102)] == [True, True, True]
    assert [storage_log._alive(pid) for pid in (103, 104)] == [False, False]
    assert storage_log._alive(105) is True
    assert storage_log._alive(106) is False
    assert storage_log._alive(107) is False  # no such process
    assert proc.kills == []  # /proc answered: the kernel is not asked


@pytest.mark.parametrize("kill_error, alive", [
    (None, True),                                         # signal 0 delivered: it runs
    (PermissionError(errno.EPERM, "Operation not permitted"), True),  # another user's
    (ProcessLookupError(errno.ESRCH, "No such process"), False),
])
def test_where_proc_cannot_be_read_the_kernel_is_asked_with_signal_0(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kill_error: BaseException | None,
        alive: bool) -> None:
    not_proc = tmp_path / "proc"
    not_proc.write_text("")  # /proc/PID/stat: NotADirectoryError, not FileNotFoundError
    proc = FakeProc(not_proc, monkeypatch)
    proc.kill_error = kill_error
    assert storage_log._alive(321) is alive
    assert proc.kills == [(321, 0)]


@pytest.mark.parametrize("kill_error, alive", [
    (None, True), (ProcessLookupError(errno.ESRCH, "No such process"), False)])
def test_where_there_is_no_proc_at_all_the_kernel_is_asked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kill_error: BaseException | None,
        alive: bool) -> None:
    """macOS: no /proc, so every /proc/PID/stat is missing; that must not read as "dead" (every
    writer would look gone and be blamed on another machine)."""
    proc = FakeProc(tmp_path / "no-proc", monkeypatch)  # a root that does not exist
    proc.kill_error = kill_error
    assert storage_log._alive(321) is alive
    assert proc.kills == [(321, 0)]


def _lock_file(run: Path, content: bytes) -> int:
    run.mkdir(exist_ok=True)
    (run / storage_log.LOCK_NAME).write_bytes(content)
    return os.open(run / storage_log.LOCK_NAME, os.O_RDONLY)


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return tmp_path / "run"


def test_lock_holders_are_the_other_processes_with_the_lock_file_open(
        proc: FakeProc, run: Path, tmp_path: Path) -> None:
    fd = _lock_file(run, b"9\n")
    try:
        lock = run / storage_log.LOCK_NAME
        other = tmp_path / "other"
        other.write_text("")
        proc.process(7, fds={"0": other, "1": other})                # opens something else
        proc.process(8, fds=None)                                    # fds unreadable: skipped
        proc.process(9, comm="sleep", fds={"0": tmp_path / "gone", "1": other, "3": lock})
        proc.process(10, comm=None, fds={"4": lock})                 # name unreadable: "?"
        proc.process(ME, fds={"5": lock})                            # this process: left out
        proc.process(20000, comm="python3", fds={"3": lock, "7": lock})  # listed once
        assert storage_log.lock_holders(os.fstat(fd)) == [(9, "sleep"), (10, "?"),
                                                          (20000, "python3")]
        assert storage_log.lock_holders(os.stat(other)) == [(7, "python"), (9, "sleep")]
        assert storage_log.lock_holders(os.stat(tmp_path)) == []
    finally:
        os.close(fd)


def test_lock_holders_are_none_where_proc_cannot_be_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lock = tmp_path / ".lock"
    lock.write_text("")
    FakeProc(tmp_path / "no-proc", monkeypatch)
    assert storage_log.lock_holders(os.stat(lock)) == []


def _message(run: Path, content: bytes) -> str:
    fd = _lock_file(run, content)
    try:
        return storage_log._locked_message(run, fd)
    finally:
        os.close(fd)


def test_the_locked_message_names_this_process(proc: FakeProc, run: Path) -> None:
    assert _message(run, f"{ME}\n".encode()) == (
        f"this process (pid {ME}) already has {run} open for writing; close that EventLog "
        f"first {READERS}")


def test_the_locked_message_names_the_live_writer(proc: FakeProc, run: Path) -> None:
    proc.process(100, fds={"3": run / storage_log.LOCK_NAME})
    proc.process(200, fds={"3": run / storage_log.LOCK_NAME})  # e.g. its loader worker
    assert _message(run, b"100\n") == (f"another process (pid 100) is writing to {run}; wait for "
                                       f"it to finish or stop it {READERS}")


def test_a_running_writer_whose_files_this_machine_cannot_see_is_trusted(
        proc: FakeProc, run: Path) -> None:
    """Another user's writer: /proc shows it running but not its files (no holders at all)."""
    proc.process(100, fds=None)
    assert _message(run, b"100\n") == (f"another process (pid 100) is writing to {run}; wait for "
                                       f"it to finish or stop it {READERS}")


def test_a_reused_pid_is_not_the_writer_the_holder_is_named(proc: FakeProc, run: Path) -> None:
    proc.process(100, comm="bash", fds={})  # runs, but has not the lock file open
    proc.process(200, comm="sleep", fds={"3": run / storage_log.LOCK_NAME})
    assert _message(run, b"100\n") == (
        f"the process that was writing to {run} (pid 100) has ended, but pid 200 (sleep) still "
        f"holds its lock file {run / '.lock'} (started by it and outliving it); wait for it to "
        f"exit or stop it, then try again {READERS}")


def test_a_zombie_writer_has_ended_and_its_holders_are_named_in_the_plural(
        proc: FakeProc, run: Path) -> None:
    proc.process(100, state="Z", fds={})
    proc.process(200, comm="pt_data_worker", fds={"3": run / storage_log.LOCK_NAME})
    proc.process(300, comm=None, fds={"9": run / storage_log.LOCK_NAME})
    assert _message(run, b"100\n") == (
        f"the process that was writing to {run} (pid 100) has ended, but pid 200 "
        f"(pt_data_worker), pid 300 (?) still hold its lock file {run / '.lock'} (started by it "
        f"and outliving it); wait for them to exit or stop them, then try again {READERS}")


def test_a_dead_writer_held_by_no_process_here_is_on_another_machine(
        proc: FakeProc, run: Path) -> None:
    proc.process(200, fds={})
    assert _message(run, b"100\n") == (
        f"{run} is locked by a process this machine does not show (the last writer, pid 100, is "
        f"not running here: another machine that shares this file system may be writing to "
        f"it); wait for it to finish or stop it there {READERS}")


@pytest.mark.parametrize("content", [b"", b"\n", b"12ab\n", b"1\xff2\n", b"-5\n", b"\xe2\x91\xa0\n",
                                     b"0\n"])
def test_a_garbled_pid_line_names_no_pid(proc: FakeProc, run: Path, content: bytes) -> None:
    """An empty, non-numeric or non-ASCII lock file (or pid 0): the message names no pid, with or
    without holders."""
    assert _message(run, content) == (
        f"{run} is locked by a process this machine does not show (the last writer is not "
        f"running here: another machine that shares this file system may be writing to it); "
        f"wait for it to finish or stop it there {READERS}")
    proc.process(200, comm="sleep", fds={"3": run / storage_log.LOCK_NAME})
    assert _message(run, content) == (
        f"the process that was writing to {run} has ended, but pid 200 (sleep) still holds its "
        f"lock file {run / '.lock'} (started by it and outliving it); wait for it to exit or "
        f"stop it, then try again {READERS}")


def test_only_the_first_32_bytes_of_the_lock_file_are_the_pid(proc: FakeProc, run: Path) -> None:
    """The pid line is read from the start of the file, up to 32 bytes, blanks stripped."""
    proc.process(100, fds={"3": run / storage_log.LOCK_NAME})
    expected = (f"another process (pid 100) is writing to {run}; wait for it to finish or stop "
                f"it {READERS}")
    assert _message(run, b"  100 \n") == expected
    assert _message(run, b"100\n" + b" " * 28 + b"999\n") == expected


def test_the_locked_message_is_what_a_second_writer_gets(proc: FakeProc, run: Path) -> None:
    """Through ``_acquire_lock``: a lock held by another open file description of this process
    (a second writer's flock fails), the pid in the file a dead one."""
    fd = _lock_file(run, b"100\n")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(LogLocked) as err:
            storage_log._acquire_lock(run)
    finally:
        os.close(fd)
    assert str(err.value) == (
        f"{run} is locked by a process this machine does not show (the last writer, pid 100, is "
        f"not running here: another machine that shares this file system may be writing to "
        f"it); wait for it to finish or stop it there {READERS}")


# -- a full disk while the lock file is made or its pid written: log._acquire_lock ---------------

def _failing(errno_: int):
    def fail(*args, **kwargs):
        raise OSError(errno_, os.strerror(errno_))
    return fail


@pytest.mark.parametrize("call", ["open", "pwrite"])
def test_a_full_disk_while_taking_the_lock_is_the_disk_full_error_naming_the_lock_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str) -> None:
    """ENOSPC when the lock file is created, or when this process's pid is written into it: the
    run's DiskFull (its message, the lock file as the path, the run), and the lock let go."""
    monkeypatch.setattr(storage_log, "os", _Proxy(os, **{call: _failing(errno.ENOSPC)}))
    with pytest.raises(DiskFull) as caught:
        storage_log._acquire_lock(tmp_path)
    lock = tmp_path / ".lock"
    expected = _fs.disk_full(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), lock, tmp_path)
    assert str(caught.value) == str(expected)
    assert (caught.value.path, caught.value.run_dir) == (str(lock), str(tmp_path))
    assert isinstance(caught.value.__cause__, OSError)
    monkeypatch.setattr(storage_log, "os", os)
    fd = storage_log._acquire_lock(tmp_path)  # nothing holds the lock after the failure
    os.close(fd)


@pytest.mark.parametrize("call", ["open", "pwrite"])
def test_any_other_error_while_taking_the_lock_is_raised_as_it_is(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str) -> None:
    monkeypatch.setattr(storage_log, "os", _Proxy(os, **{call: _failing(errno.EACCES)}))
    with pytest.raises(PermissionError):
        storage_log._acquire_lock(tmp_path)
