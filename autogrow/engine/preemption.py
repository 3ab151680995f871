"""Preemption as clusters deliver it: stop signals, a time budget, and SLURM requeue.

A stop request never cuts a step short. The signal handler only records which signal came; the run
loop asks :meth:`StopControl.poll` at every step boundary, all ranks agree on the answer with one
all-reduce (so DDP ranks stop at the same step), and the run writes a durable snapshot of that
point and a ``run_suspended`` event, then exits with :data:`EXIT_RESUMABLE`. At most the step in
flight is lost. A second SIGINT aborts at once (``KeyboardInterrupt``): the crash guarantees of the
log and snapshots still hold, so even that run resumes from its last snapshot. The handlers are
installed only while the run loop runs (``with stop:``); before it a signal ends the process as
usual, since there is nothing to save yet.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping
from types import FrameType

import structlog

from autogrow.config import EXIT_RESUMABLE
from autogrow.engine.distributed import SINGLE, Dist, all_reduce_max
from autogrow.storage import announce_test_pause

log = structlog.get_logger("autogrow")

TIME = "time"  # the reason logged when the time budget, not a signal, stopped the run
SLURM_END_ENV = "SLURM_JOB_END_TIME"  # the job's projected end, a UNIX time (set by SLURM ≥ 22.05)
RESERVE_FLOOR = 5.0  # seconds always kept back from a time budget, beyond the measured costs
PAUSE_AT_STEP_ENV = "AUTOGROW_TEST_PAUSE_AT_STEP"
PAUSE_RANK_ENV = "AUTOGROW_TEST_PAUSE_RANK"
EVALUATION = "evaluation"  # the pause point before the final evaluation (not a step count)
_TIME_CODE = 1000  # above every signal number


class Suspended(Exception):
    """The run stopped on request after a durable snapshot; relaunching continues it."""

    def __init__(self, reason: str, epoch: int, step: int) -> None:
        self.reason, self.epoch, self.step = reason, epoch, step
        what = "its time budget" if reason == TIME else f"SIG{reason}"
        super().__init__(f"suspended by {what} at epoch {epoch + 1} step {step}" if step else
                         f"suspended by {what} after epoch {epoch}")


def slurm_end_time(environ: Mapping[str, str] = os.environ) -> float | None:
    """The SLURM job's projected end (UNIX time) when the environment says, else None."""
    raw = environ.get(SLURM_END_ENV, "").strip()
    try:
        return float(raw) if raw else None
    except ValueError:
        return None


