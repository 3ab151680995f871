"""Crash harness: SIGKILL a real run at random moments, resume, repeat; the result must be exactly
the uninterrupted run's (same events bar timestamps/durations/resume markers, same weights)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from autogrow.replay.verify import verify_run
from autogrow.storage import EventLog
from tests.conftest import REPO, autogrow_cli
from tests.test_engine import comparable

KILLS = 12
SNAPSHOT_PAUSE = "0.25"  # widen the mid-snapshot-write window (autogrow/storage/snapshots.py)
APPEND_PAUSE = "0.15"    # widen the mid-append window (autogrow/storage/log.py)


def _start(args: list[str], env_extra: dict[str, str]) -> subprocess.Popen:
    env = dict(os.environ, **env_extra)
    env.setdefault("AUTOGROW_CACHE_DIR", str(REPO / ".pytest_cache" / "autogrow-data"))
    return subprocess.Popen([sys.executable, "-m", "autogrow", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _partial_snapshot(run_dir: Path) -> set[str]:
    snaps = run_dir / "snapshots"
    return {p.name for p in snaps.glob(".tmp-*.partial")} if snaps.is_dir() else set()


def _torn_tail(run_dir: Path) -> int | None:
    """The log's size when its last line is incomplete (a record half written), else None."""
    path = run_dir / "events.jsonl"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return len(data) if data and not data.endswith(b"\n") else None


def _wait_for(proc: subprocess.Popen, mode: str, nth: int, run_dir: Path, rng: random.Random,
              deadline: float) -> bool:
    """Wait for the kill moment of ``mode``; False if the process ended first."""
    if mode == "train":
        until = time.monotonic() + rng.uniform(2.0, 6.0)
        while time.monotonic() < until:
            if proc.poll() is not None:
                return False
            time.sleep(0.02)
        return True
    # Leftovers of the previous kill (a temp file, a torn tail) are not this process's windows.
    stale_files, stale_tail = _partial_snapshot(run_dir), _torn_tail(run_dir)
    seen: set[object] = set()
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if mode == "snapshot":
            marker = _partial_snapshot(run_dir) - stale_files
            if marker:
                seen.add(frozenset(marker))
        else:
            tail = _torn_tail(run_dir)
            if tail is not None and tail != stale_tail:
                seen.add(tail)
        if len(seen) >= nth:
            return True
        time.sleep(0.005)
    raise AssertionError(f"no {mode} window seen within the deadline")


def _complete_prefix(run_dir: Path) -> bytes:
    path = run_dir / "events.jsonl"
    if not path.exists():
        return b""
    data = path.read_bytes()
    return data[: data.rfind(b"\n") + 1]


def test_sigkill_anywhere_then_resume_is_bit_identical(smoke_run, tmp_path):
    rng = random.Random(20261126)
    run_dir = tmp_path / "crashy"
    modes = ["train", "snapshot", "append"] * (KILLS // 3)
    rng.shuffle(modes)
    prefixes: list[bytes] = []
    kills = 0
    began = time.monotonic()
    finished = False
    deadline = time.monotonic() + 900
    for mode in modes:
        started = (run_dir / "events.jsonl").exists()
        args = ["resume", str(run_dir)] if started else ["grow", "--preset", "smoke", "--run-dir",
                                                          str(run_dir)]
        env = {"snapshot": {"AUTOGROW_TEST_SNAPSHOT_PAUSE": SNAPSHOT_PAUSE},
               "append": {"AUTOGROW_TEST_APPEND_PAUSE": APPEND_PAUSE}}.get(mode, {})
        proc = _start(args, env)
        try:
            hit = _wait_for(proc, mode, rng.randint(1, 2), run_dir, rng, deadline)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait()
        if not hit:
            assert proc.returncode == 0, proc.stderr.read().decode()
            finished = True
            break
        kills += 1
        prefixes.append(_complete_prefix(run_dir))
        records = prefixes[-1].count(b"\n")
        print(f"kill {kills}: {mode} at {time.monotonic() - began:.1f} s, {records} complete records")
    if not finished:
        autogrow_cli("resume", str(run_dir), check=True)
    assert kills >= 10, f"only {kills} kills landed before the run finished"
    final = (run_dir / "events.jsonl").read_bytes()
    for prefix in prefixes:  # no complete record was ever lost or changed
        assert final.startswith(prefix)
    report = verify_run(run_dir)
    assert report.ok, report.problems
    assert comparable(run_dir) == comparable(smoke_run)
    assert b'"run_resumed"' in final


def test_resume_inside_an_epoch_with_step_snapshots(tmp_path):
    """--snapshot-every-steps: a kill mid-epoch resumes at the last step snapshot, bit-identically."""
    flags = ["--preset", "smoke", "--snapshot-every-steps", "4"]
    reference = tmp_path / "reference"
    autogrow_cli("grow", *flags, "--run-dir", str(reference), check=True)
    run_dir = tmp_path / "cut"
    proc = _start(["grow", *flags, "--run-dir", str(run_dir)], {})
    try:
        deadline = time.monotonic() + 300
        while b'"label":"step"' not in (_complete_prefix(run_dir) or b""):
            assert proc.poll() is None and time.monotonic() < deadline, "no step snapshot seen"
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    autogrow_cli("resume", str(run_dir), check=True)
    with EventLog.open(run_dir, readonly=True) as log:
        resumed = [r for r in log.records if r.type == "run_resumed"]
        snaps = {r.seq: r.payload for r in log.records if r.type == "snapshot_written"}
    assert len(resumed) == 1 and snaps[resumed[0].payload["from_seq"]]["step"] > 0
    assert verify_run(run_dir).ok
    assert comparable(run_dir) == comparable(reference)
