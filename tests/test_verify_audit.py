"""``autogrow verify`` against a forger who knows the log format (issue 14).

Each test edits a copy of the smoke run's log and writes it back through ``EventLog.append``, so
the hash chain of the forged log is valid and only the audit can tell. Each asserts that verify
fails and that its first problem names the first bad seq: the seq of the edited or inserted
record, or, for a deleted record, the first record after the gap that the audit can judge
(snapshot, resume, suspend and prune records are bookkeeping, allowed anywhere, so a gap is only
seen at the next decision or observation). Each forgery here yields exactly one problem (the
decision audit stops at its first disagreement), which the tests assert.

Besides the decisions, the final weights: run_finished's weights_digest must match the last
snapshot, that snapshot must be of the final net (last epoch, step 0, the final arch in its own
metadata), and every snapshot file's metadata must name the point its snapshot_written record
names, so a forger cannot pass off an earlier snapshot's weights as the result.

Each docstring names the check of ``autogrow/replay/verify.py`` the test guards: with that check
disabled the test fails (shown by mutating a scratch copy, one check at a time).
"""

from __future__ import annotations

import copy
import hashlib
import re
import shutil
from pathlib import Path

import pytest

from autogrow.events import BlockAdded, StageStopped
from autogrow.replay.verify import Report, verify_run
from tests.conftest import autogrow_cli
from tests.forgery import Record, forge, index_of

BOOKKEEPING = {"snapshot_written", "run_resumed", "run_suspended", "snapshots_pruned"}


def _seq(problem: str) -> int:
    match = re.match(r"seq (\d+): ", problem)
    assert match, f"the problem does not start by naming a seq: {problem}"
    return int(match.group(1))


def _fails_at(report: Report, seq: int, *words: str) -> str:
    """verify failed with one problem, about ``seq``, containing ``words``; returns it."""
    assert not report.ok, "verify accepted the forged log"
    assert len(report.problems) == 1, report.problems
    problem = report.problems[0]
    assert _seq(problem) == seq, problem
    for word in words:
        assert word in problem, problem
    return problem


def _next_judged(records: list[Record], start: int) -> int:
    """Index of the first record at or after ``start`` that is not bookkeeping."""
    return next(i for i in range(start, len(records)) if records[i][0] not in BOOKKEEPING)


def test_the_rechained_copy_itself_verifies(smoke_run, log, tmp_path):
    """The control: re-chaining alone changes nothing verify looks at, so each failure below is
    the forgery's, not the forging's."""
    report = verify_run(forge(smoke_run, log, tmp_path / "run"))
    assert report.ok, report.problems
    assert report.decisions_checked == sum(
        t in ("policy_checked", "stage_stopped", "block_added", "growth_finished", "finetune_started")
        for t, _, _ in log)


# ------------------------------------------------------------------------- (1) the final digest

