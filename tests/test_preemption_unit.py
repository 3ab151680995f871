"""``StopControl`` and SLURM requeue in process: which signal is recorded, the time budget's
arithmetic, the agreement of ranks, the test pause hook and ``scontrol``.

Fast unit tests (no run, no subprocess but a fake ``scontrol``), so that ``make mutate`` can run
them against every mutant of ``engine/preemption.py``; the process-level behaviour (a signalled
run suspends and resumes bit-exact) is in ``test_preemption.py`` and ``test_distributed.py``.
"""

from __future__ import annotations

import os
import signal
import stat
import threading
import types
from datetime import datetime
from pathlib import Path

import pytest
import structlog

from autogrow.config import EXIT_RESUMABLE
from autogrow.engine import preemption
from autogrow.engine.distributed import SINGLE, Dist
from autogrow.engine.preemption import (
    EVALUATION,
    RESERVE_FLOOR,
    StopControl,
    Suspended,
    job_end,
    preempted,
    requeue,
    slurm_end_time,
    slurm_job,
    squeue_end_time,
)
from autogrow.storage._fs import TEST_MARKER

NOW = 1_000_000.0  # the fake clock's time.time()
PAUSE_ENV = ("AUTOGROW_TEST_PAUSE_AT_STEP", "AUTOGROW_TEST_PAUSE_RANK", "RANK",
             "TORCHELASTIC_RESTART_COUNT")


@pytest.fixture
def clock(monkeypatch) -> types.SimpleNamespace:
    """preemption's ``time`` module replaced: ``time()`` is :data:`NOW`, ``sleep`` records its
    argument and calls ``on_sleep`` (a test sets it to end the wait)."""
    fake = types.SimpleNamespace(time=lambda: NOW, slept=[], on_sleep=lambda: None)

    def sleep(seconds: float) -> None:
        fake.slept.append(seconds)
        assert len(fake.slept) < 100, "the pause hook went on waiting after the stop signal"
        fake.on_sleep()

    fake.sleep = sleep
    monkeypatch.setattr(preemption, "time", fake)
    return fake


@pytest.fixture
def no_pause_env(monkeypatch) -> pytest.MonkeyPatch:
    """None of the pause hook's variables set (a test sets the ones it needs)."""
    for name in PAUSE_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _deliver(stop: StopControl, signum: signal.Signals) -> None:
    """Run the handler as Python does on ``signum``; an abort (``KeyboardInterrupt``) where the
    test expects none fails the test instead of interrupting the whole session."""
    try:
        stop._handle(signum, None)
    except KeyboardInterrupt:
        pytest.fail(f"SIG{signum.name.removeprefix('SIG')} aborted the run")


# -- Suspended ----------------------------------------------------------------------------------

def test_suspended_says_why_and_where_in_words_a_user_counts_in():
    """Epochs are 0-based inside, 1-based in the message; step 0 means between epochs."""
    mid = Suspended("TERM", 2, 7)
    assert (mid.reason, mid.epoch, mid.step) == ("TERM", 2, 7)
    assert str(mid) == "suspended by SIGTERM at epoch 3 step 7"
    assert str(Suspended("USR1", 4, 0)) == "suspended by SIGUSR1 after epoch 4"
    assert str(Suspended("time", 0, 1)) == "suspended by its time budget at epoch 1 step 1"


# -- the deadline -------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, end", [("1700000000", 1700000000.0), (" 12.5\n", 12.5),
                                      ("", None), ("   ", None), ("soon", None)])
def test_slurm_end_time_reads_the_environment_and_ignores_what_is_not_a_time(raw, end):
    assert slurm_end_time({"SLURM_JOB_END_TIME": raw}) == end
    assert slurm_end_time({}) is None


