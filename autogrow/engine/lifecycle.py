"""A run's lifecycle: start, resume and fork (and what ``--resume-if-exists`` does), each
ending in :meth:`Run.loop <autogrow.engine.run.Run.loop>`.

A new run and a fork begin the same way (:func:`_begin`): ``config.toml``, then ``run_started``,
written by rank 0 through the run's writer. Whatever only rank 0 can decide (the resume plan,
the relaunch action) is decided there and sent to every rank, a refusal included, so every rank
raises the same error instead of waiting for a rank that gave up.

Errors speak the Python API (``run_dir``, ``fork_run(at=…)``); each carries the command line's
words in ``cli`` where they differ (:class:`autogrow.errors.UserError`).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import structlog
import tomli_w
import torch

from autogrow.arch import format_arch
from autogrow.config import RunConfig, coerce
from autogrow.engine.data import DataSplits
from autogrow.engine.device import Execution
from autogrow.engine.distributed import SINGLE, Dist, barrier, broadcast_json
from autogrow.engine.factories import check_data, prepare, record_data, software_versions
from autogrow.engine.relaunch import CONFIG_NAME, fresh, relaunch_plan
from autogrow.engine.run import Controls, Run, RunError, RunResult, result_of
from autogrow.engine.trainer import Trainer
from autogrow.errors import UserError
from autogrow.events import RunResumed, RunStarted, SnapshotWritten, decode, encode
from autogrow.policies import GrowthState, Phase, base_state, fold
from autogrow.replay import decode_record, live_events, state_of
from autogrow.replay.retention import growth_snapshots
from autogrow.storage import EventLog, LogCorrupted, SnapshotStore
from autogrow.storage.layout import PROGRESS_PREFIX, section

log = structlog.get_logger("autogrow")

# Settings that define the net's shape or its inputs: a fork's weights would not fit.
FIXED_IN_FORK = ("family", "seed_arch", "width", "dataset")


def check_new_run_dir(run_dir: Path) -> None:
    """A new run needs a :func:`~autogrow.engine.relaunch.fresh` directory: never write into
    someone else's files."""
    if not fresh(run_dir):
        taken = f"run directory {run_dir} is not empty"
        raise RunError(f"{taken}; pass a new run_dir (or resume_run it if it is a run)",
                       cli=f"{taken}; pick a new --run-dir (or `autogrow resume` it if it is a "
                           "run, or relaunch with --resume-if-exists)")


def _decided(group: Dist, decide: Callable[[], Any]) -> Any:
    """``decide()`` on rank 0, its JSON answer on every rank. A UserError there reaches every
    rank: rank 0 raises it as it is, the others a RunError with its words."""
    answer, refusal = None, None
    if group.is_main:
        try:
            answer = {"ok": decide()}
        except UserError as err:
            refusal = err
            answer = {"error": str(err), "cli": getattr(err, "cli", None)}
    answer = broadcast_json(group, answer)
    if refusal is not None:
        raise refusal
    if "error" in answer:
        raise RunError(answer["error"], cli=answer["cli"])
    return answer["ok"]


@contextlib.contextmanager
def _writer(run_dir: Path, group: Dist, *, create: bool = False) -> Iterator[EventLog | None]:
    """The run's log, opened for writing by rank 0 only (the others get None)."""
    if not group.is_main:
        yield None
        return
    with EventLog.open(run_dir, create=create) as event_log:
        yield event_log


def _begin(run_dir: Path, event_log: EventLog | None, config: RunConfig, execution: Execution,
           data: DataSplits, trainer: Trainer, group: Dist, controls: Controls, *,
           parent: dict[str, Any] | None = None,
           before_event: Callable[[], None] | None = None) -> Run:
    """The one way a run begins, new or forked: rank 0 writes ``config.toml`` (the settings as
    resolved, threads included), then whatever ``before_event`` writes, then an image folder's
    manifest (``data/manifest``), then ``run_started`` (with the data it names and the
    ``parent`` fields of a fork)."""
    stored = attrs.evolve(config, threads=execution.threads).to_dict()
    parent = parent or {}

    def started() -> RunStarted:
        (run_dir / CONFIG_NAME).write_text(tomli_w.dumps({"run": stored}))
        if before_event is not None:
            before_event()
        return RunStarted(run_id=uuid.uuid4().hex, config=stored, seed=config.seed,
                          versions=software_versions(execution, group),
                          data=record_data(data, run_dir), **parent)

    run = Run(run_dir, event_log, config, execution, data, trainer, GrowthState(),
              parent_snapshot=parent.get("parent_snapshot"), controls=controls)
    run.append(started)
    return run


def start_run(config: RunConfig, run_dir: str | Path, group: Dist = SINGLE,
              controls: Controls | None = None) -> RunResult:
    """Start a new run in an empty ``run_dir`` and run it to the end (on every rank of ``group``)."""
    run_dir = Path(run_dir)
    check_new_run_dir(run_dir)
    controls = controls or Controls()
    # fails before anything is written
    execution, data, trainer = prepare(config, group, workers=controls.launch.workers)
    barrier(group)  # every rank has checked the directory before rank 0 creates the run
    with _writer(run_dir, group, create=True) as event_log:
        run = _begin(run_dir, event_log, config, execution, data, trainer, group, controls)
        log.info("run started", run_dir=str(run_dir), data=data.describe()["sizes"],
                 **execution.describe(), processes=group.world_size)
        return run.loop()


