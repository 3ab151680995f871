"""``autogrow verify --reexecute``: prove the logged metrics and weights came from the logged run.

The decision audit (:mod:`autogrow.replay.verify`) trusts the logged metrics. This re-executes
logged epochs: load the snapshot an epoch started from, train and evaluate it again with the
run's config through the same code the run loop uses (:mod:`autogrow.engine.steps`), redo the
growths that followed it with their logged seeds, and compare with the log — the epoch's train
and validation loss and accuracy, and the digest of every snapshot the epoch (and its growth)
ended in that is still kept. The final test accuracy is recomputed from the final snapshot.

Runs are deterministic on one machine class (bit-exact resume), so there the standard is
equality. On another machine class (the run's recorded torch version, CPU or GPU differ) the
arithmetic differs in its last bits and grows over an epoch, so the tolerant standard applies
(:data:`TOLERANCES`) and the differences are reported.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import torch

from autogrow.blocks import weights_digest
from autogrow.config import RunConfig
from autogrow.engine import steps
from autogrow.engine.data import DataSplits
from autogrow.engine.device import Execution
from autogrow.engine.distributed import SINGLE, Dist, barrier, broadcast_json
from autogrow.engine.run import RunError, load_data, prepare_execution, software_versions, trainer_for
from autogrow.engine.trainer import EVAL_BUFFERS, Trainer
from autogrow.events import BlockAdded, EpochCompleted, RunFinished, RunStarted, SnapshotWritten
from autogrow.policies import GrowthState, Phase, apply
from autogrow.replay import live_events
from autogrow.storage import EventLog, SnapshotStore
from autogrow.storage.snapshots import snapshot_bytes

STANDARDS = ("auto", "exact", "tolerant")

# The tolerant standard (another machine class): what one re-executed epoch may differ by.
TOLERANCES = {
    "acc_points": 1.0,    # train/val/test accuracy, percentage points
    "loss_rel": 0.02,     # train/val loss, relative to the logged value
    "weight_rel": 0.05,   # each tensor: max |re-executed − stored| ≤ this × max |stored|
}

# Recorded in run_started.versions: equal values = the same arithmetic.
MACHINE_CLASS = ("torch", "device", "cpu", "cpu_capability", "gpu")


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
    """Read the run's live log: each epoch with the snapshots around it."""
    with EventLog.open(run_dir, readonly=True) as event_log:
        events = live_events(event_log.records)
    store = SnapshotStore(run_dir)
    if not events or not isinstance(events[0][1], RunStarted):
        raise RunError(f"{run_dir}: the log does not begin with run_started")
    started = events[0][1]
    config = RunConfig.from_mapping(dict(started.config))
    state = GrowthState()
    start: Snap | None = None           # latest step-0 snapshot
    targets: list[dict[str, Any]] = []
    final: FinalTarget | None = None
    for seq, ev in events:
        if isinstance(ev, SnapshotWritten) and ev.step == 0:
            snap = Snap(seq, ev, store.exists(ev.digest))
            current = targets[-1] if targets else None
            if current is not None and ev.epoch == current["epoch"]:
                current["grown" if current["growths"] else "end"] = snap
            start = snap
        elif isinstance(ev, EpochCompleted):
            origin = start if start is not None and start.event.epoch == ev.epoch - 1 else None
            targets.append({"epoch": ev.epoch, "start": origin, "state": state,
                            "completed": (seq, ev), "end": None, "growths": [], "grown": None})
        elif isinstance(ev, BlockAdded) and targets:
            targets[-1]["growths"].append((seq, ev))
        elif isinstance(ev, RunFinished):
            final = FinalTarget(seq, ev, start if start and start.event.epoch == state.epoch else None)
        state = apply(state, ev)
    epochs = tuple(EpochTarget(epoch=t["epoch"], start=t["start"], state=t["state"],
                               completed=t["completed"], end=t["end"],
                               growths=tuple(t["growths"]), grown=t["grown"]) for t in targets)
    return Plan(started, config, epochs, final)


@attrs.frozen
class Row:
    """One comparison: ``what`` was compared for ``epoch`` (the record at ``seq``)."""

    epoch: str
    seq: int
    what: str
    ok: bool
    detail: str
    compared: bool = True  # False: listed only (the snapshot is pruned)


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


def machine_class(versions: Mapping[str, Any]) -> dict[str, str]:
    """The recorded values that decide the arithmetic (device by kind: "cuda", "cpu")."""
    out = {key: str(versions[key]) for key in MACHINE_CLASS if key in versions}
    if "device" in out:
        out["device"] = out["device"].split(":")[0]
    return out


