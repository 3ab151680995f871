"""Growing under DistributedDataParallel: torchrun with 2 gloo processes on CPU."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autogrow.replay import live_events, state_of
from autogrow.replay.verify import verify_run
from autogrow.storage import EventLog
from tests.conftest import REPO, autogrow_cli
from tests.test_crash import MARKER, STEPS
from tests.test_engine import comparable


def _torchrun(nproc: int, *args: str, env_extra: dict[str, str] | None = None,
              max_restarts: int = 0, **popen) -> subprocess.Popen:
    env = dict(os.environ, **(env_extra or {}))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", f"--max-restarts={max_restarts}", "-m", "autogrow", *args]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **popen)


def _children_by_parent() -> dict[int, list[int]]:
    """Every process's children, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return children


def _descendants(pid: int) -> list[int]:
    """All processes below ``pid`` (torchrun starts its workers in sessions of their own)."""
    children = _children_by_parent()
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _loader_workers(pid: int) -> list[int]:
    """The image-folder loader's workers below ``pid``: spawned interpreters (multiprocessing's
    resource tracker, which spawning starts beside them, is not one)."""
    return [p for p in _descendants(pid) if "multiprocessing.spawn" in _cmdline(p)]


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


THREADS = {"AUTOGROW_TEST_THREADS": "1"}  # each rank prints its thread count around its group


def assert_group_left_no_threads(out: str, ranks: int = 2) -> None:
    """Every rank's thread count after its process group was shut down is the count from before
    it started: no group, DDP wrapper or reducer (nor their gloo threads) outlived it, so none
    can reach interpreter exit, where tearing one down aborted finished runs (SIGABRT)."""
    counts = re.findall(r"autogrow-test: threads (\d+) (\d+) (\d+)", out)
    assert sorted(int(rank) for rank, _, _ in counts) == list(range(ranks)), out[-3000:]
    assert all(before == after for _, before, after in counts), counts


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> tuple[Path, Path]:
    """A finished two-process smoke run and each rank's state digests after every growth and
    every evaluation."""
    base = tmp_path_factory.mktemp("ddp")
    run_dir, digests = base / "run", base / "digests"
    proc = _torchrun(2, "grow", "--preset", "smoke", "--run-dir", str(run_dir),
                     env_extra={"AUTOGROW_RANK_DIGESTS": str(digests), **THREADS})
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    (base / "output").write_text(out)
    return run_dir, digests


def _relaunch_to_the_uninterrupted_end(command: list[str], run_dir: Path, whole: Path) -> None:
    """Relaunch ``command`` under torchrun 2: it finishes the suspended run with the
    uninterrupted run's log and weights, and the result verifies."""
    again = _torchrun(2, *command)
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out
    assert comparable(run_dir) == comparable(whole)
    assert _final_digest(run_dir) == _final_digest(whole)
    assert verify_run(run_dir).ok


def _final_digest(run_dir: Path) -> str:
    return [e for e in _events(run_dir) if e.TYPE == "run_finished"][-1].weights_digest


def _wait_for_markers(proc: subprocess.Popen, count: int) -> str:
    """torchrun's merged output up to ``count`` test-hook markers (one per rank)."""
    seen, lines = 0, []
    for line in proc.stdout:
        lines.append(line)
        seen += line.count(MARKER.decode())  # ranks share the stream: anywhere in a line
        if seen >= count:
            return "".join(lines)
    raise AssertionError("the run ended before every rank reached the pause:\n" + "".join(lines))


def test_two_processes_hold_the_same_state_at_every_growth_and_evaluation(ddp_run, smoke_run):
    """Parameters and buffers (BatchNorm statistics) are equal on both ranks after every growth
    and at every evaluation, so every logged metric is a function of rank 0's snapshot. Fails
    if evaluation does not first give every rank rank 0's buffers (each rank's statistics are
    of its own share of the last batch until DDP's next forward)."""
    run_dir, digests = ddp_run
    events = _events(run_dir)
    growths = [e for e in events if e.TYPE == "block_added"]
    epochs = [e.epoch for e in events if e.TYPE == "epoch_completed"]
    assert len(growths) >= 2
    per_rank = [[json.loads(line) for line in (digests / f"rank{r}.jsonl").read_text().splitlines()]
                for r in (0, 1)]
    points = [d["point"] for d in per_rank[0]]
    assert [p for p in points if p.startswith("growth")] == [f"growth {g.growth_index}"
                                                            for g in growths]
    assert [p for p in points if p.startswith("val")] == [f"val {e}" for e in epochs]
    assert points[-1] == "test"
    assert per_rank[0] == per_rank[1]  # the same state on both ranks at each of those points
    assert events[0].versions["processes"] == 2
    assert verify_run(run_dir).ok
    assert_group_left_no_threads((run_dir.parent / "output").read_text())  # success, growths
    # the one-process run of the same config also finished and verifies
    assert verify_run(smoke_run).ok and state_of(EventLog.open(smoke_run, readonly=True).records).result


