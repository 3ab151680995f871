"""ImageNet-style folders: a persistent pool of loader workers that decodes and crops, uint8
batches that do not depend on the worker count, and whole runs on a folder — grown, killed,
suspended by a signal to the whole job, resumed with other worker counts, and under torchrun."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from autogrow.config import EXIT_RESUMABLE, ConfigError, LaunchOptions
from autogrow.engine.data import DataError, eval_batches, load_dataset, resolve_workers, train_batches
from autogrow.engine.data import decode
from autogrow.engine.data.image_folder import CROP, eval_view, train_view
from autogrow.events import BlockAdded, RunSuspended
from autogrow.replay import live_events
from autogrow.replay.verify import verify_run
from autogrow.storage import EventLog
from tests.conftest import REPO, autogrow_cli, write_image_folder
from tests.test_crash import launch, wait_for_pause
from tests.test_distributed import (
    _final_digest,
    _kill_everything,
    _loader_workers,
    _rank_pid,
    _torchrun,
    _wait_for_markers,
    _wait_for_no_workers,
)
from tests.test_engine import comparable
from tests.test_lock import _alive, _wait_gone


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("images"))


def _materialise(batches) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in batches]


def _passes(data) -> dict[str, list]:
    """Every kind of pass the engine makes: an epoch, a resumed epoch, each rank's share,
    evaluation."""
    return {
        "epoch": _materialise(train_batches(data.train, seed=4, epoch=2, batch_size=7)),
        "resumed": _materialise(train_batches(data.train, seed=4, epoch=3, batch_size=7,
                                              start_step=2)),
        "rank1": _materialise(train_batches(data.train, seed=4, epoch=2, batch_size=7,
                                            rank=1, world_size=2)),
        "eval": _materialise(eval_batches(data.test, 5)),
    }


@pytest.mark.filterwarnings("ignore:This DataLoader will create 3 worker processes")
def test_batches_are_bitwise_equal_for_0_2_and_3_workers(folder):
    results = {w: _passes(load_dataset("imagenet", data_root=folder, seed=4, val_split=0.25,
                                       workers=w))
               for w in (0, 2, 3)}
    reference = results[0]
    assert [x.shape[0] for x, _ in reference["epoch"]] == [7, 7, 7, 7, 7, 1]  # 36 train images
    x, _ = reference["epoch"][0]
    assert x.shape == (7, 3, CROP, CROP) and x.dtype == torch.float32
    for w in (2, 3):
        for kind, batches in results[w].items():
            assert len(batches) == len(reference[kind]), kind
            for (xa, ya), (xb, yb) in zip(reference[kind], batches):
                assert torch.equal(xa, xb) and torch.equal(ya, yb), (w, kind)
    # rank 1's share is the second half of each one-process batch
    for (x1, _), (x, _) in zip(reference["rank1"], reference["epoch"]):
        assert torch.equal(x1, x[x.shape[0] - x1.shape[0]:])


def test_a_resumed_epoch_reads_only_the_images_of_its_remaining_steps(tmp_path):
    root = write_image_folder(tmp_path / "images", classes=2, train=10, val=2)
    data = load_dataset("imagenet", data_root=root, seed=1, workers=2)
    full = _materialise(train_batches(data.train, seed=1, epoch=0, batch_size=4))
    # delete every image of the first two steps: a resume at step 2 must never open them
    from autogrow.engine.augment import epoch_order
    order = epoch_order(len(data.train), 1, 0)
    rows = data.train.source_indices[order[:8]].tolist()
    samples = data.train.reader.images.paths["train"]
    for row in rows:
        os.unlink(samples[row])
    fresh = load_dataset("imagenet", data_root=root, seed=1, workers=2)
    # the listing changed (deleted files are gone), so read through the old listing's reader
    assert len(fresh.train) < len(data.train)
    resumed = _materialise(train_batches(data.train, seed=1, epoch=0, batch_size=4, start_step=2))
    assert len(resumed) == len(full) - 2
    for (xa, ya), (xb, yb) in zip(full[2:], resumed):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    with pytest.raises(DataError, match=r"cannot read image .*class\d/\d+\.(jpg|png): No such file"):
        _materialise(train_batches(data.train, seed=1, epoch=0, batch_size=4))


def test_the_views_are_the_standard_imagenet_transforms(folder):
    """Eval: Resize(256) + CenterCrop(224); train: RandomResizedCrop's own box + flip from the
    sample's seed — compared with torchvision's PIL transforms (the resize kernels differ by at
    most a few grey levels at edges)."""
    from PIL import Image
    from torchvision import transforms as T
    from torchvision.transforms import functional as TF

    path = next((folder / "val" / "class1").glob("*.jpg"))
    image = decode.decode_file(str(path))
    pil = Image.open(path).convert("RGB")
    assert torch.equal(image, TF.pil_to_tensor(pil))  # same libjpeg-turbo decode
    reference = TF.pil_to_tensor(T.CenterCrop(224)(T.Resize(256)(pil))).float()
    ours = eval_view(image)[0].float()
    assert ours.shape == reference.shape == (3, 224, 224)
    assert (ours - reference).abs().mean() < 1.0

    torch.manual_seed(123)
    box = T.RandomResizedCrop.get_params(image, [0.08, 1.0], [3 / 4, 4 / 3])
    flip = bool(torch.rand(()) < 0.5)
    crop = TF.resized_crop(pil, *box, [224, 224])
    expected = TF.pil_to_tensor(TF.hflip(crop) if flip else crop).float()
    assert (train_view(image, 123, hflip=True)[0].float() - expected).abs().mean() < 1.0
    unflipped = TF.pil_to_tensor(crop).float()
    assert (train_view(image, 123, hflip=False)[0].float() - unflipped).abs().mean() < 1.0


def test_pil_decodes_the_fixture_images_as_torchcodec_does(folder):
    """The decoder is not part of the data: PIL's pixels are TorchCodec's, JPEG and PNG."""
    paths = sorted(p for p in folder.rglob("*") if p.is_file())
    assert decode.torchcodec_problem() is None and decode.backend() == "torchcodec"
    assert {p.suffix for p in paths} == {".jpg", ".png"} and len(paths) == 66
    for path in paths:
        data = decode.read_file(str(path))
        codec = decode.decode_torchcodec(data)
        assert codec is not None and codec.dtype == torch.uint8 and codec.shape[0] == 3
        assert torch.equal(codec, decode.decode_pil(data, str(path))), path


@pytest.fixture
def no_torchcodec(monkeypatch):
    """This process as one where torchcodec cannot be imported (the probe's answer forgotten
    before and after)."""
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)  # importing it: ImportError
    decode.torchcodec_problem.cache_clear()
    decode.announce.cache_clear()
    yield
    decode.torchcodec_problem.cache_clear()
    decode.announce.cache_clear()


def test_without_torchcodec_pil_gives_the_same_batches_and_one_notice(folder, no_torchcodec):
    import structlog

    assert decode.backend() == "pil" and "halted" in decode.torchcodec_problem()
    with structlog.testing.capture_logs() as logs:
        data = load_dataset("imagenet", data_root=folder, seed=3, workers=0)
        load_dataset("imagenet", data_root=folder, seed=3, workers=0)  # a second reader
        pil = _materialise(eval_batches(data.test, 5))
    notices = [entry for entry in logs if "TorchCodec is not usable" in entry["event"]]
    assert len(notices) == 1 and notices[0]["log_level"] == "warning", logs
    assert "halted" in notices[0]["problem"] and "pip install" in notices[0]["to_use_it"]
    assert "PIL" in notices[0]["event"]
    sys.modules.pop("torchcodec.decoders")  # TorchCodec back
    decode.torchcodec_problem.cache_clear()
    assert decode.backend() == "torchcodec"
    codec = _materialise(eval_batches(data.test, 5))
    assert len(pil) == len(codec) == 4  # 18 val images
    for (xa, ya), (xb, yb) in zip(pil, codec):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_an_unreadable_image_is_a_data_error_naming_it(tmp_path):
    root = write_image_folder(tmp_path / "images", classes=2, train=3, val=2)
    bad = root / "val" / "class0" / "1.jpg"
    bad.write_bytes(b"not a jpeg at all")
    for workers in (0, 2):
        data = load_dataset("imagenet", data_root=root, workers=workers)
        with pytest.raises(DataError, match=f"cannot decode image {bad}"):
            _materialise(eval_batches(data.test, 4))


def test_one_pool_lives_across_epochs_and_splits(folder):
    data = load_dataset("imagenet", data_root=folder, seed=0, workers=2)
    before = set(_loader_workers(os.getpid()))
    seen = []
    for epoch in range(3):
        _materialise(train_batches(data.train, seed=0, epoch=epoch, batch_size=8))
        _materialise(eval_batches(data.val, 8))
        seen.append(set(_loader_workers(os.getpid())) - before)
    assert len(seen[0]) == 2 and seen[0] == seen[1] == seen[2]


def test_auto_workers_share_the_cores_between_local_processes(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(16)))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert resolve_workers("auto") == 8  # capped
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert resolve_workers("auto") == 4
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1})
    assert resolve_workers("auto") == 1  # never fewer than one worker
    assert resolve_workers(0) == 0 and resolve_workers(3) == 3
    assert LaunchOptions(workers="AUTO").workers == "auto"
    assert LaunchOptions.from_mapping({"workers": "2"}).workers == 2
    for bad in ("-1", "many", 1.5):
        with pytest.raises(ConfigError, match="workers"):
            LaunchOptions(workers=bad)


# ------------------------------------------------------------------ whole runs on a folder

STEPS = 5  # training steps per epoch below: 36 train images (75 % of 48), batch 8


def _grow_flags(folder: Path, run_dir: Path) -> list[str]:
    return ["grow", "--dataset", "imagenet", "--data-root", str(folder), "--family",
            "basic4resnet", "--width", "0.125", "--interval", "1", "--stop-window", "2",
            "--tau", "100", "--max-growth-epochs", "3", "--finetune-epochs", "2",
            "--batch-size", "8", "--val-split", "0.25", "--run-dir", str(run_dir)]


def _without_torchcodec(tmp_path: Path) -> str:
    """A PYTHONPATH whose first folder holds a ``torchcodec`` that cannot be imported."""
    blocker = tmp_path / "no-torchcodec" / "torchcodec"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('no torchcodec in this test')\n")
    return os.pathsep.join(p for p in (str(blocker.parent), os.environ.get("PYTHONPATH")) if p)


def _events(run_dir: Path):
    with EventLog.open(run_dir, readonly=True) as log:
        return [ev for _, ev in live_events(log.records)]


@pytest.fixture(scope="module")
def folder_shards(folder, tmp_path_factory) -> Path:
    """The folder written as WebDataset tar shards by the converter's command line."""
    out = tmp_path_factory.mktemp("shards") / "shards"
    proc = subprocess.run([sys.executable, "scripts/folder_to_shards.py", str(folder), str(out),
                           "--shard-size", "7"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"train: 7 shards in {out / 'train'}",
                                        f"val: 3 shards in {out / 'val'}"]
    return out


@pytest.fixture(scope="module")
def folder_run(folder, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("folder-run") / "run"
    autogrow_cli(*_grow_flags(folder, run_dir), "--workers", "2", check=True)
    return run_dir


def test_grow_on_an_image_folder_grows_finishes_and_verifies(folder_run):
    events = _events(folder_run)
    assert sum(isinstance(e, BlockAdded) for e in events) >= 1
    finished = events[-1]
    assert finished.TYPE == "run_finished" and finished.arch != "1-1-1-1"
    assert events[0].config["dataset"] == "imagenet" and "workers" not in events[0].config
    assert verify_run(folder_run).ok


def test_kill_and_a_signal_to_the_whole_job_then_resume_with_other_worker_counts(
        folder, folder_run, tmp_path):
    """SIGKILL mid-epoch (run and workers), resume in-process (0 workers) until a SIGTERM to the
    whole process group (workers included, as SLURM delivers it) suspends it with exit 75, then
    the same command with 3 workers finishes with the uninterrupted run's weights."""
    run_dir = tmp_path / "run"
    command = [*_grow_flags(folder, run_dir), "--resume-if-exists"]
    first = launch([*command, "--workers", "2"], {"AUTOGROW_TEST_PAUSE_AT_STEP": str(STEPS + 2)})
    try:
        assert wait_for_pause(first), "the run ended before the step it should be killed at"
    finally:
        _kill_everything(first)
    _wait_for_no_workers(first)

    second = launch([*command, "--workers", "0"], {"AUTOGROW_TEST_PAUSE_AT_STEP": str(STEPS + 3)},
                    start_new_session=True)
    try:
        assert wait_for_pause(second), "the resumed run ended before the step it should stop at"
        os.killpg(second.pid, signal.SIGTERM)
        assert second.wait(timeout=300) == EXIT_RESUMABLE, second.stderr.read().decode()
    finally:
        _kill_everything(second)
    assert _events(run_dir)[-1] == RunSuspended(signal="TERM", epoch=2, step=3)

    # the last relaunch runs where torchcodec cannot be imported (its spawned workers too):
    # decoded by PIL, the run still ends with the uninterrupted run's weights
    third = launch([*command, "--workers", "3"], {"PYTHONPATH": _without_torchcodec(tmp_path)})
    assert third.wait(timeout=600) == 0, third.stderr.read().decode()
    said = third.stderr.read().decode()
    assert said.count("TorchCodec is not usable here") == 1, said  # once: not per worker
    assert "no torchcodec in this test" in said and "pip install" in said
    assert _final_digest(run_dir) == _final_digest(folder_run)
    assert comparable(run_dir) == comparable(folder_run)
    assert verify_run(run_dir).ok


def test_sigkill_of_the_main_process_alone_then_an_immediate_resume_is_bit_exact(
        folder, folder_run, tmp_path):
    """kill -9 of the run's main process only, as a user or the OOM killer does: its loader
    workers outlive it until their parent-death watchdog fires (seconds), and must not hold the
    run's lock meanwhile (issue 21, item 3). They are held stopped (SIGSTOP) from before the
    kill until the resume has finished, so the resume surely runs beside them however fast or
    slow it starts; then they are let go and exit on their own. The resume, started the moment
    the main process is gone, finishes with the uninterrupted run's weights."""
    run_dir = tmp_path / "run"
    first = launch([*_grow_flags(folder, run_dir), "--workers", "2"],
                   {"AUTOGROW_TEST_PAUSE_AT_STEP": str(STEPS + 2)})
    workers: list[int] = []
    try:
        assert wait_for_pause(first), "the run ended before the step it should be killed at"
        workers = _loader_workers(first.pid)
        assert len(workers) == 2, workers  # the loader's pool
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
        resumed = autogrow_cli("resume", str(run_dir), "--workers", "2")
        assert resumed.returncode == 0, resumed.stderr
        assert all(_alive(pid) for pid in workers), "the orphaned workers were not there"
    finally:
        first.kill()
        first.wait(timeout=60)
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    for pid in workers:  # left alone, the orphans see their parent gone and exit (~5 s)
        _wait_gone(pid)
    assert _final_digest(run_dir) == _final_digest(folder_run)
    assert comparable(run_dir) == comparable(folder_run)
    assert verify_run(run_dir).ok


def test_sigkill_mid_epoch_on_shards_then_resume_ends_with_the_folder_runs_weights(
        folder_shards, folder_run, tmp_path):
    """The folder as tar shards: a run on them, SIGKILLed mid-epoch (workers too) and resumed,
    ends with the weights of the uninterrupted run on the folder — the same rows, batches and
    exact resume; the resume reads the shards' offsets from the run's index."""
    run_dir = tmp_path / "run"
    first = launch([*_grow_flags(folder_shards, run_dir), "--workers", "2"],
                   {"AUTOGROW_TEST_PAUSE_AT_STEP": str(STEPS + 2)})
    try:
        assert wait_for_pause(first), "the run ended before the step it should be killed at"
    finally:
        _kill_everything(first)
    _wait_for_no_workers(first)
    assert (run_dir / "data" / "shard-index.npz").is_file()
    resumed = autogrow_cli("resume", str(run_dir), "--workers", "2")
    assert resumed.returncode == 0, resumed.stderr
    assert any(e.TYPE == "run_resumed" for e in _events(run_dir))
    assert _final_digest(run_dir) == _final_digest(folder_run)
    assert verify_run(run_dir).ok


TORCHRUN_FLAGS = ["--finetune-epochs", "1", "--workers", "1"]


@pytest.fixture(scope="module")
def folder_ddp_run(folder, tmp_path_factory) -> Path:
    """An uninterrupted two-process run on the folder, with loader workers."""
    whole = tmp_path_factory.mktemp("folder-ddp") / "whole"
    proc = _torchrun(2, *_grow_flags(folder, whole), *TORCHRUN_FLAGS)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    return whole


def test_torchrun_two_processes_on_a_folder_and_a_kill_resume_on_its_shards_to_the_same_weights(
        folder_shards, folder_ddp_run, tmp_path):
    """Two processes on the folder, uninterrupted; then two on the folder's tar shards, killed
    mid-epoch and resumed: the same weights (shards under torchrun: the same rows and shares)."""
    flags, whole = TORCHRUN_FLAGS, folder_ddp_run
    assert sum(isinstance(e, BlockAdded) for e in _events(whole)) >= 1
    assert verify_run(whole).ok

    killed = tmp_path / "killed"
    proc = _torchrun(2, *_grow_flags(folder_shards, killed), *flags,
                     env_extra={"AUTOGROW_TEST_PAUSE_AT_STEP": str(STEPS + 2)})
    try:
        _wait_for_markers(proc, 2)
    finally:
        _kill_everything(proc)
    _wait_for_no_workers(proc)
    again = _torchrun(2, "resume", str(killed), "--workers", "1")
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out
    assert _final_digest(killed) == _final_digest(whole)
    assert verify_run(killed).ok



def test_torchrun_restarts_the_group_after_rank_0s_main_process_alone_is_killed(
        folder, folder_ddp_run, tmp_path):
    """torchrun --max-restarts 1 on a folder with loader workers: SIGKILL of rank 0's main
    process only (its worker lives on for a while). The agent restarts both ranks, the same
    command resumes the run (rank 0 takes the lock at once) and it ends with the uninterrupted
    two-process run's weights (issue 21, item 3)."""
    run_dir = tmp_path / "restarted"
    proc = _torchrun(2, *_grow_flags(folder, run_dir), *TORCHRUN_FLAGS, "--resume-if-exists",
                     max_restarts=1, env_extra={"AUTOGROW_TEST_PAUSE_AT_STEP": str(STEPS + 2),
                                                "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"})
    try:
        _wait_for_markers(proc, 2)
        rank0 = _rank_pid(proc, 0)
        assert _loader_workers(rank0), "rank 0 has no loader worker"
        os.kill(rank0, signal.SIGKILL)
        out, _ = proc.communicate(timeout=600)
    finally:
        _kill_everything(proc)
    assert proc.returncode == 0, out
    assert any(e.TYPE == "run_resumed" for e in _events(run_dir))
    assert _final_digest(run_dir) == _final_digest(folder_ddp_run)
    assert verify_run(run_dir).ok


def test_gpu_runs_get_pixels_that_normalise_to_the_cpu_runs_input(folder):
    """A CUDA run ships uint8 and normalises on the device; a CPU run gets its input normalised
    by the workers: both are the same numbers (the uint8 path checked here on the CPU)."""
    import attrs

    from autogrow.engine.data.image_folder import FolderImages, FolderReader

    data = load_dataset("imagenet", data_root=folder, seed=2, workers=2)
    cpu = data.train.reader.images
    assert cpu.stats is not None  # a CPU run: normalised on the workers
    samples = {src: [(table[i], int(cpu.labels[src][i])) for i in range(len(table))]
               for src, table in cpu.paths.items()}
    pixels = FolderImages.of_files(samples, cpu.hflip, stats=None)  # what a CUDA run's workers make
    x, _ = pixels.__getitems__([("train", 0, 7), ("test", 1, -1)])
    assert x.dtype == torch.uint8 and x.is_contiguous(memory_format=torch.channels_last)
    gpu_like = attrs.evolve(data.train, reader=FolderReader(pixels, workers=2, pin_memory=False))
    a = _materialise(train_batches(data.train, seed=2, epoch=1, batch_size=9))
    b = _materialise(train_batches(gpu_like, seed=2, epoch=1, batch_size=9))
    assert len(a) == len(b) > 1
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