def test_slurm_end_time_reads_the_process_environment_by_default(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_END_TIME", "42")
    assert slurm_end_time() == 42.0
    monkeypatch.delenv("SLURM_JOB_END_TIME")
    assert slurm_end_time() is None


@pytest.mark.parametrize("limit, slurm_end, deadline", [
    (0, None, None),                 # no budget, no SLURM job: never stops for time
    (-5, None, None),                # a negative limit is no budget either
    (100, None, 100.0),              # the budget alone
    (1, None, 1.0),                  # however short
    (0, 70.0, 70.0),                 # the SLURM job's end alone
    (100, 70.0, 70.0),               # whichever comes first: the job ends first
    (100, 130.0, 100.0),             # ... or the budget does
])
def test_the_deadline_is_the_earlier_of_the_budget_and_the_slurm_end(limit, slurm_end, deadline):
    environ = {} if slurm_end is None else {"SLURM_JOB_END_TIME": str(slurm_end)}
    stop = StopControl.for_launch(("TERM", "USR1"), limit, 0.0, environ)
    assert stop.deadline == deadline
    assert stop.signals == ("TERM", "USR1") and stop.received is None


def test_for_launch_reads_the_process_environment_by_default(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_END_TIME", "50")
    assert StopControl.for_launch((), 100, 10.0).deadline == 50.0


def test_a_stop_control_of_its_own_has_no_time_budget_to_log():
    """The Python API's default: no deadline, and no budget source (the CLI logs one if set)."""
    stop = StopControl()
    assert (stop.deadline, stop.budget, stop.signals) == (None, "", ())


def test_the_reserve_is_twice_the_longest_step_and_snapshot_plus_the_floor():
    """Room for finishing the step in flight and writing the last snapshot, measured, not
    guessed: the longest seen counts, a shorter one later does not lower it."""
    stop = StopControl()
    assert stop.reserve() == RESERVE_FLOOR == 5.0
    stop.note_step(3.0)
    stop.note_step(1.0)
    assert stop.reserve() == 2 * 3.0 + RESERVE_FLOOR
    stop.note_snapshot(7.0)
    stop.note_snapshot(2.0)
    assert stop.reserve() == 2 * 3.0 + 2 * 7.0 + RESERVE_FLOOR


def test_time_stops_the_run_once_the_reserve_no_longer_fits_before_the_deadline(clock):
    stop = StopControl()
    stop.note_step(1.0)                                 # reserve: 2 + 5 = 7 s
    assert stop.poll() is None                          # no deadline: never
    stop.deadline = NOW + 7.5
    assert stop.poll() is None                          # 7.5 s left, 7 s needed: go on
    stop.deadline = NOW + 7.0
    assert stop.poll() == "time"                        # exactly the reserve left: stop now
    stop.deadline = NOW - 1.0
    assert stop.poll() == "time"


# -- signals ------------------------------------------------------------------------------------

def test_the_first_stop_signal_is_the_reason_and_later_ones_change_nothing():
    stop = StopControl(("TERM", "USR1"))
    assert stop.poll() is None
    _deliver(stop, signal.SIGUSR1)
    assert stop.received == "USR1" and stop.poll() == "USR1"
    _deliver(stop, signal.SIGTERM)
    _deliver(stop, signal.SIGTERM)                  # no abort: only a second Ctrl-C aborts
    assert stop.received == "USR1" and stop.poll() == "USR1"


def test_a_signal_wins_over_the_time_budget(clock):
    stop = StopControl(("TERM",), deadline=NOW - 1)
    _deliver(stop, signal.SIGTERM)
    assert stop.poll() == "TERM"


def test_only_a_second_sigint_aborts():
    """Another stop signal first does not make the first Ctrl-C an abort; the second one is."""
    stop = StopControl(("TERM", "INT"))
    _deliver(stop, signal.SIGTERM)
    _deliver(stop, signal.SIGINT)
    assert stop.received == "TERM"
    with pytest.raises(KeyboardInterrupt):
        stop._handle(signal.SIGINT, None)


def test_handlers_are_installed_for_the_run_loop_only_and_restored_after():
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)}
    with StopControl(("TERM", "USR1")) as stop:
        assert signal.getsignal(signal.SIGUSR2) is before[signal.SIGUSR2]  # not asked for
        assert signal.getsignal(signal.SIGUSR1) == signal.getsignal(signal.SIGTERM) == stop._handle
        signal.raise_signal(signal.SIGUSR1)  # returns after the Python handler ran
        assert stop.received == "USR1"
    assert {s: signal.getsignal(s) for s in before} == before
    with StopControl(("TERM",)):  # the same control twice installs again, restores again
        pass
    assert signal.getsignal(signal.SIGTERM) is before[signal.SIGTERM]


