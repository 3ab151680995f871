"""The one way an event reaches a run's log while the run is going: :class:`Writer`.

Every event a run writes goes through :meth:`Writer.append` (or, where no collective is
possible, :meth:`Writer.append_local`): it is folded into the state with the policy's own
``apply`` first (an event that does not fit raises before it is written), appended to the log by
rank 0, shared with the other ranks, and handed with the state after it to every
:class:`Subscriber` (TensorBoard, progress lines, test hooks), which are attached from outside
the loop and never write to the log themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from autogrow.engine.distributed import SINGLE, Dist, broadcast_json
from autogrow.events import Event, decode, encode
from autogrow.policies import GrowthState, apply
from autogrow.storage import EventLog, LogRecord


class Subscriber(Protocol):
    """Told of every event a run appends, after it is folded (on every rank that folds it)."""

    def on_event(self, record: LogRecord | None, event: Event, state: GrowthState) -> None:
        """``event`` was appended as ``record`` (None on ranks other than 0, which do not write)
        and ``state`` is the run's state after it."""

    def close(self) -> None:
        """The run loop is over (finished, suspended or failed)."""


class Writer:
    """A run's log (rank 0's; None on the other ranks), its folded state and its subscribers."""

    def __init__(self, event_log: EventLog | None, state: GrowthState,
                 group: Dist = SINGLE) -> None:
        self.log = event_log
        self.state = state
        self.group = group
        self.subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.append(subscriber)

    def append(self, event: Event | Callable[[], Event] | None) -> Event:
        """Fold, write, share, notify; returns the event every rank folded (rank 0's).

        A collective: every rank calls it at the same point. ``event`` may be a function that
        makes it, called on rank 0 only (an event only rank 0 can make, such as one naming a
        snapshot it wrote); other ranks' ``event`` only says that they take part.
        """
        record = None
        if self.group.is_main:
            event = event() if callable(event) else event
            state, record = self._write(event)
        if self.group.enabled:
            sent = broadcast_json(self.group, list(encode(event)) if self.group.is_main else None)
            if not self.group.is_main:
                event = decode(*sent)
                state = apply(self.state, event)
        return self._notify(record, event, state)

    def append_local(self, event: Event) -> Event:
        """Fold, write and notify on rank 0 alone, sharing nothing: for an event written where
        the other ranks cannot take part (``run_failed``: they may be gone or inside another
        collective) or need not (``snapshots_pruned`` changes no state, see
        :func:`~autogrow.policies.apply`, so the other ranks' state stays rank 0's)."""
        if not self.group.is_main:
            raise RuntimeError("only rank 0 writes the log")
        state, record = self._write(event)
        return self._notify(record, event, state)

    def close(self) -> None:
        """Close every subscriber (the run loop is over)."""
        for subscriber in self.subscribers:
            subscriber.close()

    def _write(self, event: Event) -> tuple[GrowthState, LogRecord]:
        state = apply(self.state, event)  # before the write: an event that does not fit raises
        return state, self.log.append(*encode(event))

    def _notify(self, record: LogRecord | None, event: Event, state: GrowthState) -> Event:
        self.state = state
        for subscriber in self.subscribers:
            subscriber.on_event(record, event, state)
        return event
