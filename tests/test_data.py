"""Tests of the data layer: loaders (real Fashion-MNIST + fixture files), splits, determinism."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

import autogrow
from autogrow.errors import cli_message
from autogrow.engine import data as D
from autogrow.engine.augment import AugmentParams, augment_batch, epoch_augment_params, epoch_order
from autogrow.engine.data import (
    DataError,
    TensorSplit,
    Transform,
    eval_batches,
    holdout_split,
    load_dataset,
    shard_bounds,
    steps_per_epoch,
    stratified_sample,
    train_batches,
)

DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")
IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


# ------------------------------------------------------------------ real Fashion-MNIST
# The suite needs Fashion-MNIST (`make test` installs Debian's dataset-fashion-mnist): these tests
# fail, never skip, without it, so a CI machine that lost the data cannot pass silently.


def test_fashion_mnist_is_installed_where_the_suite_expects_it():
    missing = [f for f in IDX if not (DEBIAN_FMNIST / f"{f}.gz").is_file()]
    assert not missing, (f"{DEBIAN_FMNIST} lacks {missing}: `make data` (apt-get install "
                         "dataset-fashion-mnist) installs it")


@pytest.fixture(scope="module")
def fmnist_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def fmnist(fmnist_cache):
    return load_dataset("fashionmnist", cache_dir=fmnist_cache, seed=3)


def test_fashion_mnist_shapes_and_stratified_val(fmnist):
    assert (len(fmnist.train), len(fmnist.val), len(fmnist.test)) == (54000, 6000, 10000)
    assert fmnist.train.images.shape == (54000, 1, 32, 32)
    assert fmnist.test.images.shape == (10000, 1, 32, 32)
    for split in (fmnist.train, fmnist.val, fmnist.test):
        assert split.images.dtype == torch.uint8 and split.images.device.type == "cpu"
        assert split.labels.dtype == torch.int64
    counts = torch.bincount(fmnist.val.labels, minlength=10)
    assert int(counts.max() - counts.min()) <= 1 and int(counts.sum()) == 6000
    # zero padding of 2 around the 28-px images, done at load time
    assert int(fmnist.train.images[:, :, :2].abs().sum()) == 0
    assert int(fmnist.train.images[:, :, :, 30:].abs().sum()) == 0
    # val and train come from disjoint rows of the original training set
    assert not set(fmnist.val.source_indices.tolist()) & set(fmnist.train.source_indices.tolist())
    assert (fmnist.num_classes, fmnist.in_channels, fmnist.image_size) == (10, 1, 32)
    desc = fmnist.describe()
    assert desc["sizes"] == {"train": 54000, "val": 6000, "test": 10000}
    assert desc["augment"] == {"crop_padding": 0, "hflip": True}


def _per_sample(split, seed: int) -> torch.Tensor:
    """Every training sample as one epoch of ``seed`` gives it, put back in split order."""
    x, y = next(iter(train_batches(split, seed=seed, epoch=0, batch_size=len(split))))
    out = torch.empty_like(x)
    out[epoch_order(len(split), seed, 0)] = x
    return out


def _first(split: TensorSplit, n: int) -> TensorSplit:
    return TensorSplit(images=split.images[:n], labels=split.labels[:n], source=split.source,
                       source_indices=split.source_indices[:n], transform=split.transform)


def test_fashion_mnist_input_is_the_originals_flips_only_no_translation(fmnist):
    """As the original (cifar10/main_gradual.py:299-325): 28 px zero-padded to 32 with no random
    translation (its RandomCrop(32, padding=2) has one position), a random flip, no
    normalisation (its mean/std table says 0/1). So the same image under two seeds is itself or
    its mirror, in [0, 1]."""
    split = _first(fmnist.train, 512)
    plain = split.images.float() / 255
    a, b = _per_sample(split, 1), _per_sample(split, 2)
    for out in (a, b):
        same = (out == plain).flatten(1).all(1)
        mirrored = (out == plain.flip(-1)).flatten(1).all(1)
        assert bool((same | mirrored).all())
        assert 150 < int(mirrored.sum() - (same & mirrored).sum()) < 362  # about half flipped
    assert not torch.equal(a, b)
    assert float(a.min()) == 0.0 and float(a.max()) == 1.0


def test_mnist_training_batches_are_pixel_identical_across_seeds(tmp_path):
    """MNIST gets no flip and no translation in the original, so seeds change only the order."""
    _write_mnist(tmp_path / "MNIST" / "raw", gz=False)
    d = load_dataset("mnist", data_root=tmp_path, cache_dir=tmp_path / "cache", val_split=0.2)
    a, b = _per_sample(d.train, 1), _per_sample(d.train, 2)
    assert torch.equal(a, b) and torch.equal(a, d.train.images.float() / 255)
    xa, _ = next(iter(train_batches(d.train, seed=1, epoch=0, batch_size=8)))
    xb, _ = next(iter(train_batches(d.train, seed=2, epoch=0, batch_size=8)))
    assert not torch.equal(xa, xb)  # the order does change
    # the extra augmentation is one setting away, and then seeds differ
    c = load_dataset("mnist", data_root=tmp_path, cache_dir=tmp_path / "cache", val_split=0.2,
                     crop_padding=4)
    assert c.crop_padding == 4 and not torch.equal(_per_sample(c.train, 1), _per_sample(c.train, 2))


def test_fashion_mnist_cache_written_once_outside_system_and_package(fmnist, fmnist_cache):
    raw, = fmnist_cache.glob("gunzip-*/FashionMNIST/raw")  # one folder per source
    stamps = {f: (raw / f).stat().st_mtime_ns for f in IDX}
    again = load_dataset("Fashion-MNIST", cache_dir=fmnist_cache, seed=3)
    assert {f: (raw / f).stat().st_mtime_ns for f in IDX} == stamps
    assert sorted(os.listdir(raw)) == sorted(IDX)  # no temp files left behind
    assert sorted(os.listdir(DEBIAN_FMNIST)) == sorted(f"{f}.gz" for f in IDX)
    assert not (Path(autogrow.__file__).parent / "FashionMNIST").exists()
    assert torch.equal(again.val.source_indices, fmnist.val.source_indices)
    assert again.describe()["fingerprints"] == fmnist.describe()["fingerprints"]


def test_fashion_mnist_subset_caps_and_test_as_val(fmnist_cache):
    small = load_dataset("fashionmnist", cache_dir=fmnist_cache, subset=0.1, max_val=1000, max_test=500)
    assert (len(small.train), len(small.val), len(small.test)) == (5400, 1000, 500)
    assert torch.bincount(small.train.labels).tolist() == [540] * 10
    paper = load_dataset("fashionmnist", cache_dir=fmnist_cache, val_source="test", pad_to=None)
    assert (len(paper.train), len(paper.val), len(paper.test)) == (60000, 10000, 10000)
    assert paper.image_size == 28 and paper.val.source == "test"
    assert paper.val is paper.test  # the paper's test-as-validation shares one device copy


def test_fashion_mnist_missing_everywhere_raises_data_error(tmp_path, monkeypatch):
    monkeypatch.setitem(D.SYSTEM_IDX_DIRS, "fashionmnist", ())
    with pytest.raises(DataError, match=r"fashionmnist: no data under .*train-images-idx3-ubyte"):
        load_dataset("fashionmnist", data_root=tmp_path / "none", cache_dir=tmp_path / "cache")


# ------------------------------------------------------------------ fixture files


def _idx_images(a: np.ndarray) -> bytes:
    return struct.pack(">IIII", 0x803, *a.shape) + a.astype(np.uint8).tobytes()


def _idx_labels(a: np.ndarray) -> bytes:
    return struct.pack(">II", 0x801, len(a)) + a.astype(np.uint8).tobytes()


def _write_mnist(folder: Path, *, gz: bool, n_train: int = 50, n_test: int = 20, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    blobs = {
        "train-images-idx3-ubyte": _idx_images(rng.integers(0, 256, (n_train, 28, 28))),
        "train-labels-idx1-ubyte": _idx_labels(np.arange(n_train) % 10),
        "t10k-images-idx3-ubyte": _idx_images(rng.integers(0, 256, (n_test, 28, 28))),
        "t10k-labels-idx1-ubyte": _idx_labels(np.arange(n_test) % 10),
    }
    for name, blob in blobs.items():
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(blob))
        else:
            (folder / name).write_bytes(blob)


def test_mnist_from_torchvision_raw_layout(tmp_path):
    _write_mnist(tmp_path / "MNIST" / "raw", gz=False)
    d = load_dataset("mnist", data_root=tmp_path, cache_dir=tmp_path / "cache", val_split=0.2)
    assert (len(d.train), len(d.val), len(d.test)) == (40, 10, 20)
    assert d.train.images.shape[1:] == (1, 32, 32) and d.train.images.dtype == torch.uint8
    assert not d.hflip and (d.mean, d.std, d.crop_padding) == ((0.0,), (1.0,), 0)
    assert not list((tmp_path / "cache").glob("gunzip-*"))  # uncompressed files are read in place


def test_mnist_from_flat_gz_files_goes_through_cache(tmp_path):
    _write_mnist(tmp_path / "gz", gz=True)
    d = load_dataset("mnist", data_root=tmp_path / "gz", cache_dir=tmp_path / "cache", pad_to=None)
    assert d.image_size == 28 and len(d.test) == 20
    raw, = (tmp_path / "cache").glob("gunzip-*/MNIST/raw")
    assert sorted(os.listdir(raw)) == sorted(IDX)


def test_two_sources_with_same_size_files_never_share_a_cache(tmp_path):
    """Regression: the cache once held one decompressed copy per data set, reused whenever the
    sizes matched, so a second data root of the same shape was served the first one's images."""
    cache = tmp_path / "cache"
    for name, seed in (("a", 1), ("b", 2)):
        _write_mnist(tmp_path / name, gz=True, seed=seed)
    a = load_dataset("mnist", data_root=tmp_path / "a", cache_dir=cache, val_split=0.2)
    b = load_dataset("mnist", data_root=tmp_path / "b", cache_dir=cache, val_split=0.2)
    assert not torch.equal(a.test.images, b.test.images)
    _write_mnist(tmp_path / "a", gz=True, seed=2)  # same source, new content of the same size
    again = load_dataset("mnist", data_root=tmp_path / "a", cache_dir=cache, val_split=0.2)
    assert torch.equal(again.test.images, b.test.images)


