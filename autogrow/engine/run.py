"""The run loop: fold events → ask the policy what is owed → train/evaluate → append → repeat.

State is never kept beside the log: every event reaches the log through the run's one
:class:`~autogrow.engine.writer.Writer`, which folds it into the state with the same ``apply`` a
replay uses and tells the subscribers (progress lines, the live TensorBoard writer, test hooks);
the next step is read off that state. Snapshots are written (durably) before the event that names
them: one after every epoch (the state just before a policy check, so before any new block) and
one after every growth (just after the new block).
"""

from __future__ import annotations

import contextlib
import platform
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import structlog
import tomli_w
import torch

import autogrow
from autogrow.arch import format_arch
from autogrow.blocks import count_flops, count_params, weights_digest
from autogrow.config import LaunchOptions, RunConfig, coerce
from autogrow.engine import steps
from autogrow.engine.data import DataSplits, load_dataset, steps_per_epoch
from autogrow.engine.device import Execution, hardware, make_deterministic, resolve_execution
from autogrow.engine.distributed import SINGLE, Dist, barrier, broadcast_json, gather_strings
from autogrow.engine.hooks import Hook, hooks_from_env
from autogrow.engine.preemption import EVALUATION, StopControl, Suspended
from autogrow.engine.progress import EpochProgress
from autogrow.engine.relaunch import CONFIG_NAME, fresh, relaunch_plan
from autogrow.engine.trainer import EVAL_BUFFERS, Trainer
from autogrow.engine.writer import Writer
from autogrow.errors import UserError
from autogrow.events import (
    BlockAdded,
    EpochCompleted,
    Event,
    PolicyChecked,
    RunFailed,
    RunFinished,
    RunResumed,
    RunStarted,
    RunSuspended,
    SnapshotWritten,
    decode,
    encode,
)
from autogrow.policies import GrowthState, Phase, base_state, due, fold
from autogrow.replay import decode_record, live_events, state_of
from autogrow.replay.retention import growth_snapshots, prune_event, remove_snapshots
from autogrow.storage import EventLog, LogCorrupted, LogRecord, SnapshotStore
from autogrow.storage.layout import PROGRESS_PREFIX, section

log = structlog.get_logger("autogrow")


class RunError(UserError, RuntimeError):
    """The run cannot start or continue; the message says why and what to do."""


@attrs.frozen
class Controls:
    """How this process drives a run, not part of the run: when to stop (``stop``: the signals
    and time budget of ``launch``, armed by whoever launches), the launch's options (progress
    lines, loader workers, live TensorBoard), and the test hooks installed on the run when it is
    built (the loop never reads the environment; by default those the environment of the process
    building the controls asks for)."""

    stop: StopControl = attrs.field(factory=StopControl)
    launch: LaunchOptions = attrs.field(factory=LaunchOptions)
    hooks: tuple[Hook, ...] = attrs.field(factory=hooks_from_env, converter=tuple)

    def __attrs_post_init__(self) -> None:
        if self.launch.tensorboard:  # a missing package fails before the run starts
            from autogrow.replay.tensorboard import require_tensorboard
            require_tensorboard()


@attrs.frozen
class RunResult:
    """What a finished run found."""

    run_dir: Path
    run_id: str
    arch: str
    val_acc: float
    test_acc: float
    params: int
    flops: int
    weights_digest: str


def software_versions(execution: Execution, group: Dist = SINGLE) -> dict[str, Any]:
    return {
        "autogrow": autogrow.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processes": group.world_size,
        "eval_buffers": EVAL_BUFFERS,
        **execution.describe(),
        **hardware(execution),
    }


def check_new_run_dir(run_dir: Path) -> None:
    """A new run needs a :func:`~autogrow.engine.relaunch.fresh` directory: never write into
    someone else's files."""
    if not fresh(run_dir):
        raise RunError(f"run directory {run_dir} is not empty; pick a new --run-dir "
                       "(or `autogrow resume` it if it is a run, or relaunch with "
                       "--resume-if-exists)")


