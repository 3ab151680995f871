"""SLURM for real: the shipped job scripts submitted with `sbatch` to a one-node cluster on
localhost (scripts/local_slurm.py: slurmctld, slurmd and munged started by the module fixture,
stopped by pid at its end), and what autogrow does on each SLURM event, read from SLURM's own
job records (`scontrol show job`: state, Restarts) and from the runs' logs.

- `scancel JOB`: the run snapshots, logs `run_suspended` (TERM) and the job ends CANCELLED and
  stays ended (Restarts=0: no requeue).
- A job array of two sweep cells, one task sent USR1: that task alone is requeued (by its own
  ARRAYJOB_TASK id) and continues; the other runs through untouched; each cell ends with the
  digest of the same cell run alone (`autogrow sweep SPEC --cell I`).
- (``make test-slurm``) The time limit's USR1 (`--signal=USR1@N`): the job requeues itself once
  and finishes with the uninterrupted run's digest; a preemption by a job of a higher-priority
  partition (preempt/partition_prio, PreemptMode=REQUEUE, with and without GraceTime): requeued
  exactly once, finished with the same digest.

Each job script is the shipped example with the test's own settings: resources and timing as
sbatch command-line options (they override the script's #SBATCH lines; `--gpus-per-node=0` and
`--gpus-per-task=0` cancel the GPU requests on this GPU-less node), a small run in place of the
ImageNet one, and one inserted line, the test hook: the first attempt of the job (the array task
whose JobId is the array's own id) pauses after a given training step and waits there for a
signal, so every signal arrives at a known point, never at a guessed time. A requeued attempt
runs through (SLURM_RESTART_COUNT > 0). A requeued job waits out SLURM's requeue delay (about
two minutes) unless ``scontrol update JobId=… StartTime=now+2``, which the tests do once the job
is back in PENDING. Not ``now``: slurmd revokes a killed job's credentials with one-second
resolution, and a relaunch within the second of the kill is refused ("Job N already killed, do
not launch batch job") and the job ends FAILED (seen once in 5 runs of the array test).

Without slurmdbd there is no `sacct`; finished jobs stay in `scontrol show job` for the cluster's
MinJobAge (an hour), which is what the tests read: the final state and the restart count. They
do not require autogrow's last lines ("requeued SLURM job …", "not requeued after SIGTERM") in
the job's log: SLURM signals every process of a job it requeues or cancels (SIGCONT, SIGTERM),
and a line written after the run loop has given back its signal handlers can be cut off by it
(the "requeued" line was missing in 2 of 5 time-limit runs: `scontrol requeue` of the job itself
starts that kill).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from autogrow.replay import decode_record
from autogrow.replay.verify import verify_run
from autogrow.storage import EventLog
from tests.conftest import REPO, autogrow_cli

pytestmark = pytest.mark.slurm

SCRIPT = REPO / "scripts" / "local_slurm.py"
DEADLINE = 300.0  # seconds any one wait on SLURM or a job may take before the test fails
MARKER = "autogrow-test: paused"
# A run small enough for `make test`: 9 steps an epoch (540 images), 3 growth epochs, 1 fine-tune.
TINY = "--preset smoke --max-growth-epochs 3 --subset 0.01 --max-val 200 --max-test 200"
IMAGENET_ARGS = '--preset paper-imagenet --data-root "$DATA"'  # what slurm.sbatch trains
SWEEP_SPEC = """\
preset = "smoke"
seeds = [0, 1]
[settings]
threads = 1             # two tasks side by side on a 2-core node; the same alone
max_growth_epochs = 1
subset = 0.01
max_val = 200
max_test = 200
"""
PAUSE_STEP = 3       # epoch 1, step 3
PAUSE_AFTER_GROWTH = 12  # epoch 2, step 3: after the first growth
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
            "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY"}


# -- the cluster ----------------------------------------------------------------------------------

class Cluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = dict(os.environ, SLURM_CONF=str(root / "slurm.conf"))

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(list(args), env=self.env, capture_output=True, text=True,
                              timeout=120, cwd=REPO)
        if check and proc.returncode != 0:
            raise AssertionError(f"{shlex.join(args)} failed ({proc.returncode}): "
                                 f"{proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    def job(self, job: str) -> dict[str, str]:
        """`scontrol show job -o JOB` as a dict (JobState, Restarts, ...); {} once it is gone."""
        proc = self.run("scontrol", "show", "job", "-o", job, check=False)
        fields: dict[str, str] = {}
        for word in proc.stdout.split():
            key, sep, value = word.partition("=")
            if sep and key not in fields:
                fields[key] = value
        return fields

    def state(self, job: str) -> str:
        return self.job(job).get("JobState", "")

    def log_tail(self, name: str, lines: int = 25) -> str:
        path = self.root / "log" / name
        try:
            return "\n".join(path.read_text().splitlines()[-lines:])
        except OSError:
            return f"(no {path})"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Cluster:
    """A one-node SLURM cluster for this module, stopped (by the daemons' pids) at its end.
    Where SLURM is missing and cannot be installed the tests fail, saying so: they never skip."""
    root = tmp_path_factory.mktemp("slurm")
    started = subprocess.run([sys.executable, str(SCRIPT), "start", str(root)],
                             capture_output=True, text=True, timeout=900)
    if started.returncode != 0:
        pytest.fail(f"could not start the local SLURM cluster ({SCRIPT.name} start):\n"
                    f"{started.stderr}{started.stdout}", pytrace=False)
    try:
        yield Cluster(root)
    finally:
        stopped = subprocess.run([sys.executable, str(SCRIPT), "stop", str(root)],
                                 capture_output=True, text=True, timeout=300)
        assert stopped.returncode == 0, stopped.stderr


@pytest.fixture
def jobs(cluster):
    """Job ids a test submits; whatever is still queued or running at its end is cancelled, and
    the node is free again before the next test."""
    submitted: list[str] = []
    yield submitted
    live = [j for j in submitted if cluster.state(j) not in TERMINAL | {""}]
    if live:
        cluster.run("scancel", *live, check=False)
    wait_until("the test's jobs ended", cluster, lambda: all(
        cluster.state(j) in TERMINAL | {""} for j in submitted))


def wait_until(what: str, cluster: Cluster, predicate, *, job: str | None = None,
               log: Path | None = None, timeout: float = DEADLINE):
    """Poll ``predicate`` (a truthy result ends the wait and is returned); fail with what SLURM
    and the job's log say when it has not held after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            detail = f"\njob {job}: {cluster.job(job)}" if job else ""
            if log is not None:
                detail += f"\n--- {log} ---\n" + (log.read_text()[-4000:] if log.exists() else "")
            pytest.fail(f"{what}: not within {timeout:g} s{detail}\n--- slurmctld.log ---\n"
                        f"{cluster.log_tail('slurmctld.log')}", pytrace=False)
        time.sleep(0.2)


def wait_for_state(cluster: Cluster, job: str, wanted: str, log: Path | None = None,
                   restarts: int | None = None) -> dict[str, str]:
    """Wait until ``job`` is in state ``wanted`` (and has been restarted ``restarts`` times); fail
    at once when it reaches another final state instead."""
    def reached():
        info = cluster.job(job)
        state = info.get("JobState", "")
        if state in TERMINAL and state != wanted:
            pytest.fail(f"job {job} ended {state}, not {wanted}: {info}\n--- {log} ---\n"
                        + (log.read_text()[-4000:] if log and log.exists() else ""),
                        pytrace=False)
        if state == wanted and (restarts is None or info.get("Restarts") == str(restarts)):
            return info
        return None
    return wait_until(f"job {job} reaching {wanted}", cluster, reached, job=job, log=log)


def wait_for_pause(cluster: Cluster, job: str, log: Path) -> None:
    """Until the job's log shows the test hook holding the run at its step."""
    def paused():
        if cluster.state(job) in TERMINAL:
            pytest.fail(f"job {job} ended before it paused: {cluster.job(job)}\n"
                        + (log.read_text()[-4000:] if log.exists() else ""), pytrace=False)
        return log.exists() and MARKER in log.read_text()
    wait_until(f"job {job} pausing at its step", cluster, paused, job=job, log=log)


def release_requeued(cluster: Cluster, job: str, log: Path, **update: str) -> None:
    """Wait until the job is back in PENDING after one requeue, then let it start in 2 s (not
    at once: see the module's docstring)."""
    wait_for_state(cluster, job, "PENDING", log, restarts=1)
    settings = [f"{key}={value}" for key, value in update.items()]
    cluster.run("scontrol", "update", f"JobId={job}", *settings, "StartTime=now+2")


# -- the job scripts --------------------------------------------------------------------------------

def hook(step: int, condition: str = "true") -> str:
    return ('if [ "${SLURM_RESTART_COUNT:-0}" = 0 ] && ' + condition + "; then  # test hook\n"
            f"    export AUTOGROW_TEST_PAUSE_AT_STEP={step}\nfi\n")


def example(tmp_path: Path, name: str, test_hook: str,
            replace: tuple[tuple[str, str], ...] = ()) -> Path:
    """A copy of examples/NAME with ``replace`` done and ``test_hook`` inserted after its
    `set -euo pipefail`; everything else as shipped."""
    text = (REPO / "examples" / name).read_text()
    for old, new in replace:
        assert any(old in line and not line.lstrip().startswith("#")
                   for line in text.splitlines()), f"examples/{name} no longer runs {old!r}"
        text = text.replace(old, new)
    anchor = "set -euo pipefail\n"
    assert text.count(anchor) == 1, f"examples/{name}: no single `{anchor.strip()}` line"
    path = tmp_path / name
    path.write_text(text.replace(anchor, anchor + test_hook))
    return path


def job_env(cluster: Cluster, **extra: str) -> dict[str, str]:
    """The environment sbatch passes on to the job (--export=ALL): the cluster, this venv, the
    data cache; no SLURM or SBATCH variables of an enclosing job, no other test hooks."""
    env = {k: v for k, v in cluster.env.items()
           if not k.startswith(("SBATCH_", "SLURM_", "AUTOGROW_TEST_"))}
    env["SLURM_CONF"] = cluster.env["SLURM_CONF"]
    env.setdefault("AUTOGROW_CACHE_DIR", str(REPO / ".pytest_cache" / "autogrow-data"))
    if (Path(sys.prefix) / "bin" / "activate").exists():
        env["VENV"] = sys.prefix  # the examples activate $VENV (default: .venv of the submit dir)
    env.update(extra)
    return env


def sbatch(cluster: Cluster, jobs: list[str], script: Path, *options: str,
           env: dict[str, str]) -> str:
    proc = subprocess.run(["sbatch", "--parsable", *options, str(script)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"sbatch failed: {proc.stderr}"
    job = proc.stdout.strip().split(";")[0]
    jobs.append(job)
    return job


def cpus(cluster: Cluster) -> str:
    node = cluster.run("sinfo", "-h", "-N", "-o", "%c").stdout.split()
    return node[0]


def slurm_job(tmp_path: Path, cluster: Cluster, jobs: list[str], pause_step: int,
              *options: str) -> tuple[str, Path, Path]:
    """examples/slurm.sbatch training the tiny run with one torchrun process on all the node's
    CPUs, paused after ``pause_step`` on its first attempt: (job id, run dir, job log)."""
    script = example(tmp_path, "slurm.sbatch", hook(pause_step),
                     replace=((IMAGENET_ARGS, TINY),))
    run_dir, log = tmp_path / "run", tmp_path / "job.log"
    env = job_env(cluster, RUN_DIR=str(run_dir), NPROC="1")
    job = sbatch(cluster, jobs, script, "--gpus-per-node=0", f"--cpus-per-task={cpus(cluster)}",
                 f"--output={log}", *options, env=env)
    return job, run_dir, log


# -- the runs -------------------------------------------------------------------------------------

def events(run_dir: Path) -> list:
    with EventLog.open(run_dir, readonly=True) as log:
        return [decode_record(r) for r in log.records]


def of_type(run_dir: Path, type_: str) -> list:
    return [ev for ev in events(run_dir) if ev.TYPE == type_]


def digest(run_dir: Path) -> str:
    return of_type(run_dir, "run_finished")[-1].weights_digest


@pytest.fixture(scope="module")
def tiny_reference(tmp_path_factory) -> str:
    """The digest of the tiny run made without SLURM in one plain process (a one-process
    torchrun run computes the same weights)."""
    run_dir = tmp_path_factory.mktemp("tiny") / "run"
    autogrow_cli("grow", *TINY.split(), "--run-dir", str(run_dir), check=True)
    return digest(run_dir)


# -- make test: scancel, and an array task signalled ----------------------------------------------

def test_scancel_ends_the_job_for_good_with_a_snapshot(cluster, jobs, tmp_path):
    job, run_dir, log = slurm_job(tmp_path, cluster, jobs, PAUSE_STEP)
    wait_for_pause(cluster, job, log)
    cluster.run("scancel", job)
    info = wait_for_state(cluster, job, "CANCELLED", log)  # not COMPLETING: all processes gone
    assert info["Restarts"] == "0", info  # not requeued, by autogrow or SLURM
    assert "requeued SLURM job" not in log.read_text()
    suspended = of_type(run_dir, "run_suspended")
    assert [(s.signal, s.epoch, s.step) for s in suspended] == [("TERM", 0, PAUSE_STEP)]
    snapshot = of_type(run_dir, "snapshot_written")[-1]
    assert (snapshot.label, snapshot.step) == ("suspend", PAUSE_STEP)
    assert verify_run(run_dir).ok
    assert not of_type(run_dir, "run_finished")
    # ended for good: still CANCELLED, nothing pending under its id
    assert cluster.state(job) == "CANCELLED"
    assert cluster.run("squeue", "-h", "-j", job, "-t", "PENDING,RUNNING").stdout.strip() == ""


def test_an_array_task_signalled_is_requeued_alone_and_both_cells_equal_cells_run_alone(
        cluster, jobs, tmp_path):
    """The task whose JobId is the array's id (the one a plain `scontrol requeue $SLURM_JOB_ID`
    would requeue the whole array by) is held at its step 3 and sent USR1; it requeues only
    itself; its sibling runs through once. The same cells run alone (`sweep --cell`, no SLURM)
    meanwhile, for the digests."""
    spec, out, alone = tmp_path / "spec.toml", tmp_path / "out", tmp_path / "alone"
    spec.write_text(textwrap.dedent(SWEEP_SPEC))
    names = [line.split("\t")[1] for line in
             autogrow_cli("sweep", str(spec), "--list", check=True).stdout.splitlines()]
    assert len(names) == 2
    env = dict(os.environ)
    env.pop("AUTOGROW_TEST_PAUSE_AT_STEP", None)
    solo = [subprocess.Popen([sys.executable, "-m", "autogrow", "sweep", str(spec), "--out",
                              str(alone), "--cell", str(i)], cwd=REPO, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            for i in range(2)]
    try:
        script = example(tmp_path, "sweep.sbatch",
                         hook(PAUSE_STEP, '[ "$SLURM_JOB_ID" = "$SLURM_ARRAY_JOB_ID" ]'))
        array = sbatch(cluster, jobs, script, "--array=0-1", "--gpus-per-task=0",
                       "--cpus-per-task=1", f"--output={tmp_path}/task-%a.log",
                       env=job_env(cluster, SPEC=str(spec), OUT=str(out)))
        tasks = [f"{array}_{i}" for i in range(2)]
        logs = [tmp_path / f"task-{i}.log" for i in range(2)]
        paused = wait_until("an array task pausing at its step", cluster, lambda: [
            i for i in range(2) if logs[i].exists() and MARKER in logs[i].read_text()],
            job=array)
        assert len(paused) == 1, paused
        hit = paused[0]
        other = 1 - hit
        assert cluster.job(tasks[hit])["JobId"] == array  # the task that holds the array's id
        cluster.run("scancel", "--signal=USR1", tasks[hit])
        release_requeued(cluster, tasks[hit], logs[hit])
        infos = [wait_for_state(cluster, t, "COMPLETED", logs[i]) for i, t in enumerate(tasks)]
        for proc in solo:
            assert proc.wait(timeout=DEADLINE) == 0, proc.stderr.read().decode()[-3000:]
    finally:
        for proc in solo:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
            proc.stderr.close()

    # requeued alone: by its ARRAYJOB_TASK id (the array's own id would requeue both tasks)
    assert (infos[hit]["Restarts"], infos[other]["Restarts"]) == ("1", "0"), infos
    hit_dir, other_dir = out / names[hit], out / names[other]
    assert [(s.signal, s.step) for s in of_type(hit_dir, "run_suspended")] == [("USR1", PAUSE_STEP)]
    assert len(of_type(hit_dir, "run_resumed")) == 1
    assert not of_type(other_dir, "run_suspended") and not of_type(other_dir, "run_resumed")
    assert len(of_type(other_dir, "run_started")) == 1
    for i in range(2):
        assert digest(out / names[i]) == digest(alone / names[i]), names[i]
        assert verify_run(out / names[i]).ok


# -- make test-slurm: the time limit's USR1, preemption -------------------------------------------

@pytest.mark.slurm_slow
def test_the_time_limit_signal_requeues_once_and_the_run_finishes_as_if_uninterrupted(
        cluster, jobs, tmp_path, tiny_reference):
    """The job runs with a long time limit until the run is held after its first growth (step
    12); then its limit is cut to between 2 and 3 minutes from now, so SLURM's next time check
    (every 30 s or less) sends the --signal=USR1@180 warning; the run suspends, requeues its job
    and the requeued job (limit restored) finishes with the uninterrupted digest."""
    job, run_dir, log = slurm_job(tmp_path, cluster, jobs, PAUSE_AFTER_GROWTH, "--time=04:00:00",
                                  "--signal=USR1@180")
    wait_for_pause(cluster, job, log)
    run_time = cluster.job(job)["RunTime"]  # [D-]HH:MM:SS, minutes here
    h, m, s = (int(x) for x in run_time.split("-")[-1].split(":"))
    elapsed = h * 3600 + m * 60 + s
    # whole minutes, so the time left is in (120, 180] s: within USR1@180, and 90 s or more
    # after the signal (which comes at SLURM's next time check) for the snapshot and requeue
    cluster.run("scontrol", "update", f"JobId={job}", f"TimeLimit={elapsed // 60 + 3}")
    release_requeued(cluster, job, log, TimeLimit="04:00:00")
    info = wait_for_state(cluster, job, "COMPLETED", log)
    assert info["Restarts"] == "1", info  # the run requeued it: the time limit was not reached
    assert [(s.signal, s.epoch, s.step) for s in of_type(run_dir, "run_suspended")] == [
        ("USR1", 1, PAUSE_AFTER_GROWTH - 9)]
    assert digest(run_dir) == tiny_reference
    assert verify_run(run_dir).ok


@pytest.mark.slurm_slow
@pytest.mark.parametrize("grace", [30, 0], ids=["GraceTime=30", "GraceTime=0"])
def test_a_preempted_job_is_requeued_once_and_the_run_finishes_as_if_uninterrupted(
        cluster, jobs, tmp_path, tiny_reference, grace):
    """A job of the `high` partition that needs every CPU preempts the held run's job in `low`
    (PreemptMode=REQUEUE): the run gets SIGTERM, snapshots and exits 75; the job must come back
    exactly once (Restarts=1) and finish with the uninterrupted digest. Without a grace time
    SLURM has requeued the job already (PENDING while its processes end); with one the job is
    still RUNNING, with a PreemptTime, and SLURM 22.05 does not requeue a job that ends within
    its grace time: the run must requeue it (it ended FAILED, Restarts=0, before 3ba08bf)."""
    cluster.run("scontrol", "update", "PartitionName=low", f"GraceTime={grace}")
    job, run_dir, log = slurm_job(tmp_path, cluster, jobs, PAUSE_AFTER_GROWTH)
    wait_for_pause(cluster, job, log)
    high = sbatch(cluster, jobs, _true_script(tmp_path), "--partition=high",
                  f"--cpus-per-task={cpus(cluster)}", f"--output={tmp_path}/high.log",
                  env=job_env(cluster))
    release_requeued(cluster, job, log)
    info = wait_for_state(cluster, job, "COMPLETED", log)
    wait_for_state(cluster, high, "COMPLETED", tmp_path / "high.log")
    assert info["Restarts"] == "1", info
    assert [(s.signal, s.epoch, s.step) for s in of_type(run_dir, "run_suspended")] == [
        ("TERM", 1, PAUSE_AFTER_GROWTH - 9)]
    assert digest(run_dir) == tiny_reference
    assert verify_run(run_dir).ok


def _true_script(tmp_path: Path) -> Path:
    path = tmp_path / "high.sbatch"
    path.write_text("#!/bin/bash\ntrue\n")
    return path
