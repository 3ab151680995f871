"""Which snapshots a run must keep, and the pruning of the rest (during a run and ``prune``).

Kept: the start snapshot, every growth point (fork targets, ``growth:N``), a fork's base, and the
latest ``keep`` snapshots of the live log (resume takes the latest). Everything else may go. A
deletion is announced first by a ``snapshots_pruned`` event, so ``verify`` tells a deliberate
prune from a lost file; a run therefore holds at most growths + keep + 2 snapshot files (start,
growths, the latest ``keep`` and one being written).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from autogrow.events import Event, SnapshotsPruned, SnapshotWritten, encode
from autogrow.replay.projection import decode_record, live_events
from autogrow.storage import EventLog, LogRecord, SnapshotMissing, SnapshotStore

PINNED_LABELS = ("start", "growth", "fork")


def retained_digests(records: Sequence[LogRecord], keep: int) -> set[str]:
    """Digests that resume, fork and verify need."""
    snaps = [ev for _, ev in live_events(records) if isinstance(ev, SnapshotWritten)]
    kept = {s.digest for s in snaps if s.label in PINNED_LABELS}
    kept.update(s.digest for s in snaps[-max(keep, 1):])
    return kept


def growth_snapshots(events: Sequence[tuple[int, Event]]) -> list[tuple[int, SnapshotWritten]]:
    """``(seq, snapshot)`` of each growth point in order: ``growth:1`` is the first."""
    return [(seq, ev) for seq, ev in events
            if isinstance(ev, SnapshotWritten) and ev.label == "growth"]


def pruned_digests(records: Sequence[LogRecord]) -> set[str]:
    """Every digest a ``snapshots_pruned`` event names, superseded records included (the files
    are gone whether or not a later resume superseded the event)."""
    out: set[str] = set()
    for record in records:
        if record.type == SnapshotsPruned.TYPE:
            out.update(decode_record(record).digests)  # type: ignore[attr-defined]
    return out


def prune_event(records: Sequence[LogRecord], store: SnapshotStore,
                keep: int) -> SnapshotsPruned | None:
    """The ``snapshots_pruned`` event to append before deleting the stored snapshots outside
    the retained set (None when there are none); :func:`remove_snapshots` deletes them once the
    event is logged (a run appends it through its writer, ``prune`` straight to the log)."""
    kept = retained_digests(records, keep)
    doomed = tuple(d for d in store.digests() if d not in kept)
    return SnapshotsPruned(digests=doomed) if doomed else None


def remove_snapshots(store: SnapshotStore, digests: Sequence[str]) -> int:
    """Delete the snapshots a logged ``snapshots_pruned`` event names; returns the bytes freed.

    A crash after the event and before a deletion leaves a file the event names: harmless, the
    next prune removes it; a file already gone is skipped (and not counted).
    """
    freed = 0
    for digest in digests:
        try:
            size = store.path(digest).stat().st_size
            store.remove(digest)
            freed += size
        except (FileNotFoundError, SnapshotMissing):
            pass
    return freed


def prune_snapshots(event_log: EventLog, store: SnapshotStore, keep: int) -> tuple[list[str], int]:
    """:func:`prune_event` appended to ``event_log``, then :func:`remove_snapshots`; returns
    (removed digests, bytes freed). The caller holds the writer lock and no run is going (a
    running run appends the event through its writer)."""
    event = prune_event(event_log.records, store, keep)
    if event is None:
        return [], 0
    event_log.append(*encode(event))
    return list(event.digests), remove_snapshots(store, event.digests)


def prune(run_dir: Path, keep: int) -> tuple[list[str], int]:
    """``autogrow prune``: :func:`prune_snapshots` on a run that is not running (it takes the
    run's writer lock, so it never races a live run), then temp files of crashed writes."""
    with EventLog.open(run_dir) as event_log:
        store = SnapshotStore(run_dir)
        result = prune_snapshots(event_log, store, keep)
        store.clean_temp()
    return result