def test_mnist_missing_names_expected_files(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("mnist", data_root=tmp_path, cache_dir=tmp_path / "cache")
    msg = str(err.value)
    assert "\n" not in msg and "t10k-labels-idx1-ubyte" in msg and "data_root" in msg
    assert "--data-root" in cli_message(err.value)  # the command line's words for the same


def _write_cifar(root: Path, name: str) -> None:
    rng = np.random.default_rng(1)

    def batch(n: int, key: str) -> dict:
        return {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), key: list(np.arange(n) % 10)}

    if name == "cifar10":
        base = root / "cifar-10-batches-py"
        base.mkdir(parents=True)
        files = {f"data_batch_{i}": batch(10, "labels") for i in range(1, 6)}
        files |= {"test_batch": batch(10, "labels"), "batches.meta": {"label_names": [f"c{i}" for i in range(10)]}}
    else:
        base = root / "cifar-100-python"
        base.mkdir(parents=True)
        files = {"train": batch(40, "fine_labels"), "test": batch(10, "fine_labels")}
        files["meta"] = {"fine_label_names": [f"c{i}" for i in range(100)]}
    for fname, obj in files.items():
        with open(base / fname, "wb") as f:  # the data set's own (pickle) format
            pickle.dump(obj, f)


@pytest.mark.parametrize("name,n_train", [("cifar10", 50), ("cifar100", 40)])
def test_cifar_fixture_loads(tmp_path, name, n_train):
    _write_cifar(tmp_path, name)
    d = load_dataset(name, data_root=tmp_path, verify_checksums=False, val_split=0.2)
    assert len(d.train) + len(d.val) == n_train and len(d.test) == 10
    assert d.train.images.shape[1:] == (3, 32, 32) and d.train.images.dtype == torch.uint8
    assert d.hflip and d.num_classes == (10 if name == "cifar10" else 100)
    # the NHWC numpy array became NCHW without scrambling pixels
    with open(tmp_path / ("cifar-10-batches-py/test_batch" if name == "cifar10" else "cifar-100-python/test"), "rb") as f:
        first = pickle.load(f)["data"][0].reshape(3, 32, 32)
    assert torch.equal(d.test.images[0], torch.from_numpy(first))


