"""The projection of a run's log (``autogrow.replay.projection``) and what is built on it in
process: each live event with the state after it, the live records a resume leaves, ``history``'s
rows and the report's summary. Synthetic logs, made by the policy itself, so every test is fast."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from autogrow.events import (
    BlockAdded,
    EpochCompleted,
    Event,
    RunFinished,
    RunResumed,
    RunStarted,
    RunSuspended,
    SnapshotWritten,
    encode,
)
from autogrow.policies import GrowthState, Phase, PolicyError, apply, base_state, fold
from autogrow.replay import Step, live_events, live_records, project, state_of
from autogrow.replay.history import history_rows
from autogrow.replay.report import summarize_run
from autogrow.storage import EventLog, LogRecord
from tests.test_policies import _run

CONFIG = dict(family="plain3net", dataset="fashionmnist", policy="periodic", interval=1,
              stop_window=1, tau=0.5, finetune_epochs=1, seed_arch="1-1-1", lr=0.01, seed=3)
# grows stage 0 and 1 after epochs 1 and 2; after 3 stops stage 1 and grows 2, after 4 stops 2
# and grows 0, after 5 stops 0 (the ring is empty) and fine-tunes 3-2-2 in epoch 6
ACCURACIES = [10.0, 20.0, 20.1, 20.2, 20.3, 30.0]
FINISHED = RunFinished(arch="3-2-2", val_acc=30.0, test_acc=29.0, params=1, flops=2,
                       weights_digest="d" * 64)


def _snapshot(epoch: int) -> SnapshotWritten:
    return SnapshotWritten(digest=f"{epoch:064x}", epoch=epoch, step=0)


def _events() -> list[Event]:
    """A whole run as the policy makes it, with the snapshot each epoch starts from."""
    _, log = _run(CONFIG, ACCURACIES)
    out: list[Event] = []
    for event in log:
        if isinstance(event, EpochCompleted):
            out.append(_snapshot(event.epoch - 1))
        out.append(event)
    return [*out, _snapshot(len(ACCURACIES)), FINISHED]


def _write(run_dir: Path, events: list[Event]) -> tuple[LogRecord, ...]:
    with EventLog.open(run_dir, create=True, fsync=False) as log:
        for event in events:
            log.append(*encode(event))
        return log.records


def _snapshot_index(events: list[Event], epoch: int) -> int:
    """Where the snapshot of the end of ``epoch`` (the start of the next) is in ``events``."""
    return next(i for i, ev in enumerate(events)
                if isinstance(ev, SnapshotWritten) and ev.epoch == epoch)


def _resumed(events: list[Event], cut: int) -> list[Event]:
    """``events`` with a preemption after index ``cut`` (a snapshot): the next three events are
    logged, then a suspension and a resume from that snapshot; the run then goes on the same."""
    assert isinstance(events[cut], SnapshotWritten)
    resume = RunResumed(from_seq=cut + 1, snapshot=events[cut].digest)
    return [*events[:cut + 1], *events[cut + 1:cut + 4],
            RunSuspended(signal="TERM", epoch=2, step=5), resume, *events[cut + 1:]]


def _without_first_growth(events: list[Event]) -> list[Event]:
    """An edited log: the first growth deleted, so stage 0's second growth does not fold."""
    first = next(i for i, ev in enumerate(events) if isinstance(ev, BlockAdded))
    return events[:first] + events[first + 1:]


@pytest.fixture
def events() -> list[Event]:
    return _events()


def test_each_live_event_comes_with_the_state_after_it(tmp_path, events):
    records = _write(tmp_path / "run", events)
    steps = list(project(records))
    assert [(s.seq, s.event) for s in steps] == list(enumerate(events, start=1))
    assert [s.state for s in steps] == [fold(events[:i]) for i in range(1, len(events) + 1)]
    seq, event, state = steps[0]  # a step unpacks as (seq, event, state)
    assert isinstance(steps[0], Step) and (seq, event) == (1, events[0])
    assert state.phase is Phase.GROWING and steps[-1].state.phase is Phase.FINISHED


def test_events_a_resume_superseded_are_left_out(tmp_path, events):
    cut = _snapshot_index(events, 2)
    records = _write(tmp_path / "run", _resumed(events, cut))
    steps = list(project(records))
    marker = cut + 6  # the run_resumed record: after the snapshot, three events, the suspension
    assert [s.seq for s in steps] == [*range(1, cut + 2), *range(marker, len(records) + 1)]
    assert isinstance(steps[cut + 1].event, RunResumed)
    assert [s.event for s in steps if not isinstance(s.event, RunResumed)] == events
    assert steps[-1].state == fold(events)
    assert [seq for seq, _ in live_events(records)] == [s.seq for s in steps]


def test_up_to_a_seq_and_from_a_state(tmp_path, events):
    """``upto_seq`` stops the projection; ``state`` continues it from where an earlier one left
    off (the live TensorBoard writer, record by record)."""
    records = _write(tmp_path / "run", events)
    whole = list(project(records))
    head = list(project(records, upto_seq=9))
    assert head == whole[:9] and state_of(records, 9) == head[-1].state
    tail, state = [], head[-1].state
    for record in records[9:]:
        (step,) = project([record], state=state)
        tail.append(step)
        state = step.state
    assert head + tail == whole


def test_state_of_is_the_last_state(tmp_path, events):
    records = _write(tmp_path / "run", events)
    assert state_of(records) == fold(events) == list(project(records))[-1].state
    assert state_of(()) == GrowthState() and list(project(())) == []


