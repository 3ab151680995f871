"""Preemption as clusters deliver it: stop signals, a time budget, and SLURM requeue.

A stop request never cuts a step short. The signal handler only records which signal came; the run
loop asks :meth:`StopControl.poll` at every step boundary, all ranks agree on the answer with one
all-reduce (so DDP ranks stop at the same step), and the run writes a durable snapshot of that
point and a ``run_suspended`` event, then exits with :data:`EXIT_RESUMABLE`. At most the step in
flight is lost. A second SIGINT aborts at once (``KeyboardInterrupt``): the crash guarantees of the
log and snapshots still hold, so even that run resumes from its last snapshot. The handlers are
installed only while the run loop runs (``with stop:``); before it a signal ends the process as
usual, since there is nothing to save yet.

On SLURM (``--requeue``) the run requeues its own job when the stop came from the job's clock:
USR1 (what ``--signal=USR1@N`` sends before the time limit) or the time budget. SIGTERM and
SIGINT also suspend with a snapshot but requeue only if SLURM is preempting the job (its
``PreemptTime`` is set): SIGTERM is also what ``scancel`` sends, and a user who cancels a job
means it. SLURM 22.05 requeues a preempted job itself only when it is still running at the end
of its GraceTime; the run ends within a second, so it requeues itself (with GraceTime=0 the job
is already pending and scontrol says so: no second requeue). An array
task is requeued by its own id, ``<array job>_<task>``, never by its ``SLURM_JOB_ID``, which for
one task equals the array's id and would requeue every task.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from types import FrameType

import structlog

from autogrow.config import EXIT_RESUMABLE
from autogrow.engine.distributed import SINGLE, Dist, all_reduce_max
from autogrow.storage import announce_test_pause

log = structlog.get_logger("autogrow")

TIME = "time"  # the reason logged when the time budget, not a signal, stopped the run
REQUEUE_REASONS = ("USR1", TIME)  # the job's clock ran out: requeue (see the module's docstring)
SLURM_END_ENV = "SLURM_JOB_END_TIME"  # the job's end, a UNIX time (newer SLURM; not 22.05)
SQUEUE_TIMEOUT = 30.0  # seconds to wait for squeue before going on without the job's end
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
    """The SLURM job's end (UNIX time) when the environment says, else None."""
    raw = environ.get(SLURM_END_ENV, "").strip()
    try:
        return float(raw) if raw else None
    except ValueError:
        return None


def slurm_job(environ: Mapping[str, str] = os.environ) -> str | None:
    """The id that names this very job to ``scontrol`` and ``squeue``: ``<array job>_<task>``
    for an array task, else ``SLURM_JOB_ID``; None outside SLURM."""
    array = environ.get("SLURM_ARRAY_JOB_ID", "").strip()
    task = environ.get("SLURM_ARRAY_TASK_ID", "").strip()
    if array and task:
        return f"{array}_{task}"
    return environ.get("SLURM_JOB_ID", "").strip() or None


def squeue_end_time(job: str, environ: Mapping[str, str] = os.environ) -> tuple[float | None, str]:
    """Ask SLURM for the job's end (``squeue -h -j JOB -o %e``, in local time): (UNIX time or
    None, where it came from or why there is none, in words)."""
    exe = shutil.which("squeue", path=environ.get("PATH"))
    if exe is None:
        return None, "squeue is not on PATH"
    try:
        proc = subprocess.run([exe, "-h", "-j", job, "-o", "%e"], capture_output=True,
                              text=True, check=False, timeout=SQUEUE_TIMEOUT)
    except subprocess.TimeoutExpired:
        return None, f"squeue -j {job} gave no answer in {SQUEUE_TIMEOUT:g} s"
    words = proc.stdout.split()
    if proc.returncode != 0 or not words:
        return None, _failed(f"squeue -j {job}", proc)
    try:
        return datetime.fromisoformat(words[0]).timestamp(), f"squeue -j {job}"
    except ValueError:  # UNLIMITED jobs: "N/A", "Unknown"
        return None, f"squeue -j {job} gave no end time ({words[0]})"


