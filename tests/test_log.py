"""The event log: chain verification, torn tails, corruption, locking, crash safety.

The stateful test drives a real file log through appends, reopens and simulated crashes (the file
cut at a random byte, or garbage left after the last record) against a model list; every fully
written record that remains must survive in order, a torn tail is set aside, and the chain on disk
verifies with an independent re-implementation of the format.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from autogrow.storage import (
    DiskFull,
    EventLog,
    InvalidPayload,
    LogClosed,
    LogCorrupted,
    LogLocked,
    LogMissing,
    StorageError,
    TornTail,
)

REPO = Path(__file__).resolve().parents[1]
GENESIS = "0" * 64


# -- an independent reading of the on-disk format (DESIGN.md §5) --------------------------------


def spec_canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def spec_verify(path: Path) -> list[dict]:
    """Check every line of a log exactly as the format is specified; returns the parsed records."""
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), "a log at rest ends with a newline"
    prev = GENESIS
    records = []
    for seq, line in enumerate(data.split(b"\n")[:-1], start=1):
        rec = json.loads(line)
        assert rec["seq"] == seq and rec["prev"] == prev
        body = {k: v for k, v in rec.items() if k != "hash"}
        assert rec["hash"] == hashlib.sha256((prev + spec_canonical(body)).encode()).hexdigest()
        assert line == spec_canonical(rec).encode()
        prev = rec["hash"]
        records.append(rec)
    return records


def env_with_repo(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


# -- strategies -----------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=10,
)
payloads = st.dictionaries(st.text(max_size=10), json_values, max_size=6)
event_types = st.sampled_from(["run_started", "epoch_completed", "block_added"]) | st.text(
    min_size=1, max_size=12
)


def write_log(run: Path, items: list[tuple[str, int, dict]]) -> EventLog:
    log = EventLog.open(run, create=True, fsync=False)
    for type_, schema, payload in items:
        log.append(type_, schema, payload)
    return log


# -- the stateful property ------------------------------------------------------------------------


class LogMachine(RuleBasedStateMachine):
    """Model: the list of (type, schema, canonical payload, hash) of every record that must be there."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="autogrow-log-sm-"))
        self.run = self.tmp / "run"
        self.log = EventLog.open(self.run, create=True, fsync=False)
        self.model: list[tuple[str, int, str, str]] = []
        self.side_files: set[Path] = set()

    def teardown(self) -> None:
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    @rule(type_=event_types, schema=st.integers(1, 4), payload=payloads)
    def append(self, type_: str, schema: int, payload: dict) -> None:
        record = self.log.append(type_, schema, payload)
        assert record.seq == len(self.model) + 1
        assert record.payload_json == spec_canonical(payload)
        self.model.append((type_, schema, spec_canonical(payload), record.hash))

    @rule()
    def reopen(self) -> None:
        self.log.close()
        self.log = EventLog.open(self.run, fsync=False)
        assert self.log.torn is None

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def crash_inside_last_record(self, data: st.DataObject) -> None:
        """Cut the file at a byte of the last record (0 = before it, len-1 = only its newline lost)."""
        self.log.close()  # a killed process releases its lock just the same
        size = self.log.path.stat().st_size
        start = self.log.path.read_bytes().rfind(b"\n", 0, size - 1) + 1
        kept = data.draw(st.integers(0, size - start - 1), label="bytes of the last record kept")
        self._crash_at(start + kept)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def crash_anywhere(self, data: st.DataObject) -> None:
        """Cut the file anywhere: everything after the cut is gone, a partial line is torn."""
        self.log.close()
        size = self.log.path.stat().st_size
        self._crash_at(data.draw(st.integers(0, size), label="cut at byte"))

    @rule(garbage=st.binary(min_size=1, max_size=200).map(lambda b: b.replace(b"\n", b"")))
    def crash_mid_append(self, garbage: bytes) -> None:
        """Leave an incomplete line after the last record (a writer killed mid-write)."""
        if not garbage:
            return
        self.log.close()
        with open(self.log.path, "ab") as f:
            f.write(garbage)
        self._crash_at(self.log.path.stat().st_size)

    def _crash_at(self, cut: int) -> None:
        path = self.log.path
        content = path.read_bytes()
        ends = [i + 1 for i, byte in enumerate(content) if byte == 0x0A]
        survivors = sum(1 for end in ends if end <= cut)
        last_end = ends[survivors - 1] if survivors else 0
        with open(path, "r+b") as f:
            f.truncate(cut)
        note(f"crash: cut at byte {cut} of {len(content)}; {survivors} records survive")

        with EventLog.open(self.run, readonly=True) as ro:  # reports, moves nothing
            assert len(ro) == survivors
            expected = TornTail(last_end, cut - last_end, None) if cut > last_end else None
            assert ro.torn == expected
        assert path.stat().st_size == cut

        self.log = EventLog.open(self.run, fsync=False)
        torn = self.log.torn
        if cut > last_end:
            assert torn is not None and (torn.offset, torn.length) == (last_end, cut - last_end)
            assert torn.side_file is not None and torn.side_file not in self.side_files
            assert torn.side_file.read_bytes() == content[last_end:cut]
            self.side_files.add(torn.side_file)
        else:
            assert torn is None
        assert path.stat().st_size == last_end
        del self.model[survivors:]

    @invariant()
    def records_equal_model(self) -> None:
        records = self.log.records
        assert len(self.log) == len(self.model)
        assert [(r.type, r.schema, r.payload_json, r.hash) for r in records] == self.model
        assert [r.seq for r in records] == list(range(1, len(records) + 1))
        assert [r.prev for r in records] == ([GENESIS] + [r.hash for r in records])[: len(records)]
        assert self.log.last_hash == (records[-1].hash if records else GENESIS)

    @invariant()
    def disk_matches_spec(self) -> None:
        on_disk = spec_verify(self.log.path)
        assert [r["hash"] for r in on_disk] == [m[3] for m in self.model]


