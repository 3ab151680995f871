"""Crash harness: SIGKILL a real run at moments taken from its own progress, relaunch the same
command, repeat; the result must be exactly the uninterrupted run's (same events bar timestamps,
durations and bookkeeping, same weights), and no complete record may ever be lost.

No kill moment is a guess about time. Each launch gets a test hook that stops it at a chosen
point and says so on stderr, and the harness SIGKILLs it there: after its N-th training step
(``AUTOGROW_TEST_PAUSE_AT_STEP``), in the middle of its N-th snapshot write
(``AUTOGROW_TEST_SNAPSHOT_PAUSE``) or of its N-th log append (``AUTOGROW_TEST_APPEND_PAUSE``).
So every kill lands wherever the machine's load puts the scheduler, and the run is long enough
that all of them do (see ``RUN_FLAGS``).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from autogrow.replay.verify import verify_run
from autogrow.storage import EventLog
from tests.conftest import REPO, autogrow_cli
from tests.test_engine import comparable

KILLS = 12
STEPS = 17  # training steps per epoch of the smoke preset (1,080 images, batch 64)
# A kill costs the run at most one epoch of durable progress: a launch paused after step
# N <= STEPS has not finished an epoch since its snapshot; one killed in its 1st or 2nd snapshot
# write or its 1st to 3rd append has made at most one epoch durable. 5 growth + 10 fine-tune
# epochs leave every one of the 12 kills its moment, with 3 epochs to spare.
RUN_FLAGS = ["--preset", "smoke", "--finetune-epochs", "10"]
MARKER = b"autogrow-test: paused"
HOLD = "600"  # seconds a hooked write waits: "until killed"


def launch(args: list[str], env_extra: dict[str, str], **popen) -> subprocess.Popen:
    env = dict(os.environ, **env_extra)
    return subprocess.Popen([sys.executable, "-m", "autogrow", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **popen)


def wait_for_pause(proc: subprocess.Popen, count: int = 1) -> bool:
    """Read the process's stderr until ``count`` test-hook markers (True) or its end (False)."""
    seen = 0
    for line in proc.stderr:
        seen += line.count(MARKER)
        if seen >= count:
            return True
    return False


def partial_snapshots(run_dir: Path) -> set[str]:
    snaps = run_dir / "snapshots"
    return {p.name for p in snaps.glob(".tmp-*.partial")} if snaps.is_dir() else set()


def torn_tail(run_dir: Path) -> bool:
    data = (run_dir / "events.jsonl").read_bytes()
    return bool(data) and not data.endswith(b"\n")


def complete_prefix(run_dir: Path) -> bytes:
    path = run_dir / "events.jsonl"
    if not path.exists():
        return b""
    data = path.read_bytes()
    return data[: data.rfind(b"\n") + 1]


@pytest.fixture(scope="module")
def long_smoke(tmp_path_factory) -> Path:
    """The uninterrupted run the crashed one must equal."""
    run_dir = tmp_path_factory.mktemp("long") / "run"
    autogrow_cli("grow", *RUN_FLAGS, "--run-dir", str(run_dir), check=True)
    return run_dir


def test_sigkill_anywhere_then_relaunch_is_bit_identical(long_smoke, tmp_path):
    rng = random.Random(20261126)
    run_dir = tmp_path / "crashy"
    command = ["grow", *RUN_FLAGS, "--run-dir", str(run_dir), "--resume-if-exists"]
    modes = ["train", "snapshot", "append"] * (KILLS // 3)
    rng.shuffle(modes)
    prefixes: list[bytes] = []
    for kill, mode in enumerate(modes, 1):
        hook = {"train": ("AUTOGROW_TEST_PAUSE_AT_STEP", str(rng.randint(1, STEPS))),
                "snapshot": ("AUTOGROW_TEST_SNAPSHOT_PAUSE", f"{HOLD}@{rng.randint(1, 2)}"),
                "append": ("AUTOGROW_TEST_APPEND_PAUSE", f"{HOLD}@{rng.randint(1, 3)}")}[mode]
        stale = partial_snapshots(run_dir)
        proc = launch(command, dict([hook]))
        try:
            paused = wait_for_pause(proc)
            if paused:  # the process is held inside the window: check it is really there
                if mode == "snapshot":
                    assert partial_snapshots(run_dir) - stale, "no half-written snapshot"
                if mode == "append":
                    assert torn_tail(run_dir), "no half-written record"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert paused, f"kill {kill} ({mode} {hook[1]}): the run ended before its kill moment " \
                       f"(exit {proc.returncode})"
        prefixes.append(complete_prefix(run_dir))
        records = prefixes[-1].count(b"\n")
        print(f"kill {kill}: {mode} {hook[0]}={hook[1]}, {records} complete records")
    done = launch(command, {})
    _, err = done.communicate(timeout=600)
    assert done.returncode == 0, err.decode()
    final = (run_dir / "events.jsonl").read_bytes()
    for prefix in prefixes:  # no complete record was ever lost or changed
        assert final.startswith(prefix)
    report = verify_run(run_dir)
    assert report.ok, report.problems
    assert comparable(run_dir) == comparable(long_smoke)
    assert final.count(b'"type":"run_resumed"') >= KILLS - 1


def test_resume_inside_an_epoch_with_step_snapshots(tmp_path):
    """--snapshot-every-steps: a kill mid-epoch resumes at the last step snapshot, bit-identically."""
    flags = ["--preset", "smoke", "--snapshot-every-steps", "4"]
    reference = tmp_path / "reference"
    autogrow_cli("grow", *flags, "--run-dir", str(reference), check=True)
    run_dir = tmp_path / "cut"
    # Held after step 6 of epoch 2: the step-4 snapshot of that epoch is the latest.
    proc = launch(["grow", *flags, "--run-dir", str(run_dir)],
                  {"AUTOGROW_TEST_PAUSE_AT_STEP": str(STEPS + 6)})
    try:
        assert wait_for_pause(proc), "the run ended before step 23"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    autogrow_cli("resume", str(run_dir), check=True)
    with EventLog.open(run_dir, readonly=True) as log:
        resumed = [r for r in log.records if r.type == "run_resumed"]
        snaps = {r.seq: r.payload for r in log.records if r.type == "snapshot_written"}
    assert len(resumed) == 1
    start = snaps[resumed[0].payload["from_seq"]]
    assert (start["epoch"], start["step"]) == (1, 4)
    assert verify_run(run_dir).ok
    assert comparable(run_dir) == comparable(reference)
    # the resumed run re-executes (issue 15): the epoch cut mid-way included, from its start
    from autogrow.engine.reexecute import reexecute
    outcome = reexecute(run_dir, None)
    assert outcome.ok and str(start["epoch"] + 1) in {row.epoch for row in outcome.rows}
