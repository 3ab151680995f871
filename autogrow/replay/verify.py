"""``autogrow verify``: the hash chain, every snapshot, and an audit of every decision.

The audit replays the logged metrics through the same pure policy the run used: after each
``epoch_completed`` it asks :func:`autogrow.policies.due` what the policy owes and checks that the
log's next decisions (policy check, stops, growth, finish) are exactly those, and that nothing was
decided that the policy did not decide.

A run that ended in ``run_failed`` (a full disk, a dead loader worker, a bug) is failed, not
forged: the record may come where the policy still owed a decision (the error stopped the run
before it), and everything before it must hold as in any run. The report says so, with the
reason and the way on, and stays OK; anything after it but a resume is a problem.
"""

from __future__ import annotations

from pathlib import Path

import attrs

from autogrow.arch import format_arch
from autogrow.events import (
    BlockAdded,
    CodecError,
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
    SnapshotsPruned,
    SnapshotWritten,
    StageStopped,
)
from autogrow.policies import GrowthState, Phase, PolicyError, apply, due
from autogrow.replay.projection import decode_record, live_events, live_records
from autogrow.replay.retention import pruned_digests, retained_digests
from autogrow.storage.layout import MODEL_PREFIX
from autogrow.storage import LOG_NAME, EventLog, LogCorrupted, StorageError

DECISIONS = (PolicyChecked, StageStopped, BlockAdded, GrowthFinished, FinetuneStarted)
#: where an image folder's run keeps its manifest (autogrow.engine.data.manifest.MANIFEST_PATH;
#: replay does not import the engine)
MANIFEST_PATH = Path("data") / "manifest"


@attrs.frozen
class Report:
    """What ``verify`` found: ``problems`` make it fail; ``notes`` are for information."""

    run_dir: Path
    problems: tuple[str, ...]
    notes: tuple[str, ...]
    records: int
    snapshots_checked: int
    decisions_checked: int
    failure: str | None = None  # the reason of the run_failed the live log ends in
    damaged: bool = False  # a record failed to verify: ``records`` counts those before it

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_run(run_dir: Path) -> Report:
    problems: list[str] = []
    notes: list[str] = []
    try:
        with EventLog.open(run_dir, readonly=True) as event_log:
            records = event_log.records
            torn = event_log.torn
    except LogCorrupted as err:
        return Report(run_dir, (str(err),), (_way_on(run_dir, err.intact),), len(err.intact),
                      0, 0, damaged=True)
    except StorageError as err:
        return Report(run_dir, (str(err),), (), 0, 0, 0)
    if torn is not None:
        notes.append(f"a torn last record ({torn.length} bytes at offset {torn.offset}) from a crash; "
                     "`autogrow resume` sets it aside")
    events: list[tuple[int, Event]] = []
    for record in records:
        try:
            events.append((record.seq, decode_record(record)))
        except CodecError as err:
            problems.append(f"seq {record.seq}: {err}")
            return Report(run_dir, tuple(problems), tuple(notes), len(records), 0, 0)

    _check_manifest(run_dir, events, problems)
    checked = _check_snapshots(run_dir, records, events, problems, notes)
    live_seqs = {r.seq for r in live_records(records)}
    live = [(seq, ev) for seq, ev in events if seq in live_seqs]
    decisions = _audit(run_dir, live, problems, notes)
    failed = next((ev for _, ev in reversed(live) if isinstance(ev, RunFailed)), None)
    return Report(run_dir, tuple(problems), tuple(notes), len(records), checked, decisions,
                  failed.reason if failed is not None else None)


def _way_on(run_dir: Path, intact) -> str:
    """What can be done with a damaged log: fork from the latest snapshot before the damage
    that a fork can start from (an epoch boundary, its file present), if there is one."""
    from autogrow.storage.snapshots import SnapshotStore

    store = SnapshotStore(run_dir)
    try:
        snaps = [(seq, ev) for seq, ev in live_events(intact)
                 if isinstance(ev, SnapshotWritten) and ev.step == 0 and store.exists(ev.digest)]
    except CodecError:  # the damage reaches into what decodes: nothing to offer safely
        snaps = []
    if not snaps:
        return (f"no snapshot a fork can start from precedes the damage: restore {LOG_NAME} "
                "from a backup, or start the run again")
    seq, ev = snaps[-1]
    return (f"the latest snapshot before the damage is seq {seq} ({ev.describe()}): "
            f"`autogrow fork {run_dir} --at {seq} --run-dir NEW` continues from it")


