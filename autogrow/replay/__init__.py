"""Replay: fold events into state at any seq; resume, fork, audit, history and plots build on it."""

from autogrow.replay.fold import decode_record, live_events, live_records, state_of

__all__ = ["decode_record", "live_events", "live_records", "state_of"]