def test_verify_reads_every_snapshot_without_importing_torch(smoke_run):
    """``autogrow verify`` of a whole run (every snapshot's bytes and metadata, the final
    weights digest) in a fresh interpreter: it passes, and torch was never imported (an audit
    of many runs would pay its import, seconds, for each)."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from autogrow.cli import main\n"
            f"code = main(['verify', {str(smoke_run)!r}])\n"
            "print('exit', code, 'torch' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "exit 0 False", proc.stdout
    assert "snapshots checked" in proc.stdout


def test_forged_final_weights_digest(smoke_run, log, tmp_path):
    """A run_finished whose weights_digest is not the final snapshot's weights (through the CLI:
    exit 1, the seq in its first FAIL line). Fails if the weights_digest comparison in
    verify._check_finish is removed."""
    i = index_of(log, "run_finished")
    log[i][2]["weights_digest"] = hashlib.sha256(b"some other weights").hexdigest()
    run = forge(smoke_run, log, tmp_path / "run")
    final = [k for k, r in enumerate(log) if r[0] == "snapshot_written"][-1]
    _fails_at(verify_run(run), i + 1, f"weights_digest {log[i][2]['weights_digest'][:12]}… does "
              f"not match the final snapshot {log[final][2]['digest'][:12]}…")
    proc = autogrow_cli("verify", str(run))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    fails = [line for line in proc.stdout.splitlines() if line.startswith("FAIL: ")]
    assert fails and fails[0].startswith(f"FAIL: seq {i + 1}: weights_digest"), proc.stdout
    assert proc.stdout.splitlines()[-1].startswith("FAILED:"), proc.stdout


def _final_weights_of(run: Path, digest: str) -> str:
    """weights_digest of the model in snapshot ``digest`` of ``run`` (what run_finished names)."""
    from autogrow.blocks import weights_digest
    from autogrow.storage import SnapshotStore
    from autogrow.storage.layout import MODEL_PREFIX, section

    return weights_digest(section(SnapshotStore(run).get(digest).tensors, MODEL_PREFIX))


@pytest.mark.parametrize("how", ["final snapshot record deleted", "final snapshot record re-pointed"])
def test_final_weights_digest_of_an_earlier_snapshot(smoke_run, log, tmp_path, how):
    """run_finished names the weights of the snapshot before the last (the net before its last
    epoch) and the forger makes that snapshot look final: by deleting the final snapshot_written
    (then run_finished is the first bad record: no snapshot of the final net precedes it), or by
    pointing the final snapshot_written at the earlier file (then that record is the first bad
    one: the file's own metadata names another epoch). Fails if the final-position check in
    verify._check_finish, or the metadata check in verify._check_snapshots, is removed."""
    finish = index_of(log, "run_finished")
    final, earlier = [i for i, r in enumerate(log) if r[0] == "snapshot_written"][-1:-3:-1]
    assert log[final][2]["epoch"] > log[earlier][2]["epoch"]
    log[finish][2]["weights_digest"] = _final_weights_of(smoke_run, log[earlier][2]["digest"])
    if how == "final snapshot record deleted":
        del log[final]
        bad, words = finish, ("run_finished follows no snapshot of the final net",)
    else:
        log[final][2]["digest"] = log[earlier][2]["digest"]
        bad, words = final + 1, (f"epoch {log[earlier][2]['epoch']} step 0, not the",)
    _fails_at(verify_run(forge(smoke_run, log, tmp_path / "run")), bad, *words)


def test_final_snapshot_of_another_arch(smoke_run, log, tmp_path):
    """The final snapshot_written points at a file that holds the final epoch's weights but says
    it is a net of another arch (as the growth snapshot of a last epoch's growth would), and
    run_finished names its weights. Fails if the arch check of the final snapshot in
    verify._check_finish is removed."""
    from autogrow.storage import SnapshotStore

    finish = index_of(log, "run_finished")
    final = max(i for i, r in enumerate(log) if r[0] == "snapshot_written")
    run = forge(smoke_run, log, tmp_path / "run")
    store = SnapshotStore(run)
    snapshot = store.get(log[final][2]["digest"])
    found = log[finish][2]["arch"]
    other = "-".join(str(int(d) + 1) for d in found.split("-"))
    digest = store.put(snapshot.tensors, dict(snapshot.metadata, arch=other))
    log[final][2]["digest"] = digest
    log[finish][2]["weights_digest"] = _final_weights_of(run, digest)
    report = verify_run(forge(smoke_run, log, tmp_path / "run"))
    _fails_at(report, finish + 1, f"holds a {other} net but the run finished with {found}")


# ------------------------------------------------------------------------- (2) the epoch lr

@pytest.mark.parametrize("phase", ["grow", "finetune"])
def test_wrong_lr_on_an_epoch(smoke_run, log, tmp_path, phase):
    """An epoch_completed that claims another learning rate than the run's schedule. Fails if
    the lr check in verify._check_epoch is removed."""
    i = index_of(log, "epoch_completed", where=lambda p: p["phase"] == phase)
    log[i][2]["lr"] = log[i][2]["lr"] * 0.5
    report = verify_run(forge(smoke_run, log, tmp_path / "run"))
    _fails_at(report, i + 1, f"epoch {log[i][2]['epoch']} used lr", "the schedule says")


# ------------------------------------------------------------------------- (3) an extra decision

def test_inserted_stage_stopped_where_nothing_was_owed(smoke_run, log, tmp_path):
    """A stage_stopped slipped in between a check's decisions and the next epoch (the stage that
    grew there is still in the ring, so the stop would fold cleanly). Fails if verify._audit's
    "was not decided by the policy" check accepts a decision nobody owed."""
    grow = index_of(log, "block_added")
    at = index_of(log, "epoch_completed", start=grow)
    stage = log[grow][2]["stage"]
    log.insert(at, ("stage_stopped", 1, {"stage": stage, "delta": 0.0, "reason": "no_improvement"}))
    report = verify_run(forge(smoke_run, log, tmp_path / "run"))
    stop = StageStopped(**log[at][2]).describe()
    _fails_at(report, at + 1, f"stage_stopped ({stop}) was not decided by the policy")


def test_inserted_stage_stopped_inside_a_check(smoke_run, log, tmp_path):
    """A stage_stopped inserted right after a policy check that only grew, before its
    block_added. Fails if verify._audit stops comparing each logged decision with the one the
    policy owes (``ev != expected``)."""
    check = index_of(log, "policy_checked", where=lambda p: p["decision"].startswith("grow"))
    assert log[check + 1][0] == "block_added"
    stage = log[check + 1][2]["stage"]
    log.insert(check + 1, ("stage_stopped", 1,
                           {"stage": stage, "delta": 0.0, "reason": "no_improvement"}))
    report = verify_run(forge(smoke_run, log, tmp_path / "run"))
    stop, grown = StageStopped(**log[check + 1][2]), BlockAdded(**log[check + 2][2])
    _fails_at(report, check + 2, f"the log has stage_stopped ({stop.describe()}) "
              f"but the policy decides block_added ({grown.describe()})")


def test_inserted_stage_stopped_with_the_check_rewritten_to_match(smoke_run, log, tmp_path):
    """As above, but the forger also rewrites the policy check's decision text to announce the
    stop: now the policy check itself is the first bad record. Fails if verify._audit stops
    comparing each logged decision with the one the policy owes (``ev != expected``)."""
    check = index_of(log, "policy_checked", where=lambda p: p["decision"].startswith("grow"))
    stage = log[check + 1][2]["stage"]
    log[check][2]["decision"] = f"stop stage {stage} (no_improvement); " + log[check][2]["decision"]
    log.insert(check + 1, ("stage_stopped", 1,
                           {"stage": stage, "delta": 0.0, "reason": "no_improvement"}))
    report = verify_run(forge(smoke_run, log, tmp_path / "run"))
    _fails_at(report, check + 1, "the log has policy_checked", "the policy decides policy_checked")


# ------------------------------------------------------------------------- (4) a deleted growth

@pytest.mark.parametrize("with_its_snapshot", [False, True])
def test_deleted_block_added(smoke_run, log, tmp_path, with_its_snapshot):
    """A block_added removed (alone, or with the growth snapshot written after it): the next
    record the audit can judge, the following epoch, is the first bad one. Fails if verify._audit
    lets an observation pass while the policy still owes a decision ("came where the policy
    owed"); without that check the epoch's arch check still fails at the same seq, but then the
    report no longer names the missing growth, which this test asserts."""
    # the first growth whose check decided nothing after it (so only the epoch can notice)
    i = index_of(log, "block_added")
    while _next_judged(log, i + 1) != index_of(log, "epoch_completed", start=i):
        i = index_of(log, "block_added", start=i + 1)
    arch = log[i][2]["arch"]
    del log[i]
    if with_its_snapshot:
        assert log[i][0] == "snapshot_written" and log[i][2]["label"] == "growth"
        del log[i]
    epoch = _next_judged(log, i)
    assert log[epoch][0] == "epoch_completed" and log[epoch][2]["arch"] == arch
    report = verify_run(forge(smoke_run, log, tmp_path / "run"))
    _fails_at(report, epoch + 1, "epoch_completed came where the policy owed block_added",
              f"-> {arch}")


# ------------------------------------------------------------------------- (5) a wrong arch

@pytest.mark.parametrize("phase", ["grow", "finetune"])
def test_epoch_trained_another_arch_than_the_decisions_imply(smoke_run, log, tmp_path, phase):
    """An epoch_completed whose arch is not the net the log's decisions built (a grow epoch
    claims the net before its last growth; a fine-tune epoch one block deeper than found).
    Fails if the arch check in verify._check_epoch is removed."""
    if phase == "grow":
        grow = index_of(log, "block_added")
        i = index_of(log, "epoch_completed", start=grow)
        implied = log[grow][2]["arch"]
        stage = log[grow][2]["stage"]
        depths = implied.split("-")
        depths[stage] = str(int(depths[stage]) - 1)
    else:
        i = index_of(log, "epoch_completed", where=lambda p: p["phase"] == "finetune")
        implied = log[i][2]["arch"]
        depths = implied.split("-")
        depths[0] = str(int(depths[0]) + 1)
    assert log[i][2]["arch"] == implied
    claimed = "-".join(depths)
    log[i][2]["arch"] = claimed
    report = verify_run(forge(smoke_run, log, tmp_path / "run"))
    _fails_at(report, i + 1, f"trained {claimed} but the net was {implied}")


# ------------------------------------------------------------------------- (6) a missing decision

@pytest.mark.parametrize("which", ["stage_stopped", "policy_checked", "last stage_stopped"])
def test_missing_decision(smoke_run, log, tmp_path, which):
    """A decision removed from a check: a stage_stopped before a growth, a whole policy check's
    first record, or the stop that emptied the ring (before growth_finished). The record that
    takes its place is the first bad one. Fails if verify._audit stops comparing each logged
    decision with the one the policy owes (``ev != expected``)."""
    if which == "last stage_stopped":
        i = max(k for k, (t, _, _) in enumerate(log) if t == "stage_stopped")
    else:
        i = index_of(log, which)
    type_ = log[i][0]
    del log[i]
    at = _next_judged(log, i)
    assert log[at][0] in ("stage_stopped", "block_added", "growth_finished")
    report = verify_run(forge(smoke_run, log, tmp_path / "run"))
    _fails_at(report, at + 1, f"the log has {log[at][0]}", f"the policy decides {type_}")


def test_run_finished_names_another_arch(smoke_run, log, tmp_path):
    """A run_finished that claims a deeper net than the log's decisions built. Fails if the arch
    check in verify._check_finish is removed."""
    i = index_of(log, "run_finished")
    found = log[i][2]["arch"]
    claimed = "-".join(str(int(d) + 1) for d in found.split("-"))
    log[i][2]["arch"] = claimed
    report = verify_run(forge(smoke_run, log, tmp_path / "run"))
    _fails_at(report, i + 1, f"run_finished names {claimed} but the net is {found}")


# ------------------------------------------------------ (7) what verify reports besides decisions
# The mutation run (docs/testing.md) showed these paths of verify.py unguarded: the counts and
# notes of a clean report, missing, unlogged-missing and damaged snapshot files (each reported,
# and every later one still checked), snapshot metadata that names another label, epoch or step,
# older snapshot files without those keys, a truncated log's notes, a fold error's seq.

def _snapshot_records(log: list[Record]) -> list[int]:
    return [i for i, (t, _, _) in enumerate(log) if t == "snapshot_written"]


def test_a_clean_report_counts_what_it_checked(smoke_run, log):
    from autogrow.storage import SnapshotStore

    report = verify_run(smoke_run)
    kept = {log[i][2]["digest"] for i in _snapshot_records(log)} & set(SnapshotStore(smoke_run).digests())
    pruned = {d for t, _, p in log if t == "snapshots_pruned" for d in p["digests"]}
    assert report.ok and report.run_dir == smoke_run and report.records == len(log)
    assert report.snapshots_checked == len(kept) > 0
    assert report.notes == (f"{len(pruned)} snapshot(s) pruned by the run's retention (logged)",)


def test_missing_and_damaged_snapshot_files_are_each_reported(smoke_run, log, tmp_path):
    """The start snapshot (needed: fork target) deleted, a kept epoch snapshot (not needed, never
    pruned by an event) deleted, and the final one damaged: three problems in seq order, so the
    check goes on after each."""
    from autogrow.storage import SnapshotStore

    run = forge(smoke_run, log, tmp_path / "run")
    store = SnapshotStore(run)
    snaps = _snapshot_records(log)
    start = snaps[0]
    final = snaps[-1]
    lost = [i for i in snaps if log[i][2]["label"] == "epoch" and store.exists(log[i][2]["digest"])][0]
    assert lost != final
    store.path(log[start][2]["digest"]).unlink()
    store.path(log[lost][2]["digest"]).unlink()
    damaged = store.path(log[final][2]["digest"])
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 0xFF
    damaged.write_bytes(bytes(data))
    report = verify_run(run)
    assert [_seq(p) for p in report.problems] == [start + 1, lost + 1, final + 1], report.problems
    assert report.problems[0] == f"seq {start + 1}: snapshot {store.path(log[start][2]['digest'])} is missing"
    assert report.problems[1] == (f"seq {lost + 1}: snapshot {store.path(log[lost][2]['digest'])} is "
                                  "missing and no snapshots_pruned event deleted it (lost or "
                                  "removed by hand)")
    assert "digest" in report.problems[2] or "damaged" in report.problems[2]
    assert report.snapshots_checked == len({log[i][2]["digest"] for i in snaps}
                                           & set(store.digests())) - 1


@pytest.mark.parametrize("key,value", [("label", "growth"), ("epoch", "5"), ("step", "3")])
def test_snapshot_metadata_naming_another_point(smoke_run, log, tmp_path, key, value):
    """The final snapshot file rewritten with one metadata field changed (label, epoch or step)
    and its record re-pointed at it: the record is the first bad one, and the message names the
    point the file holds and the point the record names."""
    from autogrow.storage import SnapshotStore

    final = _snapshot_records(log)[-1]
    run = forge(smoke_run, log, tmp_path / "run")
    store = SnapshotStore(run)
    snapshot = store.get(log[final][2]["digest"])
    meta = dict(snapshot.metadata)
    named = (meta["label"], meta["epoch"], meta["step"])
    meta[key] = value
    log[final][2]["digest"] = store.put(snapshot.tensors, meta)
    forge(smoke_run, log, run)
    problem = _fails_at(verify_run(run), final + 1)
    held = (meta["label"], meta["epoch"], meta["step"])
    assert problem.endswith(f"holds the {held[0]} snapshot of epoch {held[1]} step {held[2]}, not "
                            f"the {named[0]} snapshot of epoch {named[1]} step {named[2]} the "
                            "record names"), problem
    assert f"snapshot {log[final][2]['digest'][:12]}… holds" in problem


def test_snapshot_files_without_point_metadata_are_accepted(smoke_run, log, tmp_path):
    """Snapshots written before the files named their point (no label, epoch, step, arch keys)
    verify: the record's own point is taken (and the final arch from the log)."""
    from autogrow.storage import SnapshotStore

    run = forge(smoke_run, log, tmp_path / "run")
    store = SnapshotStore(run)
    for i in _snapshot_records(log):
        if not store.exists(log[i][2]["digest"]):
            continue
        snapshot = store.get(log[i][2]["digest"])
        meta = {k: v for k, v in snapshot.metadata.items() if k not in ("label", "epoch", "step", "arch")}
        log[i][2]["digest"] = store.put(snapshot.tensors, meta)
    forge(smoke_run, log, run)
    report = verify_run(run)
    assert report.ok, report.problems


def test_a_truncated_log_says_it_was_interrupted(smoke_run, log, tmp_path):
    """Cut right after an epoch: the policy still owes its check (a note, not a problem); cut
    right after a growth snapshot: nothing is owed, the run is not finished."""
    epoch = index_of(log, "epoch_completed", where=lambda p: p["phase"] == "grow")
    owed = verify_run(forge(smoke_run, log[:epoch + 1], tmp_path / "owed"))
    assert owed.ok and owed.notes[-1] == ("the log ends before the policy's policy_checked: the "
                                          "run was interrupted")
    growth = index_of(log, "snapshot_written", where=lambda p: p["label"] == "growth")
    idle = verify_run(forge(smoke_run, log[:growth + 1], tmp_path / "idle"))
    assert idle.notes[-1] == "the run is not finished (it is growing)"
    # the copy lacks the epoch snapshot the full run pruned later: that is its only problem
    assert [p for p in idle.problems if "no snapshots_pruned event" not in p] == []
    assert not any("not finished" in n or "interrupted" in n for n in verify_run(smoke_run).notes)


def test_a_record_the_fold_refuses_is_named(smoke_run, log, tmp_path):
    """An epoch_completed numbered as if an epoch were skipped: the fold's own error, with the
    seq."""
    i = index_of(log, "epoch_completed", where=lambda p: p["phase"] == "finetune")
    log[i][2]["epoch"] += 1
    problem = _fails_at(verify_run(forge(smoke_run, log, tmp_path / "run")), i + 1)
    assert "epoch" in problem


def test_an_lr_off_by_more_than_the_rounding_slack(smoke_run, log, tmp_path):
    """verify allows 1e-12 (relative, at least absolute) for the LR's float arithmetic; 1.5e-12
    off is reported, 0.5e-12 off is not."""
    i = index_of(log, "epoch_completed")
    lr = log[i][2]["lr"]
    log[i][2]["lr"] = lr + 0.5e-12
    assert verify_run(forge(smoke_run, log, tmp_path / "near")).ok
    log[i][2]["lr"] = lr + 1.5e-12
    _fails_at(verify_run(forge(smoke_run, log, tmp_path / "far")), i + 1, "used lr")


def test_verify_reads_only_a_torn_tail_and_a_locked_log(smoke_run, tmp_path):
    """verify opens the log read-only: a torn tail is reported as a note and left in place (not
    set aside, the file byte-identical), and a run whose writer lock another process holds is
    verified all the same."""
    from autogrow.storage import EventLog

    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    path = run / "events.jsonl"
    path.write_bytes(path.read_bytes() + b'{"seq": 99, "ty')
    before = sorted(p.name for p in run.iterdir()), path.read_bytes()
    report = verify_run(run)
    assert report.ok, report.problems
    assert report.notes[0] == ("a torn last record (15 bytes at offset "
                               f"{len(before[1]) - 15}) from a crash; `autogrow resume` sets it aside")
    assert (sorted(p.name for p in run.iterdir()), path.read_bytes()) == before
    locked = tmp_path / "locked"
    shutil.copytree(smoke_run, locked)
    with EventLog.open(locked):  # this process is the run's writer now
        assert verify_run(locked).ok


def test_a_broken_chain_or_an_undecodable_record_is_one_problem(smoke_run, log, tmp_path):
    """A byte changed in the log: one problem (the log's own error naming the line), the intact
    records before it counted and the latest snapshot among them named as the way on (issue 23
    item 5; once 0 records and no way on). A re-chained record of an unknown type: one problem
    naming its seq, the records counted, no snapshot or decision checked."""
    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    path = run / "events.jsonl"
    path.write_bytes(path.read_bytes().replace(b'"epoch_completed"', b'"epoch_complete_"', 1))
    broken = verify_run(run)
    i = index_of(log, "epoch_completed")  # the first one: the damaged line is i + 1
    assert len(broken.problems) == 1 and f"line {i + 1} " in broken.problems[0]
    assert broken.damaged and len(broken.notes) == 1
    assert broken.notes[0].startswith("the latest snapshot before the damage is seq ")
    assert (broken.run_dir, broken.records, broken.snapshots_checked, broken.decisions_checked) == (
        run, i, 0, 0)
    log[i] = ("no_such_event", 1, {})
    odd = verify_run(forge(smoke_run, log, tmp_path / "odd"))
    assert len(odd.problems) == 1 and odd.problems[0].startswith(f"seq {i + 1}: ")
    assert "no_such_event" in odd.problems[0]
    assert (odd.run_dir, odd.records, odd.snapshots_checked, odd.decisions_checked) == (
        tmp_path / "odd", len(log), 0, 0)
    assert odd.notes == ()


@pytest.mark.parametrize("fault", ["missing", "damaged"])
def test_a_snapshot_named_twice_is_reported_once_and_later_files_are_still_read(
        smoke_run, log, tmp_path, fault):
    """The start snapshot's file missing or damaged and its record repeated (bookkeeping may
    repeat), then a later file whose metadata names another epoch: the bad file is one problem,
    and the metadata check of the later file still runs."""
    from autogrow.storage import SnapshotStore

    snaps = _snapshot_records(log)
    start, final = snaps[0], snaps[-1]
    log.insert(start + 1, copy.deepcopy(log[start]))
    final += 1
    run = forge(smoke_run, log, tmp_path / "run")
    store = SnapshotStore(run)
    snapshot = store.get(log[final][2]["digest"])
    log[final][2]["digest"] = store.put(snapshot.tensors, dict(snapshot.metadata, epoch="1"))
    forge(smoke_run, log, run)
    bad = store.path(log[start][2]["digest"])
    if fault == "missing":
        bad.unlink()
    else:
        bad.write_bytes(bad.read_bytes()[:-1] + b"\0")
    problems = verify_run(run).problems
    assert [_seq(p) for p in problems] == [start + 1, final + 1], problems


def test_run_finished_without_any_snapshot_is_a_problem(smoke_run, log, tmp_path):
    """A log with every snapshot_written removed: run_finished's weights cannot be checked
    against anything, which verify reports at run_finished."""
    kept = [r for r in log if r[0] not in ("snapshot_written", "snapshots_pruned")]
    finish = next(i for i, r in enumerate(kept) if r[0] == "run_finished")
    _fails_at(verify_run(forge(smoke_run, kept, tmp_path / "run")), finish + 1,
              "run_finished follows no snapshot of the final net")


def test_a_run_that_failed_where_a_decision_was_owed_is_failed_and_intact(smoke_run, log,
                                                                          tmp_path):
    """run_failed right after an epoch, before the policy check that epoch owes (a disk that
    filled up while appending it): the run failed, it was not forged. verify says so, with the
    reason and the way on, and finds no problem (issue 21, item 7); the same from the command
    line. A decision logged after run_failed with no resume in between is not the run's."""
    epoch = index_of(log, "epoch_completed", where=lambda p: p["phase"] == "grow")
    assert log[epoch + 2][0] == "policy_checked"  # after the epoch's snapshot
    reason = "DiskFull: the file system at /srv is full (No space left on device writing x)"
    cut = log[:epoch + 1] + [("run_failed", 1, {"reason": reason})]
    run = forge(smoke_run, cut, tmp_path / "failed")
    report = verify_run(run)
    assert report.ok and report.problems == (), report.problems
    assert report.failure == reason
    note = (f"the run failed at seq {len(cut)} and is intact up to there ({reason}); once the "
            f"cause is gone, `autogrow resume {run}` continues it from its latest snapshot")
    assert report.notes[-1] == note
    checked = autogrow_cli("verify", str(run))
    assert checked.returncode == 0 and "FAIL" not in checked.stdout, checked.stdout
    assert checked.stdout.splitlines()[-2:] == [
        f"note: {note}", f"OK: {len(cut)} records, 1 snapshots checked, 0 decisions audited"]

    after = cut + [log[epoch + 2]]
    _fails_at(verify_run(forge(smoke_run, after, tmp_path / "decided")), len(after),
              "policy_checked", "was not decided by the policy")


def test_a_directory_that_is_no_run_is_one_problem_and_nothing_read(tmp_path):
    """verify of a path without a log: the storage layer's one line, nothing counted, no note."""
    missing = tmp_path / "nope"
    report = verify_run(missing)
    assert report == Report(missing, (f"{missing} is not a run directory (no events.jsonl); check "
                                      "the path (`autogrow grow --run-dir` starts a new run)",),
                            (), 0, 0, 0)
    assert not report.ok and not report.damaged and report.failure is None


def test_a_log_damaged_before_any_snapshot_offers_no_fork(smoke_run, tmp_path):
    """Line 2 (the start snapshot's record) damaged: one intact record, and the way on is a
    backup or a new run — nothing before the damage can be forked from."""
    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    path = run / "events.jsonl"
    lines = path.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b'"snapshot_written"', b'"snapshot_writte_"', 1)
    path.write_bytes(b"\n".join(lines))
    report = verify_run(run)
    assert (report.records, report.damaged, len(report.problems)) == (1, True, 1)
    assert report.notes == ("no snapshot a fork can start from precedes the damage: restore "
                            "events.jsonl from a backup, or start the run again",)
