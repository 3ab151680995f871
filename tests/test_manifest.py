"""Data identity (issue 24, item 1): an image folder's manifest, written once as a run starts and
read instead of the tree afterwards; a tensor set's source-file digests; other data refused
before anything trains, with the first difference named.

In-process tests of the manifest, the check of the tree against it, the loader's use of it (the
tree walk is never called again), the codec of ``run_started`` and the relaunch plan; one
process-level test: ``autogrow grow`` on a tiny folder, ``resume`` after a file changed (exit 2,
the file named, the run untouched), then the same command relaunched on the data moved
elsewhere (accepted).
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from autogrow.config import EXIT_RESUMABLE, RunConfig
from autogrow.engine.data import DataError, eval_batches, load_dataset
from autogrow.engine.data import image_folder
from autogrow.engine.data import manifest as mf
from autogrow.engine.device import resolve_execution
from autogrow.engine.factories import check_data, load_data, record_data
from autogrow.engine.relaunch import fresh, relaunch_plan
from autogrow.errors import cli_message
from autogrow.events import RunStarted, decode, encode
from autogrow.storage import EventLog
from tests.conftest import autogrow_cli, write_image_folder
from tests.test_data import _write_mnist


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """2 classes, 4 train and 2 val images each (one PNG per class folder); never changed."""
    return write_image_folder(tmp_path_factory.mktemp("images"), classes=2, train=4, val=2)


@pytest.fixture
def copy(images, tmp_path) -> Path:
    """A copy of ``images`` a test may change."""
    return Path(shutil.copytree(images, tmp_path / "copy"))


def _config(root: Path, **more) -> RunConfig:
    return RunConfig.from_mapping({"dataset": "imagenet", "data_root": str(root),
                                   "family": "basic4resnet", "seed_arch": "1-1-1-1",
                                   "val_split": 0.25, **more}).resolved()


CPU = resolve_execution("cpu", "fp32", False, 0)


def _recorded(root: Path, run: Path) -> dict:
    """A run started on ``root``: its manifest written, its identity returned (as logged)."""
    return record_data(load_dataset("imagenet", data_root=root, val_split=0.25), run)


def _rows(data) -> dict:
    """What the batches are a function of: each split's paths, labels and source rows."""
    out = {}
    for name in ("train", "val", "test"):
        split = data.__getattribute__(name)
        table = split.reader.images.paths[split.source]
        out[name] = ([table[i] for i in range(len(table))], split.labels.tolist(),
                     split.source_indices.tolist())
    return out


# -- the manifest --------------------------------------------------------------------------------

def test_the_manifest_lists_each_folder_in_the_readers_order_with_sizes_and_classes(images,
                                                                                    tmp_path):
    data = load_dataset("imagenet", data_root=images, val_split=0.25)
    manifest = data.manifest
    assert manifest.classes == ("class0", "class1") == data.classes
    assert list(manifest.splits) == ["train", "val"]
    for folder, source in (("train", "train"), ("val", "test")):
        listing = manifest.splits[folder]
        table = data.train.reader.images.paths[source]
        assert [str(images / folder / p) for p in listing.paths] == [
            table[i] for i in range(len(table))]
        assert listing.sizes == [(images / folder / p).stat().st_size for p in listing.paths]
        assert listing.labels == data.train.reader.images.labels[source].tolist()
    assert manifest.splits["train"].paths[:2] == ["class0/0.png", "class0/1.jpg"]

    identity = record_data(data, tmp_path / "run")
    stored = (tmp_path / "run" / "data" / "manifest").read_bytes()
    text = gzip.decompress(stored)
    assert identity == {"manifest": hashlib.sha256(text).hexdigest(),
                        "classes": ["class0", "class1"], "images": {"train": 8, "val": 4}}
    assert text.decode().splitlines()[:4] == [
        "autogrow data manifest 1", 'classes\t["class0", "class1"]', "split\ttrain\t8",
        f"class0/0.png\t{(images / 'train/class0/0.png').stat().st_size}\t0"]
    # the same listing, the same bytes (no timestamp in the gzip header)
    assert record_data(data, tmp_path / "again") == identity
    assert (tmp_path / "again" / "data" / "manifest").read_bytes() == stored
    assert not list((tmp_path / "run" / "data").glob("*.tmp"))