def _check_manifest(run_dir: Path, events: list[tuple[int, Event]], problems: list[str]) -> None:
    """An image folder's run keeps the list of its files, ``RUN/data/manifest``
    (:mod:`autogrow.engine.data.manifest`): it must be the one ``run_started`` names."""
    import gzip
    import hashlib

    seq, started = events[0] if events else (0, None)
    data = getattr(started, "data", None) if isinstance(started, RunStarted) else None
    if not data or "manifest" not in data:
        return
    path = run_dir / MANIFEST_PATH
    try:
        with gzip.open(path, "rb") as gz:
            digest = hashlib.sha256(gz.read()).hexdigest()
    except FileNotFoundError:
        problems.append(f"seq {seq}: {path}, the list of the run's data, is missing")
        return
    except (OSError, EOFError) as err:
        problems.append(f"seq {seq}: {path} cannot be read: {err}")
        return
    if digest != data["manifest"]:
        problems.append(f"seq {seq}: {path} is not the one run_started names (sha256 "
                        f"{digest[:12]}…, logged {str(data['manifest'])[:12]}…)")


def _check_snapshots(run_dir: Path, records, events, problems: list[str],
                     notes: list[str]) -> int:
    """Every snapshot present must match its digest and be the snapshot its record names (label,
    epoch, step in its metadata); those resume and fork need must be present; any other may be
    missing only if a ``snapshots_pruned`` event names it."""
    from autogrow.storage.snapshots import SnapshotStore

    store = SnapshotStore(run_dir)
    needed = retained_digests(records, keep=1)
    deliberately = pruned_digests(records)
    checked, pruned = 0, 0
    metadata: dict[str, dict[str, str] | None] = {}  # None: missing or damaged (reported once)
    for seq, ev in events:
        if not isinstance(ev, SnapshotWritten):
            continue
        if ev.digest not in metadata:
            metadata[ev.digest] = None
            if not store.exists(ev.digest):
                if ev.digest in needed:
                    problems.append(f"seq {seq}: snapshot {store.path(ev.digest)} is missing")
                elif ev.digest in deliberately:
                    pruned += 1
                else:
                    problems.append(f"seq {seq}: snapshot {store.path(ev.digest)} is missing and no "
                                    "snapshots_pruned event deleted it (lost or removed by hand)")
                continue
            try:
                metadata[ev.digest] = store.read_stored(ev.digest).metadata
                checked += 1
            except StorageError as err:
                problems.append(f"seq {seq}: {err}")
                continue
        # The file's own metadata (covered by its digest) must name the point the record names,
        # so a record cannot pass off an older snapshot as a later one.
        meta = metadata[ev.digest]
        if meta is None:
            continue
        held = (meta.get("label", ev.label), meta.get("epoch", str(ev.epoch)),
                meta.get("step", str(ev.step)))
        if held != (ev.label, str(ev.epoch), str(ev.step)):
            problems.append(f"seq {seq}: snapshot {ev.digest[:12]}… holds the {held[0]} snapshot of "
                            f"epoch {held[1]} step {held[2]}, not the {ev.label} snapshot of epoch "
                            f"{ev.epoch} step {ev.step} the record names")
    if pruned:
        notes.append(f"{pruned} snapshot(s) pruned by the run's retention (logged)")
    return checked