def test_outside_the_main_thread_signals_keep_their_behaviour():
    """Python only lets the main thread install handlers: elsewhere none is tried."""
    before = signal.getsignal(signal.SIGTERM)
    seen: list[object] = []

    def body() -> None:
        try:
            with StopControl(("TERM",)):
                seen.append(signal.getsignal(signal.SIGTERM))
        except Exception as err:  # noqa: BLE001 - the assertion below names it
            seen.append(err)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == [before]


def test_every_rank_stops_when_any_rank_has_a_reason(monkeypatch):
    """The reason is the maximum over the ranks (one all-reduce): a rank that saw no signal
    stops at the same step as the one that did, and names the same reason."""
    calls: list[tuple[Dist, int]] = []
    other_rank = {"code": signal.SIGUSR1.value}

    def all_reduce_max(group: Dist, value: int) -> int:
        calls.append((group, value))
        return max(value, other_rank["code"])

    monkeypatch.setattr(preemption, "all_reduce_max", all_reduce_max)
    group = Dist(rank=1, world_size=2)
    stop = StopControl(("TERM", "USR1"))
    assert stop.poll(group) == "USR1"
    assert calls == [(group, 0)]
    other_rank["code"] = 1000  # the other rank's time budget is spent
    assert stop.poll(group) == "time"
    _deliver(stop, signal.SIGTERM)
    assert stop.poll(group) == "time"  # the larger code wins on every rank alike
    assert calls[-1] == (group, signal.SIGTERM.value)
    other_rank["code"] = 0
    assert stop.poll(group) == "TERM"


def test_poll_in_one_process_needs_no_group():
    stop = StopControl(("INT",))
    assert stop.poll(SINGLE) is None
    _deliver(stop, signal.SIGINT)
    assert stop.poll(SINGLE) == "INT"


def test_the_stop_is_announced_once_with_what_happens_next():
    stop = StopControl(("TERM",))
    _deliver(stop, signal.SIGTERM)
    with structlog.testing.capture_logs() as logs:
        stop.poll()
        stop.poll()
    assert logs == [{"event": "stop requested", "log_level": "warning", "reason": "TERM",
                     "action": f"snapshot at this step, then exit {EXIT_RESUMABLE} (resumable)"}]


def test_only_rank_0_announces_the_stop(monkeypatch):
    """A job log holds one `stop requested` line, not one per rank."""
    monkeypatch.setattr(preemption, "all_reduce_max", lambda group, value: value)
    stop = StopControl(("TERM",))
    _deliver(stop, signal.SIGTERM)
    with structlog.testing.capture_logs() as logs:
        assert stop.poll(Dist(rank=1, world_size=2)) == "TERM"
    assert logs == []


# -- the test pause hook ------------------------------------------------------------------------

@pytest.mark.parametrize("env, point", [
    ({}, None),
    ({"AUTOGROW_TEST_PAUSE_AT_STEP": ""}, None),
    ({"AUTOGROW_TEST_PAUSE_AT_STEP": "7"}, 7),
    ({"AUTOGROW_TEST_PAUSE_AT_STEP": "evaluation"}, EVALUATION),
    ({"AUTOGROW_TEST_PAUSE_AT_STEP": "7", "TORCHELASTIC_RESTART_COUNT": "0"}, 7),
    ({"AUTOGROW_TEST_PAUSE_AT_STEP": "7", "TORCHELASTIC_RESTART_COUNT": "1"}, None),
    ({"AUTOGROW_TEST_PAUSE_AT_STEP": "7", "AUTOGROW_TEST_PAUSE_RANK": "0"}, 7),   # RANK unset: 0
    ({"AUTOGROW_TEST_PAUSE_AT_STEP": "7", "AUTOGROW_TEST_PAUSE_RANK": "1"}, None),
    ({"AUTOGROW_TEST_PAUSE_AT_STEP": "7", "AUTOGROW_TEST_PAUSE_RANK": "1", "RANK": "1"}, 7),
    ({"AUTOGROW_TEST_PAUSE_AT_STEP": "evaluation", "AUTOGROW_TEST_PAUSE_RANK": "0",
      "RANK": "1"}, None),
], ids=["unset", "empty", "step", "evaluation", "first-start", "restarted", "rank-0-default",
        "other-rank", "this-rank", "other-rank-evaluation"])
