"""``autogrow history``: a run's epochs, policy checks, growths and stops as a table."""

from __future__ import annotations

from pathlib import Path

import attrs

from autogrow.arch import format_arch
from autogrow.events import (
    BlockAdded,
    EpochCompleted,
    Event,
    FinetuneStarted,
    GrowthFinished,
    PolicyChecked,
    RunFailed,
    RunFinished,
    RunResumed,
    RunStarted,
    RunSuspended,
    StageStopped,
)
from autogrow.policies import GrowthState
from autogrow.replay.projection import decode_record, project
from autogrow.storage import EventLog

#: The event column of each event type the table shows (snapshot bookkeeping is left out).
WHAT = {RunStarted: "start", PolicyChecked: "check", BlockAdded: "GROW", StageStopped: "STOP",
        GrowthFinished: "found", FinetuneStarted: "finetune", RunResumed: "resumed",
        RunSuspended: "suspended", RunFinished: "finished", RunFailed: "failed"}
#: The event types whose epoch the epoch column shows.
DATED = (EpochCompleted, PolicyChecked, GrowthFinished)


@attrs.frozen
class Row:
    seq: int
    what: str
    epoch: str
    arch: str
    detail: str


def _row(seq: int, ev: Event, state: GrowthState) -> Row | None:
    """The row of ``ev``; its arch is the one the event names, else the net's after it."""
    if isinstance(ev, EpochCompleted):
        what = "epoch" if ev.phase == "grow" else "tune"
    elif type(ev) in WHAT:
        what = WHAT[type(ev)]
    else:
        return None
    epoch = str(ev.epoch) if isinstance(ev, DATED) else ""
    arch = getattr(ev, "arch", None) or format_arch(state.arch)
    return Row(seq, what, epoch, arch, ev.describe())


def history_rows(run_dir: Path) -> list[Row]:
    """One row per meaningful live event (snapshot bookkeeping is left out), and every
    suspension, also those a later resume superseded: they are the run's preemptions."""
    with EventLog.open(run_dir, readonly=True) as event_log:
        records = event_log.records
    live = {step.seq: step for step in project(records)}
    rows: list[Row] = []
    state = GrowthState()
    for record in records:
        if record.seq in live:
            _, ev, state = live[record.seq]
        elif record.type == RunSuspended.TYPE:  # superseded: shown with the live state before it
            ev = decode_record(record)
        else:
            continue
        row = _row(record.seq, ev, state)
        if row is not None:
            rows.append(row)
    return rows


def print_history(rows: list[Row]) -> None:
    print(f"{'seq':>5}  {'event':<9} {'epoch':>5}  {'arch':<14} detail")
    for r in rows:
        print(f"{r.seq:>5}  {r.what:<9} {r.epoch:>5}  {r.arch:<14} {r.detail}")