def _audit(run_dir: Path, live: list[tuple[int, Event]], problems: list[str],
           notes: list[str]) -> int:
    state = GrowthState()
    owed: list[Event] = []
    checked = 0
    last_snapshot: SnapshotWritten | None = None
    failed_at = 0
    for seq, ev in live:
        try:
            if isinstance(ev, DECISIONS):
                if not owed:
                    problems.append(f"seq {seq}: {_named(ev)} was not decided by the policy")
                    return checked
                expected = owed.pop(0)
                if ev != expected:
                    problems.append(f"seq {seq}: the log has {_named(ev)} but the policy "
                                    f"decides {_named(expected)}")
                    return checked
                checked += 1
                state = apply(state, ev)
                continue
            if isinstance(ev, RunFailed):  # the run stopped here: what it owed was never decided
                state = apply(state, ev)
                owed = []
                failed_at = seq
                continue
            if isinstance(ev, (SnapshotWritten, RunResumed, RunSuspended, SnapshotsPruned)):
                # bookkeeping, allowed anywhere
                if isinstance(ev, SnapshotWritten):
                    last_snapshot = ev
                state = apply(state, ev)
                continue
            if owed:
                problems.append(f"seq {seq}: {ev.TYPE} came where the policy owed "
                                f"{_named(owed[0])}")
                return checked
            if isinstance(ev, EpochCompleted):
                _check_epoch(seq, state, ev, problems)
            if isinstance(ev, RunFinished):
                _check_finish(run_dir, seq, state, ev, last_snapshot, problems)
            state = apply(state, ev)
            if isinstance(ev, (RunStarted, EpochCompleted)):
                owed = due(state)
        except PolicyError as err:
            problems.append(f"seq {seq}: {err}")
            return checked
    if state.phase is Phase.FAILED:
        notes.append(f"the run failed at seq {failed_at} and is intact up to there "
                     f"({state.failure}); once the cause is gone, `autogrow resume {run_dir}` "
                     "continues it from its latest snapshot")
    elif owed:
        notes.append(f"the log ends before the policy's {owed[0].TYPE}: the run was interrupted")
    elif state.phase is not Phase.FINISHED:
        notes.append(f"the run is not finished (it is {state.phase.value})")
    return checked


def _check_epoch(seq: int, state: GrowthState, ev: EpochCompleted, problems: list[str]) -> None:
    if ev.arch != format_arch(state.arch):
        problems.append(f"seq {seq}: epoch {ev.epoch} trained {ev.arch} but the net was "
                        f"{format_arch(state.arch)}")
    lr = state.learning_rate(ev.phase)
    if abs(ev.lr - lr) > 1e-12 * max(1.0, abs(lr)):
        problems.append(f"seq {seq}: epoch {ev.epoch} used lr {ev.lr} but the schedule says {lr}")


def _check_finish(run_dir: Path, seq: int, state: GrowthState, ev: RunFinished,
                  last_snapshot: SnapshotWritten | None, problems: list[str]) -> None:
    if ev.arch != format_arch(state.arch):
        problems.append(f"seq {seq}: run_finished names {ev.arch} but the net is "
                        f"{format_arch(state.arch)}")
    if last_snapshot is None or (last_snapshot.epoch, last_snapshot.step) != (state.epoch, 0):
        # weights_digest is checked against the last snapshot, so it must be of the final net
        last = ("there is none" if last_snapshot is None else
                f"the last is of epoch {last_snapshot.epoch} step {last_snapshot.step}")
        problems.append(f"seq {seq}: run_finished follows no snapshot of the final net: {last}, "
                        f"the run trained {state.epoch} epochs")
        return
    from autogrow.storage.snapshots import SnapshotStore, stored_weights_digest

    store = SnapshotStore(run_dir)
    if not store.exists(last_snapshot.digest):
        return  # reported by the snapshot check
    try:
        snapshot = store.read_stored(last_snapshot.digest)
    except StorageError:
        return  # reported by the snapshot check
    held = snapshot.metadata.get("arch", format_arch(state.arch))
    if held != format_arch(state.arch):
        problems.append(f"seq {seq}: the final snapshot {last_snapshot.digest[:12]}… holds a "
                        f"{held} net but the run finished with {format_arch(state.arch)}")
    try:
        stored = stored_weights_digest(snapshot, MODEL_PREFIX)
    except StorageError as err:  # an entry of a dtype no snapshot holds
        problems.append(f"seq {seq}: {err}")
        return
    if stored != ev.weights_digest:
        problems.append(f"seq {seq}: weights_digest {ev.weights_digest[:12]}… does not match the "
                        f"final snapshot {last_snapshot.digest[:12]}…")


def _named(ev: Event) -> str:
    """An event as the audit's messages name it: its type, then its one-line description."""
    return f"{ev.TYPE} ({ev.describe()})"
