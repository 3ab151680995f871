"""Append-only, hash-chained event log ``RUN/events.jsonl``.

One record per line, in canonical JSON (sorted keys, no spaces, UTF-8, no NaN/Infinity)::

    {"hash":H,"payload":{...},"prev":P,"schema":1,"seq":1,"ts":"2025-01-01T00:00:00.000000Z","type":"..."}

``hash = sha256(utf8(prev + canonical JSON of the record without "hash")).hexdigest()`` and ``prev``
is the previous record's hash (``"0" * 64`` for seq 1), so any edit, removal, insertion or
reordering of a complete record breaks the chain and is reported on open. A line must also be
byte-identical to its canonical form, so even a change that parses to the same values is caught.

Crash safety: a record is one ``os.write`` of the whole line on an ``O_APPEND`` descriptor, then
fdatasync. A crash mid-write can only leave an incomplete *last* line (no trailing newline); a
writable open moves those bytes to ``events.jsonl.torn-<UTC time>`` and truncates the log back to
the last complete record. It is never accepted as a record.

One writer per run directory: a writable open holds ``flock(RUN/.lock)`` until ``close``; read-only
opens take no lock and modify nothing. Only the writing process holds the lock: a child it forks
(a data loader's worker processes) closes its copy of the descriptor at once (see
``_after_fork_in_child``), so a writer killed by SIGKILL frees the run at once, not when the last
of its children has noticed and exited.

A full file system (ENOSPC, EDQUOT) is raised as ``DiskFull``, one line naming it and the way on.

Test hook: when the environment variable ``AUTOGROW_TEST_APPEND_PAUSE`` holds ``SECONDS`` (or
``SECONDS@N``: only the process's N-th append), ``append`` writes the first half of the line, syncs
it, says so on stderr, sleeps that long and then writes the rest, so crash tests can SIGKILL a
writer mid-append (see ``_fs.write_with_test_pause``). It is read on every append.

This module imports only the standard library and attrs (no torch), so replay tools stay light.
"""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import hashlib
import json
import math
import os
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from ._fs import disk_full, fsync_dir, is_disk_full, sync_data, write_all, write_with_test_pause
from .errors import InvalidPayload, LogClosed, LogCorrupted, LogLocked, LogMissing, StorageError

LOG_NAME = "events.jsonl"
LOCK_NAME = ".lock"
GENESIS_HASH = "0" * 64
PAUSE_ENV = "AUTOGROW_TEST_APPEND_PAUSE"

# One encoder/decoder instance each: json.dumps/json.loads with keyword arguments build a new one
# per call, which dominates the cost of verifying a large log.
_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)
_encode = _ENCODER.encode
_encode_str = json.encoder.encode_basestring  # what _encode uses for a str (ensure_ascii=False)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in the log")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_decode = _DECODER.decode

_KEYS = frozenset({"hash", "payload", "prev", "schema", "seq", "ts", "type"})
_HEX = frozenset("0123456789abcdef")


def canonical_json(value: Any) -> str:
    """The log's canonical JSON text of ``value`` (sorted keys, compact, UTF-8, finite floats)."""
    return _encode(value)


@attrs.frozen
class LogRecord:
    """One verified record. ``payload`` returns a fresh dict on each access, so no caller can
    change what the log holds; ``payload_json`` is its canonical JSON text."""

    seq: int
    type: str
    schema: int
    payload_json: str
    ts: str
    prev: str
    hash: str

    @property
    def payload(self) -> dict[str, Any]:
        return _decode(self.payload_json)


@attrs.frozen
class TornTail:
    """An incomplete last line found on open. ``side_file`` is where a writable open moved it;
    ``None`` for a read-only open, which leaves it in place."""

    offset: int
    length: int
    side_file: Path | None