LogMachine.TestCase.settings = settings(
    max_examples=50,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLogMachine = LogMachine.TestCase


# -- corruption: every change to a complete record is caught -------------------------------------


def assert_change_detected(run: Path, originals: list, mutated: bytes, writable: bool = True) -> None:
    """Opening must fail with LogCorrupted or set a torn tail aside; never a clean open, and the
    records it does accept are exactly original ones."""
    path = run / "events.jsonl"
    try:
        ro = EventLog.open(run, readonly=True)
    except LogCorrupted as err:
        assert "corrupted" in str(err) and "\n" not in str(err)
        assert path.read_bytes() == mutated, "a failed open must not modify the log"
        if not writable:
            return
        with pytest.raises(LogCorrupted):
            EventLog.open(run)  # the writable open refuses too (and releases its lock)
        assert path.read_bytes() == mutated
        return
    with ro:
        assert ro.torn is not None, "a changed log opened cleanly"
        assert len(ro) < len(originals)
        assert list(ro.records) == originals[: len(ro)]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(st.tuples(event_types, st.integers(1, 3), payloads), min_size=1, max_size=4),
       data=st.data())
def test_any_single_byte_change_is_detected(items: list, data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        with write_log(run, items) as log:
            originals = list(log.records)
        content = (run / "events.jsonl").read_bytes()
        pos = data.draw(st.integers(0, len(content) - 1), label="byte")
        new = data.draw(st.integers(0, 255).filter(lambda b: b != content[pos]), label="new value")
        mutated = content[:pos] + bytes([new]) + content[pos + 1 :]
        (run / "events.jsonl").write_bytes(mutated)
        assert_change_detected(run, originals, mutated)


def test_every_byte_of_a_small_log_is_protected(tmp_path: Path) -> None:
    """Exhaustive over positions, with flips chosen to hit parse-equal edits (e -> E, escapes)."""
    items = [
        ("run_started", 1, {"seed": 7, "big": 1e16, "tiny": 5e-324, "neg": -0.0, "s": "é\u2028\"\\"}),
        ("epoch_completed", 2, {"acc": 0.1, "list": [1, 2.5, None, True], "nested": {"a": {}}}),
    ]
    with write_log(tmp_path, items) as log:
        originals = list(log.records)
    path = tmp_path / "events.jsonl"
    content = path.read_bytes()
    for pos in range(len(content)):
        for new in {content[pos] ^ 0x01, content[pos] ^ 0x20, 0x0A} - {content[pos]}:
            mutated = content[:pos] + bytes([new]) + content[pos + 1 :]
            path.write_bytes(mutated)
            assert_change_detected(tmp_path, originals, mutated, writable=False)


def test_corruption_message_names_line_offset_and_problem(tmp_path: Path) -> None:
    with write_log(tmp_path, [("t", 1, {"i": i}) for i in range(3)]):
        pass
    path = tmp_path / "events.jsonl"
    lines = path.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b'"i":1', b'"i":9')
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(LogCorrupted) as err:
        EventLog.open(tmp_path)
    msg = str(err.value)
    assert "line 2" in msg and f"byte offset {len(lines[0]) + 1}" in msg and "expected seq 2" in msg
    assert "hash mismatch" in msg and "restore" in msg
    # a removed record breaks the chain, reported at the record that follows it
    del lines[1]
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(LogCorrupted, match="line 2 .*seq is 3, expected 2"):
        EventLog.open(tmp_path, readonly=True)