def choose_standard(requested: str, run_versions: Mapping[str, Any],
                    here: Mapping[str, Any]) -> tuple[str, str]:
    """(standard, why): ``auto`` is exact on the run's machine class, tolerant elsewhere."""
    if requested not in STANDARDS:
        raise ValueError(f"--standard {requested!r}: expected one of {', '.join(STANDARDS)}")
    theirs, ours = machine_class(run_versions), machine_class(here)
    if "cpu" not in theirs:
        same, why = True, "the run does not record its hardware (an older run): assumed this one"
    else:
        differ = [k for k in MACHINE_CLASS if theirs.get(k) != ours.get(k)]
        same = not differ
        why = ("same machine class as the run (" + ", ".join(f"{k} {ours[k]}" for k in ours) + ")"
               if same else "another machine class: " + "; ".join(
                   f"{k} {theirs.get(k, '-')} (run) vs {ours.get(k, '-')} (here)" for k in differ))
    if requested == "auto":
        return ("exact" if same else "tolerant"), why
    return requested, f"asked for; {why}"


def reexecute(run_dir: Path, count: int | None = None, *, standard: str = "auto",
              group: Dist = SINGLE, on_row: Callable[[Row], None] | None = None,
              stop_at_first: bool = True, the_plan: Plan | None = None) -> Outcome:
    """Re-execute ``count`` epochs (None: every one whose start snapshot is kept) and the final
    evaluation, comparing each with the log; stops at the first mismatch by default.

    Under torchrun every rank re-executes (a run's ranks shard batches and BatchNorm statistics,
    so it can only be re-executed with as many processes as it ran with). ``the_plan``: the
    run's :func:`plan`, when the caller has read it already."""
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
    if started.versions.get("precision"):  # "auto" resolves by device: keep the run's own
        config = attrs.evolve(config, precision=str(started.versions["precision"]))
    execution = prepare_execution(config)
    standard, why = choose_standard(standard, started.versions,
                                    software_versions(execution, group))
    compare = Comparer(standard, on_row, stop_at_first, group)
    legacy = legacy_evaluations(started.versions)
    if legacy and standard == "exact":
        compare.eval_standard = "tolerant"
        why += f"; its evaluations are compared tolerantly: {legacy}"
    store = SnapshotStore(run_dir)
    data = load_data(config, execution)
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


def legacy_evaluations(versions: Mapping[str, Any]) -> str:
    """Why a run's logged evaluations cannot be reproduced exactly ("" when they can): a run of
    several processes made before every evaluation used rank 0's buffers evaluated each rank's
    shard with that rank's own BatchNorm statistics, which no snapshot holds."""
    processes = int(versions.get("processes", 1))
    if processes == 1 or versions.get("eval_buffers") == EVAL_BUFFERS:
        return ""
    return (f"the run was made by {processes} processes before every evaluation used rank 0's "
            "BatchNorm statistics on every rank, so each rank evaluated its share with its own "
            "statistics, which no snapshot holds")


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


class Mismatch(Exception):
    """Raised by :class:`Comparer` at the first mismatch when asked to stop there."""


