"""TensorBoard output (issue 13, item 3): ``autogrow tensorboard`` from a run's log, and the live
``--tensorboard`` writer, read back with tensorboard's own readers.

The event files are read raw (every record of every file, :func:`read_logdir`), so a duplicate
step cannot hide behind the accumulator's purge of orphaned data.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import (
    LegacyEventFileLoader,
)
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from autogrow.arch import layer_count
from autogrow.events import (
    BlockAdded,
    EpochCompleted,
    PolicyChecked,
    RunFinished,
    RunStarted,
    StageStopped,
)
from autogrow.replay import live_events
from autogrow.replay import tensorboard as tb
from autogrow.storage import EventLog
from tests.conftest import REPO
from tests.test_crash import HOLD, wait_for_pause

EPOCH_VALUES = {"accuracy/train": "train_acc", "accuracy/val": "val_acc",
                "loss/train": "train_loss", "loss/val": "val_loss", "lr": "lr",
                "time/epoch_seconds": "seconds"}


def read_logdir(path: Path) -> dict:
    """Every scalar, text and hparams record of every event file in ``path``."""
    scalars: dict[str, list[tuple[int, float]]] = defaultdict(list)
    texts: dict[str, list[tuple[int, str]]] = defaultdict(list)
    hparams: dict[str, HParamsPluginData] = {}
    files = sorted(path.glob("events.out.tfevents.*"))
    for file in files:
        for event in LegacyEventFileLoader(str(file)).Load():
            for value in event.summary.value:
                plugin = value.metadata.plugin_data.plugin_name
                if value.WhichOneof("value") == "simple_value":
                    scalars[value.tag].append((event.step, value.simple_value))
                elif plugin == "text":
                    texts[value.tag.removesuffix("/text_summary")].append(
                        (event.step, value.tensor.string_val[0].decode()))
                elif plugin == "hparams":
                    assert value.tag not in hparams, f"{value.tag} written twice"
                    hparams[value.tag] = HParamsPluginData.FromString(
                        value.metadata.plugin_data.content)
    return {"files": len(files), "scalars": dict(scalars), "texts": dict(texts),
            "hparams": hparams}


def _events(run_dir: Path):
    with EventLog.open(run_dir, readonly=True) as log:
        records = log.records
    return records, live_events(records)


def _f32(value: float) -> float:
    return float(np.float32(value))


def assert_matches_log(out: dict, run_dir: Path) -> None:
    """The TensorBoard records say what the run's live events say, each epoch once."""
    _, events = _events(run_dir)
    evs = [ev for _, ev in events]
    epochs = [ev for ev in evs if isinstance(ev, EpochCompleted)]
    started = next(ev for ev in evs if isinstance(ev, RunStarted))
    family = started.config["family"]
    steps = list(range(1, len(epochs) + 1))
    assert [ev.epoch for ev in epochs] == steps
    scalars = out["scalars"]
    for tag in (*EPOCH_VALUES, "net/layers", "net/params", "net/flops"):
        assert [step for step, _ in scalars[tag]] == steps, tag
    for tag, field in EPOCH_VALUES.items():
        assert [v for _, v in scalars[tag]] == [_f32(getattr(ev, field)) for ev in epochs], tag
    assert [v for _, v in scalars["net/layers"]] == [layer_count(family, ev.arch) for ev in epochs]
    params = [v for _, v in scalars["net/params"]]
    assert params == sorted(params) and params[0] < params[-1]  # the net grew
    texts = out["texts"]
    for tag, items in texts.items():  # one entry per tag and epoch
        assert len({step for step, _ in items}) == len(items), tag
    checks = [ev for ev in evs if isinstance(ev, PolicyChecked)]
    assert [step for step, _ in texts["decisions/policy"]] == [ev.epoch for ev in checks]
    for (_, text), ev in zip(texts["decisions/policy"], checks):
        assert ev.decision in text
    growth = "\n".join(text for _, text in texts["decisions/growth"])
    assert growth.count("block added") == sum(isinstance(ev, BlockAdded) for ev in evs)
    assert growth.count("stopped growing") == sum(isinstance(ev, StageStopped) for ev in evs)
    assert "growth finished" in growth
    start = out["hparams"]["_hparams_/session_start_info"].session_start_info.hparams
    assert start["interval"].number_value == started.config["interval"]
    assert start["family"].string_value == family
    assert start["download"].bool_value is False
    finished = [ev for ev in evs if isinstance(ev, RunFinished)]
    if finished:
        end = finished[-1]
        assert scalars["final/test_acc"] == [(len(epochs), _f32(end.test_acc))]
        assert scalars["final/val_acc"] == [(len(epochs), _f32(end.val_acc))]
        assert params[-1] == end.params  # arch_cost of the found arch = the real net's count
        assert out["hparams"]["_hparams_/session_end_info"].session_end_info.status == 1  # success
        assert "finished" in texts["run/status"][-1][1]


def _export(runs: list[Path], out: Path) -> int:
    """``autogrow tensorboard RUNS --out OUT`` through the subcommand's own parser."""
    parser = argparse.ArgumentParser()
    tb.add_parser(parser.add_subparsers())
    args = parser.parse_args(["tensorboard", *map(str, runs), "--out", str(out)])
    return args.func(args)


