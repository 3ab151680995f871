"""``autogrow history``: a run's epochs, policy checks, growths and stops as a table."""

from __future__ import annotations

from pathlib import Path

import attrs

from autogrow.events import (
    BlockAdded,
    EpochCompleted,
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
from autogrow.replay.fold import decode_record, live_events
from autogrow.storage import EventLog


@attrs.frozen
class Row:
    seq: int
    what: str
    epoch: str
    arch: str
    detail: str


def history_rows(run_dir: Path) -> list[Row]:
    """One row per meaningful live event (snapshot bookkeeping is left out), and every
    suspension, also those a later resume superseded: they are the run's preemptions."""
    with EventLog.open(run_dir, readonly=True) as event_log:
        records = event_log.records
    live = dict(live_events(records))
    events = [(r.seq, live[r.seq] if r.seq in live else decode_record(r)) for r in records
              if r.seq in live or r.type == RunSuspended.TYPE]
    rows: list[Row] = []
    arch = ""
    for seq, ev in events:
        if isinstance(ev, RunStarted):
            arch = str(ev.config.get("seed_arch", ""))
            lineage = "new run"
            if ev.parent_run_id:
                arch = "-".join(str(d) for d in ev.base_state["arch"])
                lineage = (f"fork of run {ev.parent_run_id} at seq {ev.parent_seq} "
                           f"(snapshot {str(ev.parent_snapshot)[:12]})")
            rows.append(Row(seq, "start", "", arch,
                            f"{ev.config.get('family')} on {ev.config.get('dataset')}, "
                            f"{ev.config.get('policy')} K={ev.config.get('interval')} "
                            f"J={ev.config.get('stop_window')} tau={ev.config.get('tau')}; {lineage}"))
        elif isinstance(ev, EpochCompleted):
            rows.append(Row(seq, "epoch" if ev.phase == "grow" else "tune", str(ev.epoch), ev.arch,
                            f"lr {ev.lr:g}  train {ev.train_acc:6.2f}%  val {ev.val_acc:6.2f}%  "
                            f"({ev.seconds:.1f} s)"))
        elif isinstance(ev, PolicyChecked):
            delta = "-" if ev.stop_delta is None else f"{ev.stop_delta:+.3f}"
            rows.append(Row(seq, "check", str(ev.epoch), arch, f"Δ {delta}: {ev.decision}"))
        elif isinstance(ev, BlockAdded):
            arch = ev.arch
            rows.append(Row(seq, "GROW", "", arch, f"stage {ev.stage} -> {ev.depth} blocks "
                                                   f"({ev.initializer}, seed {ev.init_seed})"))
        elif isinstance(ev, StageStopped):
            rows.append(Row(seq, "STOP", "", arch, f"stage {ev.stage} ({ev.reason})"))
        elif isinstance(ev, GrowthFinished):
            rows.append(Row(seq, "found", str(ev.epoch), ev.arch, "growth finished"))
        elif isinstance(ev, FinetuneStarted):
            rows.append(Row(seq, "finetune", "", ev.arch, f"{ev.epochs} epochs"))
        elif isinstance(ev, RunResumed):
            rows.append(Row(seq, "resumed", "", arch, f"from seq {ev.from_seq}"))
        elif isinstance(ev, RunSuspended):
            at = f"epoch {ev.epoch + 1} step {ev.step}" if ev.step else f"after epoch {ev.epoch}"
            why = "time budget" if ev.signal == "time" else f"SIG{ev.signal}"
            rows.append(Row(seq, "suspended", "", arch, f"{why}, {at}"))
        elif isinstance(ev, RunFinished):
            rows.append(Row(seq, "finished", "", ev.arch,
                            f"val {ev.val_acc:.2f}%  test {ev.test_acc:.2f}%  params {ev.params:,}"
                            f"  FLOPs {ev.flops:,}"))
        elif isinstance(ev, RunFailed):
            rows.append(Row(seq, "failed", "", arch, ev.reason))
    return rows


def print_history(rows: list[Row]) -> None:
    print(f"{'seq':>5}  {'event':<9} {'epoch':>5}  {'arch':<14} detail")
    for r in rows:
        print(f"{r.seq:>5}  {r.what:<9} {r.epoch:>5}  {r.arch:<14} {r.detail}")