def _body(seq: int, type_: str, schema: int, payload_json: str, ts: str, prev: str) -> str:
    """Canonical JSON of the record without ``hash``, built from parts so the payload is encoded
    once (keys in sorted order; equal to ``canonical_json`` of the same dict, which a test checks)."""
    return (
        f'{{"payload":{payload_json},"prev":"{prev}","schema":{schema},"seq":{seq},'
        f'"ts":{_encode_str(ts)},"type":{_encode_str(type_)}}}'
    )


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _check_json(value: Any, where: str) -> None:
    """Refuse anything that would not read back identically: non-str keys (json would coerce
    them), NaN/Infinity, and types json does not know. Tuples are stored as lists."""
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidPayload(f"{where} is {value!r}; the log stores only finite numbers")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidPayload(
                    f"{where} has a {type(key).__name__} key {key!r}; JSON object keys must be str"
                )
            _check_json(item, f"{where}[{key!r}]")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_json(item, f"{where}[{i}]")
        return
    raise InvalidPayload(
        f"{where} is a {type(value).__name__}, which is not JSON; convert it to "
        "str/int/float/bool/None/list/dict before logging"
    )


def _payload_json(type_: str, payload: dict[str, Any]) -> str:
    """Canonical JSON of a payload that is known to read back equal to itself. The fast path is
    encode + decode + compare in C; only a failure walks the payload to say what is wrong."""
    try:
        text = _encode(payload)
        if _decode(text) == payload:
            return text
    except (TypeError, ValueError):
        text = None
    except RecursionError:
        raise InvalidPayload(f"payload of {type_!r} is too deeply nested") from None
    try:
        _check_json(payload, "payload")
    except InvalidPayload as err:
        raise InvalidPayload(f"event {type_!r}: {err}") from None
    except RecursionError:
        raise InvalidPayload(f"payload of {type_!r} is too deeply nested or circular") from None
    if text is None:  # the walk found nothing, yet json refused it
        try:
            text = _encode(payload)
        except (TypeError, ValueError) as err:
            raise InvalidPayload(f"payload of {type_!r} is not JSON: {err}") from None
    return text  # differs from the payload only by tuples read back as lists


def _verify_line(
    path: Path, text_bytes: bytes, lineno: int, offset: int, seq: int, prev: str
) -> LogRecord:
    """Parse and verify one complete line (without its newline) as record ``seq``."""

    def bad(what: str) -> LogCorrupted:
        way_on = (f"restore {LOG_NAME} from a backup (no intact record precedes it)" if seq == 1
                  else f"restore {LOG_NAME} from a backup, or fork the run from a snapshot logged "
                       f"before line {lineno} (`autogrow verify` names the latest)")
        return LogCorrupted(
            f"{path}: line {lineno} (byte offset {offset}, expected seq {seq}) is corrupted: "
            f"{what}; the log was not modified - do not append to it; {way_on}"
        )

    try:
        text = text_bytes.decode("utf-8")
    except UnicodeDecodeError as err:
        raise bad(f"invalid UTF-8 at byte offset {offset + err.start}") from None
    try:
        rec = _decode(text)
    except (ValueError, RecursionError) as err:
        raise bad(f"not valid JSON ({err})") from None
    if not isinstance(rec, dict) or rec.keys() != _KEYS:
        found = sorted(rec) if isinstance(rec, dict) else type(rec).__name__
        raise bad(f"expected an object with keys {sorted(_KEYS)}, found {found}")
    r_seq, r_type, r_schema = rec["seq"], rec["type"], rec["schema"]
    payload, ts, r_prev, r_hash = rec["payload"], rec["ts"], rec["prev"], rec["hash"]
    if not isinstance(r_seq, int) or isinstance(r_seq, bool) or r_seq != seq:
        raise bad(f"seq is {r_seq!r}, expected {seq} (records missing, duplicated or reordered)")
    if not isinstance(r_schema, int) or isinstance(r_schema, bool) or r_schema < 1:
        raise bad(f"schema is {r_schema!r}, expected an int >= 1")
    if not isinstance(r_type, str) or not r_type:
        raise bad(f"type is {r_type!r}, expected a non-empty string")
    if not isinstance(ts, str):
        raise bad(f"ts is {ts!r}, expected a string")
    if not isinstance(payload, dict):
        raise bad(f"payload is a {type(payload).__name__}, expected an object")
    for name, value in (("hash", r_hash), ("prev", r_prev)):
        if not isinstance(value, str) or len(value) != 64 or not _HEX.issuperset(value):
            raise bad(f"{name} is {value!r}, expected 64 lowercase hex digits")
    if r_prev != prev:
        raise bad(
            f"prev is {r_prev[:12]}... but the previous record's hash is {prev[:12]}... "
            "(the chain is broken)"
        )
    try:
        payload_json = _encode(payload)
        body = _body(seq, r_type, r_schema, payload_json, ts, prev)
        body_bytes = (prev + body).encode("utf-8")
    except (ValueError, UnicodeEncodeError) as err:  # e.g. a digit flip that overflows to inf
        raise bad(f"payload cannot be stored as written ({err})") from None
    computed = hashlib.sha256(body_bytes).hexdigest()
    if computed != r_hash:
        raise bad(
            f"hash mismatch (stored {r_hash[:12]}..., computed {computed[:12]}...): "
            "the record changed after it was written"
        )
    if text != f'{{"hash":"{r_hash}",{body[1:]}':
        raise bad("the line is not in canonical form (it was edited after it was written)")
    return LogRecord(seq, r_type, r_schema, payload_json, ts, prev, r_hash)


