"""Figure 2 of a run: plot_data's series from a synthetic log, plot_run's PNG and its errors."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from autogrow.events import (
    BlockAdded,
    EpochCompleted,
    Event,
    FinetuneStarted,
    GrowthFinished,
    PolicyChecked,
    RunFinished,
    RunResumed,
    RunStarted,
    SnapshotWritten,
    StageStopped,
    encode,
)
from autogrow.arch import layer_count
from autogrow.errors import InputError
from autogrow.replay import live_events
from autogrow.replay.plot import plot_data, plot_run
from autogrow.storage import EventLog

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def started(family: str = "basic3resnet", seed_arch: str = "1-1-1") -> RunStarted:
    return RunStarted(run_id="synthetic", seed=0, config={
        "family": family, "seed_arch": seed_arch, "dataset": "fashionmnist",
        "policy": "periodic", "interval": 1})


def epoch(n: int, arch: str, val: float, phase: str = "grow",
          train: float | None = None) -> EpochCompleted:
    return EpochCompleted(phase=phase, epoch=n, arch=arch, lr=0.1, train_loss=1.0,
                          train_acc=val + 5.0 if train is None else train, val_loss=1.0,
                          val_acc=val, seconds=0.5)


def grown(stage: int, depth: int, arch: str, index: int) -> BlockAdded:
    return BlockAdded(stage=stage, depth=depth, arch=arch, initializer="gau", init_seed=index,
                      growth_index=index)


def finished_run() -> list[Event]:
    """Seed 1-1-1; grows after epochs 1, 2, 3; stage 2 stops after epoch 3, the rest after 4;
    fine-tunes epochs 5-6."""
    return [
        started(),
        SnapshotWritten(digest="0" * 64, epoch=0, step=0, label="start"),
        epoch(1, "1-1-1", 20.0),
        PolicyChecked(epoch=1, window=(20.0,), stop_delta=None, grow_delta=None,
                      decision="grow stage 0 -> 2-1-1"),
        grown(0, 2, "2-1-1", 0),
        epoch(2, "2-1-1", 50.0),
        grown(1, 2, "2-2-1", 1),
        epoch(3, "2-2-1", 40.0),
        StageStopped(stage=2, delta=0.0),
        grown(0, 3, "3-2-1", 2),
        epoch(4, "3-2-1", 60.0),
        StageStopped(stage=0, delta=0.0),
        StageStopped(stage=1, delta=0.0),
        GrowthFinished(arch="3-2-1", epoch=4),
        FinetuneStarted(arch="3-2-1", epochs=2),
        epoch(5, "3-2-1", 55.0, phase="finetune"),
        epoch(6, "3-2-1", 70.0, phase="finetune"),
        RunFinished(arch="3-2-1", val_acc=70.0, test_acc=68.5, params=1, flops=1,
                    weights_digest="0" * 64),
    ]


def write_log(run_dir: Path, events: list[Event]) -> Path:
    with EventLog.open(run_dir, create=True, fsync=False) as log:
        for ev in events:
            log.append(*encode(ev))
    return run_dir


# -- layer_count ------------------------------------------------------------------------------


def test_layer_count_follows_resnet_naming() -> None:
    assert layer_count("basic3resnet", "3-3-3") == 20        # ResNet-20
    assert layer_count("basic3resnet", "9-9-9") == 56        # ResNet-56
    assert layer_count("basic3resnet", "42-42-42") == 254    # Figure 2's found net
    assert layer_count("bottleneck4resnet", "3-4-6-3") == 50  # ResNet-50
    assert layer_count("basic4resnet", (2, 2, 2, 2)) == 18    # ResNet-18
    assert layer_count("plain3net", "1-1-1") == 5
    with pytest.raises(ValueError, match="unknown network family"):
        layer_count("densenet", "1-1-1")


# -- plot_data --------------------------------------------------------------------------------


def test_plot_data_series() -> None:
    data = plot_data(finished_run())
    assert data["epochs"] == [1, 2, 3, 4, 5, 6]
    assert data["phases"] == ["grow"] * 4 + ["finetune"] * 2
    assert data["val_acc"] == [20.0, 50.0, 40.0, 60.0, 55.0, 70.0]
    assert data["train_acc"] == [25.0, 55.0, 45.0, 65.0, 60.0, 75.0]
    assert data["max_val_acc"] == [20.0, 50.0, 50.0, 60.0, 60.0, 70.0]
    assert data["archs"] == ["1-1-1", "2-1-1", "2-2-1", "3-2-1", "3-2-1", "3-2-1"]
    # 2 convs per basic block + stem + head; one step up per growth, flat in fine-tuning
    assert data["seed_layers"] == 8
    assert data["layers"] == [8, 10, 12, 14, 14, 14]
    assert [(g["epoch"], g["stage"], g["layers"]) for g in data["growths"]] == [
        (1, 0, 10), (2, 1, 12), (3, 0, 14)]
    assert [(s["epoch"], s["stage"], s["reason"], s["layers"]) for s in data["stops"]] == [
        (3, 2, "no_improvement", 12), (4, 0, "no_improvement", 14), (4, 1, "no_improvement", 14)]
    assert data["growth_end"] == 4
    assert data["found_arch"] == "3-2-1"
    assert data["finished"] == {"arch": "3-2-1", "val_acc": 70.0, "test_acc": 68.5}
    assert data["failed"] is None
    assert data["family"] == "basic3resnet"


def test_plot_data_counts_family_layers_and_takes_seq_pairs() -> None:
    events = [started("plain3net"), epoch(1, "1-1-1", 10.0), grown(2, 2, "1-1-2", 0),
              epoch(2, "1-1-2", 30.0)]
    data = plot_data(list(enumerate(events, start=1)))  # live_events' (seq, event) pairs
    assert data["layers"] == [5, 6]
    assert data["growth_end"] is None and data["finished"] is None


def test_plot_data_while_growing_and_without_epochs() -> None:
    data = plot_data(finished_run()[:6])  # up to epoch 2
    assert data["epochs"] == [1, 2]
    assert data["growth_end"] is None and data["finished"] is None
    empty = plot_data([started()])
    assert empty["epochs"] == [] and empty["seed_layers"] == 8


def test_plot_data_finetune_boundary_without_growth_finished() -> None:
    events = [started(), epoch(1, "1-1-1", 10.0), epoch(2, "1-1-1", 20.0),
              epoch(3, "1-1-1", 30.0, phase="finetune")]
    assert plot_data(events)["growth_end"] == 2


def test_plot_data_skips_events_superseded_by_resume(tmp_path: Path) -> None:
    # seq: 1 start, 2 epoch 1, 3 snapshot, 4 epoch 2 (lost), 5 resume from seq 3, 6 epoch 2 again
    run = write_log(tmp_path / "run", [
        started(), epoch(1, "1-1-1", 10.0), SnapshotWritten(digest="a" * 64, epoch=1, step=0),
        epoch(2, "1-1-1", 99.0), RunResumed(from_seq=3, snapshot="a" * 64),
        epoch(2, "1-1-1", 30.0)])
    with EventLog.open(run, readonly=True) as log:
        data = plot_data(live_events(log.records))
    assert data["epochs"] == [1, 2]
    assert data["max_val_acc"] == [10.0, 30.0]


# -- plot_run ---------------------------------------------------------------------------------


def test_plot_run_writes_png(tmp_path: Path) -> None:
    run = write_log(tmp_path / "run", finished_run())
    out = tmp_path / "plots" / "deep" / "figure2.png"  # parents are created
    assert plot_run(run, out) == out
    blob = out.read_bytes()
    assert blob.startswith(PNG_SIGNATURE) and len(blob) > 10_000
    from PIL import Image  # the pixels, not only the header: a drawn figure, not a blank canvas

    with Image.open(out) as image:
        pixels = image.convert("RGB")
        assert image.width > 600 and image.height > 300
        colours = pixels.getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 50
        # a white margin and a shaded growth phase, with lines drawn on them
        assert any(c == (255, 255, 255) and n > 10_000 for n, c in colours)
    bare = tmp_path / "figure2"  # no extension: PNG, at exactly that path
    assert plot_run(run, bare) == bare and bare.read_bytes().startswith(PNG_SIGNATURE)


def test_plot_run_mid_growth_and_other_format(tmp_path: Path) -> None:
    run = write_log(tmp_path / "run", finished_run()[:8])
    out = plot_run(run, tmp_path / "figure2.svg")
    text = out.read_text()
    assert text.lstrip().startswith(("<?xml", "<svg"))
    root = ET.fromstring(text)  # well-formed, an <svg> with the figure's lines and labels
    assert root.tag.endswith("svg")
    assert len(root.findall(".//{http://www.w3.org/2000/svg}path")) > 20
    for label in ("Growing", "epoch", "accuracy (%)"):
        assert label in text


def test_plot_run_without_epochs_is_an_error(tmp_path: Path) -> None:
    run = write_log(tmp_path / "run", [started()])
    out = tmp_path / "figure2.png"
    with pytest.raises(InputError, match="no completed epoch") as info:
        plot_run(run, out)
    assert "\n" not in str(info.value)
    assert not out.exists()


def test_an_output_path_that_cannot_be_written_is_bad_input(tmp_path: Path) -> None:
    """`plot --out` under a regular file: one line naming the path and the flag, no traceback."""
    run = write_log(tmp_path / "run", finished_run())
    (tmp_path / "a-file").write_text("")
    out = tmp_path / "a-file" / "figure2.png"
    with pytest.raises(InputError) as info:
        plot_run(run, out)
    assert str(info.value) == f"cannot write {out}: File exists; pick another --out"