def test_cifar_checksums_are_verified_by_default(tmp_path):
    _write_cifar(tmp_path, "cifar10")
    with pytest.raises(DataError, match=r"cifar10: data_batch_1, .*test_batch, batches.meta under .* fail the official md5"):
        load_dataset("cifar10", data_root=tmp_path)


def test_cifar_missing_names_expected_files(tmp_path):
    with pytest.raises(DataError, match=r"cifar10: no data under .*cifar-10-batches-py/\{data_batch_1\.\.5,test_batch"):
        load_dataset("cifar10", data_root=tmp_path)
    with pytest.raises(DataError, match="cifar100: no data root given"):
        load_dataset("cifar100")


def test_svhn_missing_names_expected_files(tmp_path):
    with pytest.raises(DataError, match=r"svhn: no data under .*train_32x32\.mat,test_32x32\.mat"):
        load_dataset("svhn", data_root=tmp_path)


def test_svhn_fixture_loads(tmp_path):
    import scipy.io

    rng = np.random.default_rng(2)
    for split, n in (("train", 30), ("test", 10)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).reshape(n, 1)  # SVHN stores digit 0 as label 10
        scipy.io.savemat(tmp_path / f"{split}_32x32.mat", {"X": x, "y": y})
    d = load_dataset("svhn", data_root=tmp_path, verify_checksums=False)
    assert len(d.train) + len(d.val) == 30 and d.test.images.shape == (10, 3, 32, 32)
    assert not d.hflip and int(d.test.labels.max()) == 9