def test_odd_file_names_survive_the_round_trip():
    names = ["a\tb.jpg", "new\nline.jpg", "back\\slash\\t.jpg", "cr\r.png", "sp ace/é.jpg",
             "bytes-\udcff.jpg", "\\"]
    manifest = mf.Manifest(("c\t1", "ü"), {"train": mf.Listing(names, [1, 2, 3, 4, 5, 6, 7],
                                                                 [0, 1, 0, 1, 0, 1, 0]),
                                           "val": mf.Listing([], [], [])})
    back = mf.parse(manifest.encode())
    assert back.classes == manifest.classes
    for folder in ("train", "val"):
        a, b = manifest.splits[folder], back.splits[folder]
        assert (a.paths, a.sizes, a.labels) == (b.paths, b.sizes, b.labels)
    assert back.encode() == manifest.encode()


def test_a_run_that_exists_reads_its_manifest_and_never_lists_the_tree(images, tmp_path,
                                                                       monkeypatch):
    first = load_dataset("imagenet", data_root=images, val_split=0.25)
    identity = record_data(first, tmp_path / "run")

    def walk(*args):
        raise AssertionError("the tree was listed again")

    monkeypatch.setattr(image_folder, "_list_folder", walk)
    again = load_data(_config(images), CPU, workers=0, recorded=(tmp_path / "run", identity))
    assert _rows(again) == _rows(first)
    assert again.manifest.encode() == first.manifest.encode()
    for (xa, ya), (xb, yb) in zip(eval_batches(first.test, 4), eval_batches(again.test, 4)):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    with pytest.raises(AssertionError, match="listed again"):  # a new run does list it
        load_data(_config(images), CPU, workers=0)


def test_a_moved_data_root_is_the_same_data(images, tmp_path):
    identity = _recorded(images, tmp_path / "run")
    moved = Path(shutil.copytree(images, tmp_path / "elsewhere" / "imagenet"))
    data = load_data(_config(moved), CPU, workers=0, recorded=(tmp_path / "run", identity))
    assert data.data_location == str(moved)
    assert data.train.reader.images.paths["train"][0] == str(moved / "train" / "class0" / "0.png")


def _append_bytes(path: Path) -> None:
    with open(path, "ab") as f:
        f.write(b"\0" * 7)


