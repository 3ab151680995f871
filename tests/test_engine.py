"""End-to-end runs on real Fashion-MNIST: the smoke preset, determinism, history, export, train."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import autogrow
from autogrow.blocks import load_model, weights_digest
from autogrow.config import resolve_config
from autogrow.events import BlockAdded, RunFinished, StageStopped
from autogrow.policies import Phase
from autogrow.replay import live_events, state_of
from autogrow.storage import EventLog, SnapshotStore
from tests.conftest import REPO, autogrow_cli

VOLATILE = {"seconds", "run_id"}  # wall-clock durations and the random run id differ run to run


def _bookkeeping(ev) -> bool:
    """Events that record how a run was driven, not what it computed: resume markers, prunes
    and the snapshot a suspension wrote (an uninterrupted run has none of them)."""
    return (ev.TYPE in ("run_resumed", "snapshots_pruned")
            or (ev.TYPE == "snapshot_written" and ev.label == "suspend"))


def comparable(run_dir) -> list[tuple]:
    """The run's live events without timestamps, durations, run ids and bookkeeping."""
    with EventLog.open(run_dir, readonly=True) as log:
        return [(ev.TYPE, {k: v for k, v in autogrow.events.encode(ev)[2].items() if k not in VOLATILE})
                for _, ev in live_events(log.records) if not _bookkeeping(ev)]


def test_smoke_run_grows_stops_finishes_and_verifies(smoke_run):
    with EventLog.open(smoke_run, readonly=True) as log:  # opening verifies the hash chain
        records = log.records
    events = [ev for _, ev in live_events(records)]
    state = state_of(records)
    assert state.phase is Phase.FINISHED
    assert sum(isinstance(e, BlockAdded) for e in events) >= 2
    assert any(isinstance(e, StageStopped) for e in events)
    finished = events[-1]
    assert isinstance(finished, RunFinished) and finished.arch == state.result.arch
    assert 0.0 < finished.test_acc <= 100.0 and finished.params > 0 and finished.flops > 0
    assert (smoke_run / "config.toml").is_file()
    # every referenced snapshot exists and verifies, or the run's retention pruned it (logged)
    store = SnapshotStore(smoke_run)
    pruned = {d for _, ev in live_events(records) if ev.TYPE == "snapshots_pruned" for d in ev.digests}
    kept = 0
    for _, ev in live_events(records):
        if ev.TYPE == "snapshot_written" and ev.digest not in pruned:
            store.get(ev.digest)
            kept += 1
    assert pruned and kept == len(store.digests())


def test_same_config_and_seed_give_the_same_run(smoke_run, tmp_path):
    config = resolve_config("smoke")
    result = autogrow.grow(config, tmp_path / "again")
    assert comparable(tmp_path / "again") == comparable(smoke_run)
    assert result.weights_digest == state_of(EventLog.open(smoke_run, readonly=True).records).result.weights_digest


def test_history_shows_every_growth_and_stop(smoke_run):
    proc = autogrow_cli("history", str(smoke_run), check=True)
    with EventLog.open(smoke_run, readonly=True) as log:
        events = [ev for _, ev in live_events(log.records)]
    grows = [e for e in events if isinstance(e, BlockAdded)]
    stops = [e for e in events if isinstance(e, StageStopped)]
    assert proc.stdout.count(" GROW ") == len(grows)
    assert proc.stdout.count(" STOP ") == len(stops)
    for g in grows:
        assert f"stage {g.stage} -> {g.depth} blocks" in proc.stdout
    as_json = autogrow_cli("history", str(smoke_run), "--json", check=True)
    lines = [json.loads(line) for line in as_json.stdout.splitlines()]
    # every record, whole: seq, type, schema, time and the payload as logged
    assert lines == [{"seq": r.seq, "type": r.type, "schema": r.schema, "ts": r.ts,
                      "payload": r.payload} for r in log.records]


def test_export_gives_the_found_net(smoke_run, tmp_path):
    out = tmp_path / "net.safetensors"
    autogrow_cli("export", str(smoke_run), "--out", str(out), check=True)
    net = load_model(out)
    result = state_of(EventLog.open(smoke_run, readonly=True).records).result
    assert net.arch == result.arch
    assert weights_digest(net) == result.weights_digest
    assert not net.training
    with torch.no_grad():
        assert net(torch.zeros(2, 1, 32, 32)).shape == (2, 10)


def test_train_fixed_arch_baseline(tmp_path):
    run_dir = tmp_path / "baseline"
    proc = autogrow_cli("train", "--preset", "smoke", "--arch", "2-1-1", "--epochs", "1",
                        "--run-dir", str(run_dir), check=True)
    assert "found arch 2-1-1" in proc.stdout
    with EventLog.open(run_dir, readonly=True) as log:
        events = [ev for _, ev in live_events(log.records)]
    assert not any(isinstance(e, BlockAdded) for e in events)
    assert [e.phase for e in events if e.TYPE == "epoch_completed"] == ["finetune"]


