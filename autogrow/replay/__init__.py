"""Replay: project a run's log into its states at any seq; resume, fork, audit, history, plots,
reports and TensorBoard build on it."""

from autogrow.replay.projection import (
    Step,
    decode_record,
    live_events,
    live_records,
    project,
    state_of,
)

__all__ = ["Step", "decode_record", "live_events", "live_records", "project", "state_of"]