def job_end(environ: Mapping[str, str] = os.environ) -> tuple[float | None, str]:
    """The SLURM job's end and its source: ``SLURM_JOB_END_TIME`` where SLURM sets it, else
    (SLURM 22.05 has no such variable) ``squeue``; (None, why) outside a job or when neither
    says. Only rank 0 asks squeue (RANK unset or 0): one rank that sees the time run out stops
    every rank, since the ranks agree on the stop with an all-reduce."""
    end = slurm_end_time(environ)
    if end is not None:
        return end, SLURM_END_ENV
    job = slurm_job(environ)
    if job is None:
        return None, "not inside a SLURM job"
    if environ.get("RANK", "0") != "0":
        return None, "rank 0 asks squeue for the job's end"
    return squeue_end_time(job, environ)


class StopControl:
    """Whether this launch should stop now: a stop signal came, or the time budget is nearly spent.

    The budget keeps back room for the last snapshot: twice the longest step and twice the longest
    snapshot write seen so far, plus :data:`RESERVE_FLOOR` seconds.
    """

    def __init__(self, signals: Iterable[str] = (), deadline: float | None = None,
                 budget: str = "") -> None:
        self.signals = tuple(signals)
        self.deadline = deadline  # time.time() seconds
        self.budget = budget  # where the deadline came from, or why there is none (for the log)
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
        or the SLURM job's end (:func:`job_end`), whichever comes first."""
        deadlines, sources = [], []
        if time_limit > 0:
            deadlines.append(started + time_limit)
            sources.append(f"--time-limit {time_limit:g} s")
        end, source = job_end(environ)
        if end is not None:
            deadlines.append(end)
            sources.append(f"the SLURM job's end ({source})")
        elif slurm_job(environ) is not None:
            sources.append(f"no SLURM job end: {source}")
        return cls(signals, min(deadlines) if deadlines else None, "; ".join(sources))

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
            if group.is_main:
                log.warning("stop requested", reason=reason,
                            action=f"snapshot at this step, then exit {EXIT_RESUMABLE} "
                                   "(resumable)")
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


def requeue(reason: str, environ: Mapping[str, str] = os.environ) -> tuple[bool, str]:
    """After a suspend by ``reason``: ``scontrol requeue`` this job (:func:`slurm_job`) when the
    job's clock ran out (:data:`REQUEUE_REASONS`), or when a SIGTERM came from a preemption
    (:func:`preempted`): SLURM 22.05 does not requeue a preempted job that ends within its
    GraceTime, and the run ends in about a second. (done, what happened, in words)."""
    job = slurm_job(environ)
    if reason not in REQUEUE_REASONS and (job is None or not preempted(job, environ)):
        return False, (f"--requeue: not requeued after SIG{reason} (scancel, or a preemption "
                       "SLURM requeues itself); relaunch the same command or `autogrow resume "
                       "RUN` to continue")
    if job is None:
        return False, ("--requeue: SLURM_JOB_ID is not set (not inside a SLURM job); "
                       "relaunch the same command to continue")
    exe = shutil.which("scontrol", path=environ.get("PATH"))
    if exe is None:
        return False, (f"--requeue: scontrol is not on PATH, so job {job} was not requeued; "
                       "run `scontrol requeue " + job + "` or relaunch the same command")
    proc = subprocess.run([exe, "requeue", job], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return False, _failed(f"scontrol requeue {job}", proc)
    return True, f"requeued SLURM job {job} (scontrol requeue {job})"


def preempted(job: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether SLURM is preempting ``job`` (``scontrol show job`` has a PreemptTime): then its
    SIGTERM is a preemption's, not scancel's. False when scontrol cannot say."""
    exe = shutil.which("scontrol", path=environ.get("PATH"))
    if exe is None:
        return False
    try:
        proc = subprocess.run([exe, "show", "job", job], capture_output=True, text=True,
                              check=False, timeout=SQUEUE_TIMEOUT)
    except subprocess.TimeoutExpired:
        return False
    fields = dict(word.partition("=")[::2] for word in proc.stdout.split() if "=" in word)
    return proc.returncode == 0 and fields.get("PreemptTime", "None") not in ("None", "")


def _failed(command: str, proc: subprocess.CompletedProcess) -> str:
    """``command failed (exit N: first line it printed)``."""
    detail = (proc.stderr or proc.stdout).strip().splitlines()[:1]
    return f"{command} failed (exit {proc.returncode}" + (f": {detail[0]}" if detail else "") + ")"
