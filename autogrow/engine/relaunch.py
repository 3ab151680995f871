"""What relaunching the same command does with its run directory (``--resume-if-exists``).

A job script, ``torchrun --max-restarts`` or a SLURM requeue runs the same command again; the
directory then decides: start a new run (missing, empty, or left by a launch killed before its
first event), resume the run there (started with these very settings), report it (finished), or
refuse and touch nothing (another run's settings, or not a run). Decided on rank 0 from the log
alone; :func:`autogrow.engine.lifecycle.relaunch_action` tells every rank.
"""

from __future__ import annotations

from pathlib import Path

from autogrow.config import RunConfig
from autogrow.events import RunStarted
from autogrow.policies import Phase
from autogrow.replay import decode_record, state_of
from autogrow.storage import LOCK_NAME, LOG_NAME, EventLog, LogMissing, StorageError

CONFIG_NAME = "config.toml"  # the run's settings, written beside its log when it starts
DATA_DIR = "data"            # an image folder's manifest (autogrow.engine.data.manifest)


def fresh(run_dir: Path) -> bool:
    """Missing, empty, or left by a launch killed before its first event: a new run may start
    there."""
    if not run_dir.exists():
        return True
    if not run_dir.is_dir():
        return False
    return not any(run_dir.iterdir()) or _unstarted(run_dir)


def _unstarted(run_dir: Path) -> bool:
    """A run directory whose log holds no complete record and that has nothing else of value:
    what a launch killed between creating the log and appending ``run_started`` leaves."""
    allowed = {LOG_NAME, LOCK_NAME, CONFIG_NAME, DATA_DIR}
    names = {p.name for p in run_dir.iterdir()}
    if LOG_NAME not in names or not names <= allowed | {
            n for n in names if n.startswith(f"{LOG_NAME}.torn-")}:
        return False
    try:
        with EventLog.open(run_dir, readonly=True) as event_log:
            return len(event_log) == 0
    except StorageError:
        return False


def relaunch_plan(run_dir: Path, config: RunConfig) -> dict[str, str]:
    """What ``--resume-if-exists`` does with ``run_dir``: start, resume, report, or refuse."""
    if fresh(run_dir):
        return {"action": "start"}
    try:
        with EventLog.open(run_dir, readonly=True) as event_log:
            records = event_log.records
        first = decode_record(records[0])
        if not isinstance(first, RunStarted):
            return {"error": f"{run_dir}: the log does not begin with run_started"}
        stored = RunConfig.from_mapping(dict(first.config)).to_dict()
        state = state_of(records)
    except LogMissing:
        return {"error": f"run directory {run_dir} is not empty and holds no run; "
                         "pick a new --run-dir"}
    except Exception as err:  # noqa: BLE001 - every rank must hear about it, not only rank 0
        return {"error": f"{run_dir}: {err}".splitlines()[0]}
    wanted = config.to_dict()
    if config.threads == 0:  # "torch's default" was resolved to a number when the run started
        wanted["threads"] = stored["threads"]
    # Where the data is is not what it is: a run that recorded its data may find it elsewhere
    # (the resume checks that it is the same data).
    moved = {"data_root"} if first.data is not None else set()
    differ = [k for k in wanted if wanted[k] != stored.get(k) and k not in moved]
    if differ:
        changes = ", ".join(f"{k} (run: {stored.get(k)!r}, now: {wanted[k]!r})" for k in differ)
        return {"error": f"{run_dir} holds a run started with other settings: {changes}; "
                         "nothing was changed — relaunch with the run's settings, "
                         f"`autogrow fork` it, or pick a new --run-dir"}
    if state.phase is Phase.FINISHED:
        return {"action": "finished"}
    return {"action": "resume"}
