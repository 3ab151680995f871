"""Snapshot retention (``replay/retention.py``): which snapshots a run keeps, that growth points
and fork bases are never pruned, and that every deletion is logged before it happens.

In-process tests on small logs written here and on a copy of the session's smoke run, fast
enough for ``make mutate`` to run them against every mutant; the bound on disk use during a
real run is in ``test_preemption.py``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from autogrow.events import Event, RunResumed, SnapshotsPruned, SnapshotWritten, encode
from autogrow.replay import decode_record, live_events
from autogrow.replay.retention import (
    growth_snapshots,
    prune,
    prune_event,
    prune_snapshots,
    pruned_digests,
    remove_snapshots,
    retained_digests,
)
from autogrow.replay.verify import verify_run
from autogrow.storage import EventLog, LogLocked, SnapshotMissing, SnapshotStore
from autogrow.storage.snapshots import TEMP_PREFIX, TEMP_SUFFIX

# (label, epoch) of the snapshots of a grown and forked run, in log order
LABELS = [("start", 0), ("epoch", 1), ("growth", 1), ("epoch", 2), ("epoch", 3), ("growth", 3),
          ("fork", 3), ("epoch", 4), ("epoch", 5), ("epoch", 6)]


def _snapshots(run_dir: Path, count: int) -> list[str]:
    """``count`` stored snapshots of different sizes (so freed bytes tell which were deleted)."""
    store = SnapshotStore(run_dir)
    return [store.put({"w": torch.zeros(i + 1)}) for i in range(count)]


def _write_log(run_dir: Path, events: list[Event]) -> None:
    with EventLog.open(run_dir, create=True, fsync=False) as event_log:
        for event in events:
            event_log.append(*encode(event))


def _run(run_dir: Path) -> dict[str, str]:
    """A log of :data:`LABELS`' snapshots, each stored; ``{"start": d, "growth1": d, ...}``
    by label and epoch."""
    digests = _snapshots(run_dir, len(LABELS))
    _write_log(run_dir, [SnapshotWritten(digest=d, epoch=e, step=0, label=label)
                         for d, (label, e) in zip(digests, LABELS)])
    return {f"{label}{e}" if label != "start" else label: d
            for d, (label, e) in zip(digests, LABELS)}


def _records(run_dir: Path):
    with EventLog.open(run_dir, readonly=True) as event_log:
        return event_log.records


@pytest.mark.parametrize("keep, latest", [(2, ["epoch5", "epoch6"]), (1, ["epoch6"]),
                                          (0, ["epoch6"]), (3, ["epoch4", "epoch5", "epoch6"])])
def test_kept_are_the_start_growths_fork_base_and_the_latest_keep(tmp_path, keep, latest):
    """``keep`` below 1 still keeps the latest snapshot: resume needs it."""
    d = _run(tmp_path)
    pinned = ["start", "growth1", "growth3", "fork3"]
    assert retained_digests(_records(tmp_path), keep) == {d[k] for k in pinned + latest}


def test_the_latest_are_counted_among_pinned_ones_too(tmp_path):
    """A growth snapshot that is also the latest is one of the ``keep`` latest."""
    digests = _snapshots(tmp_path, 3)
    _write_log(tmp_path, [SnapshotWritten(digest=digests[0], epoch=0, step=0, label="start"),
                          SnapshotWritten(digest=digests[1], epoch=1, step=0, label="epoch"),
                          SnapshotWritten(digest=digests[2], epoch=1, step=0, label="growth")])
    assert retained_digests(_records(tmp_path), 1) == {digests[0], digests[2]}
    assert retained_digests(_records(tmp_path), 2) == set(digests)


def test_superseded_snapshots_are_neither_pinned_nor_latest(tmp_path):
    """After a resume from an earlier snapshot, what the abandoned branch wrote (even a growth)
    no longer counts: the live run resumes and forks from its own snapshots."""
    digests = _snapshots(tmp_path, 5)
    start, e1, e2, grown, e3 = digests
    _write_log(tmp_path, [
        SnapshotWritten(digest=start, epoch=0, step=0, label="start"),     # seq 1
        SnapshotWritten(digest=e1, epoch=1, step=0, label="epoch"),        # seq 2
        SnapshotWritten(digest=e2, epoch=2, step=0, label="epoch"),        # seq 3
        SnapshotWritten(digest=grown, epoch=2, step=0, label="growth"),    # seq 4, superseded
        RunResumed(from_seq=2, snapshot=e1),                               # seq 5
        SnapshotWritten(digest=e3, epoch=2, step=0, label="epoch"),        # seq 6
    ])
    records = _records(tmp_path)
    assert retained_digests(records, 2) == {start, e1, e3}
    assert growth_snapshots(live_events(records)) == []


def test_growth_snapshots_are_the_growth_points_in_order(tmp_path):
    d = _run(tmp_path)
    found = growth_snapshots(live_events(_records(tmp_path)))
    assert [(seq, ev.digest) for seq, ev in found] == [(3, d["growth1"]), (6, d["growth3"])]
    assert all(isinstance(ev, SnapshotWritten) for _, ev in found)


def test_pruned_digests_include_superseded_prunes(tmp_path):
    """A resume supersedes the event, not the deletion: the files are gone either way."""
    a, b, c = _snapshots(tmp_path, 3)
    _write_log(tmp_path, [
        SnapshotWritten(digest=a, epoch=0, step=0, label="start"),      # seq 1
        SnapshotsPruned(digests=(b,)),                                  # seq 2, superseded
        RunResumed(from_seq=1, snapshot=a),                             # seq 3
        SnapshotsPruned(digests=(c,)),                                  # seq 4
    ])
    assert pruned_digests(_records(tmp_path)) == {b, c}
    assert pruned_digests(_records(tmp_path)[:1]) == set()


def test_prune_event_is_the_event_to_append_and_touches_nothing(tmp_path):
    """During a run the event goes through the run's writer: ``prune_event`` only names the
    doomed snapshots (None when there are none); ``remove_snapshots`` deletes them after."""
    d = _run(tmp_path)
    store = SnapshotStore(tmp_path)
    before, records = sorted(store.digests()), _records(tmp_path)
    event = prune_event(records, store, 2)
    doomed = sorted([d["epoch1"], d["epoch2"], d["epoch3"], d["epoch4"]])
    assert event == SnapshotsPruned(digests=tuple(doomed))
    assert sorted(store.digests()) == before and _records(tmp_path) == records
    sizes = sum(store.path(x).stat().st_size for x in doomed)
    assert remove_snapshots(store, event.digests) == sizes
    assert sorted(store.digests()) == sorted(set(before) - set(doomed))
    assert prune_event(records, store, 2) is None


def test_prune_deletes_the_rest_after_logging_each_deletion(tmp_path):
    d = _run(tmp_path)
    orphan = _snapshots(tmp_path, len(LABELS) + 1)[-1]   # stored, never logged: a crash's leftover
    store = SnapshotStore(tmp_path)
    sizes = {digest: store.path(digest).stat().st_size for digest in store.digests()}
    expected = sorted([d["epoch1"], d["epoch2"], d["epoch3"], d["epoch4"], orphan])
    with EventLog.open(tmp_path, fsync=False) as event_log:
        before = len(event_log)
        remove = store.remove

        def logged_then_removed(digest: str) -> None:
            last = decode_record(event_log.records[-1])
            assert isinstance(last, SnapshotsPruned) and digest in last.digests
            remove(digest)

        store.remove = logged_then_removed  # type: ignore[method-assign]
        removed, freed = prune_snapshots(event_log, store, 2)
        assert (removed, freed) == (expected, sum(sizes[x] for x in expected))
        assert len(event_log) == before + 1
        assert decode_record(event_log.records[-1]) == SnapshotsPruned(digests=tuple(expected))
        assert sorted(store.digests()) == sorted(set(sizes) - set(expected))
        assert prune_snapshots(event_log, store, 2) == ([], 0)   # nothing left to prune
        assert len(event_log) == before + 1                      # and nothing logged


def test_a_snapshot_already_gone_is_named_but_not_counted(tmp_path, monkeypatch):
    """A file gone between the listing and its deletion (a crash mid-prune, another prune)
    does not stop the others; only bytes really freed are counted."""
    d = _run(tmp_path)
    store = SnapshotStore(tmp_path)
    ghost = "f" * 64                               # listed, no file: stat fails
    vanishing = d["epoch2"]                        # stat works, the removal finds it gone
    listed = store.digests()
    monkeypatch.setattr(store, "digests", lambda: sorted(listed + [ghost]))
    remove = store.remove

    def remove_or_vanish(digest: str) -> None:
        if digest == vanishing:
            raise SnapshotMissing(digest)
        remove(digest)

    monkeypatch.setattr(store, "remove", remove_or_vanish)
    sizes = {x: store.path(x).stat().st_size for x in (d["epoch1"], d["epoch3"], d["epoch4"])}
    with EventLog.open(tmp_path, fsync=False) as event_log:
        removed, freed = prune_snapshots(event_log, store, 2)
    assert removed == sorted([d["epoch1"], vanishing, d["epoch3"], d["epoch4"], ghost])
    assert freed == sum(sizes.values())
    assert not any(store.exists(x) for x in sizes) and store.exists(vanishing)


def test_prune_of_a_finished_run_keeps_what_resume_fork_and_verify_need(smoke_run, tmp_path):
    """``autogrow prune``: every growth point, the start and the latest stay; the run still
    verifies (the pruned files are explained by the event); temp files of crashed writes go."""
    run = tmp_path / "run"
    shutil.copytree(smoke_run, run, ignore=shutil.ignore_patterns(".lock"))
    records = _records(run)
    snaps = [ev for _, ev in live_events(records) if isinstance(ev, SnapshotWritten)]
    must_stay = {s.digest for s in snaps if s.label in ("start", "growth")} | {snaps[-1].digest}
    store = SnapshotStore(run)
    temp = store.dir / f"{TEMP_PREFIX}crashed{TEMP_SUFFIX}"
    temp.write_bytes(b"half a snapshot")
    before = set(store.digests())
    removed, freed = prune(run, 1)
    assert set(removed) == before - must_stay and removed and freed > 0
    assert set(store.digests()) == must_stay and not temp.exists()
    pruned = decode_record(_records(run)[-1])
    assert pruned == SnapshotsPruned(digests=tuple(removed))
    assert verify_run(run).ok
    assert prune(run, 1) == ([], 0)


def test_prune_refuses_while_a_run_holds_the_log_and_deletes_nothing(smoke_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(smoke_run, run, ignore=shutil.ignore_patterns(".lock"))
    before = SnapshotStore(run).digests()
    with EventLog.open(run, fsync=False):
        with pytest.raises(LogLocked):
            prune(run, 1)
    assert SnapshotStore(run).digests() == before
