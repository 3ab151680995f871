"""The fold of a run's log: the one way state is derived, live or in replay (DESIGN §4–5)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from autogrow.events import Event, RunResumed, decode
from autogrow.policies import GrowthState, fold
from autogrow.storage import LogRecord


def decode_record(record: LogRecord) -> Event:
    """The event a log record holds."""
    return decode(record.type, record.schema, record.payload)


def live_records(records: Iterable[LogRecord]) -> list[LogRecord]:
    """The records that count: a ``run_resumed`` marker supersedes everything after its snapshot.

    The superseded records stay in the log for audit; the fold skips them.
    """
    live: list[LogRecord] = []
    for record in records:
        if record.type == RunResumed.TYPE:
            from_seq = int(record.payload["from_seq"])
            while live and live[-1].seq > from_seq:
                live.pop()
        live.append(record)
    return live


def live_events(records: Iterable[LogRecord], upto_seq: int | None = None) -> list[tuple[int, Event]]:
    """``(seq, event)`` of the live records with seq <= ``upto_seq`` (all when None)."""
    chosen = [r for r in records if upto_seq is None or r.seq <= upto_seq]
    return [(r.seq, decode_record(r)) for r in live_records(chosen)]


def state_of(records: Sequence[LogRecord], upto_seq: int | None = None) -> GrowthState:
    """The growth state after the live events up to ``upto_seq``."""
    return fold(ev for _, ev in live_events(records, upto_seq))