def test_format_matches_the_spec(tmp_path: Path) -> None:
    payload = {"b": [1, 2.0, "x"], "a": {"z": None, "y": 0.1 + 0.2}, "u": "ü"}
    with EventLog.open(tmp_path, create=True) as log:
        first = log.append("epoch_completed", 1, payload)
        second = log.append("block_added", 2, {})
    assert first.prev == GENESIS and second.prev == first.hash
    records = spec_verify(tmp_path / "events.jsonl")
    assert records[0]["payload"] == payload and records[0]["payload"]["a"]["y"] == 0.1 + 0.2
    assert set(records[0]) == {"seq", "type", "schema", "payload", "ts", "prev", "hash"}
    assert records[0]["ts"].endswith("Z") and records[0]["ts"][:2] == "20"


@settings(max_examples=60, deadline=None)
@given(value=st.floats(allow_nan=False, allow_infinity=False))
def test_floats_round_trip_exactly(value: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        with EventLog.open(tmp, create=True, fsync=False) as log:
            log.append("t", 1, {"x": value})
        with EventLog.open(tmp, readonly=True) as log:
            back = log.records[0].payload["x"]
    assert repr(back) == repr(value)  # also tells -0.0 from 0.0


def test_payload_is_not_shared(tmp_path: Path) -> None:
    with EventLog.open(tmp_path, create=True) as log:
        payload = {"l": [1]}
        record = log.append("t", 1, payload)
        payload["l"].append(2)
        record.payload["l"].append(3)
        assert record.payload == {"l": [1]} and log.records[0].payload == {"l": [1]}


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload, words",
    [
        ({"x": float("nan")}, "finite"),
        ({"x": [1, float("inf")]}, "finite"),
        ({"x": object()}, "not JSON"),
        ({"x": {1: "a"}}, "keys must be str"),
        ({"x": b"bytes"}, "not JSON"),
        ({"x": {1, 2}}, "not JSON"),
        ({"x": "\ud800"}, "surrogate"),
    ],
)
def test_non_json_payload_is_rejected_before_writing(tmp_path: Path, payload: dict, words: str) -> None:
    with EventLog.open(tmp_path, create=True) as log:
        log.append("t", 1, {"ok": 1})
        size = log.path.stat().st_size
        with pytest.raises(InvalidPayload, match=words) as err:
            log.append("t", 1, payload)
        assert isinstance(err.value, StorageError) and isinstance(err.value, ValueError)
        assert log.path.stat().st_size == size and len(log) == 1
        assert log.append("t", 1, {"ok": 2}).seq == 2
    assert len(spec_verify(tmp_path / "events.jsonl")) == 2


def test_circular_payload_and_bad_arguments_are_rejected(tmp_path: Path) -> None:
    loop: dict = {}
    loop["self"] = loop
    with EventLog.open(tmp_path, create=True) as log:
        for args in [("t", 1, loop), ("", 1, {}), ("t", 0, {}), ("t", True, {}), ("t", 1, [1]), (3, 1, {})]:
            with pytest.raises(InvalidPayload):
                log.append(*args)
        assert log.path.stat().st_size == 0
        assert log.append("t", 1, {"tuple": (1, 2)}).payload == {"tuple": [1, 2]}


def test_missing_log_is_a_clear_error_and_creates_nothing(tmp_path: Path) -> None:
    for readonly in (False, True):
        with pytest.raises(LogMissing, match=r"not a run directory.*`autogrow grow --run-dir`"):
            EventLog.open(tmp_path, readonly=readonly)
    with pytest.raises(LogMissing):
        EventLog.open(tmp_path / "nope")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError):
        EventLog.open(tmp_path, create=True, readonly=True)