def test_kill_the_whole_group_then_resume_with_one_process(tmp_path):
    run_dir = tmp_path / "ddp-killed"
    # both ranks held after 3 epochs (2 growths done), then the whole group SIGKILLed
    proc = _torchrun(2, "grow", "--preset", "smoke", "--run-dir", str(run_dir),
                     env_extra={"AUTOGROW_TEST_PAUSE_AT_STEP": str(3 * STEPS + 1)})
    try:
        _wait_for_markers(proc, 2)
    finally:
        _kill_everything(proc)
    assert (run_dir / "events.jsonl").read_bytes().count(b'"type":"block_added"') >= 2
    _wait_for_no_workers(proc)
    autogrow_cli("resume", str(run_dir), check=True)
    events = _events(run_dir)
    assert events[-1].TYPE == "run_finished"
    assert any(e.TYPE == "run_resumed" for e in events)
    assert verify_run(run_dir).ok


def test_sigterm_to_torchrun_suspends_both_ranks_at_one_step_and_relaunch_finishes(ddp_run, tmp_path):
    run_dir = tmp_path / "ddp-preempted"
    command = ["grow", "--preset", "smoke", "--run-dir", str(run_dir), "--resume-if-exists"]
    proc = _torchrun(2, *command, env_extra={"AUTOGROW_TEST_PAUSE_AT_STEP": str(STEPS + 6),
                                             **THREADS})
    try:
        out = _wait_for_markers(proc, 2)
        proc.send_signal(signal.SIGTERM)  # to the agent only, as a scheduler does; it forwards
        out += proc.communicate(timeout=300)[0]
    finally:
        _kill_everything(proc)
    assert proc.returncode != 0
    assert_group_left_no_threads(out)  # the suspend path
    records = EventLog.open(run_dir, readonly=True).records
    suspended = [r for r in records if r.type == "run_suspended"]
    assert [r.payload for r in suspended] == [{"signal": "TERM", "epoch": 1, "step": 6}], out
    assert sum(r.type == "snapshot_written" and r.payload["label"] == "suspend" for r in records) == 1
    # one line says where the run stopped (rank 0's), not one per rank (issue 22 item 5)
    stops = [ln for ln in out.splitlines() if "run suspended" in ln]
    assert len(stops) == 1 and "step=6" in stops[0] and "epoch=1" in stops[0], out
    assert sum("stop requested" in ln for ln in out.splitlines()) == 1, out
    _wait_for_no_workers(proc)

    _relaunch_to_the_uninterrupted_end(command, run_dir, ddp_run[0])


def test_torchrun_max_restarts_with_resume_if_exists_survives_a_worker_crash(ddp_run, tmp_path):
    """One worker SIGKILLed mid-epoch: torchrun restarts both, the same command line resumes the
    run (no wrapper script) and it ends with the uninterrupted two-process weights."""
    run_dir = tmp_path / "ddp-restarted"
    # TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1: without it, torchrun's restarted workers may read a
    # dead worker's address from the store they share with the rendezvous and fail to connect
    # (pytorch/pytorch#135712; seen here in 2 of 3 runs on a loaded machine). README says so.
    proc = _torchrun(2, "grow", "--preset", "smoke", "--run-dir", str(run_dir),
                     "--resume-if-exists", max_restarts=1,
                     env_extra={"AUTOGROW_TEST_PAUSE_AT_STEP": str(STEPS + 6),
                                "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"})
    try:
        _wait_for_markers(proc, 2)
        workers = [p for p in _descendants(proc.pid) if "autogrow" in _cmdline(p)]
        os.kill(max(workers), signal.SIGKILL)  # one rank dies, as on a failed GPU
        out, _ = proc.communicate(timeout=600)
    finally:
        _kill_everything(proc)
    assert proc.returncode == 0, out
    events = _events(run_dir)
    assert events[-1].TYPE == "run_finished" and any(e.TYPE == "run_resumed" for e in events)
    assert _final_digest(run_dir) == _final_digest(ddp_run[0])
    assert verify_run(run_dir).ok


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _wait_for_no_workers(proc: subprocess.Popen) -> None:
    """Until the kernel has reaped the workers of a torchrun that is gone (they hold the lock).
    This process's own resource tracker (started by the in-process loader tests) stays."""
    for _ in range(6000):  # a safety net of minutes: reaping takes milliseconds
        if not any(p for p in _descendants(os.getpid()) if p != proc.pid
                   and "multiprocessing.resource_tracker" not in _cmdline(p)):
            return
        time.sleep(0.05)
    raise AssertionError("torchrun's killed workers were never reaped")