CHANGES = {
    "missing": (lambda root: (root / "train/class1/2.jpg").unlink(),
                "train/class1/2.jpg is missing"),
    "resized": (lambda root: _append_bytes(root / "val/class0/1.jpg"),
                "val/class0/1.jpg is {size} bytes, the run's manifest says {was}"),
    "added": (lambda root: shutil.copy(root / "train/class0/1.jpg", root / "train/class0/x.JPEG"),
              "train/class0/x.JPEG is not in the run's manifest (added)"),
    "added in a subfolder": (
        lambda root: shutil.copytree(root / "train/class0", root / "train/class1/more"),
        "train/class1/more/0.png is not in the run's manifest (added) (and 3 other differences)"),
    "class folder added": (lambda root: (root / "val/class2").mkdir(),
                           "class folder val/class2 is not in the run's manifest (added)"),
    "class folder missing": (lambda root: shutil.rmtree(root / "val/class1"),
                             "class folder val/class1 is missing"),
    "two differences": (lambda root: (_append_bytes(root / "train/class1/3.jpg"),
                                      (root / "train/class0/2.jpg").unlink()),
                        "train/class0/2.jpg is missing (and 1 other difference)"),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_other_data_is_refused_naming_the_first_difference(copy, tmp_path, change):
    run = tmp_path / "run"
    identity = _recorded(copy, run)
    manifest_before = (run / "data" / "manifest").read_bytes()
    make, said = CHANGES[change]
    was = (copy / "val/class0/1.jpg").stat().st_size
    make(copy)
    said = said.format(size=was + 7, was=was)
    with pytest.raises(DataError) as err:
        load_data(_config(copy), CPU, workers=0, recorded=(run, identity))
    head = f"imagenet: the data under {copy} is not the data this run trained on: {said}; "
    assert str(err.value) == (head + "restore the files the run was started with (or point "
                              "data_root at its copy of the data), or start a new run on this data")
    assert cli_message(err.value) == (head + "restore the files the run was started with (or "
                                      "point --data-root at its copy of the data; for fork, --set "
                                      "data_root=…), or start a new run on this data")
    assert (run / "data" / "manifest").read_bytes() == manifest_before


def test_loading_from_the_manifest_reads_no_image_the_check_compares_them(copy, tmp_path):
    """A resume loads on every process without the check (the manifest is the list), and rank 0
    alone then checks (``check_data``, a decision every rank hears)."""
    identity = _recorded(copy, tmp_path / "run")
    (copy / "val/class1/1.jpg").unlink()
    data = load_data(_config(copy), CPU, workers=0, recorded=(tmp_path / "run", identity),
                     check=False)
    assert len(data.test) == 4
    with pytest.raises(DataError, match="val/class1/1.jpg is missing"):
        check_data(data, identity)
    check_data(data, None)  # a run that recorded nothing: nothing to compare


def test_a_missing_or_altered_manifest_is_refused(images, tmp_path):
    run = tmp_path / "run"
    identity = _recorded(images, run)
    path = run / "data" / "manifest"
    text = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(text.replace(b"\t0\n", b"\t1\n", 1)))  # a label changed
    with pytest.raises(DataError, match=r"data/manifest \(the list of the files the run trained "
                                        r"on\) is not the one the run's run_started names \(sha256 "
                                        r"[0-9a-f]{12}…, logged " + identity["manifest"][:12]):
        load_data(_config(images), CPU, workers=0, recorded=(run, identity))
    path.write_bytes(b"not gzip")
    with pytest.raises(DataError, match="cannot be read .*; restore it from a copy of the run"):
        load_data(_config(images), CPU, workers=0, recorded=(run, identity))
    path.unlink()
    with pytest.raises(DataError, match="data/manifest .* is missing; restore it"):
        load_data(_config(images), CPU, workers=0, recorded=(run, identity))


def test_a_run_logged_before_data_was_recorded_lists_the_tree_as_before(images, tmp_path):
    data = load_data(_config(images), CPU, workers=0, recorded=(tmp_path / "old-run", None))
    assert len(data.train) == 6 and not (tmp_path / "old-run").exists()


# -- tensor data sets: the digests of their source files -------------------------------------------

def test_a_tensor_set_records_its_source_files_and_refuses_other_ones(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    _write_mnist(raw, gz=False)
    config = RunConfig.from_mapping({"dataset": "mnist", "data_root": str(tmp_path)}).resolved()
    data = load_data(config, CPU)
    recorded = record_data(data, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # nothing to write: the digests are the record
    assert recorded == {"files": {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                                  for p in sorted(raw.iterdir())}}
    assert list(recorded["files"]) == ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                       "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    load_data(config, CPU, recorded=(tmp_path / "run", recorded))  # the same files: accepted
    _write_mnist(raw, gz=False, seed=1)  # other images, same sizes
    was = recorded["files"]["train-images-idx3-ubyte"][:12]
    now = hashlib.sha256((raw / "train-images-idx3-ubyte").read_bytes()).hexdigest()[:12]
    with pytest.raises(DataError) as err:
        load_data(config, CPU, recorded=(tmp_path / "run", recorded))
    assert str(err.value) == (
        f"mnist: train-images-idx3-ubyte under {raw} is not the file this run trained on: it is "
        f"sha256 {now}…, the run's was {was}…; restore the run's copy of the data, or start a "
        "new run on this data")


# -- the log and the relaunch plan ---------------------------------------------------------------

def test_run_started_of_schema_1_is_upcast_without_data():
    old = {"run_id": "r", "config": {"dataset": "imagenet"}, "seed": 0, "versions": {},
           "parent_run_id": None, "parent_seq": None, "parent_snapshot": None,
           "base_state": None}
    event = decode("run_started", 1, old)
    assert isinstance(event, RunStarted) and event.data is None
    data = {"manifest": "ab" * 32, "classes": ["a"], "images": {"train": 1, "val": 1}}
    assert encode(RunStarted(**{**old, "data": data})) == ("run_started", 2, {**old, "data": data})


def _logged(run: Path, config: RunConfig, data: dict | None) -> Path:
    """A run directory whose log holds only its run_started."""
    with EventLog.open(run, create=True) as log:
        log.append(*encode(RunStarted(run_id="r", config=config.to_dict(), seed=config.seed,
                                      data=data)))
    return run


def test_verify_requires_the_manifest_run_started_names(images, tmp_path):
    from autogrow.replay import verify

    assert verify.MANIFEST_PATH == mf.MANIFEST_PATH
    run = tmp_path / "run"
    _logged(run, _config(images), _recorded(images, run))
    assert verify.verify_run(run).problems == ()
    path = run / "data" / "manifest"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()) + b"extra\t1\t0\n"))
    [problem] = verify.verify_run(run).problems
    assert problem.startswith(f"seq 1: {path} is not the one run_started names (sha256 ")
    path.unlink()
    assert verify.verify_run(run).problems == (
        f"seq 1: {path}, the list of the run's data, is missing",)


