"""The prepared GPU check (``benchmarks/gpu_check.sh``) as a CPU dry run: every step at tiny
sizes, so the script that is taken to a lent GPU machine once is known to work before that, and
its JSON says what each step claims. No timing is asserted, only what the figures must be."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
SEED_BLOCKS = 3  # the smoke preset starts from 1-1-1


def run_check(*args: str, out: Path | None = None) -> subprocess.CompletedProcess:
    """The script as the device tool runs it (``$OUT`` set), with pytest's own interpreter."""
    env = dict(os.environ, GPU_CHECK_PYTHON=sys.executable)
    env.pop("OUT", None)
    if out is not None:
        env["OUT"] = str(out)
    # the script's own CPU budget is 600 s; pytest's per-test timeout (900 s) is the last net
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=840)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict[str, Any], Path]:
    """One CPU dry run for the whole module: (process, its JSON summary, its $OUT)."""
    tmp = tmp_path_factory.mktemp("gpu_check")
    out = tmp / "returned"
    out.mkdir()
    proc = run_check("--device", "cpu", "--out", str(tmp / "work"), out=out)
    try:
        summary = json.loads(proc.stdout)  # stdout is exactly one JSON object
    except ValueError:
        pytest.fail(f"no JSON summary (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc, summary, out


def steps(dry_run) -> dict[str, dict[str, Any]]:
    return dry_run[1]["steps"]


def test_summary_is_returned_and_the_exit_code_says_whether_every_step_passed(dry_run):
    proc, summary, out = dry_run
    assert summary["device"] == "cpu"
    assert list(summary["steps"]) == ["data", "smoke", "kill_resume", "engine_vs_plain",
                                      "input_pipeline", "torchrun_nccl"]
    assert summary["ok"] == all(s["ok"] for s in summary["steps"].values())
    assert (proc.returncode == 0) == summary["ok"]
    assert summary["failed"] == [n for n, s in summary["steps"].items() if not s["ok"]]
    assert json.loads((out / "gpu_check.json").read_text()) == summary
    assert (out / "gpu_check_logs.tar.gz").stat().st_size > 0
    for name, step in summary["steps"].items():
        assert step["seconds"] >= 0, name
        assert step["ok"] or step["error"], name


def test_smoke_grows_and_verifies_at_each_cpu_precision(dry_run):
    smoke = steps(dry_run)["smoke"]
    assert smoke["ok"], smoke
    for precision in ("fp32", "bf16"):
        run = smoke["runs"][precision]
        assert run["ok"] and run["verify"], run
        assert run["blocks"] > SEED_BLOCKS, run["arch"]
        assert 0 <= run["test_acc"] <= 100
        assert run["deterministic"] is True  # the engine's default, as run_started logged it
    assert "not supported on CPU" in smoke["runs"]["fp16"]["skipped"]


def test_killed_mid_epoch_and_resumed_ends_with_the_uninterrupted_weights(dry_run):
    kill = steps(dry_run)["kill_resume"]
    assert kill["ok"], kill
    assert kill["equal"] and kill["digest_resumed"] == kill["digest_uninterrupted"]
    assert len(kill["digest_resumed"]) == 64
    assert kill["autotuned_equal"] is True  # autotuning is a CUDA matter: equal on CPU
    for name, deterministic in (("deterministic", True), ("autotuned", False)):
        variant = kill["variants"][name]
        assert variant["ok"] and variant["equal"] and variant["verify"], variant
        assert variant["deterministic"] is deterministic  # the setting the run logged
        assert variant["resumed_from"]["step_in_next_epoch"] > 0  # a mid-epoch snapshot


def test_engine_and_plain_loop_both_train(dry_run):
    bench = steps(dry_run)["engine_vs_plain"]
    assert bench["ok"], bench
    assert [(r["arch"], r["deterministic"]) for r in bench["results"]] == [
        ("1-1-1", True), ("1-1-1", False)]
    for row in bench["results"]:
        assert row["engine_images_per_s"] > 0 and row["plain_images_per_s"] > 0
        assert row["ratio_engine_over_plain"] > 0


def test_input_pipeline_benchmark_json_is_embedded(dry_run):
    pipeline = steps(dry_run)["input_pipeline"]
    assert pipeline["ok"], pipeline.get("error")
    assert pipeline["torchcodec"]["ok"] and pipeline["torchcodec"]["version"]
    assert pipeline["result"]["benchmark"] == "input_pipeline"
    assert set(pipeline["result"]["workers"]) == {"0", "2"}


def test_torchrun_trains_through_ddp_and_verifies(dry_run):
    torchrun = steps(dry_run)["torchrun_nccl"]
    assert torchrun["ok"], torchrun
    # one process, yet the engine started a process group and wrapped the net in DDP
    assert torchrun["ddp"]["backend"] == "gloo" and torchrun["ddp"]["world_size"] == 1
    assert torchrun["ddp"]["constructions"] >= 1
    assert torchrun["grow"]["processes"] == 1
    assert torchrun["grow"]["verify"] and torchrun["grow"]["blocks"] > SEED_BLOCKS


def test_a_missing_torchcodec_fails_only_the_input_pipeline_step_with_the_reason(tmp_path):
    """The step alone, with an interpreter that cannot import torchcodec: a JSON answer that
    names the reason, not a traceback."""
    blocker = tmp_path / "torchcodec"
    blocker.mkdir()
    (blocker / "__init__.py").write_text("raise ImportError('no torchcodec in this test')\n")
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{REPO}")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check_steps.py"),
                           "input_pipeline", "--device", "cpu", "--images", "8"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert not result["ok"] and "no torchcodec in this test" in result["error"]
    assert "TorchCodec" in result["skipped"] and "result" not in result


def test_a_used_out_dir_is_refused_with_a_json_error(tmp_path):
    (tmp_path / "something").write_text("x")
    proc = run_check("--device", "cpu", "--out", str(tmp_path))
    assert proc.returncode == 2
    summary = json.loads(proc.stdout)
    assert not summary["ok"] and "not empty" in summary["error"]
    assert (tmp_path / "something").read_text() == "x"
