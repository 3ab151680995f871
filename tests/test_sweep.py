"""`autogrow sweep`: cells from a spec, local jobs, a killed sweep resumed, --cell/--list, bad specs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from autogrow.storage import EventLog
from autogrow.replay import state_of
from autogrow.sweep import PAUSE_CELL_ENV, load_sweep
from tests.conftest import REPO, autogrow_cli

SPEC = """\
preset = "smoke"
seeds = [0, 1]
[settings]
max_growth_epochs = 3
[grid]
interval = [1, 2]
"""
NAMES = ["grow,interval=1,seed=0", "grow,interval=1,seed=1", "grow,interval=2,seed=0",
         "grow,interval=2,seed=1"]


def _spec(tmp_path: Path, text: str = SPEC) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(textwrap.dedent(text))
    return path


def _files(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file()}


def _result(run_dir: Path):
    with EventLog.open(run_dir, readonly=True) as log:
        return state_of(log.records).result


def test_cells_of_a_grid_cells_and_seeds_and_list_prints_them(tmp_path):
    spec = _spec(tmp_path, """\
        command = "grow"
        preset = "smoke"
        seeds = [3, 4]
        [settings]
        subset = 0.05
        [grid]
        interval = [1, 2]
        initializer = ["gau", "zero"]
        [[cells]]
        command = "train"
        arch = "2-2-2"
        epochs = 5
        [[cells]]
        policy = "convergent"
        lr_milestones = "1/3,2/3"
        """)
    sweep = load_sweep(spec)
    assert len(sweep.cells) == (2 * 2 + 2) * 2
    names = [c.name for c in sweep.cells]
    assert names[:2] == ["grow,interval=1,initializer=gau,seed=3",
                         "grow,interval=1,initializer=gau,seed=4"]
    assert "train,arch=2-2-2,epochs=5,seed=3" in names
    assert "grow,policy=convergent,lr_milestones=1_3_2_3,seed=4" in names
    train = sweep.config(sweep.cells[names.index("train,arch=2-2-2,epochs=5,seed=3")])
    assert (train.seed_arch, train.max_arch, train.finetune_epochs, train.subset, train.seed) == (
        "2-2-2", "2-2-2", 5, 0.05, 3)
    proc = autogrow_cli("sweep", str(spec), "--list", check=True)
    assert proc.stdout.splitlines() == [f"{i}\t{n}" for i, n in enumerate(names)]


@pytest.mark.parametrize("text, words", [
    ('preset = "smoke"\nsweep = 1\n', "unknown key(s) sweep"),
    ('preset = "smoke"\n[grid]\ninterval = []\n', "non-empty list"),
    ('preset = "smoke"\n[grid]\nintervall = [1, 2]\n', "unknown setting(s) intervall"),
    ('preset = "smoke"\n[settings]\nsubset = 0.1\n[[cells]]\nsubset = 0.2\n',
     "cells[0] sets subset, which [settings] fixes"),
    ('preset = "smoke"\n[grid]\nseed = [1, 2]\n', "list the seeds in `seeds`"),
    ('preset = "smoke"\n[[cells]]\ncommand = "train"\n', "needs an arch"),
    ('preset = "smoke"\n[grid]\ntau = [-1.0]\n', "tau"),
    ('preset = "smoke"\nseeds = []\n', "seeds"),
    ('preset = "smoke"\n[[cells]]\ninterval = 2\n[[cells]]\ninterval = 2\n', "same run"),
    ('preset = "smoke"\n[grid\n', "not valid TOML"),
])
def test_a_bad_spec_is_one_line_and_writes_nothing(tmp_path, text, words):
    spec = _spec(tmp_path, text)
    proc = autogrow_cli("sweep", str(spec), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and words in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_killed_sweep_resumes_leaves_finished_cells_alone_and_equals_cells_run_alone(tmp_path):
    """Two jobs; cell 3 is held after its 3rd training step (the test hook) while the others
    finish, then the sweep's whole process group is SIGKILLed. The same command finishes the
    sweep without touching the finished cells; every cell equals that cell run alone (--cell);
    a spec that changes a setting of existing cells is refused with nothing run."""
    spec, out = _spec(tmp_path), tmp_path / "out"
    env = dict(os.environ, **{PAUSE_CELL_ENV: "3:3"})
    argv = [sys.executable, "-m", "autogrow", "sweep", str(spec), "--out", str(out), "--jobs", "2",
            "--threads", "1"]
    sweep = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        finished = []
        for line in sweep.stdout:  # progress lines, as the cells end
            if " finished  " in line:
                finished.append(line.split()[-1])
            if len(finished) == 3:
                break
        assert sorted(finished) == NAMES[:3]
        log = out / "logs" / f"{NAMES[3]}.log"
        while "autogrow-test: paused" not in log.read_text():  # cell 3 holds at its step 3
            assert sweep.poll() is None
            time.sleep(0.05)
        os.killpg(sweep.pid, signal.SIGKILL)
    finally:
        sweep.wait()
        sweep.stdout.close()
    assert _result(out / NAMES[3]) is None
    before = {name: _files(out / name) for name in NAMES[:3]}

    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "# 3 already finished, 1 finished" in proc.stdout
    assert {name: _files(out / name) for name in NAMES[:3]} == before
    assert autogrow_cli("verify", str(out / NAMES[3])).returncode == 0

    listed = autogrow_cli("sweep", str(spec), "--list", check=True).stdout.splitlines()
    alone = tmp_path / "alone"
    for index in (0, 3):
        assert listed[index] == f"{index}\t{NAMES[index]}"
        autogrow_cli("sweep", str(spec), "--out", str(alone), "--cell", str(index),
                     "--threads", "1", check=True)
        assert _result(alone / NAMES[index]).weights_digest == _result(
            out / NAMES[index]).weights_digest
    assert sorted(p.name for p in alone.iterdir()) == [NAMES[0], NAMES[3]]

    spec.write_text(SPEC.replace("max_growth_epochs = 3", "max_growth_epochs = 4"))
    refused = autogrow_cli("sweep", str(spec), "--out", str(out), "--jobs", "2")
    assert refused.returncode == 2 and "max_growth_epochs (run: 3, now: 4)" in refused.stderr
    assert {name: _files(out / name) for name in NAMES[:3]} == before


def test_the_examples_are_a_valid_spec_and_a_valid_array_job():
    """examples/sweep.toml loads (grow and train cells); the array job's command line parses
    with autogrow's own parser and names the cell of its array task."""
    import shlex

    from autogrow.cli import build_parser

    sweep = load_sweep(REPO / "examples" / "sweep.toml")
    assert {c.command for c in sweep.cells} == {"grow", "train"}
    script = (REPO / "examples" / "sweep.sbatch").read_text()
    line = next(ln for ln in script.splitlines() if ln.startswith("srun autogrow sweep"))
    words = shlex.split(line.replace('"$SPEC"', "examples/sweep.toml").replace('"$OUT"', "/o")
                        .replace('"$SLURM_ARRAY_TASK_ID"', "5"))
    args = build_parser().parse_args(words[2:])
    assert (args.func.__name__, args.cell, args.requeue, str(args.out)) == ("cmd_sweep", 5, True, "/o")


def test_a_cells_outcome_is_typed_and_the_sweeps_exit_code_follows_from_them():
    """Sweep and CLI share one typed outcome (issue 23 item 3), not strings to parse."""
    from autogrow.sweep import Outcome, exit_code
    assert [str(Outcome.of_exit(c)) for c in (0, 75, 1, 137)] == [
        "finished", "suspended", "failed (exit 1)", "failed (exit 137)"]
    assert Outcome.of_exit(137) == Outcome("failed", 137)
    done, left = Outcome("already finished"), Outcome("not run")
    assert exit_code([Outcome("finished"), done]) == 0
    assert exit_code([done, left]) == exit_code([Outcome("suspended")]) == 75
    assert exit_code([left, Outcome.of_exit(2)]) == 1  # a failure outranks what is left
    with pytest.raises(ValueError):
        Outcome("done")
