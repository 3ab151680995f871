"""Growing under DistributedDataParallel: torchrun with 2 gloo processes on CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from autogrow.replay import live_events, state_of
from autogrow.replay.verify import verify_run
from autogrow.storage import EventLog
from tests.conftest import REPO, autogrow_cli


def _torchrun(nproc: int, *args: str, env_extra: dict[str, str] | None = None,
              **popen) -> subprocess.Popen:
    env = dict(os.environ, **(env_extra or {}))
    env.setdefault("AUTOGROW_CACHE_DIR", str(REPO / ".pytest_cache" / "autogrow-data"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", "autogrow", *args]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **popen)


def _descendants(pid: int) -> list[int]:
    """All processes below ``pid`` (torchrun starts its workers in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill_everything(proc: subprocess.Popen) -> None:
    """SIGKILL torchrun and every worker at once, as a preempted machine would."""
    for pid in [proc.pid, *_descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def _events(run_dir: Path):
    with EventLog.open(run_dir, readonly=True) as log:
        return [ev for _, ev in live_events(log.records)]


def test_two_processes_grow_with_identical_weights_on_every_rank(smoke_run, tmp_path):
    run_dir, digests = tmp_path / "ddp", tmp_path / "digests"
    proc = _torchrun(2, "grow", "--preset", "smoke", "--run-dir", str(run_dir),
                     env_extra={"AUTOGROW_RANK_DIGESTS": str(digests)})
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    events = _events(run_dir)
    growths = [e for e in events if e.TYPE == "block_added"]
    assert len(growths) >= 2
    per_rank = [[json.loads(line) for line in (digests / f"rank{r}.jsonl").read_text().splitlines()]
                for r in (0, 1)]
    assert [d["growth"] for d in per_rank[0]] == [g.growth_index for g in growths]
    assert per_rank[0] == per_rank[1]  # the same net on both ranks after every growth
    assert events[0].versions["processes"] == 2
    assert verify_run(run_dir).ok
    # the one-process run of the same config also finished and verifies
    assert verify_run(smoke_run).ok and state_of(EventLog.open(smoke_run, readonly=True).records).result


def test_kill_the_whole_group_then_resume_with_one_process(tmp_path):
    run_dir = tmp_path / "ddp-killed"
    proc = _torchrun(2, "grow", "--preset", "smoke", "--run-dir", str(run_dir))
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "the run did not grow twice in time"
            log = run_dir / "events.jsonl"
            if log.exists() and log.read_bytes().count(b'"type":"block_added"') >= 2:
                break
            time.sleep(0.05)
    finally:
        _kill_everything(proc)
    deadline = time.monotonic() + 30
    while any(p for p in _descendants(os.getpid()) if p != proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)  # the kernel reaps the killed workers
    autogrow_cli("resume", str(run_dir), check=True)
    events = _events(run_dir)
    assert events[-1].TYPE == "run_finished"
    assert any(e.TYPE == "run_resumed" for e in events)
    assert verify_run(run_dir).ok