class StopControl:
    """Whether this launch should stop now: a stop signal came, or the time budget is nearly spent.

    The budget keeps back room for the last snapshot: twice the longest step and twice the longest
    snapshot write seen so far, plus :data:`RESERVE_FLOOR` seconds.
    """

    def __init__(self, signals: Iterable[str] = (), deadline: float | None = None) -> None:
        self.signals = tuple(signals)
        self.deadline = deadline  # time.time() seconds
        self.received: str | None = None
        self._interrupts = 0
        self._announced = False
        self._previous: dict[int, object] = {}
        self._longest_step = 0.0
        self._longest_snapshot = 0.0
        self._pause_at = _test_pause_step()  # read once: test_pause runs at every step

    @classmethod
    def for_launch(cls, signals: Iterable[str], time_limit: float, started: float,
                   environ: Mapping[str, str] = os.environ) -> StopControl:
        """Stop on ``signals``; a budget of ``time_limit`` seconds from ``started`` (0 = none),
        or the SLURM job's end, whichever comes first."""
        deadlines = [started + time_limit] if time_limit > 0 else []
        end = slurm_end_time(environ)
        if end is not None:
            deadlines.append(end)
        return cls(signals, min(deadlines) if deadlines else None)

    # -- signals --------------------------------------------------------------------------------

    def __enter__(self) -> StopControl:
        """Install the handlers (main thread only; elsewhere signals keep their behaviour)."""
        if self.signals and threading.current_thread() is threading.main_thread():
            for name in self.signals:
                signum = signal.Signals["SIG" + name]
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT:
            self._interrupts += 1
            if self._interrupts > 1:
                raise KeyboardInterrupt  # the second Ctrl-C: abort now
        if self.received is None:
            self.received = signal.Signals(signum).name.removeprefix("SIG")

    # -- time -----------------------------------------------------------------------------------

    def note_step(self, seconds: float) -> None:
        self._longest_step = max(self._longest_step, seconds)

    def note_snapshot(self, seconds: float) -> None:
        self._longest_snapshot = max(self._longest_snapshot, seconds)

    def reserve(self) -> float:
        """Seconds kept back from the budget for finishing a step and writing the snapshot."""
        return 2 * self._longest_step + 2 * self._longest_snapshot + RESERVE_FLOOR

    # -- the decision ---------------------------------------------------------------------------

    def poll(self, group: Dist = SINGLE) -> str | None:
        """Why to stop now (a signal name or ``"time"``), agreed by all ranks; None to go on.

        Every rank must call it at the same boundary (it is a collective with several processes).
        """
        code = 0
        if self.received is not None:
            code = signal.Signals["SIG" + self.received].value
        elif self.deadline is not None and time.time() + self.reserve() >= self.deadline:
            code = _TIME_CODE
        code = all_reduce_max(group, code)
        if code == 0:
            return None
        reason = TIME if code == _TIME_CODE else signal.Signals(code).name.removeprefix("SIG")
        if not self._announced:
            self._announced = True
            log.warning("stop requested", reason=reason,
                        action="snapshot at this step, then exit %d (resumable)" % EXIT_RESUMABLE)
        return reason

    def test_pause(self, point: int | str) -> None:
        """Test hook: with ``AUTOGROW_TEST_PAUSE_AT_STEP=N`` the process stops after its N-th
        training step (``=evaluation``: at the boundary before the final evaluation), says so on
        stderr and waits there until a stop signal arrives (or it is killed), so tests can
        signal or SIGKILL it at a known point instead of at a guessed time. With
        ``AUTOGROW_TEST_PAUSE_RANK=R`` only rank R pauses (the others run on into the next
        collective, where they wait for it). Workers that ``torchrun --max-restarts`` started
        again do not pause."""
        if self._pause_at != point:
            return
        announce_test_pause(f"after step {point}" if isinstance(point, int) else f"at {point}")
        while self.received is None:
            time.sleep(0.01)


def _test_pause_step() -> int | str | None:
    """The point of ``AUTOGROW_TEST_PAUSE_AT_STEP`` (a step count or :data:`EVALUATION`); None
    when unset, in a rank that ``AUTOGROW_TEST_PAUSE_RANK`` leaves out, or in a worker that
    ``torchrun --max-restarts`` started again (a restarted worker runs through)."""
    target = os.environ.get(PAUSE_AT_STEP_ENV)
    if not target or os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
        return None
    rank = os.environ.get(PAUSE_RANK_ENV)
    if rank is not None and rank != os.environ.get("RANK", "0"):
        return None
    return target if target == EVALUATION else int(target)


def requeue(environ: Mapping[str, str] = os.environ) -> tuple[bool, str]:
    """``scontrol requeue $SLURM_JOB_ID``: (done, what happened, in words)."""
    job = environ.get("SLURM_JOB_ID", "").strip()
    if not job:
        return False, ("--requeue: SLURM_JOB_ID is not set (not inside a SLURM job); "
                       "relaunch the same command to continue")
    exe = shutil.which("scontrol", path=environ.get("PATH"))
    if exe is None:
        return False, (f"--requeue: scontrol is not on PATH, so job {job} was not requeued; "
                       "run `scontrol requeue " + job + "` or relaunch the same command")
    proc = subprocess.run([exe, "requeue", job], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[:1]
        return False, (f"scontrol requeue {job} failed (exit {proc.returncode}"
                       + (f": {detail[0]}" if detail else "") + ")")
    return True, f"requeued SLURM job {job} (scontrol requeue {job})"