def load_data(config: RunConfig, execution: Execution, workers: int | str = "auto") -> DataSplits:
    """The run's data splits on the training device (raises DataError before anything is written)."""
    return load_dataset(
        config.dataset,
        data_root=config.data_root or None,
        download=config.download,
        device=execution.device,
        pad_to=32,
        val_split=config.val_split,
        val_source=config.val_source,
        seed=config.seed,
        subset=config.subset,
        max_val=config.max_val or None,
        max_test=config.max_test or None,
        workers=workers,
        crop_padding=None if config.crop_padding < 0 else config.crop_padding,
    )


class Run:
    """A run directory being written: log, snapshot store, data, trainer and the folded state."""

    def __init__(self, run_dir: Path, event_log: EventLog | None, config: RunConfig,
                 execution: Execution, data: DataSplits, trainer: Trainer, state: GrowthState,
                 parent_snapshot: str | None = None, controls: Controls | None = None) -> None:
        self.run_dir = run_dir
        self.controls = controls or Controls()
        self.stop = self.controls.stop
        self.steps_run = 0  # training steps done by this process (the test pause hook counts them)
        self.group = trainer.group
        self.parent_snapshot = parent_snapshot
        self.resume_progress: tuple[int, dict] | None = None  # (step, sums) of a cut epoch
        self.log = event_log  # None on ranks other than 0: only rank 0 writes
        self.store = SnapshotStore(run_dir)
        self.config = config
        self.execution = execution
        self.data = data
        self.trainer = trainer
        self.writer = Writer(event_log, state, self.group)
        # called on every rank right after a growth, before the ranks compare their weights
        self.growth_hooks: list[Callable[[Run, BlockAdded], None]] = []
        self.writer.subscribe(ProgressLines())
        if self.controls.launch.tensorboard and self.group.is_main:
            from autogrow.replay.tensorboard import LiveTensorBoard
            self.writer.subscribe(LiveTensorBoard(self.controls.launch.tensorboard, run_dir, event_log))
        for install in self.controls.hooks:
            install(self)

    @property
    def state(self) -> GrowthState:
        """The run's state: its log folded (every rank folds rank 0's events)."""
        return self.writer.state

    # -- the log ----------------------------------------------------------------------------

    def append(self, event: Event | Callable[[], Event] | None) -> Event:
        """:meth:`Writer.append <autogrow.engine.writer.Writer.append>`: fold, write (rank 0),
        share with every rank, tell the subscribers; a collective."""
        return self.writer.append(event)

    def snapshot(self, label: str, step: int = 0, progress: dict | None = None) -> None:
        """Write the trainer's tensors durably, then the event that names them.

        ``step`` > 0 marks a snapshot inside epoch ``epoch + 1`` after that many steps; its
        ``progress`` (the epoch's running sums) lets a resume finish the epoch exactly.
        """
        st = self.state

        def stored() -> SnapshotWritten:  # rank 0 writes the snapshot
            meta = steps.snapshot_metadata(self.trainer, format_arch(st.arch), st.epoch, step,
                                           label)
            tensors = self.trainer.state_tensors()
            tensors.update(progress or {})
            started = time.perf_counter()
            digest = self.store.put(tensors, meta)
            self.stop.note_snapshot(time.perf_counter() - started)
            return SnapshotWritten(digest=digest, epoch=st.epoch, step=step, label=label)

        self.append(stored)
        if self.group.is_main:  # bounded disk: drop what neither resume nor fork needs
            pruned = prune_event(self.log.records, self.store, self.config.snapshot_keep)
            if pruned is not None:
                self.writer.append_local(pruned)  # changes no state: the other ranks' stays
                remove_snapshots(self.store, pruned.digests)

    # -- the loop ---------------------------------------------------------------------------

    def loop(self) -> RunResult:
        """Run to the end; an error is recorded as ``run_failed`` (a resume supersedes it).

        The stop signals are caught only while the loop runs: before it (process group, data)
        there is nothing to save, and a signal keeps its default effect of ending the process.
        """
        try:
            with self.stop:
                return self._loop()
        except Suspended:
            raise
        except Exception as err:
            if self.group.is_main and self.log is not None and not self.log.closed:
                with contextlib.suppress(Exception):  # never hide the original error
                    reason = f"{type(err).__name__}: {err}"
                    # rank 0 alone: the other ranks may be gone or inside another collective
                    self.writer.append_local(RunFailed(reason=reason.splitlines()[0][:500]))
            raise
        finally:
            self.writer.close()

    def _loop(self) -> RunResult:
        if self.state.last_snapshot is None:  # a new run, or one killed before its first snapshot
            self.snapshot("fork" if self.parent_snapshot else "start")
        while True:
            owed = due(self.state)
            if owed:
                grew = False
                for event in owed:
                    event = self.append(event)
                    if isinstance(event, BlockAdded):
                        self._grow(event)
                        grew = True
                if grew:
                    self.snapshot("growth")
                continue
            phase = self.state.phase
            if phase is Phase.EVALUATING:
                self.stop.test_pause(EVALUATION)
            if phase in (Phase.GROWING, Phase.FINETUNING, Phase.EVALUATING):
                reason = self.stop.poll(self.group)  # a stop between epochs: nothing to save
                if reason is not None:
                    self._suspend(reason, self.resume_progress[0] if self.resume_progress else 0)
            if phase in (Phase.GROWING, Phase.FINETUNING):
                self._train_epoch()
            elif phase is Phase.EVALUATING:
                return self._finish()
            elif phase is Phase.FINISHED:
                return result_of(self.run_dir, self.state)
            else:
                raise RunError(f"the run is {phase.value}: {self.state.failure}")

    def _train_epoch(self) -> None:
        st, cfg, ex = self.state, self.config, self.execution
        growing = st.phase is Phase.GROWING
        phase = "grow" if growing else "finetune"
        lr = st.learning_rate(phase)
        epoch = st.epoch + 1
        start_step, progress = self.resume_progress or (0, None)
        self.resume_progress = None
        started = time.perf_counter()
        total = steps_per_epoch(len(self.data.train), cfg.batch_size,
                                steps.drop_last(self.data, cfg, self.trainer))
        bar = EpochProgress(f"epoch {epoch} ({phase}, {format_arch(st.arch)})", total=total,
                            initial=start_step, images_per_step=cfg.batch_size,
                            log_every=self.controls.launch.log_every, enabled=self.group.is_main)
        last_boundary = [time.perf_counter()]

        def after_step(step: int, sums: Callable[[], dict]) -> None:
            now = time.perf_counter()
            self.stop.note_step(now - last_boundary[0])
            last_boundary[0] = now
            bar.update(step)
            self._step_boundary(step, total, sums)

        try:
            train = steps.train_epoch(self.trainer, self.data, cfg, ex, epoch, lr,
                                      start_step=start_step, progress=progress,
                                      after_step=after_step)
        finally:
            bar.close()
        val = steps.evaluate(self.trainer, self.data.val, cfg, ex)
        seconds = time.perf_counter() - started
        self.append(EpochCompleted(
            phase=phase, epoch=epoch, arch=format_arch(st.arch), lr=lr, train_loss=train.loss,
            train_acc=train.acc, val_loss=val.loss, val_acc=val.acc, seconds=round(seconds, 3)))
        self.snapshot("epoch")

    def _step_boundary(self, step: int, total: int, sums: Callable[[], dict]) -> None:
        """After each training step: a stop request (agreed by all ranks) suspends the run here;
        otherwise a step snapshot every ``snapshot_every_steps``."""
        self.steps_run += 1
        self.stop.test_pause(self.steps_run)
        reason = self.stop.poll(self.group)
        if reason is not None:
            self._suspend(reason, step, sums)
        every = self.config.snapshot_every_steps
        if every > 0 and step % every == 0 and step != total:
            self.snapshot("step", step, sums())

    def _suspend(self, reason: str, step: int, sums: Callable[[], dict] | None = None) -> None:
        """Make this point durable (a snapshot unless the latest one is it), log
        ``run_suspended`` and unwind with :class:`Suspended`."""
        st = self.state
        last = st.last_snapshot
        if sums is not None and not (last and last.epoch == st.epoch and last.step == step):
            self.snapshot("suspend", step, sums())
        self.append(RunSuspended(signal=reason, epoch=st.epoch, step=step))
        if self.group.is_main:
            log.warning("run suspended", reason=reason, epoch=st.epoch, step=step,
                        run_dir=str(self.run_dir))
        raise Suspended(reason, st.epoch, step)

    def _grow(self, event: BlockAdded) -> None:
        group = self.group
        last = self.state.last_epoch
        info = steps.grow(self.trainer, event, self.data, self.config, self.execution,
                          self.state.epoch, last.train_acc if last else None)
        if "adam" in info:
            log.info("adam_init", **{k: v for k, v in info["adam"].items()
                                     if isinstance(v, (int, float, str))})
        for hook in self.growth_hooks:
            hook(self, event)
        if group.enabled:  # every rank must now hold the very same net
            digests = gather_strings(group, weights_digest(self.trainer.net))
            if len(set(digests)) != 1:
                raise RunError(f"after growth {event.growth_index} the ranks' weights differ "
                               f"({', '.join(d[:12] for d in digests)}); the run cannot continue")
            log.info("ranks agree", growth=event.growth_index, weights_digest=digests[0][:16],
                     ranks=group.world_size)

    def _finish(self) -> RunResult:
        net = self.trainer.net
        test = steps.evaluate(self.trainer, self.data.test, self.config, self.execution)
        val_acc = self.state.last_epoch.val_acc if self.state.last_epoch else 0.0
        self.append(lambda: RunFinished(
            arch=net.arch, val_acc=val_acc, test_acc=test.acc, params=count_params(net),
            flops=count_flops(net), weights_digest=weights_digest(net), test_loss=test.loss))
        return result_of(self.run_dir, self.state)