def test_where_the_hook_pauses(no_pause_env, env, point):
    """A restarted torchrun worker runs through, and only the named rank pauses."""
    for name, value in env.items():
        no_pause_env.setenv(name, value)
    assert StopControl()._pause_at == point


def test_the_hook_waits_for_a_stop_signal_at_its_step_only(no_pause_env, clock, capfd):
    """At its step it says so on stderr and waits (polling often) until a stop signal came;
    at every other point it returns at once, silently."""
    no_pause_env.setenv("AUTOGROW_TEST_PAUSE_AT_STEP", "5")
    stop = StopControl(("TERM",))
    no_pause_env.delenv("AUTOGROW_TEST_PAUSE_AT_STEP")  # read once, at construction
    stop.test_pause(4)
    stop.test_pause(EVALUATION)
    assert clock.slept == [] and capfd.readouterr().err == ""

    def signal_on_third_sleep() -> None:
        if len(clock.slept) == 3:
            _deliver(stop, signal.SIGTERM)

    clock.on_sleep = signal_on_third_sleep
    stop.test_pause(5)
    assert len(clock.slept) == 3 and all(0 < s <= 0.1 for s in clock.slept)
    assert capfd.readouterr().err == f"{TEST_MARKER} after step 5 (pid {os.getpid()})\n"
    assert stop.poll() == "TERM"


def test_the_evaluation_pause_names_its_point(no_pause_env, clock, capfd):
    no_pause_env.setenv("AUTOGROW_TEST_PAUSE_AT_STEP", EVALUATION)
    stop = StopControl(("TERM",))
    _deliver(stop, signal.SIGTERM)  # already signalled: announce, then go on at once
    stop.test_pause(EVALUATION)
    assert clock.slept == []
    assert capfd.readouterr().err == f"{TEST_MARKER} at evaluation (pid {os.getpid()})\n"


# -- requeue ------------------------------------------------------------------------------------

