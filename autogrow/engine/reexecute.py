"""``autogrow verify --reexecute``: prove the logged metrics and weights came from the logged run.

The decision audit (:mod:`autogrow.replay.verify`) trusts the logged metrics. This re-executes
logged epochs: load the snapshot an epoch started from, train and evaluate it again with the
run's config through the same code the run loop uses (:mod:`autogrow.engine.steps`), redo the
growths that followed it with their logged seeds, and compare with the log — the epoch's train
and validation loss and accuracy, and the digest of every snapshot the epoch (and its growth)
ended in that is still kept. The final test accuracy is recomputed from the final snapshot.

The comparisons and their standards (equality on the run's machine class, bounds elsewhere) are
in :mod:`autogrow.engine.compare`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from autogrow.blocks import weights_digest
from autogrow.config import RunConfig
from autogrow.engine import steps
from autogrow.engine.compare import Comparer, Mismatch, Row, choose_standard, legacy_evaluations
from autogrow.engine.data import DataSplits
from autogrow.engine.device import Execution
from autogrow.engine.distributed import SINGLE, Dist, barrier
from autogrow.engine.factories import load_data, prepare_execution, software_versions, trainer_for
from autogrow.engine.run import RunError
from autogrow.engine.trainer import Trainer
from autogrow.events import BlockAdded, EpochCompleted, RunFinished, RunStarted, SnapshotWritten
from autogrow.policies import GrowthState, Phase
from autogrow.replay import project
from autogrow.storage import EventLog, SnapshotStore


@attrs.frozen
class Snap:
    """A snapshot_written record and whether its file is still kept."""

    seq: int
    event: SnapshotWritten
    kept: bool


@attrs.frozen
class EpochTarget:
    """One logged epoch and what re-executing it is compared with."""

    epoch: int
    start: Snap | None                     # the step-0 snapshot it started from
    state: GrowthState                     # the fold when it was trained (phase, lr)
    completed: tuple[int, EpochCompleted]
    end: Snap | None                       # its epoch snapshot
    growths: tuple[tuple[int, BlockAdded], ...]
    grown: Snap | None                     # the snapshot after its growths

    @property
    def runnable(self) -> bool:
        return self.start is not None and self.start.kept


@attrs.frozen
class FinalTarget:
    seq: int
    finished: RunFinished
    snapshot: Snap | None


@attrs.frozen
class Plan:
    """What can be re-executed: every logged epoch in order, and the final evaluation."""

    started: RunStarted
    config: RunConfig
    epochs: tuple[EpochTarget, ...]
    final: FinalTarget | None

    def choose(self, count: int | None) -> list[EpochTarget]:
        """``count`` runnable epochs (None: all), a reproducible choice seeded by the run id
        that always includes the last epoch that ended in a growth, when it is runnable."""
        runnable = [t for t in self.epochs if t.runnable]
        if count is None or count >= len(runnable):
            return runnable
        grew = [t for t in self.epochs if t.growths]
        chosen = {grew[-1].epoch} if grew and grew[-1].runnable else set()
        rest = [t.epoch for t in runnable if t.epoch not in chosen]
        rng = random.Random(f"autogrow-reexecute:{self.started.run_id}:{count}")
        chosen.update(rng.sample(rest, max(count - len(chosen), 0)))
        return [t for t in runnable if t.epoch in chosen]

    def unrunnable(self) -> list[EpochTarget]:
        return [t for t in self.epochs if not t.runnable]


def plan(run_dir: Path) -> Plan:
    """Read the run's live log: each epoch with the snapshots around it, and the state it was
    trained in (the projection's state before it)."""
    with EventLog.open(run_dir, readonly=True) as event_log:
        records = event_log.records
    store = SnapshotStore(run_dir)
    steps = project(records)
    first = next(steps, None) if records and records[0].type == RunStarted.TYPE else None
    if first is None or not isinstance(first.event, RunStarted):
        raise RunError(f"{run_dir}: the log does not begin with run_started")
    started = first.event
    config = RunConfig.from_mapping(dict(started.config))
    before = first.state                # the state each event is applied to
    start: Snap | None = None           # latest step-0 snapshot
    targets: list[dict[str, Any]] = []
    final: FinalTarget | None = None
    for seq, ev, after in steps:
        if isinstance(ev, SnapshotWritten) and ev.step == 0:
            snap = Snap(seq, ev, store.exists(ev.digest))
            current = targets[-1] if targets else None
            if current is not None and ev.epoch == current["epoch"]:
                current["grown" if current["growths"] else "end"] = snap
            start = snap
        elif isinstance(ev, EpochCompleted):
            origin = start if start is not None and start.event.epoch == ev.epoch - 1 else None
            targets.append({"epoch": ev.epoch, "start": origin, "state": before,
                            "completed": (seq, ev), "end": None, "growths": [], "grown": None})
        elif isinstance(ev, BlockAdded) and targets:
            targets[-1]["growths"].append((seq, ev))
        elif isinstance(ev, RunFinished):
            at_end = start is not None and start.event.epoch == before.epoch
            final = FinalTarget(seq, ev, start if at_end else None)
        before = after
    epochs = tuple(EpochTarget(epoch=t["epoch"], start=t["start"], state=t["state"],
                               completed=t["completed"], end=t["end"],
                               growths=tuple(t["growths"]), grown=t["grown"]) for t in targets)
    return Plan(started, config, epochs, final)


@attrs.frozen
class Outcome:
    standard: str
    why: str                               # why this standard applies
    rows: tuple[Row, ...]
    skipped: tuple[str, ...]               # what could not be re-executed, and why
    epochs: int                            # epochs re-executed
    seconds: float                         # their re-execution time
    run_seconds: float                     # the same epochs' time in the run (logged)

    @property
    def ok(self) -> bool:
        return all(row.ok for row in self.rows)

    @property
    def first_failure(self) -> Row | None:
        return next((row for row in self.rows if not row.ok), None)


def reexecute(run_dir: Path, count: int | None = None, *, standard: str = "auto",
              group: Dist = SINGLE, on_row: Callable[[Row], None] | None = None,
              stop_at_first: bool = True, the_plan: Plan | None = None,
              data_root: str | None = None) -> Outcome:
    """Re-execute ``count`` epochs (None: every one whose start snapshot is kept) and the final
    evaluation, comparing each with the log; stops at the first mismatch by default.

    Under torchrun every rank re-executes (a run's ranks shard batches and BatchNorm statistics,
    so it can only be re-executed with as many processes as it ran with). ``the_plan``: the
    run's :func:`plan`, when the caller has read it already. The data must be the run's (its
    manifest or source files' digests), under ``data_root`` if it moved."""
    run_dir = Path(run_dir)
    the_plan = the_plan or plan(run_dir)
    config, started = the_plan.config, the_plan.started
    processes = int(started.versions.get("processes", 1))
    if processes != group.world_size:
        raise RunError(
            f"{run_dir} trained in {processes} process(es) and this is {group.world_size}: each "
            "process normalises its own share of every batch (BatchNorm statistics) and the "
            "gradients are summed across them, so the run's arithmetic can only be re-executed "
            f"with {processes}: `torchrun --nproc-per-node {processes} -m autogrow verify "
            f"{run_dir} --reexecute …`")
    if data_root is not None:
        config = attrs.evolve(config, data_root=data_root)
    if started.versions.get("precision"):  # "auto" resolves by device: keep the run's own
        config = attrs.evolve(config, precision=str(started.versions["precision"]))
    execution = prepare_execution(config)
    standard, why = choose_standard(standard, started.versions,
                                    software_versions(execution, group))
    legacy = legacy_evaluations(started.versions)
    eval_standard = standard
    if legacy and standard == "exact":
        eval_standard = "tolerant"
        why += f"; its evaluations are compared tolerantly: {legacy}"
    compare = Comparer(standard, on_row, stop_at_first, group, eval_standard=eval_standard)
    store = SnapshotStore(run_dir)
    data = load_data(config, execution, recorded=(run_dir, started.data))  # the run's data only
    chosen = the_plan.choose(count)
    skipped = [f"epoch {t.epoch}: its start snapshot "
               + ("is not kept (pruned)" if t.start is not None else "was not written")
               for t in the_plan.unrunnable()]
    seconds = run_seconds = 0.0
    done = 0
    try:
        for target in chosen:
            done += 1
            began = time.perf_counter()
            try:
                _redo_epoch(target, store, config, execution, data, group, compare)
            finally:
                seconds += time.perf_counter() - began
                run_seconds += target.completed[1].seconds
        final = the_plan.final
        if final is not None:
            if final.snapshot is not None and final.snapshot.kept:
                _redo_final(final, store, config, execution, data, group, compare)
            else:
                skipped.append("final evaluation: the final snapshot is not kept")
    except Mismatch:
        pass  # the first mismatch ends the re-execution
    barrier(group)  # every rank got here by the same comparisons: leave together
    return Outcome(standard, why, tuple(compare.rows), tuple(skipped), done, seconds, run_seconds)


def _trainer_at(snap: Snap, store: SnapshotStore, config: RunConfig, execution: Execution,
                data: DataSplits, group: Dist) -> Trainer:
    snapshot = store.get(snap.event.digest)
    arch = snapshot.metadata.get("arch")
    if not arch:
        raise RunError(f"seq {snap.seq}: snapshot {snap.event.digest[:12]}… names no arch")
    return trainer_for(config, execution, data, arch, group, snapshot.tensors)


def _redo_epoch(target: EpochTarget, store: SnapshotStore, config: RunConfig,
                execution: Execution, data: DataSplits, group: Dist, compare: Comparer) -> None:
    """Train and evaluate ``target``'s epoch from its start snapshot, then its growths."""
    trainer = _trainer_at(target.start, store, config, execution, data, group)
    state = target.state
    phase = "grow" if state.phase is Phase.GROWING else "finetune"
    seq, logged = target.completed
    label = str(target.epoch)
    train = steps.train_epoch(trainer, data, config, execution, target.epoch,
                              state.learning_rate(phase))
    val = steps.evaluate(trainer, data.val, config, execution)
    origin = f"from snapshot seq {target.start.seq}"
    compare.metrics(label, seq, "train loss, acc", (train.loss, train.acc),
                    (logged.train_loss, logged.train_acc), origin)
    compare.metrics(label, seq, "val loss, acc", (val.loss, val.acc),
                    (logged.val_loss, logged.val_acc), origin, evaluation=True)
    compare.snapshot(label, target.end, trainer, store, logged.arch)
    for _, growth in target.growths:
        steps.grow(trainer, growth, data, config, execution, target.epoch, logged.train_acc)
    if target.growths:
        compare.snapshot(label, target.grown, trainer, store, target.growths[-1][1].arch,
                         what=f"growth (seq {target.growths[0][0]}) snapshot")


def _redo_final(final: FinalTarget, store: SnapshotStore, config: RunConfig,
                execution: Execution, data: DataSplits, group: Dist, compare: Comparer) -> None:
    trainer = _trainer_at(final.snapshot, store, config, execution, data, group)
    test = steps.evaluate(trainer, data.test, config, execution)
    logged = final.finished
    if logged.test_loss is None:  # logged before run_finished had the loss (schema 1)
        compare.accuracy("final", final.seq, "test acc", test.acc, logged.test_acc)
    else:
        compare.metrics("final", final.seq, "test loss, acc", (test.loss, test.acc),
                        (logged.test_loss, logged.test_acc),
                        f"from snapshot seq {final.snapshot.seq}", evaluation=True)
    digest = weights_digest(trainer.net)
    compare.row("final", final.seq, "weights digest", digest == final.finished.weights_digest,
                "equal" if digest == final.finished.weights_digest else
                f"{digest[:12]}… re-executed, {final.finished.weights_digest[:12]}… logged")