class ProgressLines:
    """Subscriber: the log lines of a run's epochs, policy checks and end (every rank logs them;
    the CLI shows rank 0's)."""

    def on_event(self, record: LogRecord | None, event: Event, state: GrowthState) -> None:
        if isinstance(event, EpochCompleted):
            log.info("epoch", epoch=event.epoch, phase=event.phase, arch=event.arch, lr=event.lr,
                     train_acc=round(event.train_acc, 2), val_acc=round(event.val_acc, 2),
                     seconds=round(event.seconds, 1))
        elif isinstance(event, PolicyChecked):
            best = max(state.val_history) if state.val_history else 0.0
            log.info("policy check", epoch=event.epoch, arch=format_arch(state.arch),
                     val_acc=round(state.val_history[-1], 2), best=round(best, 2),
                     delta=event.stop_delta, decision=event.decision)
        elif isinstance(event, RunFinished):
            log.info("run finished", arch=event.arch, val_acc=round(event.val_acc, 2),
                     test_acc=round(event.test_acc, 2), params=event.params, flops=event.flops)

    def close(self) -> None:
        pass


def result_of(run_dir: Path, state: GrowthState) -> RunResult:
    res = state.result
    if res is None:
        raise RunError(f"run {run_dir} has not finished")
    return RunResult(run_dir=run_dir, run_id=state.run_id, arch=res.arch, val_acc=res.val_acc,
                     test_acc=res.test_acc, params=res.params, flops=res.flops,
                     weights_digest=res.weights_digest)


