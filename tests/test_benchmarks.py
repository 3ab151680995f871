"""Every script in ``benchmarks/`` runs in ``make test`` at a tiny size, so none can rot
unnoticed (``parity.py`` once failed at import for 41 commits while the README cited it).

Each script's JSON is checked for the keys it promises and for values that must hold whatever
the machine's speed: positive timings and sizes, and bitwise equality where the script claims it.
No timing is asserted. The prepared GPU check (``gpu_check.sh``, its steps in
``gpu_check_steps.py``, which also runs ``input_pipeline.py``) is checked through one CPU dry run
of every step, so the script that is taken to a lent GPU machine once is known to work before
that; the other scripts run on their own, ``reexecute_bench.py`` on the session's smoke run."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

BENCHMARKS = REPO / "benchmarks"
SCRIPT = BENCHMARKS / "gpu_check.sh"
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
    assert pipeline["decoder"] == pipeline["result"]["engine_decoder"] == "torchcodec"
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


def test_without_torchcodec_the_input_pipeline_step_times_pil_and_says_why(tmp_path):
    """The step alone, with an interpreter that cannot import torchcodec: the engine decodes
    with PIL, and the step's JSON says so and why, not a traceback."""
    blocker = tmp_path / "torchcodec"
    blocker.mkdir()
    (blocker / "__init__.py").write_text("raise ImportError('no torchcodec in this test')\n")
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{REPO}")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check_steps.py"),
                           "input_pipeline", "--device", "cpu", "--images", "16", "--classes",
                           "2", "--workers", "0", "--batch-size", "4", "--warmup", "1",
                           "--repeats", "1", "--decoder-images", "2"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"], result.get("error")
    assert not result["torchcodec"]["ok"]
    assert "no torchcodec in this test" in result["torchcodec"]["error"]
    assert "PIL" in result["torchcodec"]["effect"]
    assert result["decoder"] == result["result"]["engine_decoder"] == "pil"
    assert "no torchcodec in this test" in result["result"]["torchcodec_problem"]
    decoders = result["result"]["decoders_images_per_s_1_thread"]
    assert set(decoders) == {"pil_decode_resize", "pil_decode_torch_resize"}
    assert result["result"]["workers"]["0"]["engine_images_per_s"] > 0


def test_a_used_out_dir_is_refused_with_a_json_error(tmp_path):
    (tmp_path / "something").write_text("x")
    proc = run_check("--device", "cpu", "--out", str(tmp_path))
    assert proc.returncode == 2
    summary = json.loads(proc.stdout)
    assert not summary["ok"] and "not empty" in summary["error"]
    assert (tmp_path / "something").read_text() == "x"


# -- every script at a tiny size ----------------------------------------------------------------

def run_benchmark(script: str, *args: str) -> dict[str, Any]:
    """``python benchmarks/SCRIPT ARGS`` in a fresh process, as the README runs it: its stdout
    must be exactly one JSON object (progress and engine logs go to stderr)."""
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    try:
        return json.loads(proc.stdout)
    except ValueError:
        pytest.fail(f"{script}: stdout is not one JSON object:\n{proc.stdout[-2000:]}")


def check_machine(result: dict[str, Any]) -> None:
    """The machine facts of ``benchmarks/_common.machine``, which every figure is read with."""
    info = result["machine"]
    assert info["cores"] >= 1 and info["torch_threads"] >= 1
    assert info["cpu"] and info["cpu_capability"] and info["torch"]
    assert info["load_1min_start"] >= 0 and info["load_1min_end"] >= 0