def test_export_writes_scalars_text_and_hparams_from_the_log(smoke_run, tmp_path, capsys):
    assert _export([smoke_run], tmp_path / "tb") == 0
    assert f"wrote {tmp_path / 'tb' / smoke_run.name}" in capsys.readouterr().out
    out = read_logdir(tmp_path / "tb" / smoke_run.name)
    assert out["files"] == 1
    assert_matches_log(out, smoke_run)
    # what the TensorBoard server itself reads
    acc = EventAccumulator(str(tmp_path / "tb" / smoke_run.name))
    acc.Reload()
    assert set(tb.EPOCH_TAGS) | set(tb.FINAL_METRICS) <= set(acc.Tags()["scalars"])
    assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")


def test_export_again_replaces_and_duplicate_names_are_refused(smoke_run, tmp_path):
    logdir = tmp_path / "tb"
    tb.export_runs([smoke_run], logdir)
    first = read_logdir(logdir / smoke_run.name)
    (logdir / smoke_run.name / "notes.txt").write_text("mine")
    tb.export_runs([smoke_run, smoke_run], logdir)  # twice in one call, and again
    again = read_logdir(logdir / smoke_run.name)
    assert again["files"] == 1
    assert again["scalars"] == first["scalars"] and again["texts"] == first["texts"]
    assert (logdir / smoke_run.name / "notes.txt").read_text() == "mine"  # only event files go

    twin = tmp_path / "other" / smoke_run.name
    shutil.copytree(smoke_run, twin)
    with pytest.raises(tb.TensorBoardError, match="same name"):
        tb.export_runs([smoke_run, twin], tmp_path / "tb2")
    assert not (tmp_path / "tb2").exists()  # nothing written
    with pytest.raises(tb.TensorBoardError, match="is a run directory"):
        tb.export_runs([smoke_run], smoke_run.parent)


def test_live_sink_continued_from_a_prefix_equals_the_export(smoke_run, tmp_path):
    """The live writer is the export's sink opened on the log so far, then fed each record."""
    records, _ = _events(smoke_run)
    cut = next(r.seq for r in records if r.type == "block_added")
    sink = tb.open_sink(tmp_path / "live", smoke_run, records[:cut], flush_each=True)
    for record in records[cut - 2:]:  # already-written seqs are ignored
        sink.write_record(record)
    sink.close()
    tb.export_runs([smoke_run], tmp_path / "export")
    live = read_logdir(tmp_path / "live" / smoke_run.name)
    export = read_logdir(tmp_path / "export" / smoke_run.name)
    assert live["scalars"] == export["scalars"] and live["texts"] == export["texts"]


QUICK = ("--preset", "smoke", "--max-growth-epochs", "2", "--subset", "0.01", "--max-val", "200",
         "--max-test", "200")


def _launch_live(mode: str, run_dir: Path, logdir: Path, env: dict[str, str]) -> subprocess.Popen:
    """``autogrow grow … --tensorboard LOGDIR`` (or ``resume RUN --tensorboard LOGDIR``)."""
    args = [*QUICK, "--run-dir", str(run_dir)] if mode == "grow" else [str(run_dir)]
    full = dict(os.environ, **env)
    return subprocess.Popen([sys.executable, "-m", "autogrow", mode, *args, "--tensorboard",
                             str(logdir)], cwd=REPO, env=full, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def test_live_writer_after_a_crash_and_resume_has_each_epoch_once(tmp_path):
    run_dir, logdir = tmp_path / "run", tmp_path / "tb"
    # Killed in the middle of the epoch-2 snapshot (the 4th: start, epoch 1, growth, epoch 2):
    # epoch 2 is logged and already in TensorBoard, but the resume redoes it.
    proc = _launch_live("grow", run_dir, logdir, {"AUTOGROW_TEST_SNAPSHOT_PAUSE": f"{HOLD}@4"})
    try:
        assert wait_for_pause(proc), "the run ended before its 4th snapshot"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = read_logdir(logdir / run_dir.name)
    assert [step for step, _ in before["scalars"]["accuracy/val"]] == [1, 2]  # written as it went

    proc = _launch_live("resume", run_dir, logdir, {})
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()
    records, events = _events(run_dir)
    assert sum(r.type == "epoch_completed" and r.payload["epoch"] == 2 for r in records) == 2
    after = read_logdir(logdir / run_dir.name)
    assert after["files"] == 1
    assert_matches_log(after, run_dir)
    assert "resumed from the snapshot" in "".join(text for _, text in after["texts"]["run/status"])
    tb.export_runs([run_dir], tmp_path / "export")  # the export says exactly the same
    export = read_logdir(tmp_path / "export" / run_dir.name)
    assert after["scalars"] == export["scalars"] and after["texts"] == export["texts"]


def test_missing_package_is_one_clear_error(smoke_run, tmp_path, monkeypatch):
    from autogrow.cli import user_errors
    from autogrow.config import LaunchOptions
    from autogrow.engine.run import Controls
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(tb.TensorBoardMissing) as caught:
        _export([smoke_run], tmp_path / "tb")
    message = str(caught.value)
    assert "pip install 'autogrow[tensorboard]'" in message and "\n" not in message
    assert isinstance(caught.value, user_errors())  # the CLI prints it as one line, exit 2
    assert not (tmp_path / "tb").exists()
    with pytest.raises(tb.TensorBoardMissing):
        # --tensorboard fails before a run starts
        Controls(launch=LaunchOptions(tensorboard=str(tmp_path / "tb")))
    assert Controls().launch.tensorboard == ""  # off by default: nothing is checked or written


def test_the_cli_can_register_the_command_without_loading_torch():
    code = ("import sys, argparse; from autogrow.replay.tensorboard import add_parser; "
            "add_parser(argparse.ArgumentParser().add_subparsers()); "
            "assert 'torch' not in sys.modules and 'tensorboard' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
