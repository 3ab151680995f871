"""Damage and misuse of a run directory: each gives a clear error or a safe recovery, never a
silently wrong run. Also fork, prune, verify's audit and plot through the command line."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path

import pytest

from autogrow.events import BlockAdded, decode, encode
from autogrow.replay import live_events, state_of
from autogrow.replay.verify import verify_run
from autogrow.storage import EventLog, SnapshotStore
from tests.conftest import autogrow_cli
from tests.test_engine import comparable


def _copy(run_dir: Path, tmp_path: Path, name: str = "copy") -> Path:
    target = tmp_path / name
    shutil.copytree(run_dir, target)
    (target / ".lock").unlink(missing_ok=True)
    return target


def _tree_digest(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file() and p.name != ".lock":
            h.update(p.relative_to(path).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def _one_line_error(proc, *words: str) -> str:
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("autogrow: error:"), proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def _records(run_dir: Path):
    with EventLog.open(run_dir, readonly=True) as log:
        return log.records


def test_log_truncated_at_a_random_byte_resumes_to_the_same_result(smoke_run, tmp_path):
    run = _copy(smoke_run, tmp_path)
    data = (run / "events.jsonl").read_bytes()
    cut = random.Random(7).randrange(len(data) // 3, len(data) - 1)
    (run / "events.jsonl").write_bytes(data[:cut])
    autogrow_cli("resume", str(run), check=True)
    assert list((run).glob("events.jsonl.torn-*")) or data[:cut].endswith(b"\n")
    assert comparable(run) == comparable(smoke_run)
    # The lost records included snapshots_pruned events: the files they deleted are missing with
    # nothing left in the log to explain them, and verify says so — for those files only.
    lost_prunes = {d for r in _records(smoke_run) if r.type == "snapshots_pruned"
                   for d in r.payload["digests"]} - {
        d for r in _records(run) if r.type == "snapshots_pruned" for d in r.payload["digests"]}
    problems = verify_run(run).problems
    assert lost_prunes and problems
    assert all("no snapshots_pruned event" in p and any(d in p for d in lost_prunes)
               for p in problems)


def test_flipped_byte_in_a_snapshot_is_caught(smoke_run, tmp_path):
    run = _copy(smoke_run, tmp_path)
    last = [ev for _, ev in live_events(_records(run)) if ev.TYPE == "snapshot_written"][-1]
    path = SnapshotStore(run).path(last.digest)
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))
    proc = autogrow_cli("verify", str(run))
    assert proc.returncode == 1 and last.digest in proc.stdout and "FAIL" in proc.stdout
    # an unfinished run whose latest snapshot is damaged refuses to resume from it
    records = _records(run)
    seq = next(s for s, ev in live_events(records) if getattr(ev, "digest", None) == last.digest)
    partial = _copy(run, tmp_path, "partial")
    lines = (partial / "events.jsonl").read_bytes().splitlines(keepends=True)
    (partial / "events.jsonl").write_bytes(b"".join(lines[:seq]))
    _one_line_error(autogrow_cli("resume", str(partial)), last.digest[:12])


def test_flipped_byte_inside_a_complete_record_is_caught(smoke_run, tmp_path):
    run = _copy(smoke_run, tmp_path)
    data = bytearray((run / "events.jsonl").read_bytes())
    lines = bytes(data).split(b"\n")
    target = 5  # inside the 6th record's payload
    offset = sum(len(line) + 1 for line in lines[:target]) + len(lines[target]) // 2
    data[offset] = ord("7") if data[offset] != ord("7") else ord("8")
    (run / "events.jsonl").write_bytes(bytes(data))
    before = _tree_digest(run)
    proc = autogrow_cli("verify", str(run))
    assert proc.returncode == 1 and "seq 6" in proc.stdout
    _one_line_error(autogrow_cli("resume", str(run)), "seq 6")
    assert _tree_digest(run) == before  # nothing was changed by either


def test_forged_decision_with_a_valid_chain_fails_the_audit(smoke_run, tmp_path):
    """An edit that rebuilds the hash chain still cannot hide a decision the policy did not make."""
    forged = tmp_path / "forged"
    with EventLog.open(forged, create=True) as out:
        for record in _records(smoke_run):
            event = decode(record.type, record.schema, record.payload)
            if isinstance(event, BlockAdded) and event.growth_index == 1:
                event = BlockAdded(stage=event.stage, depth=event.depth, arch=event.arch,
                                   initializer="zero", init_seed=event.init_seed,
                                   growth_index=event.growth_index)
            out.append(*encode(event))
    shutil.copytree(smoke_run / "snapshots", forged / "snapshots")
    report = verify_run(forged)
    assert not report.ok and "block_added" in report.problems[0] and "policy decides" in report.problems[0]


def test_second_writer_is_refused(smoke_run, tmp_path):
    run = _copy(smoke_run, tmp_path)
    with EventLog.open(run):  # this process holds the writer lock
        _one_line_error(autogrow_cli("resume", str(run)), "writing")


def test_resume_of_a_finished_run_is_refused(smoke_run):
    before = _tree_digest(smoke_run)
    _one_line_error(autogrow_cli("resume", str(smoke_run)), "already finished")
    assert _tree_digest(smoke_run) == before


def test_resume_of_a_directory_that_is_not_a_run(tmp_path):
    _one_line_error(autogrow_cli("resume", str(tmp_path)), "not a run directory")


@pytest.mark.parametrize("at, words", [
    ("99999", "no such seq"),
    ("3", "not a live snapshot"),
    ("growth:99", "growth point"),
    ("sideways", "expected"),
])
def test_fork_at_a_point_that_does_not_exist(smoke_run, tmp_path, at, words):
    before = _tree_digest(smoke_run)
    new = tmp_path / "fork"
    _one_line_error(autogrow_cli("fork", str(smoke_run), "--at", at, "--run-dir", str(new)), words)
    assert not new.exists() and _tree_digest(smoke_run) == before


def test_fork_refuses_changes_that_break_the_weights(smoke_run, tmp_path):
    new = tmp_path / "fork"
    proc = autogrow_cli("fork", str(smoke_run), "--at", "growth:1", "--set", "family=plain3net",
                        "--run-dir", str(new))
    _one_line_error(proc, "family")
    _one_line_error(autogrow_cli("fork", str(smoke_run), "--at", "growth:1", "--set", "bogus=1",
                                 "--run-dir", str(new)), "bogus")


def test_a_damaged_log_still_forks_from_a_snapshot_before_the_damage(smoke_run, tmp_path):
    """The records before a damaged line verify from genesis, so a snapshot among them is as
    sound as ever: fork starts from it (here suspended at once by its time budget: the fork's
    start is what is tested); a point after the damage is refused."""
    run = _copy(smoke_run, tmp_path)
    lines = (run / "events.jsonl").read_bytes().splitlines(keepends=True)
    growths = [s for s, ev in live_events(_records(smoke_run))
               if ev.TYPE == "snapshot_written" and ev.label == "growth"]
    damaged = growths[1] + 1  # the seq (= line) right after the 2nd growth's snapshot
    lines[damaged - 1] = lines[damaged - 1].replace(b'"seq":', b'"seq": ', 1)
    (run / "events.jsonl").write_bytes(b"".join(lines))
    before = _tree_digest(run)
    proc = autogrow_cli("fork", str(run), "--at", "growth:2", "--time-limit", "1s",
                        "--run-dir", str(tmp_path / "fork"))
    assert proc.returncode == 75, proc.stderr
    assert "parent log damaged" in proc.stderr
    first = _records(tmp_path / "fork")[0]
    assert decode(first.type, first.schema, first.payload).parent_seq == growths[1]
    assert _tree_digest(run) == before  # the damaged parent is untouched
    report = verify_run(run)  # and verify names the snapshot the fork started from
    assert report.damaged and report.records == damaged - 1 and not report.ok
    assert report.notes == (f"the latest snapshot before the damage is seq {growths[1]} ("
                            f"{dict(live_events(_records(smoke_run)))[growths[1]].describe()}): "
                            f"`autogrow fork {run} --at {growths[1]} --run-dir NEW` continues "
                            "from it",)
    _one_line_error(autogrow_cli("fork", str(run), "--at", str(damaged + 1), "--run-dir",
                                 str(tmp_path / "fork2")), f"line {damaged} ", "is corrupted",
                    "fork the run from a snapshot logged before")


def test_fork_at_a_growth_point_with_new_settings(smoke_run, tmp_path):
    before = _tree_digest(smoke_run)
    new = tmp_path / "fork"
    autogrow_cli("fork", str(smoke_run), "--at", "growth:2", "--set", "stop_window=3",
                 "--run-dir", str(new), check=True)
    assert _tree_digest(smoke_run) == before  # the parent is untouched
    parent_records, records = _records(smoke_run), _records(new)
    first = decode(records[0].type, records[0].schema, records[0].payload)
    parent_state = state_of(parent_records)
    assert first.parent_run_id == parent_state.run_id and first.config["stop_window"] == 3
    growth_seqs = [s for s, ev in live_events(parent_records)
                   if ev.TYPE == "snapshot_written" and ev.label == "growth"]
    assert first.parent_seq == growth_seqs[1]
    assert tuple(first.base_state["arch"]) == state_of(parent_records, first.parent_seq).arch
    assert verify_run(new).ok
    history = autogrow_cli("history", str(new), check=True).stdout
    assert f"fork of run {parent_state.run_id} at seq {first.parent_seq}" in history


def test_prune_keeps_what_resume_fork_and_verify_need(smoke_run, tmp_path):
    run = _copy(smoke_run, tmp_path)
    total = len(SnapshotStore(run).digests())
    proc = autogrow_cli("prune", str(run), "--keep", "1", check=True)
    left = len(SnapshotStore(run).digests())
    assert left < total and f"removed {total - left} snapshot" in proc.stdout
    assert autogrow_cli("verify", str(run)).returncode == 0
    autogrow_cli("fork", str(run), "--at", "growth:1", "--set", "finetune_epochs=1",
                 "--run-dir", str(tmp_path / "fork"), check=True)


def test_plot_writes_an_image(smoke_run, tmp_path):
    out = tmp_path / "fig" / "run.png"
    autogrow_cli("plot", str(smoke_run), "--out", str(out), check=True)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_history_json_is_the_log(smoke_run):
    lines = autogrow_cli("history", str(smoke_run), "--json", check=True).stdout.splitlines()
    assert [json.loads(line)["seq"] for line in lines] == list(range(1, len(lines) + 1))


def test_an_error_mid_run_is_logged_and_resume_recovers(smoke_run, tmp_path, monkeypatch):
    """A crash with a Python error leaves run_failed in the log; resume supersedes it."""
    from autogrow.config import resolve_config
    from autogrow.engine import lifecycle as run_module
    from autogrow.engine.trainer import Trainer

    real = Trainer.train_epoch
    calls = {"n": 0}

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated out of memory")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_epoch", flaky)
    run_dir = tmp_path / "flaky"
    with pytest.raises(RuntimeError, match="simulated"):
        run_module.start_run(resolve_config("smoke"), run_dir)
    records = _records(run_dir)
    assert records[-1].type == "run_failed" and "simulated out of memory" in records[-1].payload["reason"]
    assert "failed" in autogrow_cli("history", str(run_dir), check=True).stdout
    monkeypatch.setattr(Trainer, "train_epoch", real)
    autogrow_cli("resume", str(run_dir), check=True)
    assert verify_run(run_dir).ok
    assert comparable(run_dir) == comparable(smoke_run)


@pytest.mark.parametrize("line", [1, 2])
def test_verify_of_a_log_damaged_before_any_snapshot_counts_what_it_read_and_offers_no_fork(
        smoke_run, tmp_path, line):
    """Line 2 damaged: one record was read, and no snapshot precedes the damage, so there is no
    seq to fork from (the message once said 'FAILED: 0 records' and 'fork from seq 1')."""
    run = _copy(smoke_run, tmp_path)
    lines = (run / "events.jsonl").read_bytes().splitlines(keepends=True)
    lines[line - 1] = lines[line - 1].replace(b'"seq":', b'"seq": ', 1)
    (run / "events.jsonl").write_bytes(b"".join(lines))
    proc = autogrow_cli("verify", str(run))
    assert proc.returncode == 1
    out = proc.stdout.splitlines()
    assert out[0] == ("note: no snapshot a fork can start from precedes the damage: restore "
                      "events.jsonl from a backup, or start the run again")
    assert out[1].startswith("FAIL: ") and f"line {line} " in out[1]
    record = "1 intact record" if line == 2 else "0 intact records"
    assert out[2] == f"FAILED: the log is damaged after {record}; nothing after the damage was read"
    assert len(out) == 3