def test_a_relaunch_on_moved_data_resumes_when_the_run_recorded_its_data(tmp_path):
    config = _config(tmp_path / "data")
    moved = _config(tmp_path / "moved")
    recorded = _logged(tmp_path / "new", config, {"manifest": "ab" * 32, "classes": [],
                                                  "images": {}})
    assert relaunch_plan(recorded, moved) == {"action": "resume"}
    old = _logged(tmp_path / "old", config, None)  # no data recorded: the root is all it has
    assert relaunch_plan(old, moved)["error"].startswith(
        f"{old} holds a run started with other settings: data_root (run: "
        f"'{tmp_path / 'data'}', now: '{tmp_path / 'moved'}')")
    # a launch killed after writing the manifest, before run_started: a new run may start
    (tmp_path / "killed").mkdir()
    (tmp_path / "killed" / "events.jsonl").write_bytes(b"")
    (tmp_path / "killed" / "data").mkdir()
    (tmp_path / "killed" / "data" / "manifest").write_bytes(b"x")
    assert fresh(tmp_path / "killed")


# -- the command line ----------------------------------------------------------------------------

def _contents(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def test_resume_refuses_a_changed_file_and_a_relaunch_accepts_the_data_moved(copy, tmp_path):
    run = tmp_path / "run"
    grow = ["grow", "--dataset", "imagenet", "--family", "basic4resnet", "--width", "0.125",
            "--max-growth-epochs", "2", "--finetune-epochs", "1", "--batch-size", "4",
            "--val-split", "0.25", "--workers", "0", "--run-dir", str(run), "--time-limit", "1s"]
    first = autogrow_cli(*grow, "--data-root", str(copy))
    assert first.returncode == EXIT_RESUMABLE, first.stderr
    [started] = [line for line in (run / "events.jsonl").read_text().splitlines()[:1]]
    text = gzip.decompress((run / "data" / "manifest").read_bytes())
    assert hashlib.sha256(text).hexdigest() in started

    image = copy / "train" / "class1" / "3.jpg"
    original = image.read_bytes()
    image.write_bytes(original[:-10])
    before = _contents(run)
    refused = autogrow_cli("resume", str(run), "--time-limit", "1s")
    assert refused.returncode == 2
    assert refused.stderr.splitlines()[-1] == (
        f"autogrow: error: imagenet: the data under {copy} is not the data this run trained "
        f"on: train/class1/3.jpg is {len(original) - 10} bytes, the run's manifest says "
        f"{len(original)}; restore the files the run was started with (or point --data-root at "
        "its copy of the data; for fork, --set data_root=…), or start a new run on this data")
    assert _contents(run) == before  # nothing written: the log, the manifest, the snapshots

    image.write_bytes(original)
    moved = copy.rename(tmp_path / "moved")
    again = autogrow_cli(*grow, "--data-root", str(moved), "--resume-if-exists")
    assert again.returncode == EXIT_RESUMABLE, again.stderr
    types = [line.split('"type":"')[1].split('"')[0]
             for line in (run / "events.jsonl").read_text().splitlines()]
    assert types.count("run_resumed") == 1 and types.count("run_suspended") == 2