def trainer_for(config: RunConfig, execution: Execution, data: DataSplits, arch: str,
                group: Dist = SINGLE, tensors: dict | None = None) -> Trainer:
    """A trainer for ``arch``: the seed net's init, or a snapshot's ``tensors`` when given."""
    trainer = Trainer.seeded(
        execution, family=config.family, arch=arch, in_channels=data.in_channels,
        num_classes=data.num_classes, image_size=data.image_size, width=config.width,
        seed=config.seed, momentum=config.momentum, weight_decay=config.weight_decay,
        weight_init=config.weight_init_scheme, group=group)
    if tensors is not None:
        trainer.load_state_tensors(tensors)
    return trainer


def start_run(config: RunConfig, run_dir: str | Path, group: Dist = SINGLE,
              controls: Controls | None = None) -> RunResult:
    """Start a new run in an empty ``run_dir`` and run it to the end (on every rank of ``group``)."""
    run_dir = Path(run_dir)
    check_new_run_dir(run_dir)
    controls = controls or Controls()
    # fails before anything is written
    execution, data, trainer = _prepare(config, group, workers=controls.launch.workers)
    barrier(group)  # every rank has checked the directory before rank 0 creates the run
    with _writer(run_dir, group, create=True) as event_log:
        stored = attrs.evolve(config, threads=execution.threads).to_dict()

        def started() -> RunStarted:  # rank 0 writes config.toml, then the event
            (run_dir / CONFIG_NAME).write_text(tomli_w.dumps({"run": stored}))
            return RunStarted(run_id=uuid.uuid4().hex, config=stored, seed=config.seed,
                              versions=software_versions(execution, group))

        run = Run(run_dir, event_log, config, execution, data, trainer, GrowthState(),
                  controls=controls)
        run.append(started)
        log.info("run started", run_dir=str(run_dir), data=data.describe()["sizes"],
                 **execution.describe(), processes=group.world_size)
        return run.loop()


