"""Preemption as clusters deliver it: a stop signal or a time budget suspends the run at a step
boundary with a durable snapshot and exit 75; the same command relaunched continues it; disk use
stays bounded, every deletion logged; progress lines for job logs.

Signals are sent while the run is held at a known step by ``AUTOGROW_TEST_PAUSE_AT_STEP`` (it
waits there for the signal), so what a test checks never depends on timing.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from autogrow.config import EXIT_RESUMABLE, ConfigError, LaunchOptions, parse_duration
from autogrow.engine.preemption import StopControl, Suspended, requeue
from autogrow.events import RunSuspended, SnapshotsPruned, SnapshotWritten
from autogrow.replay import decode_record, live_events
from autogrow.replay.verify import verify_run
from autogrow.storage import EventLog, SnapshotStore
from tests.conftest import REPO, autogrow_cli
from tests.test_crash import STEPS, launch, wait_for_pause
from tests.test_engine import comparable

SMOKE = ["--preset", "smoke"]


def _events(run_dir: Path):
    with EventLog.open(run_dir, readonly=True) as log:
        return [(r.seq, decode_record(r)) for r in log.records]


def _digest(run_dir: Path) -> str:
    return [ev for _, ev in _events(run_dir) if ev.TYPE == "run_finished"][-1].weights_digest


def _suspend_at(command: list[str], step: int, sig: signal.Signals) -> tuple[int, str]:
    """Launch ``command``, hold it after training step ``step``, send ``sig``; its exit code
    and the rest of its stderr."""
    proc = launch(command, {"AUTOGROW_TEST_PAUSE_AT_STEP": str(step)})
    assert wait_for_pause(proc), "the run ended before the step it should stop at"
    proc.send_signal(sig)
    stderr = proc.stderr.read().decode()
    return proc.wait(timeout=300), stderr


@pytest.mark.parametrize("sig, flags", [(signal.SIGTERM, []),
                                        (signal.SIGUSR1, ["--stop-signals", "TERM,USR1"])],
                         ids=["TERM", "USR1"])
def test_signal_mid_epoch_suspends_and_the_same_command_finishes(smoke_run, tmp_path, sig, flags):
    run_dir = tmp_path / "preempted"
    command = ["grow", *SMOKE, "--run-dir", str(run_dir), "--resume-if-exists", *flags]
    code, stderr = _suspend_at(command, STEPS + 6, sig)  # epoch 2, step 6
    assert code == EXIT_RESUMABLE, stderr
    assert "relaunch the same command" in stderr
    events = _events(run_dir)
    last = events[-1][1]
    snap = [ev for _, ev in events if ev.TYPE == "snapshot_written"][-1]
    name = sig.name.removeprefix("SIG")
    # nothing lost: the step the process was held after is in the snapshot
    assert last == RunSuspended(signal=name, epoch=1, step=6)
    assert (snap.label, snap.epoch, snap.step) == ("suspend", 1, 6)
    assert verify_run(run_dir).ok
    assert f"SIG{name}, epoch 2 step 6" in autogrow_cli("history", str(run_dir), check=True).stdout

    again = autogrow_cli(*command, "--log-every", "0")
    assert again.returncode == 0, again.stderr
    assert "resuming it" in again.stdout
    assert _digest(run_dir) == _digest(smoke_run)
    assert comparable(run_dir) == comparable(smoke_run)
    assert verify_run(run_dir).ok
    # progress lines (stderr is a pipe here): the resumed epoch picks up at step 7
    lines = [ln for ln in again.stderr.splitlines() if " images/s  ETA " in ln]
    assert f"epoch 2 (grow, 2-1-1) step 7/{STEPS}" in lines[0]
    assert sum(f"step {STEPS}/{STEPS}" in ln for ln in lines) == 5  # epochs 2..6


def test_time_limit_suspends_and_a_relaunch_with_time_left_finishes(smoke_run, tmp_path):
    """A budget shorter than the reserve for the last snapshot suspends at the first boundary."""
    run_dir = tmp_path / "budget"
    base = ["grow", *SMOKE, "--run-dir", str(run_dir), "--resume-if-exists"]
    first = autogrow_cli(*base, "--time-limit", "1s")
    assert first.returncode == EXIT_RESUMABLE, first.stderr
    assert "time budget" in first.stderr
    assert _events(run_dir)[-1][1] == RunSuspended(signal="time", epoch=0, step=0)
    again = autogrow_cli(*base, "--time-limit", "1h")
    assert again.returncode == 0, again.stderr
    assert _digest(run_dir) == _digest(smoke_run)
    assert verify_run(run_dir).ok


def test_slurm_end_time_suspends_and_requeue_calls_scontrol(tmp_path):
    """SLURM_JOB_END_TIME in the past: suspend at once; --requeue runs scontrol requeue JOB."""
    bin_dir, called = tmp_path / "bin", tmp_path / "scontrol-args"
    bin_dir.mkdir()
    fake = bin_dir / "scontrol"
    fake.write_text(f'#!/bin/sh\necho "$@" > {called}\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {"SLURM_JOB_END_TIME": str(int(time.time()) - 1), "SLURM_JOB_ID": "4242",
           "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    proc = autogrow_cli("grow", *SMOKE, "--run-dir", str(tmp_path / "job"), "--requeue", env=env)
    assert proc.returncode == EXIT_RESUMABLE, proc.stderr
    assert called.read_text().split() == ["requeue", "4242"]
    assert "requeued SLURM job 4242" in proc.stderr


def test_requeue_explains_what_is_missing(tmp_path):
    done, message = requeue("USR1", {"PATH": str(tmp_path)})
    assert not done and "SLURM_JOB_ID is not set" in message
    done, message = requeue("USR1", {"SLURM_JOB_ID": "7", "PATH": str(tmp_path)})
    assert not done and "scontrol is not on PATH" in message and "7" in message


def test_relaunch_with_other_settings_is_refused_and_touches_nothing(smoke_run):
    before = {p.name: p.read_bytes() for p in smoke_run.rglob("*") if p.is_file()}
    proc = autogrow_cli("grow", *SMOKE, "--tau", "3", "--seed", "5", "--run-dir", str(smoke_run),
                        "--resume-if-exists")
    assert proc.returncode == 2
    message = proc.stderr.strip()
    assert message.count("\n") == 0 and "tau (run: 100.0, now: 3.0)" in message
    assert "seed (run: 0, now: 5)" in message
    assert {p.name: p.read_bytes() for p in smoke_run.rglob("*") if p.is_file()} == before


def test_relaunch_of_a_finished_run_prints_its_result(smoke_run):
    proc = autogrow_cli("grow", *SMOKE, "--run-dir", str(smoke_run), "--resume-if-exists")
    assert proc.returncode == 0, proc.stderr
    result = [ev for _, ev in _events(smoke_run) if ev.TYPE == "run_finished"][-1]
    assert "already finished" in proc.stdout and f"found arch {result.arch}" in proc.stdout
    assert "run_resumed" not in (smoke_run / "events.jsonl").read_text()


def test_without_the_flag_a_used_run_dir_is_still_refused(smoke_run):
    proc = autogrow_cli("grow", *SMOKE, "--run-dir", str(smoke_run))
    assert proc.returncode == 2 and "--resume-if-exists" in proc.stderr


def test_disk_holds_at_most_growths_plus_keep_plus_two_snapshots(tmp_path):
    """Retention during the run, checked three ways: the log's account of the files at every
    moment, the directory watched while the run goes, and the files left at the end."""
    run_dir, keep = tmp_path / "bounded", 2
    store = SnapshotStore(run_dir)
    seen_max, stop = [0], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            if store.dir.is_dir():
                seen_max[0] = max(seen_max[0], sum(1 for _ in store.dir.iterdir()))
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        autogrow_cli("grow", *SMOKE, "--finetune-epochs", "6", "--snapshot-every-steps", "5",
                     "--snapshot-keep", str(keep), "--run-dir", str(run_dir), check=True)
    finally:
        stop.set()
        watcher.join()
    present: set[str] = set()
    growths = pruned = 0
    for _, ev in _events(run_dir):
        if isinstance(ev, SnapshotWritten):
            growths += ev.label == "growth"
            if ev.digest not in present:  # while it was written: the others + its temp file
                assert len(present) + 1 <= growths + keep + 2
            present.add(ev.digest)
        elif isinstance(ev, SnapshotsPruned):
            assert set(ev.digests) <= present
            present -= set(ev.digests)
            pruned += len(ev.digests)
            assert len(present) <= growths + keep + 1
    assert pruned > 10
    assert set(store.digests()) == present  # the log accounts for every file
    assert seen_max[0] <= growths + keep + 2
    report = verify_run(run_dir)
    assert report.ok, report.problems
    assert any("pruned by the run's retention" in n for n in report.notes)
    # a file that no event pruned, removed by hand: a loss verify must report
    latest = [ev for _, ev in live_events(EventLog.open(run_dir, readonly=True).records)
              if isinstance(ev, SnapshotWritten)]
    victim = next(s for s in reversed(latest[:-1])
                  if s.label not in ("start", "growth", "fork") and store.exists(s.digest))
    store.path(victim.digest).unlink()
    report = verify_run(run_dir)
    assert not report.ok
    assert any(victim.digest in p and "no snapshots_pruned event" in p for p in report.problems)


def test_prune_command_logs_what_it_deletes(smoke_run, tmp_path):
    import shutil
    run_dir = tmp_path / "copy"
    shutil.copytree(smoke_run, run_dir)
    before = set(SnapshotStore(run_dir).digests())
    out = autogrow_cli("prune", str(run_dir), "--keep", "1", check=True).stdout
    after = set(SnapshotStore(run_dir).digests())
    assert before - after and "removed" in out
    last = _events(run_dir)[-1][1]
    assert isinstance(last, SnapshotsPruned) and set(last.digests) == before - after
    assert verify_run(run_dir).ok


def test_the_slurm_example_is_a_valid_script_with_valid_commands():
    import shlex

    from torch.distributed.run import get_args_parser

    from autogrow.cli import build_parser
    script = REPO / "examples" / "slurm.sbatch"
    text = script.read_text()
    subprocess.run(["bash", "-n", str(script)], check=True)
    assert "#SBATCH --signal=USR1@120" in text and "#SBATCH --requeue" in text
    command = text[text.index("srun torchrun"):].split("\n\n")[0].replace("\\\n", " ")
    words = shlex.split(command.replace('"$DATA"', "/data").replace('"$RUN_DIR"', "/runs/x"))
    cut = words.index("-m")
    torchrun = get_args_parser().parse_args(words[2:cut] + ["-m", "autogrow"])
    assert "SIGUSR1" in torchrun.signals_to_handle.split(",") and torchrun.shutdown_timeout > 30
    assert words[cut + 1] == "autogrow"
    args = build_parser().parse_args(words[cut + 2:])
    assert args.resume_if_exists and args.requeue and args.command == "grow"


# -- the pieces, in process --------------------------------------------------------------------

def test_a_second_sigint_aborts_at_once():
    before = signal.getsignal(signal.SIGINT)
    with StopControl(("INT", "TERM")) as stop:
        signal.raise_signal(signal.SIGINT)  # returns after the Python handler has run
        assert stop.received == "INT" and stop.poll() == "INT"
        signal.raise_signal(signal.SIGTERM)  # more stop signals change nothing
        assert stop.received == "INT"
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before  # restored


def test_time_budget_keeps_room_for_the_snapshot():
    now = time.time()
    stop = StopControl(deadline=now + 60)
    assert stop.poll() is None
    stop.note_snapshot(30.0)  # a snapshot write takes 30 s: 2 x 30 + 5 > 60 s left
    assert stop.poll() == "time"
    assert StopControl.for_launch((), 0, now, {}).deadline is None
    assert StopControl.for_launch((), 100, now, {"SLURM_JOB_END_TIME": str(now + 50)}).deadline == now + 50
    assert StopControl.for_launch((), 100, now, {"SLURM_JOB_END_TIME": "junk"}).deadline == now + 100
    assert str(Suspended("time", 3, 0)) == "suspended by its time budget after epoch 3"


@pytest.mark.parametrize("text, seconds", [("3h50m", 13800), ("90m", 5400), ("45s", 45),
                                           ("1d2h", 93600), ("1:30:00", 5400), ("2:30", 150),
                                           ("600", 600), ("0", 0)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "3x", "h", "-5", "1:2:3:4"])
def test_bad_durations_are_refused(bad):
    with pytest.raises(ConfigError, match="time limit"):
        parse_duration(bad)


def test_bad_stop_signals_are_refused_on_the_command_line(tmp_path):
    with pytest.raises(ConfigError, match="KILL"):
        LaunchOptions(stop_signals="TERM,KILL")
    proc = autogrow_cli("grow", *SMOKE, "--run-dir", str(tmp_path / "x"), "--stop-signals", "KILL")
    assert proc.returncode == 2 and "KILL" in proc.stderr and not (tmp_path / "x").exists()


def test_launch_options_come_from_the_config_file_too(tmp_path):
    from autogrow.config import resolve_config, resolve_launch
    path = tmp_path / "job.toml"
    path.write_text('resume_if_exists = true\ntime_limit = "2h"\nstop_signals = "USR1"\ntau = 0.5\n')
    launch_options = resolve_launch(path, {"log_every": 5.0})
    assert launch_options == LaunchOptions(resume_if_exists=True, time_limit=7200,
                                           stop_signals=("USR1",), log_every=5.0)
    assert resolve_config(None, path).tau == 0.5  # the run settings ignore the launch keys


class _Stream:
    def __init__(self, tty: bool) -> None:
        self.tty, self.text = tty, []

    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> int:
        self.text.append(text)
        return len(text)

    def flush(self) -> None:
        pass


def test_progress_is_a_bar_on_a_terminal_and_timed_lines_in_a_job_log(capsys):
    from autogrow.engine.progress import EpochProgress, format_seconds
    clock = iter([0.0, 10.0, 30.0, 59.0, 61.0]).__next__  # start, then one reading per update
    log_file = _Stream(tty=False)
    progress = EpochProgress("epoch 3 (grow, 2-1-1)", total=100, initial=20, images_per_step=64,
                             log_every=30.0, stream=log_file, clock=clock)
    for step in (21, 22, 40, 41):
        progress.update(step)
    progress.close()
    captured = capsys.readouterr()  # structlog's default output outside the command line
    lines = [ln for ln in (captured.out + captured.err).splitlines() if "images/s" in ln]
    # t=10: too early; t=30: a line (2 steps in 30 s); t=59: < 30 s after it; t=61: a line
    assert len(lines) == 2 and not log_file.text
    assert "epoch 3 (grow, 2-1-1) step 22/100  4 images/s  ETA 19m30s" in lines[0]
    assert "step 41/100  22 images/s  ETA 2m51s" in lines[1]
    terminal = _Stream(tty=True)
    bar = EpochProgress("epoch 1", total=10, images_per_step=8, stream=terminal)
    bar.update(5)
    bar.close()
    assert any("epoch 1:" in t and "0/10" in t for t in terminal.text)  # tqdm drew a bar there
    assert format_seconds(3725) == "1h02m05s" and format_seconds(7) == "7s"