def _fake_slurm(bin_dir: Path, code: int, stdout: str = "", stderr: str = "",
                name: str = "scontrol") -> Path:
    """A SLURM command ``name`` that records its arguments in ``bin_dir/args``, prints
    ``stdout``/``stderr`` and exits ``code``."""
    bin_dir.mkdir(exist_ok=True)
    exe = bin_dir / name
    exe.write_text(f"#!/bin/sh\necho \"$@\" > '{bin_dir}/args'\n"
                   f"printf '{stdout}'\nprintf '{stderr}' >&2\nexit {code}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return bin_dir / "args"


@pytest.mark.parametrize("reason", ["USR1", "time"])
def test_requeue_runs_scontrol_from_the_given_path_when_the_jobs_clock_ran_out(tmp_path, reason):
    args = _fake_slurm(tmp_path / "bin", 0)
    done, message = requeue(reason, {"SLURM_JOB_ID": " 4242 ", "PATH": str(tmp_path / "bin")})
    assert (done, message) == (True, "requeued SLURM job 4242 (scontrol requeue 4242)")
    assert args.read_text() == "requeue 4242\n"


@pytest.mark.parametrize("reason", ["TERM", "INT"])
def test_scancel_is_never_undone_by_a_requeue(tmp_path, reason):
    """SIGTERM is scancel's signal: the run is saved, the job is not requeued (scontrol is
    asked only whether the job is being preempted: PreemptTime=None says it is not)."""
    args = _fake_slurm(tmp_path / "bin", 0, "JobId=4242 JobName=x PreemptTime=None Restarts=0")
    done, message = requeue(reason, {"SLURM_JOB_ID": "4242", "PATH": str(tmp_path / "bin")})
    assert not done and args.read_text() == "show job 4242\n"
    assert message == (f"--requeue: not requeued after SIG{reason} (scancel, or a preemption "
                       "SLURM requeues itself); relaunch the same command or `autogrow resume "
                       "RUN` to continue")
    assert not requeue(reason, {})[0]  # outside SLURM: nothing to ask, nothing requeued


def test_a_preemption_inside_its_grace_time_is_requeued_by_the_run(tmp_path):
    """SLURM 22.05 does not requeue a preempted job that ends within its GraceTime (the run ends
    in a second): while PreemptTime is set, a SIGTERM is a preemption's and the run requeues."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = bin_dir / "calls"
    (bin_dir / "scontrol").write_text(
        f"#!/bin/sh\necho \"$@\" >> '{calls}'\n"
        "[ \"$1\" = show ] && echo 'JobId=7 PreemptTime=2026-12-07T15:00:00 Restarts=0'\n"
        "exit 0\n")
    (bin_dir / "scontrol").chmod(0o755)
    done, message = requeue("TERM", {"SLURM_JOB_ID": "7", "PATH": str(bin_dir)})
    assert (done, message) == (True, "requeued SLURM job 7 (scontrol requeue 7)")
    assert calls.read_text() == "show job 7\nrequeue 7\n"


@pytest.mark.parametrize("code, stdout", [(1, "PreemptTime=2026-12-07T15:00:00"), (0, ""),
                                          (0, "JobId=7 PreemptTime=None"),
                                          (0, "JobId=7 PreemptTime= Restarts=0")])
def test_no_preemption_unless_scontrol_says_so(tmp_path, code, stdout):
    _fake_slurm(tmp_path / "bin", code, stdout)
    assert not preempted("7", {"PATH": str(tmp_path / "bin")})
    assert not preempted("7", {"PATH": str(tmp_path / "none")})


def _hanging(bin_dir: Path, name: str, monkeypatch) -> dict[str, str]:
    """An environment whose SLURM command ``name`` never answers, and a 0.2 s patience."""
    bin_dir.mkdir()
    (bin_dir / name).write_text("#!/bin/sh\nexec sleep 600\n")
    (bin_dir / name).chmod(0o755)
    monkeypatch.setattr(preemption, "SQUEUE_TIMEOUT", 0.2)
    return {"PATH": str(bin_dir)}


def test_scontrol_that_hangs_is_no_preemption(tmp_path, monkeypatch):
    """A SIGTERM while scontrol cannot answer: taken for scancel's (no requeue), in bounded time."""
    assert preempted("7", _hanging(tmp_path / "bin", "scontrol", monkeypatch)) is False


def test_an_array_task_requeues_itself_alone(tmp_path):
    """Task 7_1 can have JobId 7, the array's own id: `scontrol requeue 7` would requeue (and
    kill) every task of the array."""
    args = _fake_slurm(tmp_path / "bin", 0)
    environ = {"SLURM_JOB_ID": "7", "SLURM_ARRAY_JOB_ID": "7", "SLURM_ARRAY_TASK_ID": "1",
               "PATH": str(tmp_path / "bin")}
    assert requeue("USR1", environ) == (True, "requeued SLURM job 7_1 (scontrol requeue 7_1)")
    assert args.read_text() == "requeue 7_1\n"


@pytest.mark.parametrize("environ, job", [
    ({}, None),
    ({"SLURM_JOB_ID": " "}, None),
    ({"SLURM_JOB_ID": "12"}, "12"),
    ({"SLURM_JOB_ID": "13", "SLURM_ARRAY_JOB_ID": "12", "SLURM_ARRAY_TASK_ID": "1"}, "12_1"),
    ({"SLURM_JOB_ID": "13", "SLURM_ARRAY_JOB_ID": "12"}, "13"),      # no task id: the job
    ({"SLURM_JOB_ID": "13", "SLURM_ARRAY_TASK_ID": "1"}, "13"),      # no array id: the job
])
def test_the_job_is_named_by_its_array_task_where_it_is_one(environ, job):
    assert slurm_job(environ) == job


@pytest.mark.parametrize("stdout, stderr, detail", [
    ("", "slurm_requeue error: Job is not requeueable\\nsecond line\\n",
     ": slurm_requeue error: Job is not requeueable"),
    ("only on stdout\\n", "", ": only on stdout"),
    ("", "", ""),
], ids=["stderr", "stdout", "silent"])
def test_a_failed_requeue_says_how_it_failed(tmp_path, stdout, stderr, detail):
    _fake_slurm(tmp_path / "bin", 3, stdout, stderr)
    done, message = requeue("USR1", {"SLURM_JOB_ID": "7", "PATH": str(tmp_path / "bin")})
    assert (done, message) == (False, f"scontrol requeue 7 failed (exit 3{detail})")


def test_requeue_outside_slurm_or_without_scontrol_says_what_to_do(tmp_path):
    for environ in ({}, {"SLURM_JOB_ID": "  "}):
        done, message = requeue("USR1", environ)
        assert not done and message == ("--requeue: SLURM_JOB_ID is not set (not inside a SLURM "
                                         "job); relaunch the same command to continue")
    (tmp_path / "empty").mkdir()
    done, message = requeue("time", {"SLURM_JOB_ID": "9", "PATH": str(tmp_path / "empty")})
    assert not done and message == ("--requeue: scontrol is not on PATH, so job 9 was not "
                                    "requeued; run `scontrol requeue 9` or relaunch the same "
                                    "command")


# -- the job's end from squeue (SLURM 22.05 sets no SLURM_JOB_END_TIME) -------------------------

def test_squeue_gives_the_jobs_end_in_local_time(tmp_path):
    args = _fake_slurm(tmp_path / "bin", 0, "2026-12-07T13:40:05\\n", name="squeue")
    environ = {"SLURM_ARRAY_JOB_ID": "7", "SLURM_ARRAY_TASK_ID": "0", "SLURM_JOB_ID": "8",
               "PATH": str(tmp_path / "bin")}
    end = datetime(2026, 12, 7, 13, 40, 5).timestamp()
    assert squeue_end_time("7_0", environ) == (end, "squeue -j 7_0")
    assert args.read_text() == "-h -j 7_0 -o %e\n"
    assert job_end(environ) == (end, "squeue -j 7_0")
    stop = StopControl.for_launch((), 0, 0.0, environ)
    assert (stop.deadline, stop.budget) == (end, "the SLURM job's end (squeue -j 7_0)")


@pytest.mark.parametrize("code, stdout, stderr, why", [
    (0, "N/A\\n", "", "squeue -j 5 gave no end time (N/A)"),
    (0, "Unknown\\n", "", "squeue -j 5 gave no end time (Unknown)"),
    (0, "", "", "squeue -j 5 failed (exit 0)"),
    (1, "", "slurm_load_jobs error: Invalid job id specified\\n",
     "squeue -j 5 failed (exit 1: slurm_load_jobs error: Invalid job id specified)"),
])
def test_squeue_without_an_end_time_says_why(tmp_path, code, stdout, stderr, why):
    _fake_slurm(tmp_path / "bin", code, stdout, stderr, name="squeue")
    environ = {"SLURM_JOB_ID": "5", "PATH": str(tmp_path / "bin")}
    assert squeue_end_time("5", environ) == (None, why)
    stop = StopControl.for_launch((), 0, 0.0, environ)
    assert (stop.deadline, stop.budget) == (None, f"no SLURM job end: {why}")
    stop = StopControl.for_launch((), 60, 10.0, environ)
    assert (stop.deadline, stop.budget) == (70.0, f"--time-limit 60 s; no SLURM job end: {why}")


def test_squeue_that_hangs_is_given_up(tmp_path, monkeypatch):
    assert squeue_end_time("5", _hanging(tmp_path / "bin", "squeue", monkeypatch)) == (
        None, "squeue -j 5 gave no answer in 0.2 s")


def test_the_jobs_end_comes_from_the_environment_first_and_rank_0_alone_asks_squeue(tmp_path):
    args = _fake_slurm(tmp_path / "bin", 0, "2030-01-01T00:00:00\\n", name="squeue")
    base = {"SLURM_JOB_ID": "5", "PATH": str(tmp_path / "bin")}
    assert job_end({**base, "SLURM_JOB_END_TIME": "99"}) == (99.0, "SLURM_JOB_END_TIME")
    assert job_end({**base, "RANK": "1"}) == (None, "rank 0 asks squeue for the job's end")
    assert not args.exists()                            # neither asked squeue
    assert job_end({"PATH": str(tmp_path / "bin")}) == (None, "not inside a SLURM job")
    assert not args.exists()
    assert job_end({**base, "RANK": "0"})[1] == "squeue -j 5"
    assert StopControl.for_launch((), 0, 0.0, {"PATH": str(tmp_path)}).budget == ""
    (tmp_path / "empty").mkdir()
    assert job_end({"SLURM_JOB_ID": "5", "PATH": str(tmp_path / "empty")}) == (
        None, "squeue is not on PATH")