@contextlib.contextmanager
def _writer(run_dir: Path, group: Dist, *, create: bool = False) -> Iterator[EventLog | None]:
    """The run's log, opened for writing by rank 0 only (the others get None)."""
    if not group.is_main:
        yield None
        return
    with EventLog.open(run_dir, create=create) as event_log:
        yield event_log


def _prepare(config: RunConfig, group: Dist = SINGLE, *, arch: str | None = None,
             tensors: dict | None = None,
             workers: int | str = "auto") -> tuple[Execution, DataSplits, Trainer]:
    """Execution settings, data and a trainer; the trainer's tensors come from a snapshot if given.

    Everything here can fail on bad input (no device, no data) before the caller writes a byte.
    """
    execution = prepare_execution(config)
    data = load_data(config, execution, workers)
    trainer = trainer_for(config, execution, data, arch or config.seed_arch, group, tensors)
    return execution, data, trainer


def prepare_execution(config: RunConfig) -> Execution:
    """The run's device, precision and threads, with deterministic kernels set up for them."""
    execution = resolve_execution(config.device, config.precision, config.channels_last,
                                  config.threads, config.deterministic)
    make_deterministic(execution)
    torch.manual_seed(config.seed)  # for code outside the engine; the engine never draws from it
    return execution


def resume_run(run_dir: str | Path, group: Dist = SINGLE,
               controls: Controls | None = None) -> RunResult:
    """Continue a run from its latest durable snapshot; the result is as if never interrupted.

    With several processes rank 0 reads the log and sends every rank the live events up to the
    snapshot; each rank folds them and loads the snapshot (a shared file system), so the number
    of processes may differ from the interrupted run's.
    """
    controls = controls or Controls()
    run_dir = Path(run_dir)
    with _writer(run_dir, group) as event_log:
        plan = _resume_plan(run_dir, event_log) if group.is_main else None
        plan = broadcast_json(group, plan)
        if "error" in plan:
            raise RunError(plan["error"])
        events = [decode(*item) for item in plan["events"]]
        state = fold(events)
        digest, step = plan["digest"], plan["step"]
        config = RunConfig.from_mapping(dict(state.run_config))
        tensors = SnapshotStore(run_dir).get(digest).tensors if digest else None
        execution, data, trainer = _prepare(config, group, arch=format_arch(state.arch),
                                            tensors=tensors, workers=controls.launch.workers)
        run = Run(run_dir, event_log, config, execution, data, trainer, state,
                  parent_snapshot=plan["parent_snapshot"], controls=controls)
        if step > 0:
            progress = {PROGRESS_PREFIX + k: v for k, v in section(tensors, PROGRESS_PREFIX).items()}
            if not group.is_main:  # rank 0 carries the global sums; the others add to them
                progress = {k: torch.zeros_like(v) for k, v in progress.items()}
            run.resume_progress = (step, progress)
        run.append(RunResumed(from_seq=plan["from_seq"], snapshot=digest or ""))
        log.info("run resumed", run_dir=str(run_dir), from_seq=plan["from_seq"], epoch=state.epoch,
                 arch=format_arch(state.arch), processes=group.world_size)
        return run.loop()