def _scan(path: Path) -> tuple[list[LogRecord], int, int]:
    """Verify every complete line. Returns (records, end of the last complete line, file size);
    bytes between the two are a torn tail."""
    records: list[LogRecord] = []
    prev = GENESIS_HASH
    offset = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if raw[-1:] != b"\n":  # only the last line can lack its newline
                return records, offset, offset + len(raw)
            try:
                record = _verify_line(path, raw[:-1], lineno, offset, len(records) + 1, prev)
            except LogCorrupted as err:
                raise LogCorrupted(str(err), tuple(records)) from None
            records.append(record)
            prev = record.hash
            offset += len(raw)
    return records, offset, offset


def _set_aside(path: Path, fd: int, end: int, size: int) -> TornTail:
    """Copy the torn bytes to a new side file (durably), then truncate the log back to ``end``."""
    with open(path, "rb") as f:
        f.seek(end)
        data = f.read(size - end)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    base = path.with_name(f"{path.name}.torn-{stamp}")
    side, n = base, 0
    while True:
        try:
            side_fd = os.open(side, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            break
        except FileExistsError:
            n += 1
            side = base.with_name(f"{base.name}-{n}")
    try:
        write_all(side_fd, data)
        os.fsync(side_fd)
    finally:
        os.close(side_fd)
    fsync_dir(path.parent)
    os.ftruncate(fd, end)
    os.fsync(fd)
    return TornTail(end, len(data), side)


# Said by every lock message: the Python equivalent is EventLog.open(RUN, readonly=True).
READERS = "`autogrow verify` and `autogrow history` read a run while it is written"


def _acquire_lock(run_dir: Path) -> int:
    """Take the run's writer lock (released by the kernel if the process dies) and write this
    process's pid into the lock file for the message a second writer gets."""
    path = run_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        if is_disk_full(err):
            raise disk_full(err, path, run_dir) from err
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        try:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StorageError(f"cannot lock {path}: {err}") from None
            raise LogLocked(_locked_message(run_dir, fd)) from None
        finally:
            os.close(fd)
    except BaseException:
        os.close(fd)
        raise
    try:  # overwrite, then cut: a lock file that has its block needs no new space
        pid = f"{os.getpid()}\n".encode("ascii")
        os.pwrite(fd, pid, 0)
        os.ftruncate(fd, len(pid))
    except OSError as err:
        _release_lock(fd)
        if is_disk_full(err):
            raise disk_full(err, path, run_dir) from err
        raise
    return fd


def _locked_message(run_dir: Path, fd: int) -> str:
    """Who holds the lock on ``fd``'s file, and what to do: the live writer by pid, or, when the
    writer named in the file is gone, the processes that still hold the file open."""
    holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    pid = int(holder) if holder.isdigit() else None
    if pid == os.getpid():
        return (f"this process (pid {pid}) already has {run_dir} open for writing; close that "
                f"EventLog first ({READERS})")
    holders = lock_holders(os.fstat(fd))
    # the pid in the file is the writer's if it runs and holds the file (a pid can be reused;
    # where /proc shows no holder at all, e.g. other users' processes, trust a running pid)
    if pid is not None and _alive(pid) and (not holders or pid in dict(holders)):
        return (f"another process (pid {pid}) is writing to {run_dir}; wait for it to finish or "
                f"stop it ({READERS})")
    writer = f"the process that was writing to {run_dir}{f' (pid {pid})' if pid else ''}"
    if holders:
        named = ", ".join(f"pid {p} ({name})" for p, name in holders)
        return (f"{writer} has ended, but {named} still hold{'s' if len(holders) == 1 else ''} "
                f"its lock file {run_dir / LOCK_NAME} (started by it and outliving it); wait for "
                f"{'it' if len(holders) == 1 else 'them'} to exit or stop "
                f"{'it' if len(holders) == 1 else 'them'}, then try again ({READERS})")
    return (f"{run_dir} is locked by a process this machine does not show (the last writer"
            f"{f', pid {pid},' if pid else ''} is not running here: another machine that shares "
            f"this file system may be writing to it); wait for it to finish or stop it there "
            f"({READERS})")


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie has closed its files: not alive)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return False  # /proc is there and has no such process
        return _kernel_knows(pid)  # no /proc (macOS): ask the kernel
    except OSError:  # /proc unreadable: ask the kernel
        return _kernel_knows(pid)
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _kernel_knows(pid: int) -> bool:
    """Whether ``kill(pid, 0)`` finds the process (a zombie counts: nothing tells it apart)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_holders(lock: os.stat_result) -> list[tuple[int, str]]:
    """``(pid, name)`` of the other processes that have the file ``lock`` open (its device and
    inode), found in ``/proc/*/fd``; empty where /proc cannot be read."""
    found: list[tuple[int, str]] = []
    me = os.getpid()
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return found
    for pid in sorted(pids):
        if pid == me:
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                st = os.stat(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (lock.st_dev, lock.st_ino):
                try:
                    name = Path(f"/proc/{pid}/comm").read_text().strip()
                except OSError:
                    name = "?"
                found.append((pid, name))
                break
    return found


def _release_lock(fd: int) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# Writable logs of this process, so a forked child can let go of their descriptors.
_WRITERS: weakref.WeakSet[EventLog] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """Runs in every child this process forks (``os.register_at_fork``): the child closes its
    copies of the writers' descriptors, so it never holds the run's lock.

    flock belongs to the open file description, which parent and child share: closing the
    child's descriptor only drops the child's reference (the parent keeps the lock), while
    ``LOCK_UN`` would release it for both. Without this, a data loader's workers (forked) keep a
    SIGKILLed writer's run locked until they notice their parent is gone."""
    for event_log in list(_WRITERS):
        event_log._let_go_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class EventLog:
    """The run's event log. Use :meth:`open`; close it (or use ``with``) to release the lock."""

    def __init__(
        self,
        *,
        run_dir: Path,
        records: list[LogRecord],
        size: int,
        torn: TornTail | None,
        fd: int | None,
        lock_fd: int | None,
        fsync: bool,
    ) -> None:
        self.run_dir = run_dir
        self.path = run_dir / LOG_NAME
        self.torn = torn
        self.readonly = fd is None
        self._records = records
        self._records_view: tuple[LogRecord, ...] | None = None
        self._size = size
        self._fd = fd
        self._lock_fd = lock_fd
        self._fsync = fsync
        self._closed = False
        if lock_fd is not None:
            _WRITERS.add(self)

    @classmethod
    def open(
        cls,
        run_dir: str | os.PathLike[str],
        *,
        create: bool = False,
        readonly: bool = False,
        fsync: bool = True,
    ) -> EventLog:
        """Open and verify the whole log. ``create`` makes the directory and an empty log if
        missing; ``readonly`` takes no lock and changes nothing (a torn tail is only reported).
        Raises LogMissing (not a run), LogLocked (another writer), LogCorrupted (bad record)."""
        run_dir = Path(run_dir)
        path = run_dir / LOG_NAME
        if create and readonly:
            raise ValueError("create=True and readonly=True contradict each other; pick one")
        if not create and not path.is_file():
            raise LogMissing(
                f"{run_dir} is not a run directory (no {LOG_NAME}); check the path "
                "(`autogrow grow --run-dir` starts a new run)"
            )
        if readonly:
            records, end, size = _scan(path)
            torn = TornTail(end, size - end, None) if end < size else None
            return cls(run_dir=run_dir, records=records, size=end, torn=torn, fd=None,
                       lock_fd=None, fsync=fsync)

        if create:
            run_dir.mkdir(parents=True, exist_ok=True)
        lock_fd = _acquire_lock(run_dir)
        try:
            created = create and not path.exists()
            fd = os.open(path, os.O_RDWR | os.O_APPEND | (os.O_CREAT if create else 0), 0o644)
            try:
                if created:
                    fsync_dir(run_dir)
                records, end, size = _scan(path)
                torn = _set_aside(path, fd, end, size) if end < size else None
            except BaseException:
                os.close(fd)
                raise
        except BaseException:
            _release_lock(lock_fd)
            raise
        return cls(run_dir=run_dir, records=records, size=end, torn=torn, fd=fd,
                   lock_fd=lock_fd, fsync=fsync)

    # -- reading -----------------------------------------------------------------------------

    @property
    def records(self) -> tuple[LogRecord, ...]:
        """All records in seq order (an immutable snapshot of the log at this moment)."""
        if self._records_view is None:
            self._records_view = tuple(self._records)
        return self._records_view

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[LogRecord]:
        return iter(self.records)

    @property
    def last_hash(self) -> str:
        """Hash of the last record (``GENESIS_HASH`` for an empty log)."""
        return self._records[-1].hash if self._records else GENESIS_HASH

    @property
    def closed(self) -> bool:
        return self._closed

    # -- writing -----------------------------------------------------------------------------

    def append(self, type: str, schema: int, payload: Mapping[str, Any]) -> LogRecord:
        """Durably append one record and return it. The record is validated (plain, finite JSON
        with str keys) before a byte is written; on a write error the partial line is rolled back."""
        if self._closed:
            raise LogClosed(f"{self.path} is closed; open the run again to append")
        if self._fd is None:
            raise LogClosed(f"{self.path} was opened readonly; open it without readonly=True to append")
        if not isinstance(type, str) or not type:
            raise InvalidPayload(f"event type must be a non-empty str, got {type!r}")
        if not isinstance(schema, int) or isinstance(schema, bool) or schema < 1:
            raise InvalidPayload(f"schema of {type!r} must be an int >= 1, got {schema!r}")
        if not isinstance(payload, dict):
            raise InvalidPayload(f"payload of {type!r} must be a dict, got {payload.__class__.__name__}")
        payload_json = _payload_json(type, payload)
        seq, prev, ts, schema = len(self._records) + 1, self.last_hash, _utc_now(), int(schema)
        body = _body(seq, str(type), schema, payload_json, ts, prev)
        try:
            body_bytes = body.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidPayload(
                f"payload or type of {type!r} contains a lone surrogate, which is not valid UTF-8"
            ) from None
        digest = hashlib.sha256(prev.encode("ascii") + body_bytes).hexdigest()
        line = b'{"hash":"' + digest.encode("ascii") + b'",' + body_bytes[1:] + b"\n"
        self._write(line)
        record = LogRecord(seq, str(type), schema, payload_json, ts, prev, digest)
        self._records.append(record)
        self._records_view = None
        return record

    def _write(self, line: bytes) -> None:
        fd = self._fd
        assert fd is not None
        try:
            write_with_test_pause(fd, line, PAUSE_ENV)
            if self._fsync:
                sync_data(fd)
        except BaseException as err:
            try:  # never leave a torn line behind while we are alive to clean it up
                os.ftruncate(fd, self._size)
                os.fsync(fd)
                state = "the partial line was rolled back"
            except OSError:
                self.close()
                state = "the log was closed; reopen the run (the torn line will be set aside)"
            if is_disk_full(err):
                raise disk_full(err, self.path, self.run_dir, state) from err
            if isinstance(err, OSError):
                raise StorageError(f"could not append to {self.path}: {err}; {state}") from err
            raise
        self._size += len(line)

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Release the file and the writer lock. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        _WRITERS.discard(self)
        fd, lock_fd, self._fd, self._lock_fd = self._fd, self._lock_fd, None, None
        try:
            if fd is not None:
                os.close(fd)
        finally:
            if lock_fd is not None:
                _release_lock(lock_fd)

    def _let_go_in_child(self) -> None:
        """In a forked child: close this process's copies of the descriptors (never unlock: the
        lock is the parent's) and act closed, so the child can neither append nor unlock."""
        fds, self._fd, self._lock_fd, self._closed = (self._fd, self._lock_fd), None, None, True
        for fd in fds:
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            try:
                self.close()
            except Exception:
                pass

    def __repr__(self) -> str:
        mode = "readonly" if self.readonly else "writable"
        state = "closed" if self._closed else mode
        return f"<EventLog {self.path} {len(self._records)} records, {state}>"