def resume_run(run_dir: str | Path, group: Dist = SINGLE,
               controls: Controls | None = None, data_root: str | None = None) -> RunResult:
    """Continue a run from its latest durable snapshot; the result is as if never interrupted.

    With several processes rank 0 reads the log and sends every rank the live events up to the
    snapshot; each rank folds them and loads the snapshot (a shared file system), so the number
    of processes may differ from the interrupted run's.

    The data is the run's: an image folder is read from the run's manifest and must still hold
    exactly its files (under ``data_root`` when given: data that moved), a tensor set's files
    must have the logged digests; other data is refused before anything is written.
    """
    controls = controls or Controls()
    run_dir = Path(run_dir)
    with _writer(run_dir, group) as event_log:
        plan = _decided(group, lambda: _resume_plan(run_dir, event_log))
        events = [decode(*item) for item in plan["events"]]
        state = fold(events)
        digest, step = plan["digest"], plan["step"]
        config = RunConfig.from_mapping(dict(state.run_config))
        if data_root is not None:
            config = attrs.evolve(config, data_root=data_root)
        tensors = SnapshotStore(run_dir).get(digest).tensors if digest else None
        execution, data, trainer = prepare(config, group, arch=format_arch(state.arch),
                                           tensors=tensors, workers=controls.launch.workers,
                                           recorded=(run_dir, plan["data"]), check=False)
        # rank 0 alone compares the data with the run's (one pass over a shared tree, not one
        # per process); a refusal reaches every rank
        _decided(group, lambda: check_data(data, plan["data"]))
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
    """What a resume starts from, as JSON: the live events up to the snapshot and its digest
    (rank 0; raises a UserError when the run cannot resume)."""
    if event_log.torn is not None:
        log.warning("torn record set aside", file=str(event_log.torn.side_file),
                    bytes=event_log.torn.length)
    records = event_log.records
    SnapshotStore(run_dir).clean_temp()  # half-written snapshots of the crash (we hold the lock)
    state = state_of(records)
    if state.phase is Phase.FINISHED:
        finished = f"run {run_dir} has already finished ({state.result.arch}); nothing to resume"
        raise RunError(f"{finished} — fork_run starts a variant",
                       cli=f"{finished} — use `autogrow fork` to start a variant")
    started = decode_record(records[0])
    if not isinstance(started, RunStarted):
        raise RunError(f"{run_dir}: the log does not begin with run_started")
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
            "digest": digest, "step": step, "parent_snapshot": started.parent_snapshot,
            "data": encode(started)[2]["data"]}


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


def _bad_at(rest: str, at: Any) -> RunError:
    """A fork point that does not name a snapshot, in the API's and the command line's words."""
    return RunError(f"fork_run(at={at!r}): {rest}", cli=f"--at {at!r}: {rest}")


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
            raise _bad_at("expected growth:N with N a number", at) from None
        if not 1 <= n <= len(growths):
            raise _bad_at(f"the run has {len(growths)} growth point(s)"
                          + (f"; use growth:1..{len(growths)}" if growths else ""), at)
        return growths[n - 1]
    try:
        seq = int(at)
    except ValueError:
        raise _bad_at("expected a seq number or growth:N", at) from None
    last = records[-1].seq if records else 0
    if not 1 <= seq <= last:
        raise _bad_at(f"the log has no such seq (it has 1..{last})", at)
    if seq not in snap_seqs:
        near = [s for s in snap_seqs if s <= seq][-1:] + [s for s in snap_seqs if s > seq][:1]
        raise _bad_at("that record is not a live snapshot; fork from a snapshot_written seq "
                      f"(nearest: {', '.join(map(str, near)) or 'none'}) or growth:N", at)
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
            rest = (f"a fork keeps the parent's {', '.join(FIXED_IN_FORK)} (its weights would not "
                    "fit); start a new run instead")
            raise RunError(f"fork_run(changes={{{key!r}: …}}): {rest}", cli=f"--set {key}: {rest}")
    base.update({k: coerce(k, v) for k, v in changes.items()})
    config = RunConfig.from_mapping(base).resolved()
    parent_store = SnapshotStore(parent_dir)
    digest = parent_state.last_snapshot.digest
    if not parent_store.exists(digest):
        raise RunError(f"the snapshot at seq {seq} of {parent_dir} was pruned; fork from a growth "
                       "point or a later snapshot")
    snap = parent_store.get(digest)
    # the parent's data, from its manifest (a fork records the same one)
    parent_data = encode(decode_record(records[0]))[2].get("data")
    execution, data, trainer = prepare(config, arch=format_arch(parent_state.arch),
                                       tensors=snap.tensors, workers=controls.launch.workers,
                                       recorded=(parent_dir, parent_data))
    with EventLog.open(run_dir, create=True) as event_log:
        # The fork holds its own copy of the parent's snapshot (same bytes, same digest), so it
        # never depends on the parent's files, even if killed before its first snapshot.
        run = _begin(run_dir, event_log, config, execution, data, trainer, SINGLE, controls,
                     parent={"parent_run_id": parent_state.run_id, "parent_seq": seq,
                             "parent_snapshot": digest, "base_state": base_state(parent_state)},
                     before_event=lambda: SnapshotStore(run_dir).put(snap.tensors, snap.metadata))
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

    def decide() -> str:
        plan = relaunch_plan(run_dir, config)
        if "error" in plan:
            raise RunError(plan["error"])
        return plan["action"]

    return _decided(group, decide)


def finished_result(run_dir: str | Path) -> RunResult:
    """The result of a finished run, read from its log."""
    with EventLog.open(run_dir, readonly=True) as event_log:
        return result_of(Path(run_dir), state_of(event_log.records))


def grow(config: RunConfig, run_dir: str | Path | None = None) -> RunResult:
    """Python API: run AutoGrow with ``config``; a fresh ``runs/<time>`` directory by default."""
    if run_dir is None:
        run_dir = Path("runs") / time.strftime("run-%Y%m%d-%H%M%S")
    return start_run(config.resolved(), run_dir)