def check_parity(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Engine against a plain loop for 2 epochs: the LR drops between them (the fine-tune
    staircase), so the plain loop's LR schedule, the API that broke the script, is exercised;
    weights and every epoch's metrics must be bitwise equal."""
    out = run_benchmark("parity.py", "--epochs", "2", "--subset", "0.003", "--width", "0.25",
                        "--max-val", "100", "--max-test", "100", "--batch-size", "32",
                        "--repeats", "1", "--retries", "0", "--precisions", "fp32")
    assert out["benchmark"] == "parity" and out["setup"]["epochs"] == 2
    check_machine(out)
    [row] = out["results"]
    assert row["precision"] == row["resolved_precision"] == "fp32"
    assert row["bitwise_equal"] is True
    [run] = row["runs"]
    assert run["bitwise_equal"] is True and run["metrics_equal_per_epoch"] == [True, True]
    assert run["digest"]["engine"] == run["digest"]["plain"]
    assert run["test_acc"]["engine"] == run["test_acc"]["plain"]
    assert len(run["plain_epoch_s"]) == len(run["engine_epoch_wall_s"]) == 2
    assert min(run["plain_epoch_s"] + run["engine_epoch_wall_s"] + run["engine_epoch_self_s"]) > 0
    for key in ("plain_epoch_s_median", "engine_epoch_wall_s_median", "ratio_wall", "ratio_self",
                "ratio_run", "snapshot_bytes"):
        assert row[key] > 0, key
    assert row["events"] > 2  # run_started, two epochs, snapshots, run_finished...
    assert row["target_met"] in (None, True, False) and out["all_targets_met"] == row["target_met"]


def check_throughput(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Both modes of one arch, a growth and a snapshot each."""
    out = run_benchmark("throughput.py", "--archs", "1-1-1", "--steps", "2", "--warmup", "1",
                        "--batch-size", "16", "--width", "0.25", "--grow-repeats", "1",
                        "--snapshot-repeats", "1", "--retries", "0", "--devices", "cpu",
                        "--tmp-dir", str(tmp_path))
    assert out["benchmark"] == "throughput"
    check_machine(out)
    rows = {r["mode"]: r for r in out["results"]}
    assert list(rows) == ["fp32_nchw", "fast"]
    assert (rows["fp32_nchw"]["precision"], rows["fp32_nchw"]["channels_last"]) == ("fp32", False)
    assert rows["fast"]["channels_last"] is True and rows["fast"]["precision"] in ("fp32", "bf16")
    for mode, r in rows.items():
        assert r["arch"] == "1-1-1" and r["device"] == "cpu" and r["params"] > 0, mode
        assert len(r["step_s"]) == r["steps"] == 2 and min(r["step_s"]) > 0, mode
        assert r["images_per_s"] == pytest.approx(16 / r["step_s_median"], rel=1e-3), mode
        for key in ("growth_s", "first_step_after_growth_s", "snapshot_s", "snapshot_bytes",
                    "epoch_s_est", "growth_frac_epoch", "snapshot_frac_epoch"):
            assert r[key] > 0, (mode, key)
    assert out["speedup_fast_vs_fp32_nchw"]["cpu"]["1-1-1"] > 0
    assert out["target_met"] in (None, True, False)


def check_log_bench(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    out = run_benchmark("log_bench.py", "--events", "100", "--repeats", "1")
    assert out["benchmark"] == "event_log" and out["events"] == 100
    assert out["command"] == "python benchmarks/log_bench.py --events 100 --repeats 1"
    assert out["log_bytes"] > 0
    assert out["bytes_per_record"] == pytest.approx(out["log_bytes"] / 100, abs=0.1)
    for key in ("append_fsync_s", "append_no_fsync_s", "open_verify_s", "open_verify_readonly_s",
                "append_fsync_us_per_event", "append_no_fsync_us_per_event"):
        assert out[key] > 0, key


def check_reexecute_bench(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """One epoch of the session's smoke run re-executed (made on this machine: the exact
    standard applies and must hold); the shared run is read, never changed."""
    run: Path = request.getfixturevalue("smoke_run")
    before = {p.relative_to(run): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
    out = run_benchmark("reexecute_bench.py", "--run", str(run), "--epochs", "1", "--no-wait")
    after = {p.relative_to(run): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
    assert after == before
    assert out["benchmark"] == "reexecute" and out["preset"] is None
    check_machine(out)
    assert out["ok"] is True and out["standard"] == "exact"
    assert out["epochs_reexecuted"] == 1 and out["quiet"] is None and out["run_made_in_s"] is None
    assert out["run_epochs_s"] > 0 and out["reexecuted_epochs_s"] > 0
    assert out["per_epoch_ratio"] > 0
    assert out["total_with_data_and_final_s"] >= out["reexecuted_epochs_s"]


def check_channels_last_crash(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """One shape that broke on both CPUs seen (2 channels at 40 px): the guarded conv never
    dies or hangs; the plain one may (the corruption strikes in some runs only)."""
    out = run_benchmark("channels_last_crash.py", "--shapes", "2x40", "--steps", "5",
                        "--repeats", "1", "--hang-after", "300")
    assert out["benchmark"] == "channels_last_crash" and out["steps"] == 5
    assert out["torch"] and out["threads"] >= 1 and out["cpu"] and out["cpu_capability"]
    [row] = out["rows"]
    assert (row["in_channels"], row["size"], row["runs"]) == (2, 40, 1)
    assert row["guarded_crashed"] == row["guarded_hung"] == 0
    assert row["plain_crashed"] + row["plain_hung"] in (0, 1)


def check_gpu_check(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """The shell wrapper's CPU dry run: every step passed and the exit code says so (the tests
    above check each step's figures)."""
    proc, summary, _ = request.getfixturevalue("dry_run")
    assert summary["ok"] is True and summary["failed"] == [], summary["failed"]
    assert proc.returncode == 0


def check_gpu_check_steps(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Every step that gpu_check_steps.py defines is run by gpu_check.sh, and passed."""
    spec = importlib.util.spec_from_file_location("gpu_check_steps", SCRIPT.with_name(
        "gpu_check_steps.py"))
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    helpers = {"missing-deps", "summary"}  # the shell's own plumbing, not checks
    summary = request.getfixturevalue("dry_run")[1]
    assert set(summary["steps"]) == set(module.STEPS) - helpers
    assert all(step["ok"] for step in summary["steps"].values()), summary["failed"]


def check_input_pipeline(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """input_pipeline.py's own JSON, as the dry run embeds it (0 and 2 workers, 8 decoded
    images): images/s of both loaders and the ratio between them."""
    step = request.getfixturevalue("dry_run")[1]["steps"]["input_pipeline"]
    assert step["ok"], step.get("error")
    out = step["result"]
    assert out["benchmark"] == "input_pipeline"
    check_machine(out)
    assert out["settings"]["timed_batches"] >= 1 and out["write_seconds"] > 0
    for workers, row in out["workers"].items():
        engine, plain = row["engine_images_per_s"], row["plain_images_per_s"]
        assert engine > 0 and plain > 0, workers
        assert row["engine_over_plain"] == pytest.approx(engine / plain, rel=1e-3), workers
        assert len(row["passes"]["engine"]) == len(row["passes"]["plain"]) == 1, workers
    decoders = out["decoders_images_per_s_1_thread"]
    assert decoders and all(v > 0 for v in decoders.values()), decoders


def check_manifest_bench(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """A manifest of 2,100 entries written and read as a resume reads it (the reader's tables
    built from it), and the check of a tree of 200 sparse files against its manifest."""
    out = run_benchmark("manifest_bench.py", "--train", "2000", "--val", "100", "--classes",
                        "10", "--files", "200", "--repeats", "1")
    assert out["benchmark"] == "manifest" and out["entries"] == 2100 and out["classes"] == 10
    assert out["command"] == ("python benchmarks/manifest_bench.py --train 2000 --val 100 "
                              "--classes 10 --files 200 --repeats 1")
    check_machine(out)
    for key in ("manifest_bytes", "write_s", "read_s", "resume_data_s",
                "resume_start_projected_s"):
        assert out[key] > 0, key
    tree = out["tree"]
    assert tree["files"] == 200
    for key in ("torchvision_listing_s", "new_run_scan_s", "check_s", "check_us_per_file",
                "listing_us_per_file", "check_projected_s"):
        assert tree[key] > 0, key


SMOKE: dict[str, Callable[[pytest.FixtureRequest, Path], None]] = {
    "parity.py": check_parity,
    "throughput.py": check_throughput,
    "log_bench.py": check_log_bench,
    "manifest_bench.py": check_manifest_bench,
    "reexecute_bench.py": check_reexecute_bench,
    "channels_last_crash.py": check_channels_last_crash,
    "input_pipeline.py": check_input_pipeline,
    "gpu_check_steps.py": check_gpu_check_steps,
    "gpu_check.sh": check_gpu_check,
}


def test_every_benchmark_script_has_a_smoke_run():
    """A new script in benchmarks/ must be added to SMOKE (private modules like _common.py are
    exercised by the scripts that import them)."""
    scripts = {p.name for p in BENCHMARKS.iterdir()
               if p.suffix in (".py", ".sh") and not p.name.startswith("_")}
    assert set(SMOKE) == scripts


# the shared runs a script's check reads (made once for the whole suite)
SHARED = {"reexecute_bench.py": "smoke_run", "input_pipeline.py": "dry_run",
          "gpu_check_steps.py": "dry_run", "gpu_check.sh": "dry_run"}


@pytest.fixture
def script(request: pytest.FixtureRequest) -> str:
    """The script's name, its shared run made here (in setup), so that --durations shows the
    script's own time in the test's call, apart from the shared runs."""
    if request.param in SHARED:
        request.getfixturevalue(SHARED[request.param])
    return request.param


@pytest.mark.parametrize("script", list(SMOKE), indirect=True)
def test_benchmark_runs_at_a_tiny_size(script: str, request: pytest.FixtureRequest,
                                       tmp_path: Path) -> None:
    SMOKE[script](request, tmp_path)
