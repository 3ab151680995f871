"""Which snapshots a run must keep, and ``autogrow prune`` for the rest.

Kept: the start snapshot, every growth point (fork targets, ``growth:N``), a fork's base, and the
latest ``keep`` snapshots of the live log (resume takes the latest). Everything else may go; the
log still names it, and ``verify`` accepts a missing snapshot only when it is not in this set.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from autogrow.events import Event, SnapshotWritten
from autogrow.replay.fold import live_events
from autogrow.storage import EventLog, LogRecord, SnapshotStore

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


def prune(run_dir: Path, keep: int) -> tuple[list[str], int]:
    """Delete snapshots outside the retained set; returns (removed digests, bytes freed).

    Takes the run's writer lock so it never races a live run.
    """
    with EventLog.open(run_dir) as event_log:
        kept = retained_digests(event_log.records, keep)
        store = SnapshotStore(run_dir)
        removed, freed = [], 0
        for digest in store.digests():
            if digest not in kept:
                freed += store.path(digest).stat().st_size
                store.remove(digest)
                removed.append(digest)
        store.clean_temp()
    return removed, freed