def test_append_after_close_or_readonly_fails(tmp_path: Path) -> None:
    log = EventLog.open(tmp_path, create=True)
    log.append("t", 1, {})
    log.close()
    log.close()  # idempotent
    with pytest.raises(LogClosed, match="closed"):
        log.append("t", 1, {})
    with EventLog.open(tmp_path, readonly=True) as ro:
        with pytest.raises(LogClosed, match="readonly"):
            ro.append("t", 1, {})
    assert len(spec_verify(tmp_path / "events.jsonl")) == 1


def test_reopen_and_continue_keeps_the_chain(tmp_path: Path) -> None:
    with EventLog.open(tmp_path, create=True) as log:
        for i in range(3):
            log.append("t", 1, {"i": i})
    with EventLog.open(tmp_path, create=True) as log:  # create on an existing run just opens it
        assert len(log) == 3
        record = log.append("t", 1, {"i": 3})
        assert record.seq == 4 and record.prev == log.records[2].hash
    with EventLog.open(tmp_path, readonly=True) as log:
        assert [r.payload["i"] for r in log] == [0, 1, 2, 3]
    assert len(spec_verify(tmp_path / "events.jsonl")) == 4


def test_a_complete_last_record_without_its_newline_is_a_torn_tail(tmp_path: Path) -> None:
    """A crash can cut exactly the final newline of an otherwise complete, valid record. It
    must be set aside like any torn tail, not accepted: an accepted record without its newline
    would be glued to the next append, corrupting the log (fails if ``_scan`` accepts a last
    line that parses without its newline)."""
    with EventLog.open(tmp_path, create=True) as log:
        for i in range(3):
            log.append("t", 1, {"i": i})
    path = tmp_path / "events.jsonl"
    whole = path.read_bytes()
    path.write_bytes(whole[:-1])  # only the final b"\n" is lost
    with EventLog.open(tmp_path, readonly=True) as log:
        assert len(log) == 2 and log.torn is not None and log.torn.length == len(
            whole.splitlines(keepends=True)[-1]) - 1
    with EventLog.open(tmp_path) as log:  # a writer sets it aside and continues the chain
        assert len(log) == 2
        log.append("t", 1, {"i": "again"})
    with EventLog.open(tmp_path, readonly=True) as log:
        assert [r.payload["i"] for r in log] == [0, 1, "again"] and log.torn is None
    side, = tmp_path.glob("events.jsonl.torn-*")
    assert side.read_bytes() == whole.splitlines(keepends=True)[-1][:-1]


# -- locking ---------------------------------------------------------------------------------------

TRY_WRITE = """
import sys
from autogrow.storage import EventLog, LogLocked
try:
    log = EventLog.open(sys.argv[1])
except LogLocked as err:
    print("LOCKED", err)
    sys.exit(3)
print("OPENED", len(log))
"""


def test_second_writer_in_another_process_gets_log_locked(tmp_path: Path) -> None:
    log = EventLog.open(tmp_path, create=True)
    log.append("t", 1, {})
    child = subprocess.run([sys.executable, "-c", TRY_WRITE, str(tmp_path)], env=env_with_repo(),
                           capture_output=True, text=True, timeout=60)
    assert child.returncode == 3, child.stderr
    assert "another process" in child.stdout and f"pid {os.getpid()}" in child.stdout
    assert "`autogrow verify` and `autogrow history` read a run" in child.stdout
    with EventLog.open(tmp_path, readonly=True) as ro:  # readers take no lock
        assert len(ro) == 1
    with pytest.raises(LogLocked, match="this process"):  # a second open in the same process too
        EventLog.open(tmp_path)
    log.append("t", 1, {})  # the writer is unaffected
    log.close()
    child = subprocess.run([sys.executable, "-c", TRY_WRITE, str(tmp_path)], env=env_with_repo(),
                           capture_output=True, text=True, timeout=60)
    assert child.returncode == 0 and "OPENED 2" in child.stdout, child.stderr


# -- a real crash: SIGKILL mid-append ------------------------------------------------------------