def _resume_plan(run_dir: Path, event_log: EventLog) -> dict[str, Any]:
    """What a resume starts from, as JSON: the live events up to the snapshot and its digest."""
    if event_log.torn is not None:
        log.warning("torn record set aside", file=str(event_log.torn.side_file),
                    bytes=event_log.torn.length)
    records = event_log.records
    SnapshotStore(run_dir).clean_temp()  # half-written snapshots of the crash (we hold the lock)
    state = state_of(records)
    if state.phase is Phase.FINISHED:
        return {"error": f"run {run_dir} has already finished ({state.result.arch}); "
                         "nothing to resume — use `autogrow fork` to start a variant"}
    started = decode_record(records[0])
    if not isinstance(started, RunStarted):
        return {"error": f"{run_dir}: the log does not begin with run_started"}
    snapshot_seq = _latest_snapshot_seq(records, SnapshotStore(run_dir))
    digest, step = started.parent_snapshot, 0
    if snapshot_seq is None:
        # Killed before the first snapshot: start over from the run's own first event (a fork
        # from the parent snapshot it copied in before writing that event).
        snapshot_seq = 1
    events = live_events(records, snapshot_seq)
    last = fold(ev for _, ev in events).last_snapshot
    if last is not None:
        digest, step = last.digest, last.step
    if digest:
        SnapshotStore(run_dir).get(digest)  # verify it now: a damaged snapshot stops the resume
    return {"events": [list(encode(ev)) for _, ev in events], "from_seq": snapshot_seq,
            "digest": digest, "step": step, "parent_snapshot": started.parent_snapshot}


def _latest_snapshot_seq(records, store: SnapshotStore) -> int | None:
    """The seq of the latest live snapshot whose file is on disk.

    The latest one always is after a crash (a snapshot is deleted only after a later one is
    durably logged), but a log that lost more than its torn last record may name snapshots its
    lost records had pruned: the resume then goes back to the latest one that exists (the
    result is the same, only more is redone) and says so.
    """
    for seq, ev in reversed(live_events(records)):
        if isinstance(ev, SnapshotWritten):
            if store.exists(ev.digest):
                return seq
            log.warning("snapshot named by the log is missing; resuming from an earlier one",
                        seq=seq, digest=ev.digest[:12], hint="`autogrow verify` reports it")
    return None


# Settings that define the net's shape or its inputs: a fork's weights would not fit.
FIXED_IN_FORK = ("family", "seed_arch", "width", "dataset")


def fork_point(records, at: str) -> int:
    """The seq of the snapshot ``at`` names: ``growth:N`` (1-based) or a snapshot_written seq."""
    events = live_events(records)
    growths = [seq for seq, _ in growth_snapshots(events)]
    # A snapshot inside an epoch holds weights the fork's state (epoch boundaries) cannot describe.
    snap_seqs = [seq for seq, ev in events if isinstance(ev, SnapshotWritten) and ev.step == 0]
    if at.startswith("growth:"):
        try:
            n = int(at.split(":", 1)[1])
        except ValueError:
            raise RunError(f"--at {at!r}: expected growth:N with N a number") from None
        if not 1 <= n <= len(growths):
            raise RunError(f"--at {at}: the run has {len(growths)} growth point(s)"
                           + (f"; use growth:1..{len(growths)}" if growths else ""))
        return growths[n - 1]
    try:
        seq = int(at)
    except ValueError:
        raise RunError(f"--at {at!r}: expected a seq number or growth:N") from None
    last = records[-1].seq if records else 0
    if not 1 <= seq <= last:
        raise RunError(f"--at {seq}: the log has no such seq (it has 1..{last})")
    if seq not in snap_seqs:
        near = [s for s in snap_seqs if s <= seq][-1:] + [s for s in snap_seqs if s > seq][:1]
        raise RunError(f"--at {seq}: that record is not a live snapshot; fork from a "
                       f"snapshot_written seq (nearest: {', '.join(map(str, near)) or 'none'}) "
                       "or growth:N")
    return seq