def test_an_event_that_does_not_fit_is_named_by_its_seq(tmp_path, events):
    """The steps before it come out; the error names the seq and says what the fold says."""
    grow = next(i for i, ev in enumerate(events) if isinstance(ev, BlockAdded))
    forged = list(events)
    forged[grow] = BlockAdded(stage=0, depth=3, arch="3-1-1", initializer="gau", init_seed=1,
                              growth_index=0)
    records = _write(tmp_path / "run", forged)
    seen = []
    with pytest.raises(PolicyError) as err:
        for step in project(records):
            seen.append(step.seq)
    assert seen == list(range(1, grow + 1))
    with pytest.raises(PolicyError) as direct:
        apply(fold(forged[:grow]), forged[grow])
    assert str(err.value) == f"seq {grow + 1}: {direct.value}"
    assert str(direct.value) == "stage 0 has 1 blocks; cannot grow to 3"


def test_a_resume_marker_drops_the_records_after_its_snapshot(tmp_path, events):
    cut = _snapshot_index(events, 0)
    twice = _resumed(_resumed(events, cut), cut)  # resumed again from the same snapshot
    records = _write(tmp_path / "run", twice)
    live = live_records(records)
    markers = [r.seq for r in records if r.type == RunResumed.TYPE]
    assert len(markers) == 2
    # the second marker drops the first (it came after the snapshot), and keeps itself
    assert [r.seq for r in live][:cut + 2] == [*range(1, cut + 2), markers[1]]
    assert [r.seq for r in live][cut + 2:] == list(range(markers[1] + 1, len(records) + 1))


# -- history, built on the projection ---------------------------------------------------------

def test_history_rows_say_each_event_once_with_the_net_after_it(tmp_path, events):
    """One row per live event but snapshots, and the suspension a resume superseded; the detail
    is the event's description, the arch the one it names or else the net after it."""
    cut = _snapshot_index(events, 2)
    resumed = _resumed(events, cut)
    _write(tmp_path / "run", resumed)
    rows = history_rows(tmp_path / "run")
    assert all(row.detail == resumed[row.seq - 1].describe() for row in rows)
    assert [(row.seq, row.what, row.epoch, row.arch) for row in rows] == [
        (1, "start", "", "1-1-1"),
        (3, "epoch", "1", "1-1-1"), (4, "check", "1", "1-1-1"), (5, "GROW", "", "2-1-1"),
        (7, "epoch", "2", "2-1-1"), (8, "check", "2", "2-1-1"), (9, "GROW", "", "2-2-1"),
        # seq 11-13 (epoch 3, its check and stop) were superseded by the resume from seq 10
        (14, "suspended", "", "2-2-1"), (15, "resumed", "", "2-2-1"),
        (16, "epoch", "3", "2-2-1"), (17, "check", "3", "2-2-1"), (18, "STOP", "", "2-2-1"),
        (19, "GROW", "", "2-2-2"),
        (21, "epoch", "4", "2-2-2"), (22, "check", "4", "2-2-2"), (23, "STOP", "", "2-2-2"),
        (24, "GROW", "", "3-2-2"),
        (26, "epoch", "5", "3-2-2"), (27, "check", "5", "3-2-2"), (28, "STOP", "", "3-2-2"),
        (29, "found", "5", "3-2-2"), (30, "finetune", "", "3-2-2"),
        (32, "tune", "6", "3-2-2"), (34, "finished", "", "3-2-2"),
    ]


def test_history_of_a_fork_starts_from_its_parent_net(tmp_path, events):
    cut = _snapshot_index(events, 2)
    parent = fold(events[:cut + 1])
    fork = RunStarted(run_id="fork", config=CONFIG, seed=3, parent_run_id="parent",
                      parent_seq=cut + 1, parent_snapshot=events[cut].digest,
                      base_state=base_state(parent))
    _write(tmp_path / "fork", [fork, *events[cut + 1:]])
    first = history_rows(tmp_path / "fork")[0]
    assert (first.what, first.arch) == ("start", "-".join(map(str, parent.arch)))
    assert first.detail == fork.describe() and "fork of run parent at seq" in first.detail


def test_history_of_a_log_that_does_not_fold_names_the_seq(tmp_path, events):
    _write(tmp_path / "run", _without_first_growth(events))
    with pytest.raises(PolicyError, match=r"^seq \d+: stage 0 has 1 blocks; cannot grow to 3$"):
        history_rows(tmp_path / "run")


# -- the report's summary, built on the projection --------------------------------------------

def test_a_summary_is_the_projection_of_the_log(tmp_path, events):
    cut = _snapshot_index(events, 2)
    _write(tmp_path / "run", _resumed(events, cut))
    run = summarize_run(tmp_path / "run")
    epochs = [ev for ev in events if isinstance(ev, EpochCompleted)]
    assert (run.status, run.kind, run.arch, run.layers) == ("finished", "grow", "3-2-2", 9)
    assert (run.grow_epochs, run.finetune_epochs) == (5, 1) == (
        sum(e.phase == "grow" for e in epochs), sum(e.phase == "finetune" for e in epochs))
    assert (run.test_acc, run.params, run.run_id, run.parent_run_id) == (29.0, 1, "t", None)
    assert run.family == "plain3net" and run.config["tau"] == 0.5


def test_a_summary_of_a_log_that_does_not_fold_is_unreadable(tmp_path, events):
    _write(tmp_path / "run", _without_first_growth(events))
    run = summarize_run(tmp_path / "run")
    assert run.status == "unreadable"
    assert re.fullmatch(r"seq \d+: stage 0 has 1 blocks; cannot grow to 3", run.detail)
