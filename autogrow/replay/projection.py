"""A run's log projected: the live records, and each live event with the state after it.

The one way replay derives state (DESIGN §4-5): :func:`project` folds the live events through the
policy's own :func:`~autogrow.policies.apply`, as the run loop does, and yields each with the
state it leaves. History, the report, TensorBoard and re-execution's plan are built on it; the
audit (``verify``) folds event by event itself, because it judges each event against the state
before it first.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

from autogrow.events import Event, RunResumed, decode
from autogrow.policies import GrowthState, PolicyError, apply
from autogrow.storage import LogRecord


class Step(NamedTuple):
    """One live event of a run and the growth state after it."""

    seq: int
    event: Event
    state: GrowthState


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


def project(records: Iterable[LogRecord], upto_seq: int | None = None, *,
            state: GrowthState | None = None) -> Iterator[Step]:
    """Each live event up to ``upto_seq`` (all when None), in log order, with the state after it.

    ``state`` is where the fold starts (a fresh run when None): a writer that follows a log
    record by record passes the state its last step left. Raises :class:`PolicyError`, naming
    the seq, at the first event that does not fit (a run's own events fit; an edited log may
    not, and ``verify`` says how).
    """
    state = GrowthState() if state is None else state
    for seq, event in live_events(records, upto_seq):
        try:
            state = apply(state, event)
        except PolicyError as err:
            raise PolicyError(f"seq {seq}: {err}") from err
        yield Step(seq, event, state)


def state_of(records: Sequence[LogRecord], upto_seq: int | None = None) -> GrowthState:
    """The growth state after the live events up to ``upto_seq``."""
    state = GrowthState()
    for step in project(records, upto_seq):
        state = step.state
    return state