CRASHING_WRITER = """
import os, sys
from autogrow.storage import EventLog
log = EventLog.open(sys.argv[1], create=True)
for i in range(3):
    log.append("epoch_completed", 1, {"epoch": i})
print(log.path.stat().st_size, flush=True)
os.environ["AUTOGROW_TEST_APPEND_PAUSE"] = "60"
log.append("epoch_completed", 1, {"epoch": 3, "pad": "x" * 200})
print("not reached", flush=True)
"""


def test_sigkill_mid_append_leaves_a_torn_tail_that_is_set_aside(tmp_path: Path) -> None:
    run = tmp_path / "run"
    path = run / "events.jsonl"
    child = subprocess.Popen([sys.executable, "-c", CRASHING_WRITER, str(run)], env=env_with_repo(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        complete = int(child.stdout.readline())
        # the hook says so once the first half of record 4 is written and synced
        assert child.stderr.readline().startswith("autogrow-test: paused mid-write")
        assert path.stat().st_size > complete
        with EventLog.open(run, readonly=True) as ro:  # while the writer is paused mid-line
            assert len(ro) == 3 and ro.torn is not None and ro.torn.side_file is None
        with pytest.raises(LogLocked, match=f"pid {child.pid}"):
            EventLog.open(run)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    partial = path.read_bytes()[complete:]
    assert partial and not partial.endswith(b"\n")

    with EventLog.open(run) as log:  # the kernel released the dead writer's lock
        assert len(log) == 3 and [r.payload["epoch"] for r in log] == [0, 1, 2]
        assert log.torn is not None and (log.torn.offset, log.torn.length) == (complete, len(partial))
        assert log.torn.side_file.read_bytes() == partial
        assert log.torn.side_file.name.startswith("events.jsonl.torn-")
        assert path.stat().st_size == complete
        record = log.append("run_resumed", 1, {"from_seq": 3})
        assert record.seq == 4 and record.prev == log.records[2].hash
    assert len(spec_verify(path)) == 4


def test_log_module_does_not_import_torch() -> None:
    code = "import sys, autogrow.storage, autogrow.storage.log; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], env=env_with_repo(), check=True, timeout=60)


def test_failed_write_is_rolled_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from autogrow.storage import _fs as fs_module  # the log writes through _fs.write_all

    real_write_all = fs_module.write_all

    def disk_full_halfway(fd: int, data: bytes) -> None:
        real_write_all(fd, data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    with EventLog.open(tmp_path, create=True) as log:
        log.append("t", 1, {"i": 0})
        size = log.path.stat().st_size
        monkeypatch.setattr(fs_module, "write_all", disk_full_halfway)
        with pytest.raises(StorageError, match="No space left.*rolled back"):
            log.append("t", 1, {"i": 1})
        assert log.path.stat().st_size == size and len(log) == 1
        monkeypatch.setattr(fs_module, "write_all", real_write_all)
        assert log.append("t", 1, {"i": 1}).seq == 2
    assert len(spec_verify(tmp_path / "events.jsonl")) == 2


def test_digit_flip_that_overflows_a_float_is_corruption_not_a_crash(tmp_path):
    """Regression (found by hypothesis in CI): 1.79e+308 edited to 1.79e+318 parses as inf."""
    with EventLog.open(tmp_path, create=True) as log:
        log.append("x", 1, {"v": 1.7976931347314117e308})
    path = tmp_path / "events.jsonl"
    path.write_bytes(path.read_bytes().replace(b"e+308", b"e+318"))
    with pytest.raises(LogCorrupted) as err:
        EventLog.open(tmp_path, readonly=True)
    assert ("line 1 (byte offset 0, expected seq 1) is corrupted: payload cannot be stored as "
            "written (Out of range float values") in str(err.value)


# -- guards and messages the mutation run found unasserted (docs/testing.md) ---------------------


def _forged_line(seq: int, prev: str, **fields: object) -> bytes:
    """A record line whose hash is right for its (possibly invalid) fields: only the log's field
    checks can refuse it."""
    record = {"seq": seq, "type": "t", "schema": 1, "payload": {}, "ts": "2026-01-01T00:00:00Z",
              "prev": prev}
    record.update(fields)
    body = spec_canonical(record)
    digest = hashlib.sha256((prev + body).encode("utf-8")).hexdigest()
    return ('{"hash":"' + digest + '",' + body[1:] + "\n").encode("utf-8")


@pytest.mark.parametrize("fields,problem", [
    ({"schema": 0}, "schema is 0, expected an int >= 1"),
    ({"type": ""}, "type is '', expected a non-empty string"),
    ({"ts": 5}, "ts is 5, expected a string"),
    ({"payload": [1]}, "payload is a list, expected an object"),
])
def test_a_rehashed_record_with_an_invalid_field_is_refused(tmp_path: Path, fields: dict,
                                                            problem: str) -> None:
    with write_log(tmp_path, [("t", 1, {"i": 0})]) as log:
        first = log.records[0]
    path = tmp_path / "events.jsonl"
    path.write_bytes(path.read_bytes() + _forged_line(2, first.hash, **fields))
    with pytest.raises(LogCorrupted) as err:
        EventLog.open(tmp_path, readonly=True)
    assert str(err.value) == (
        f"{path}: line 2 (byte offset {len(path.read_bytes().splitlines(True)[0])}, expected seq 2) "
        f"is corrupted: {problem}; the log was not modified - do not append to it; restore "
        "events.jsonl from a backup, or fork the run from a snapshot logged before line 2 "
        "(`autogrow verify` names the latest)")
    assert err.value.intact == (first,)  # what still verifies from genesis


@pytest.mark.parametrize("line,problem", [
    (b'{"hash":"xyz","payload":{},"prev":"' + b"0" * 64 + b'","schema":1,"seq":2,"ts":"t",'
     b'"type":"t"}', "hash is 'xyz', expected 64 lowercase hex digits"),
    (b'{"hash":"' + b"0" * 64 + b'","payload":{},"prev":"abc","schema":1,"seq":2,"ts":"t",'
     b'"type":"t"}', "prev is 'abc', expected 64 lowercase hex digits"),
    (b'{"seq": 2, "ty\xffpe": 1}', "invalid UTF-8 at byte offset {offset}"),
    (b'{"seq": 2,', "not valid JSON (Expecting property name"),
    (b'[1, 2]', "expected an object with keys ['hash', 'payload', 'prev', 'schema', 'seq', 'ts', "
                "'type'], found list"),
    (b'{"seq": 2, "type": "t"}', "expected an object with keys ['hash', 'payload', 'prev', "
                                 "'schema', 'seq', 'ts', 'type'], found ['seq', 'type']"),
])
def test_each_kind_of_damage_is_named(tmp_path: Path, line: bytes, problem: str) -> None:
    with write_log(tmp_path, [("t", 1, {"i": 0})]):
        pass
    path = tmp_path / "events.jsonl"
    offset = path.stat().st_size
    path.write_bytes(path.read_bytes() + line + b"\n")
    with pytest.raises(LogCorrupted) as err:
        EventLog.open(tmp_path, readonly=True)
    problem = problem.format(offset=offset + line.index(b"\xff") if b"\xff" in line else offset)
    assert f"line 2 (byte offset {offset}, expected seq 2) is corrupted: {problem}" in str(err.value)


def test_a_failed_write_after_several_records_rolls_back_to_the_last_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from autogrow.storage import _fs as fs_module

    real_write_all = fs_module.write_all
    with EventLog.open(tmp_path, create=True, fsync=False) as log:
        for i in range(3):
            log.append("t", 1, {"i": i})
        size = log.path.stat().st_size

        def disk_full_halfway(fd: int, data: bytes) -> None:
            real_write_all(fd, data[: len(data) // 2])
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(fs_module, "write_all", disk_full_halfway)
        with pytest.raises(StorageError):
            log.append("t", 1, {"i": 3})
        assert log.path.stat().st_size == size
        monkeypatch.setattr(fs_module, "write_all", real_write_all)
        log.append("t", 1, {"i": 3})
    assert [r["payload"]["i"] for r in spec_verify(tmp_path / "events.jsonl")] == [0, 1, 2, 3]


def test_lock_messages_say_who_holds_it_and_what_to_do(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from autogrow.storage import EventLog; "
         "log = EventLog.open(sys.argv[1], create=True); print('held', flush=True); "
         "sys.stdin.read()", str(tmp_path)],
        env=env_with_repo(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(LogLocked) as err:
            EventLog.open(tmp_path)
        assert str(err.value) == (f"another process (pid {holder.pid}) is writing to {tmp_path}; "
                                  "wait for it to finish or stop it (`autogrow verify` and "
                                  "`autogrow history` read a run while it is written)")
    finally:
        holder.communicate("", timeout=60)
    with EventLog.open(tmp_path):
        with pytest.raises(LogLocked) as err:
            EventLog.open(tmp_path)
    assert str(err.value) == (f"this process (pid {os.getpid()}) already has {tmp_path} open for "
                              "writing; close that EventLog first (`autogrow verify` and "
                              "`autogrow history` read a run while it is written)")


def test_create_makes_missing_parent_directories(tmp_path: Path) -> None:
    run = tmp_path / "a" / "b" / "run"
    with EventLog.open(run, create=True) as log:
        log.append("t", 1, {})
    assert len(spec_verify(run / "events.jsonl")) == 1


def test_torn_tails_set_aside_in_the_same_microsecond_get_numbered_names(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Side files are named by the UTC time of the open; a clash (same microsecond) gets -1, -2."""
    import datetime as real_dt
    import types

    from autogrow.storage import log as log_module

    fixed = real_dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=real_dt.timezone.utc)

    class FrozenDatetime(real_dt.datetime):
        @classmethod
        def now(cls, tz=None):
            assert tz is real_dt.timezone.utc, "side file names are in UTC"
            return fixed

    monkeypatch.setattr(log_module, "_dt", types.SimpleNamespace(datetime=FrozenDatetime,
                                                                 timezone=real_dt.timezone))
    with write_log(tmp_path, [("t", 1, {})]):
        pass
    path = tmp_path / "events.jsonl"
    names = []
    for tail in (b'{"a', b'{"bb', b'{"ccc'):
        with open(path, "ab") as f:
            f.write(tail)
        with EventLog.open(tmp_path) as log:
            names.append((log.torn.side_file.name, log.torn.side_file.read_bytes()))
    base = "events.jsonl.torn-20260102T030405.678901Z"
    assert names == [(base, b'{"a'), (base + "-1", b'{"bb'), (base + "-2", b'{"ccc')]


def test_timestamps_are_utc_whatever_the_local_zone(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import datetime as dt
    import re
    import time

    monkeypatch.setenv("TZ", "Asia/Tokyo")  # UTC+9, no daylight saving
    time.tzset()
    try:
        with EventLog.open(tmp_path, create=True, fsync=False) as log:
            ts = log.append("t", 1, {}).ts
    finally:
        monkeypatch.undo()
        time.tzset()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", ts), ts
    stamped = dt.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)
    assert abs((dt.datetime.now(dt.timezone.utc) - stamped).total_seconds()) < 3600


def test_payload_and_argument_errors_name_the_place(tmp_path: Path) -> None:
    loop: dict = {}
    loop["self"] = loop
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    cases = [
        (("t", 1, {"x": [1, float("inf")]}),
         "event 't': payload['x'][1] is inf; the log stores only finite numbers"),
        (("t", 1, {"x": object()}),
         "event 't': payload['x'] is a object, which is not JSON; convert it to "
         "str/int/float/bool/None/list/dict before logging"),
        (("t", 1, {"x": {1: "a"}}),
         "event 't': payload['x'] has a int key 1; JSON object keys must be str"),
        (("t", 1, loop), "payload of 't' is too deeply nested or circular"),
        (("t", 1, {"x": deep}), "payload of 't' is too deeply nested"),
        (("", 1, {}), "event type must be a non-empty str, got ''"),
        (("t", 0, {}), "schema of 't' must be an int >= 1, got 0"),
        (("t", True, {}), "schema of 't' must be an int >= 1, got True"),
        (("t", 1, [1]), "payload of 't' must be a dict, got list"),
    ]
    with EventLog.open(tmp_path, create=True, fsync=False) as log:
        for args, message in cases:
            with pytest.raises(InvalidPayload) as err:
                log.append(*args)
            assert str(err.value) == message, args[:2]
        assert log.path.stat().st_size == 0


def test_a_failed_write_that_cannot_be_rolled_back_closes_the_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from autogrow.storage import _fs as fs_module
    from autogrow.storage import log as log_module

    def disk_full(fd: int, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    def cannot_truncate(fd: int, size: int) -> None:
        raise OSError(5, "Input/output error")

    log = EventLog.open(tmp_path / "full", create=True, fsync=False)
    other = EventLog.open(tmp_path / "io", create=True, fsync=False)
    monkeypatch.setattr(log_module.os, "ftruncate", cannot_truncate)
    monkeypatch.setattr(fs_module, "write_all", disk_full)
    with pytest.raises(DiskFull) as err:  # a full disk says so, and what became of the log
        log.append("t", 1, {})
    assert str(err.value).startswith("the file system at ")
    assert str(err.value).endswith(
        f"`autogrow resume {tmp_path / 'full'}` (or the copy) continues the run from its latest "
        "snapshot; the log was closed; reopen the run (the torn line will be set aside)")
    assert log.closed

    def io_error(fd: int, data: bytes) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(fs_module, "write_all", io_error)
    with pytest.raises(StorageError) as err:
        other.append("t", 1, {})
    assert str(err.value) == (f"could not append to {other.path}: [Errno 5] Input/output error; "
                              "the log was closed; reopen the run (the torn line will be set aside)")
    assert other.closed


def test_a_record_chained_to_another_hash_and_an_edited_record_are_named(tmp_path: Path) -> None:
    with write_log(tmp_path, [("t", 1, {"i": 0})]) as log:
        first = log.records[0]
    path = tmp_path / "events.jsonl"
    good = path.read_bytes()
    other = "1" * 64
    path.write_bytes(good + _forged_line(2, other))
    with pytest.raises(LogCorrupted) as err:
        EventLog.open(tmp_path, readonly=True)
    assert (f"is corrupted: prev is {other[:12]}... but the previous record's hash is "
            f"{first.hash[:12]}... (the chain is broken);") in str(err.value)
    line = _forged_line(2, first.hash)
    edited = line.replace(b'"payload":{}', b'"payload":{"i":1}')
    path.write_bytes(good + edited)
    record = json.loads(edited)
    body = spec_canonical({k: v for k, v in record.items() if k != "hash"})
    computed = hashlib.sha256((first.hash + body).encode()).hexdigest()
    with pytest.raises(LogCorrupted) as err:
        EventLog.open(tmp_path, readonly=True)
    assert (f"is corrupted: hash mismatch (stored {record['hash'][:12]}..., computed "
            f"{computed[:12]}...): the record changed after it was written;") in str(err.value)


def test_side_files_are_created_rw_r_r(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with write_log(tmp_path, [("t", 1, {})]):
            pass
        with open(tmp_path / "events.jsonl", "ab") as f:
            f.write(b'{"torn')
        with EventLog.open(tmp_path) as log:
            side = log.torn.side_file
    finally:
        os.umask(old)
    assert side.stat().st_mode & 0o777 == 0o644


def test_a_reformatted_line_is_not_canonical(tmp_path: Path) -> None:
    """Same content, other spacing: the hash still matches the content, the bytes do not."""
    with write_log(tmp_path, [("t", 1, {"i": 0})]):
        pass
    path = tmp_path / "events.jsonl"
    path.write_bytes(path.read_bytes().replace(b'"seq":1', b'"seq": 1'))
    with pytest.raises(LogCorrupted) as err:
        EventLog.open(tmp_path, readonly=True)
    assert str(err.value).startswith(
        f"{path}: line 1 (byte offset 0, expected seq 1) is corrupted: the line is not in "
        "canonical form (it was edited after it was written);")


def test_a_log_says_where_it_is_and_whether_it_can_append(tmp_path: Path) -> None:
    with write_log(tmp_path, [("t", 1, {})]) as log:
        assert (log.run_dir, log.readonly) == (tmp_path, False)
    with EventLog.open(tmp_path, readonly=True) as ro:
        assert (ro.run_dir, ro.readonly) == (tmp_path, True)


def test_a_damaged_first_line_offers_no_fork_and_keeps_nothing(tmp_path: Path) -> None:
    """Nothing precedes line 1, so no snapshot can: the message says to restore the log, and no
    record counts as intact."""
    with write_log(tmp_path, [("t", 1, {"i": 0}), ("t", 1, {"i": 1})]):
        pass
    path = tmp_path / "events.jsonl"
    path.write_bytes(path.read_bytes().replace(b'{"i":0}', b'{"i":9}', 1))
    with pytest.raises(LogCorrupted) as err:
        EventLog.open(tmp_path, readonly=True)
    assert str(err.value).endswith("; the log was not modified - do not append to it; restore "
                                   "events.jsonl from a backup (no intact record precedes it)")
    assert "line 1 " in str(err.value) and err.value.intact == ()