def test_ranks_whose_weights_differ_after_a_growth_stop_the_run(tmp_path):
    """Rank 1 nudges its net after the first growth (test hook): the digest all-gather after the
    growth must stop the run on every rank, naming both digests, and log the failure (fails if
    the ranks' agreement check in Run._grow is removed: the run would finish)."""
    run_dir = tmp_path / "run"
    proc = _torchrun(2, "grow", "--preset", "smoke", "--run-dir", str(run_dir),
                     env_extra={"AUTOGROW_TEST_PERTURB_RANK": "1", **THREADS})
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode != 0, out
    assert_group_left_no_threads(out)  # the exception path: the traceback let go of the group
    assert "after growth 0 the ranks' weights differ" in out
    message = next(line for line in out.splitlines() if "ranks' weights differ" in line)
    assert len(re.findall(r"\b[0-9a-f]{12}\b", message)) >= 2  # both ranks' digests, named
    events = _events(run_dir)
    assert events[-1].TYPE == "run_failed" and "weights differ" in events[-1].reason
    assert not any(e.TYPE == "run_finished" for e in events)


def test_a_two_process_run_reexecutes_under_torchrun_and_not_in_one_process(ddp_run):
    """Re-execution of a DDP run (issue 15): one process cannot reproduce it (each rank's
    BatchNorm statistics are of its own share of the batch) and says so, naming the command;
    torchrun with the run's process count re-executes every epoch bit for bit."""
    run_dir, _ = ddp_run
    one = autogrow_cli("verify", str(run_dir), "--reexecute", "all")
    assert one.returncode == 2, one.stdout + one.stderr
    assert "trained in 2 process(es)" in one.stderr and "torchrun --nproc-per-node 2" in one.stderr
    proc = _torchrun(2, "verify", str(run_dir), "--reexecute", "all", env_extra=THREADS)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert out.count("re-executing every epoch") == 1  # rank 0 prints, the other rank computes
    assert "MISMATCH" not in out and "standard: exact" in out
    assert "compared tolerantly" not in out  # evaluations included: this run used rank 0's buffers
    assert re.search(r"final +\d+ +test loss, acc +ok: equal", out), out
    assert_group_left_no_threads(out)  # re-execution builds a DDP wrapper per epoch
    epochs = {line.split()[0] for line in out.split("result\n", 1)[1].splitlines()
              if line.split() and line.split()[0].isdigit()}
    finished = [e for e in _events(run_dir) if e.TYPE == "epoch_completed"]
    assert epochs == {str(e.epoch) for e in finished}


def _rank_pid(proc: subprocess.Popen, rank: int) -> int:
    """The pid of the main process torchrun started as ``rank`` (one of its own children: a
    rank's loader workers below it share its environment and command line)."""
    for pid in _children_by_parent().get(proc.pid, []):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ:
            return pid
    raise AssertionError(f"no worker of rank {rank} under torchrun {proc.pid}")


def test_suspends_at_an_epochs_last_step_and_before_the_final_evaluation_resume_exactly(
        ddp_run, tmp_path):
    """Two seams of a two-process run, each relaunched with the same command:

    1. A stop signal to rank 1 alone, paused after the last step of epoch 2 while rank 0 runs
       on into the next collective: the ranks agree (one all-reduce) and both stop at that
       step, with one snapshot. (Fails if ``StopControl.poll`` does not all-reduce: rank 0
       would train on alone.) The resume evaluates epoch 2 from that snapshot.
    2. A stop at the boundary before the final evaluation: the resume evaluates the test set
       from the last epoch snapshot.
    The log and the weights equal the uninterrupted run's (fails if an evaluation used any
    rank's own BatchNorm statistics instead of rank 0's, which the snapshots hold)."""
    run_dir = tmp_path / "ddp-seams"
    command = ["grow", "--preset", "smoke", "--run-dir", str(run_dir), "--resume-if-exists"]
    proc = _torchrun(2, *command, env_extra={"AUTOGROW_TEST_PAUSE_AT_STEP": str(2 * STEPS),
                                             "AUTOGROW_TEST_PAUSE_RANK": "1"})
    try:
        out = _wait_for_markers(proc, 1)
        os.kill(_rank_pid(proc, 1), signal.SIGUSR1)  # rank 1 alone hears it
        out += proc.communicate(timeout=300)[0]
    finally:
        _kill_everything(proc)
    records = EventLog.open(run_dir, readonly=True).records
    suspended = [r.payload for r in records if r.type == "run_suspended"]
    assert suspended == [{"signal": "USR1", "epoch": 1, "step": STEPS}], out
    assert sum(r.type == "snapshot_written" and r.payload["label"] == "suspend"
               for r in records) == 1
    stops = [ln for ln in out.splitlines() if "run suspended" in ln]
    assert len(stops) == 1 and f"step={STEPS}" in stops[0], out
    _wait_for_no_workers(proc)

    proc = _torchrun(2, *command, env_extra={"AUTOGROW_TEST_PAUSE_AT_STEP": "evaluation"})
    try:
        out = _wait_for_markers(proc, 2)
        proc.send_signal(signal.SIGTERM)
        out += proc.communicate(timeout=300)[0]
    finally:
        _kill_everything(proc)
    records = EventLog.open(run_dir, readonly=True).records
    assert records[-1].type == "run_suspended" and records[-1].payload["step"] == 0, out
    assert not any(r.type == "run_finished" for r in records)
    _wait_for_no_workers(proc)

    _relaunch_to_the_uninterrupted_end(command, run_dir, ddp_run[0])