class Comparer:
    """Compares re-executed values with logged ones under one standard and collects rows."""

    def __init__(self, standard: str, on_row: Callable[[Row], None] | None,
                 stop_at_first: bool, group: Dist = SINGLE) -> None:
        self.group = group
        self.standard = standard
        self.eval_standard = standard  # for evaluations (validation, test); see reexecute()
        self.on_row = on_row
        self.stop_at_first = stop_at_first
        self.rows: list[Row] = []

    def row(self, epoch: str, seq: int, what: str, ok: bool, detail: str,
            compared: bool = True) -> None:
        """Record rank 0's verdict on every rank: the run's snapshots hold rank 0's tensors (the
        others' BatchNorm running statistics are of their own shares), and all ranks must stop
        together."""
        if self.group.enabled:
            ok, detail = broadcast_json(self.group, [ok, detail] if self.group.is_main else None)
        row = Row(epoch, seq, what, ok, detail, compared)
        self.rows.append(row)
        if self.on_row is not None:
            self.on_row(row)
        if not ok and self.stop_at_first:
            raise Mismatch(row)

    def metrics(self, epoch: str, seq: int, what: str, redone: tuple[float, float],
                logged: tuple[float, float], origin: str, evaluation: bool = False) -> None:
        """(loss, accuracy) pairs, re-executed from the snapshot ``origin`` names; an
        ``evaluation``'s under the evaluations' standard."""
        (loss, acc), (logged_loss, logged_acc) = redone, logged
        if (self.eval_standard if evaluation else self.standard) == "exact":
            ok = loss == logged_loss and acc == logged_acc
            detail = "equal" if ok else (f"re-executed {origin}: loss {loss!r} acc {acc!r}; "
                                         f"logged loss {logged_loss!r} acc {logged_acc!r}")
        else:
            d_loss = abs(loss - logged_loss) / max(abs(logged_loss), 1e-12)
            d_acc = abs(acc - logged_acc)
            ok = d_loss <= TOLERANCES["loss_rel"] and d_acc <= TOLERANCES["acc_points"]
            detail = f"loss differs by {d_loss:.2%}, acc by {d_acc:.2f} points ({origin})"
        self.row(epoch, seq, what, ok, detail)

    def accuracy(self, epoch: str, seq: int, what: str, redone: float, logged: float) -> None:
        """A final test accuracy (an evaluation) of a run that logged no test loss."""
        if self.eval_standard == "exact":
            ok = redone == logged
            detail = "equal" if ok else f"re-executed {redone!r}, logged {logged!r}"
        else:
            ok = abs(redone - logged) <= TOLERANCES["acc_points"]
            detail = f"differs by {abs(redone - logged):.2f} points"
        self.row(epoch, seq, what, ok, detail)

    def snapshot(self, epoch: str, snap: Snap | None, trainer: Trainer, store: SnapshotStore,
                 arch: str, what: str = "epoch snapshot") -> None:
        """The re-executed tensors of a net of ``arch`` (as logged) against the snapshot ``snap``
        names: its digest (exact) or the largest relative difference per tensor (tolerant). A
        pruned one is listed, not compared (the metrics were)."""
        if snap is None or not snap.kept:
            if snap is not None:
                self.row(epoch, snap.seq, what, True, "not kept (pruned by retention)",
                         compared=False)
            return
        ev = snap.event
        tensors = trainer.state_tensors()
        if self.standard == "exact":
            meta = steps.snapshot_metadata(trainer, arch, ev.epoch, ev.step, ev.label)
            ok = _sha256(snapshot_bytes(tensors, meta)) == ev.digest
            detail = "digest equal" if ok else "digest differs (" + _describe_difference(
                tensors, store.get(ev.digest).tensors) + ")"
        else:
            worst, name = _largest_difference(tensors, store.get(ev.digest).tensors)
            ok = worst <= TOLERANCES["weight_rel"]
            detail = f"largest difference {worst:.2e} of the tensor's scale ({name})"
        self.row(epoch, snap.seq, what, ok, detail)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _largest_difference(redone: Mapping[str, torch.Tensor],
                        stored: Mapping[str, torch.Tensor]) -> tuple[float, str]:
    """(max |a − b| / max |b| over tensors, its name); inf when names, shapes or dtypes differ."""
    if set(redone) != set(stored):
        extra = sorted(set(redone) ^ set(stored))
        return float("inf"), f"tensors differ: {', '.join(extra[:3])}"
    worst, name = 0.0, "none"
    for key, a in redone.items():
        b = stored[key]
        if a.shape != b.shape or a.dtype != b.dtype:
            return float("inf"), f"{key}: {tuple(a.shape)} {a.dtype} vs {tuple(b.shape)} {b.dtype}"
        a64, b64 = a.detach().cpu().double(), b.double()
        scale = b64.abs().max().item() if b64.numel() else 0.0
        diff = (a64 - b64).abs().max().item() if b64.numel() else 0.0
        rel = diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))
        if rel > worst:
            worst, name = rel, key
    return worst, name


def _describe_difference(redone: Mapping[str, torch.Tensor],
                         stored: Mapping[str, torch.Tensor]) -> str:
    worst, name = _largest_difference(redone, stored)
    if worst == 0.0:
        return "the tensors are equal, the metadata is not"
    return f"largest difference {worst:.2e} of the tensor's scale, in {name}"


TABLE_HEADER = f"{'epoch':>6}  {'seq':>5}  {'compared':<34}  result"


def format_row(row: Row) -> str:
    """One row of the table under :data:`TABLE_HEADER`."""
    verdict = "not compared" if not row.compared else "ok" if row.ok else "MISMATCH"
    return f"{row.epoch:>6}  {row.seq:>5}  {row.what:<34}  {verdict}: {row.detail}"
