"""Forging a run as someone who knows the log format would: edit records, re-chain the log.

Used by the audit tests (``test_verify_audit``, ``test_reexecute``): the hash chain of a forged
log is valid, so only the audit (or its re-execution) can tell.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from autogrow.storage import EventLog

Record = tuple[str, int, dict[str, Any]]  # (type, schema, payload) of one log record


def read_records(run_dir: Path) -> list[Record]:
    """A run's records as (type, schema, payload)."""
    with EventLog.open(run_dir, readonly=True) as log:
        return [(r.type, r.schema, r.payload) for r in log.records]


def forge(source: Path, records: list[Record], target: Path) -> Path:
    """A run directory with ``source``'s snapshots and config and a log of ``records``,
    re-chained (every prev and hash recomputed). An existing ``target`` keeps its snapshots and
    gets the new log."""
    if target.exists():  # a forged run whose snapshots the test changed: rewrite its log only
        (target / "events.jsonl").unlink()
    else:
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("events.jsonl", ".lock"))
    with EventLog.open(target, create=True, fsync=False) as out:
        for type_, schema, payload in records:
            out.append(type_, schema, payload)
    (target / ".lock").unlink(missing_ok=True)
    return target


def index_of(records: list[Record], type_: str, start: int = 0, where=lambda payload: True) -> int:
    """Index of the first record of ``type_`` at or after ``start`` whose payload fits ``where``
    (index i is seq i + 1)."""
    for i in range(start, len(records)):
        if records[i][0] == type_ and where(records[i][2]):
            return i
    raise AssertionError(f"the run has no fitting {type_} record at or after seq {start + 1}")