def fork_run(parent_dir: str | Path, at: str, changes: dict[str, Any],
             run_dir: str | Path, controls: Controls | None = None) -> RunResult:
    """A new run starting from the parent's snapshot at ``at`` with ``changes`` to its config."""
    parent_dir, run_dir = Path(parent_dir), Path(run_dir)
    controls = controls or Controls()
    check_new_run_dir(run_dir)
    try:
        with EventLog.open(parent_dir, readonly=True) as parent_log:
            records = parent_log.records
        seq = fork_point(records, at)
    except LogCorrupted as damage:
        # the records before the damage verify from genesis: a snapshot among them is sound
        try:
            seq = fork_point(damage.intact, at)
        except RunError:
            raise damage from None  # its message says where the damage is and what to do
        records = damage.intact
        log.warning("parent log damaged: forking from a snapshot before the damage",
                    intact_records=len(records), damage=str(damage).splitlines()[0])
    parent_state = state_of(records, seq)
    base = dict(parent_state.run_config)
    for key in changes:
        if key in FIXED_IN_FORK and str(changes[key]) != str(base.get(key)):
            raise RunError(f"--set {key}: a fork keeps the parent's {', '.join(FIXED_IN_FORK)} "
                           "(its weights would not fit); start a new run instead")
    base.update({k: coerce(k, v) for k, v in changes.items()})
    config = RunConfig.from_mapping(base).resolved()
    parent_store = SnapshotStore(parent_dir)
    digest = parent_state.last_snapshot.digest
    if not parent_store.exists(digest):
        raise RunError(f"the snapshot at seq {seq} of {parent_dir} was pruned; fork from a growth "
                       "point or a later snapshot")
    snap = parent_store.get(digest)
    execution, data, trainer = _prepare(config, arch=format_arch(parent_state.arch),
                                        tensors=snap.tensors, workers=controls.launch.workers)
    with EventLog.open(run_dir, create=True) as event_log:
        stored = attrs.evolve(config, threads=execution.threads).to_dict()
        (run_dir / CONFIG_NAME).write_text(tomli_w.dumps({"run": stored}))
        # The fork holds its own copy of the parent's snapshot (same bytes, same digest), so it
        # never depends on the parent's files, even if killed before its first snapshot.
        SnapshotStore(run_dir).put(snap.tensors, snap.metadata)
        run = Run(run_dir, event_log, config, execution, data, trainer, GrowthState(),
                  parent_snapshot=digest, controls=controls)
        run.append(RunStarted(run_id=uuid.uuid4().hex, config=stored, seed=config.seed,
                              versions=software_versions(execution),
                              parent_run_id=parent_state.run_id, parent_seq=seq,
                              parent_snapshot=digest, base_state=base_state(parent_state)))
        log.info("run forked", parent=str(parent_dir), at=seq, run_dir=str(run_dir),
                 arch=format_arch(parent_state.arch), changes=changes)
        return run.loop()


def relaunch_action(config: RunConfig, run_dir: str | Path, group: Dist = SINGLE) -> str:
    """What ``--resume-if-exists`` does with ``run_dir`` (decided by rank 0, told to every rank):
    ``"start"`` a new run, ``"resume"`` the run there (it was started with this very config),
    or report it as ``"finished"``. A run with other settings raises :class:`RunError` naming
    them, and nothing is touched. This makes the same command safe to relaunch (job scripts,
    ``torchrun --max-restarts``, a requeue)."""
    run_dir = Path(run_dir)
    plan = broadcast_json(group, relaunch_plan(run_dir, config) if group.is_main else None)
    if "error" in plan:
        raise RunError(plan["error"])
    return plan["action"]


def finished_result(run_dir: str | Path) -> RunResult:
    """The result of a finished run, read from its log."""
    with EventLog.open(run_dir, readonly=True) as event_log:
        return result_of(Path(run_dir), state_of(event_log.records))


def grow(config: RunConfig, run_dir: str | Path | None = None) -> RunResult:
    """Python API: run AutoGrow with ``config``; a fresh ``runs/<time>`` directory by default."""
    if run_dir is None:
        run_dir = Path("runs") / time.strftime("run-%Y%m%d-%H%M%S")
    return start_run(config.resolved(), run_dir)


