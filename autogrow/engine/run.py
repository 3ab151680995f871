"""The run loop: fold events → ask the policy what is owed → train/evaluate → append → repeat.

State is never kept beside the log: every event reaches the log through the run's one
:class:`~autogrow.engine.writer.Writer`, which folds it into the state with the same ``apply`` a
replay uses and tells the subscribers (progress lines, the live TensorBoard writer, test hooks);
the next step is read off that state. Snapshots are written (durably) before the event that names
them: one after every epoch (the state just before a policy check, so before any new block) and
one after every growth (just after the new block). How a run begins, resumes or forks is
:mod:`autogrow.engine.lifecycle`; what it is built from, :mod:`autogrow.engine.factories`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import attrs
import structlog

from autogrow.arch import format_arch
from autogrow.blocks import count_flops, count_params, weights_digest
from autogrow.config import LaunchOptions, RunConfig
from autogrow.engine import steps
from autogrow.engine.data import DataSplits, steps_per_epoch
from autogrow.engine.device import Execution
from autogrow.engine.distributed import gather_strings
from autogrow.engine.hooks import Hook, hooks_from_env
from autogrow.engine.preemption import EVALUATION, StopControl, Suspended
from autogrow.engine.progress import EpochProgress
from autogrow.engine.trainer import Trainer
from autogrow.engine.writer import Writer
from autogrow.errors import UserError
from autogrow.events import (
    BlockAdded,
    EpochCompleted,
    Event,
    PolicyChecked,
    RunFailed,
    RunFinished,
    RunSuspended,
    SnapshotWritten,
)
from autogrow.policies import GrowthState, Phase, due
from autogrow.replay.retention import prune_event, remove_snapshots
from autogrow.storage import EventLog, LogRecord, SnapshotStore

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