def _write_imagefolder(root: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(3)
    for part, per_class in (("train", 5), ("val", 2)):
        for cls in ("ant", "bee"):
            (root / part / cls).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (30 + i, 40, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / part / cls / f"{i}.png")


def test_imagenet_imagefolder_loads_and_batches_deterministically(tmp_path):
    _write_imagefolder(tmp_path)
    d = load_dataset("imagenet", data_root=tmp_path, val_split=0.2, seed=1)
    assert not d.tensor_resident and d.classes == ("ant", "bee") and d.num_classes == 2
    assert (len(d.train), len(d.val), len(d.test)) == (8, 2, 4)
    assert sorted(d.val.labels.tolist()) == [0, 1]
    run = lambda: list(train_batches(d.train, seed=1, epoch=0, batch_size=3))  # noqa: E731
    first, second = run(), run()
    assert [x.shape for x, _ in first] == [(3, 3, 224, 224), (3, 3, 224, 224), (2, 3, 224, 224)]
    for (xa, ya), (xb, yb) in zip(first, second):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    shards = [list(train_batches(d.train, seed=1, epoch=0, batch_size=3, rank=r, world_size=2)) for r in (0, 1)]
    for step, (x, y) in enumerate(first):
        assert torch.equal(torch.cat([shards[0][step][0], shards[1][step][0]]), x)
    (x, y), = eval_batches(d.test, 4)
    assert x.shape == (4, 3, 224, 224) and y.tolist() == [0, 0, 1, 1]


def test_imagenet_missing_names_layout(tmp_path):
    with pytest.raises(DataError, match=r"imagenet: no data under .*/train/<class>/<image> and .*/val/"):
        load_dataset("imagenet", data_root=tmp_path)


def test_unknown_name_and_bad_arguments():
    with pytest.raises(ValueError, match="valid names: cifar10, cifar100, fashionmnist, imagenet, mnist, svhn"):
        load_dataset("cifar11")
    with pytest.raises(ValueError, match="subset"):
        load_dataset("mnist", subset=0.0)
    with pytest.raises(ValueError, match="val_source"):
        load_dataset("mnist", val_source="dev")


def test_pad_to_must_be_reachable(tmp_path):
    _write_mnist(tmp_path / "MNIST" / "raw", gz=False)
    with pytest.raises(ValueError, match="pad_to=31"):
        load_dataset("mnist", data_root=tmp_path, pad_to=31)


# ------------------------------------------------------------------ determinism of batches


def _split(n: int = 37, c: int = 3, size: int = 8, hflip: bool = True) -> TensorSplit:
    """A split whose label is the sample's position, so batches reveal the order."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, c, size, size), generator=g, dtype=torch.uint8)
    return TensorSplit(
        images=images, labels=torch.arange(n), source="train", source_indices=torch.arange(n),
        transform=Transform((0.4, 0.5, 0.6)[:c], (0.2, 0.25, 0.3)[:c], 4, hflip),
    )


def _epoch(split, **kw):
    return list(train_batches(split, batch_size=kw.pop("batch_size", 8), **kw))


def test_same_seed_epoch_gives_identical_batches_and_epochs_differ():
    s = _split()
    a, b = _epoch(s, seed=5, epoch=2), _epoch(s, seed=5, epoch=2)
    assert len(a) == steps_per_epoch(37, 8) == 5
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    order = torch.cat([y for _, y in a])
    assert sorted(order.tolist()) == list(range(37))
    other = torch.cat([y for _, y in _epoch(s, seed=5, epoch=3)])
    assert not torch.equal(order, other)
    assert torch.equal(order, epoch_order(37, 5, 2))


@pytest.mark.parametrize("drop_last", [False, True])
def test_start_step_resumes_inside_the_epoch(drop_last):
    s = _split()
    full = _epoch(s, seed=1, epoch=0, drop_last=drop_last)
    assert len(full) == steps_per_epoch(37, 8, drop_last)
    for k in (0, 2, len(full)):
        part = _epoch(s, seed=1, epoch=0, start_step=k, drop_last=drop_last)
        assert len(part) == len(full) - k
        for (xa, ya), (xb, yb) in zip(part, full[k:]):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    with pytest.raises(ValueError, match="start_step"):
        _epoch(s, seed=1, epoch=0, start_step=len(full) + 1, drop_last=drop_last)


@pytest.mark.parametrize("world_size", [2, 3, 8])
def test_shards_concatenate_to_the_single_process_batch(world_size):
    s = _split()
    full = _epoch(s, seed=9, epoch=4, batch_size=10)
    shards = [_epoch(s, seed=9, epoch=4, batch_size=10, rank=r, world_size=world_size) for r in range(world_size)]
    assert all(len(sh) == len(full) for sh in shards)
    for step, (x, y) in enumerate(full):
        assert torch.equal(torch.cat([sh[step][0] for sh in shards]), x)
        assert torch.equal(torch.cat([sh[step][1] for sh in shards]), y)
    evals = [list(eval_batches(s, 10, rank=r, world_size=world_size)) for r in range(world_size)]
    for step, (x, y) in enumerate(eval_batches(s, 10)):
        assert torch.equal(torch.cat([e[step][0] for e in evals]), x)


def test_shard_bounds_cover_the_batch():
    assert [shard_bounds(7, r, 3) for r in range(3)] == [(0, 3), (3, 5), (5, 7)]
    assert [shard_bounds(1, r, 2) for r in range(2)] == [(0, 1), (1, 1)]
    with pytest.raises(ValueError):
        shard_bounds(4, 2, 2)


def _reference(image: torch.Tensor, top: int, left: int, flip: bool, tf: Transform) -> torch.Tensor:
    """Per-image torchvision pipeline: pad, crop, flip, ToTensor-style scale, normalise."""
    h, w = image.shape[-2:]
    out = TF.crop(TF.pad(image, [tf.crop_padding] * 4, fill=0), top, left, h, w)
    if flip:
        out = TF.hflip(out)
    return TF.normalize(out.float() / 255.0, list(tf.mean), list(tf.std))


def test_batched_augmentation_matches_per_image_reference():
    s = _split(n=16)
    params = epoch_augment_params(16, seed=7, epoch=1, padding=4, hflip=True)
    assert params.flip.any() and (~params.flip).any()
    tf = s.transform
    x, y = next(iter(train_batches(s, seed=7, epoch=1, batch_size=16)))
    for row, pos in enumerate(y.tolist()):
        ref = _reference(s.images[pos], int(params.top[pos]), int(params.left[pos]), bool(params.flip[pos]), tf)
        assert torch.equal(x[row], ref)
    extreme = AugmentParams(top=torch.tensor([0, 8]), left=torch.tensor([8, 0]), flip=torch.tensor([True, False]))
    out = augment_batch(s.images[:2], extreme, padding=4, mean=tf.mean, std=tf.std)
    for i in range(2):
        ref = _reference(s.images[i], int(extreme.top[i]), int(extreme.left[i]), bool(extreme.flip[i]), tf)
        assert torch.equal(out[i], ref)


def test_no_flip_data_sets_never_flip_and_offsets_do_not_depend_on_flag():
    on = epoch_augment_params(100, 0, 0, padding=4, hflip=True)
    off = epoch_augment_params(100, 0, 0, padding=4, hflip=False)
    assert not off.flip.any()
    assert torch.equal(on.top, off.top) and torch.equal(on.left, off.left)
    assert int(on.top.min()) >= 0 and int(on.top.max()) <= 8


def test_eval_batches_are_plain_normalisation_in_order_and_options_apply():
    s = _split()
    xs, ys = zip(*eval_batches(s, 8))
    assert torch.equal(torch.cat(ys), torch.arange(37))
    tf = s.transform
    ref = torch.stack([TF.normalize(im.float() / 255.0, list(tf.mean), list(tf.std)) for im in s.images])
    assert torch.equal(torch.cat(xs), ref)
    x, _ = next(iter(train_batches(s, seed=0, epoch=0, batch_size=8, dtype=torch.bfloat16, channels_last=True)))
    assert x.dtype == torch.bfloat16 and x.is_contiguous(memory_format=torch.channels_last)


# ------------------------------------------------------------------ split properties


labels_strategy = st.lists(st.integers(0, 4), min_size=2, max_size=120).map(lambda v: torch.tensor(v))


@settings(max_examples=60, deadline=None)
@given(labels=labels_strategy, fraction=st.floats(0.05, 0.95), seed=st.integers(0, 2**31))
def test_holdout_split_is_disjoint_stratified_and_pure(labels, fraction, seed):
    train, val = holdout_split(labels, fraction, seed)
    assert not set(train.tolist()) & set(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(len(labels)))
    n, k = len(labels), round(fraction * len(labels))
    assert len(val) == k
    for c in labels.unique().tolist():
        q = k * int((labels == c).sum()) / n
        got = int((labels[val] == c).sum())
        assert np.floor(q) <= got <= np.ceil(q)
    again = holdout_split(labels.clone(), fraction, seed)
    assert torch.equal(again[0], train) and torch.equal(again[1], val)


@settings(max_examples=40, deadline=None)
@given(labels=labels_strategy, k=st.integers(0, 130), seed=st.integers(0, 2**31))
def test_stratified_sample_size_uniqueness_and_purity(labels, k, seed):
    pick = stratified_sample(labels, k, seed, "subset")
    assert len(pick) == min(k, len(labels)) and len(set(pick.tolist())) == len(pick)
    assert pick.tolist() == sorted(pick.tolist()) and (len(pick) == 0 or int(pick.max()) < len(labels))
    assert torch.equal(pick, stratified_sample(labels, k, seed, "subset"))


def test_subset_is_taken_from_the_training_portion_only():
    labels = torch.arange(1000) % 4
    picks = D.pick_splits(labels, torch.arange(100) % 4, D.SplitChoice(0.1, "train", 11, 0.25, max_val=40))
    train_src, train_idx = picks["train"]
    val_src, val_idx = picks["val"]
    assert (len(train_idx), len(val_idx), len(picks["test"][1])) == (225, 40, 100)
    assert not set(train_idx.tolist()) & set(val_idx.tolist())
    counts = torch.bincount(labels[train_idx])
    assert int(counts.max() - counts.min()) <= 1
    full_val = holdout_split(labels, 0.1, 11)[1]
    assert set(val_idx.tolist()) <= set(full_val.tolist())