def test_c_autogrow_schedule_is_logged_and_verified(tmp_path):
    """A convergent run with the original c-AutoGrow's LR (a staircase every K epochs, fine-tune
    from lr x 0.1 with one drop at N/2): the epochs train at those LRs and verify replays them."""
    run_dir = tmp_path / "c"
    autogrow_cli("grow", "--preset", "smoke", "--policy", "convergent", "--interval", "2",
                 "--stop-window", "2", "--max-growth-epochs", "4", "--finetune-epochs", "4",
                 "--finetune-lr-scale", "0.1", "--finetune-milestones", "1/2",
                 "--run-dir", str(run_dir), check=True)
    with EventLog.open(run_dir, readonly=True) as log:
        epochs = [ev for _, ev in live_events(log.records) if ev.TYPE == "epoch_completed"]
    assert [e.phase for e in epochs] == ["grow"] * 4 + ["finetune"] * 4
    assert [e.lr for e in epochs] == pytest.approx([0.1, 0.001] * 2 + [0.01] * 2 + [0.001] * 2)
    assert autogrow_cli("verify", str(run_dir)).returncode == 0
    # the baseline (`train`) keeps its own schedule whatever a preset's fine-tune says
    base = tmp_path / "base"
    autogrow_cli("train", "--preset", "paper-c-cifar10", "--dataset", "fashionmnist",
                 "--subset", "0.02", "--width", "0.25", "--max-val", "500", "--max-test", "500",
                 "--arch", "1-1-1",
                 "--epochs", "2", "--precision", "auto", "--run-dir", str(base), check=True)
    with EventLog.open(base, readonly=True) as log:
        lrs = [ev.lr for _, ev in live_events(log.records) if ev.TYPE == "epoch_completed"]
    assert lrs == pytest.approx([0.1, 0.001])


@pytest.mark.parametrize("args, words", [
    (["--preset", "nope"], "preset"),
    (["--preset", "smoke", "--family", "resnet9000"], "family"),
    (["--preset", "smoke", "--initializer", "magic"], "initializer"),
    (["--preset", "smoke", "--dataset", "pets"], "dataset"),
    (["--preset", "smoke", "--interval", "0"], "interval"),
    (["--preset", "smoke", "--tau", "-0.1"], "tau"),
    (["--preset", "smoke", "--interval", "3", "--stop-window", "2"], "stop_window"),
    (["--preset", "smoke", "--seed-arch", "3-x-3"], "malformed"),
    (["--preset", "smoke", "--seed-arch", "1-1"], "stages"),
    (["--preset", "smoke", "--subset", "0"], "subset"),
    (["--preset", "smoke", "--subset", "1.5"], "subset"),
    (["--preset", "smoke", "--growth-lr", "cosine"], "growth_lr"),
    (["--preset", "smoke", "--finetune-milestones", "1/2,1/4"], "finetune_milestones"),
    (["--preset", "smoke", "--crop-padding", "-2"], "crop_padding"),
    (["--preset", "smoke", "--weight-init", "xavier"], "weight_init"),
    (["--preset", "smoke", "--config", "/nonexistent.toml"], "does not exist"),
])
def test_bad_input_exits_with_one_line_and_writes_nothing(tmp_path, args, words):
    run_dir = tmp_path / "run"
    proc = autogrow_cli("grow", *args, "--run-dir", str(run_dir))
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("autogrow: error:") and words in lines[0], proc.stderr
    assert not run_dir.exists()


def test_missing_data_files_are_named(tmp_path):
    run_dir = tmp_path / "run"
    proc = autogrow_cli("grow", "--preset", "smoke", "--dataset", "cifar10", "--data-root",
                        str(tmp_path / "nodata"), "--run-dir", str(run_dir))
    assert proc.returncode != 0
    line = proc.stderr.strip()
    assert "\n" not in line and "cifar-10-batches-py" in line and str(tmp_path / "nodata") in line
    assert not run_dir.exists()


def test_non_empty_foreign_run_dir_is_refused_and_left_alone(tmp_path):
    run_dir = tmp_path / "mine"
    run_dir.mkdir()
    (run_dir / "thesis.txt").write_text("do not touch")
    proc = autogrow_cli("grow", "--preset", "smoke", "--run-dir", str(run_dir))
    assert proc.returncode != 0 and "not empty" in proc.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == ["thesis.txt"]
    assert (run_dir / "thesis.txt").read_text() == "do not touch"


def test_resume_restores_the_runs_thread_count(tmp_path):
    """The CPU thread count is part of the run (it can change CPU numerics): a run started with
    one thread and resumed in a process that has two trains with one again (fails if resume
    takes the resuming process's count)."""
    from autogrow.engine.lifecycle import resume_run

    run_dir = tmp_path / "run"
    first = autogrow_cli("grow", "--preset", "smoke", "--threads", "1", "--time-limit", "1s",
                         "--run-dir", str(run_dir))
    assert first.returncode == 75, first.stderr
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        result = resume_run(run_dir)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    reference = autogrow_cli("grow", "--preset", "smoke", "--threads", "1", "--run-dir",
                             str(tmp_path / "ref"), check=True)
    assert reference.returncode == 0 and result.weights_digest == _digest(tmp_path / "ref")


def _digest(run_dir):
    with EventLog.open(run_dir, readonly=True) as log:
        return state_of(log.records).result.weights_digest


def test_a_launch_with_its_data_cached_imports_neither_torchvision_nor_torchdynamo():
    """A launch's data load and kernel setup (every resume after a preemption pays them): with
    the data set in the tensor cache, neither torchvision nor TorchDynamo/Inductor is imported
    by them (PyTorch's optimizers import Dynamo later, which this does not reach), and
    deterministic kernels are still on."""
    from autogrow.engine.data import load_dataset
    load_dataset("fashionmnist")  # fills the suite's tensor cache, if nothing has yet
    code = ("import sys, torch\n"
            "from autogrow.config import resolve_config\n"
            "from autogrow.engine.factories import load_data, prepare_execution\n"
            "config = resolve_config('smoke')\n"
            "load_data(config, prepare_execution(config))\n"
            "print(torch.are_deterministic_algorithms_enabled(), sorted(m for m in sys.modules\n"
            "      if m.split('.')[0] == 'torchvision' or m.startswith(('torch._dynamo', "
            "'torch._inductor'))))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "[]"]
