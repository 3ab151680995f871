"""The data layer: load a data set once, split it reproducibly, and serve deterministic batches.

Small data sets (MNIST, Fashion-MNIST, SVHN, CIFAR-10/100) are converted once from torchvision's
dataset object into a uint8 ``N×C×H×W`` tensor on the training device; augmentation (pad-4 random
crop, horizontal flip where the paper's code used it) and normalisation then run batched on that
device. ImageNet cannot live in memory, so it goes through a regular ``DataLoader`` over
``ImageFolder`` with the standard transforms. Either way, batch order and augmentation are pure
functions of ``(seed, epoch, index)`` (see :mod:`autogrow.engine.augment`), so a run can resume
mid-epoch or change its world size and still see the same data.

Splits: by default a seeded, class-stratified validation set is held out of the training set for
growth decisions, and the test set is only reported (``val_source="test"`` restores the paper's
test-as-validation). ``subset`` shrinks only the training portion (for a demo that finishes in
minutes); ``max_val`` / ``max_test`` cap the evaluation sets explicitly.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Union

import attrs
import torch
import torch.nn.functional as F

from autogrow.engine.augment import (
    augment_batch,
    derive_seed,
    epoch_augment_params,
    epoch_order,
    normalize,
    seeded_generator,
)

__all__ = [
    "DATASETS",
    "DataError",
    "DataSplits",
    "DatasetInfo",
    "FolderSplit",
    "TensorSplit",
    "default_cache_dir",
    "eval_batches",
    "holdout_split",
    "load_dataset",
    "shard_bounds",
    "steps_per_epoch",
    "stratified_sample",
    "train_batches",
]


class DataError(RuntimeError):
    """Data that cannot be found or read; the message is one line that says what to do."""


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


@attrs.frozen
class DatasetInfo:
    """Fixed facts about a data set: shape, classes, normalisation and the paper's augmentation."""

    name: str
    num_classes: int
    in_channels: int
    native_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    hflip: bool
    crop_padding: int = 4
    tensor_resident: bool = True


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("mnist", 10, 1, 28, (0.1307,), (0.3081,), hflip=False),
    "fashionmnist": DatasetInfo("fashionmnist", 10, 1, 28, (0.2860,), (0.3530,), hflip=True),
    "svhn": DatasetInfo(
        "svhn", 10, 3, 32, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), hflip=False
    ),
    "cifar10": DatasetInfo(
        "cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), hflip=True
    ),
    "cifar100": DatasetInfo(
        "cifar100", 100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), hflip=True
    ),
    "imagenet": DatasetInfo(
        "imagenet", 1000, 3, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
        hflip=True, crop_padding=0, tensor_resident=False,
    ),
}

#: System folders searched for the gzipped idx files (the Debian package ``dataset-fashion-mnist``).
SYSTEM_IDX_DIRS: dict[str, tuple[Path, ...]] = {
    "fashionmnist": (Path("/usr/share/datasets/fashion-mnist"),),
    "mnist": (),
}

_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_TV_FOLDER = {"mnist": "MNIST", "fashionmnist": "FashionMNIST"}


def canonical_name(name: str) -> str:
    """``"Fashion-MNIST"`` → ``"fashionmnist"``; unknown names raise ``ValueError`` listing valid ones."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(sorted(DATASETS))}")
    return key


def default_cache_dir() -> Path:
    """Where decompressed files go: ``$AUTOGROW_CACHE_DIR``, else ``$XDG_CACHE_HOME/autogrow``, else ``~/.cache/autogrow``."""
    if os.environ.get("AUTOGROW_CACHE_DIR"):
        return Path(os.environ["AUTOGROW_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "autogrow"


# --------------------------------------------------------------------------------------------
# Splits and the result object
# --------------------------------------------------------------------------------------------


@attrs.frozen
class Transform:
    """How a split's images become network input: normalisation and (train-time) augmentation."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int
    hflip: bool


@attrs.frozen(eq=False)
class TensorSplit:
    """A device-resident split: uint8 images ``N×C×H×W`` and int64 labels on the same device.

    ``source_indices`` (CPU) are the rows of the original ``source`` set ("train" or "test") the
    split holds, so the exact membership can be logged and audited.
    """

    images: torch.Tensor
    labels: torch.Tensor
    source: str
    source_indices: torch.Tensor
    transform: Transform

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def device(self) -> torch.device:
        return self.images.device


@attrs.frozen(eq=False)
class FolderSplit:
    """An on-disk split (ImageNet): positions into an ``ImageFolder``, read by a ``DataLoader``."""

    dataset: Any  # torchvision.datasets.ImageFolder
    labels: torch.Tensor  # int64, CPU
    source: str
    source_indices: torch.Tensor
    transform: Transform
    image_size: int
    device: torch.device

    def __len__(self) -> int:
        return int(self.labels.shape[0])


Split = Union[TensorSplit, FolderSplit]


@attrs.frozen(eq=False)
class DataSplits:
    """Train / val / test splits of one data set plus the facts a model and a log need."""

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int
    hflip: bool
    classes: tuple[str, ...]
    train: Split
    val: Split
    test: Split
    val_source: str
    val_split: float
    subset: float
    seed: int
    data_location: str

    @property
    def tensor_resident(self) -> bool:
        return isinstance(self.train, TensorSplit)

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly summary for logs and events (sizes, settings, split fingerprints)."""
        splits = {"train": self.train, "val": self.val, "test": self.test}
        return {
            "dataset": self.name,
            "location": self.data_location,
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "image_size": self.image_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "augment": {"crop_padding": self.crop_padding, "hflip": self.hflip},
            "val_source": self.val_source,
            "val_split": self.val_split,
            "subset": self.subset,
            "seed": self.seed,
            "tensor_resident": self.tensor_resident,
            "device": str(self.train.device),
            "sizes": {k: len(s) for k, s in splits.items()},
            "fingerprints": {k: _fingerprint(s) for k, s in splits.items()},
        }


def _fingerprint(split: Split) -> str:
    """Short digest of which source rows a split holds (same digest ⇔ same membership)."""
    h = hashlib.sha256(split.source.encode())
    h.update(split.source_indices.to(torch.int64).contiguous().numpy().astype("<i8").tobytes())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Seeded, stratified selection (pure functions of labels, size and seed)
# --------------------------------------------------------------------------------------------


def _class_quotas(counts: torch.Tensor, k: int) -> torch.Tensor:
    """Split ``k`` over classes in proportion to ``counts`` (largest remainder: each gets ⌊q⌋ or ⌈q⌉)."""
    total = int(counts.sum())
    exact = counts.to(torch.float64) * k / max(total, 1)
    base = exact.floor().to(torch.int64)
    extra = k - int(base.sum())
    if extra > 0:
        frac = exact - base.to(torch.float64)
        # stable sort: ties go to the lower class index, so the result is deterministic
        order = torch.sort(-frac, stable=True).indices
        base[order[:extra]] += 1
    return torch.minimum(base, counts)


def stratified_sample(labels: torch.Tensor, k: int, seed: int, *tag: object) -> torch.Tensor:
    """``k`` positions of ``labels`` drawn per class in proportion to class size (sorted int64).

    A pure function of ``(labels, k, seed, tag)``: within each class the order is a seeded
    permutation, and each class contributes ⌊k·n_c/N⌋ or ⌈k·n_c/N⌉ samples.
    """
    labels = labels.detach().to("cpu", torch.int64).reshape(-1)
    n = labels.numel()
    k = max(0, min(int(k), n))
    if k == 0:
        return torch.zeros(0, dtype=torch.int64)
    if k == n:
        return torch.arange(n)
    _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    quotas = _class_quotas(counts, k)
    perm = torch.randperm(n, generator=seeded_generator(seed, "stratified", *tag))
    cls = inverse[perm]
    grouped = torch.sort(cls, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    rank_in_class = torch.arange(n) - starts[grouped.values]
    keep = rank_in_class < quotas[grouped.values]
    return torch.sort(perm[grouped.indices[keep]]).values


def holdout_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train_positions, val_positions)``: a stratified ``fraction`` of ``labels`` held out, seeded."""
    n = int(labels.numel())
    val = stratified_sample(labels, round(fraction * n), seed, "val")
    mask = torch.ones(n, dtype=torch.bool)
    mask[val] = False
    return torch.nonzero(mask).flatten(), val


def _subset_size(n: int, fraction: float) -> int:
    return n if fraction >= 1.0 else max(1 if n else 0, round(fraction * n))


# --------------------------------------------------------------------------------------------
# Sources: read the files with torchvision, return uint8 NCHW tensors on CPU
# --------------------------------------------------------------------------------------------


@attrs.frozen(eq=False)
class _Raw:
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: tuple[str, ...]
    location: str


def _missing(info: DatasetInfo, data_root: Path | None, expected: str) -> DataError:
    where = f"no data under {data_root}" if data_root is not None else "no data root given"
    return DataError(f"{info.name}: {where}: expected {expected}; pass --data-root or --download")


def _gzip_size(path: Path) -> int:
    """Uncompressed size from the gzip trailer (ISIZE, mod 2**32) without decompressing."""
    with open(path, "rb") as f:
        f.seek(-4, os.SEEK_END)
        return struct.unpack("<I", f.read(4))[0]


def _decompress_once(src: Path, dst: Path) -> None:
    """Write ``gunzip(src)`` to ``dst`` atomically (temp + fsync + rename), unless already there."""
    if dst.is_file() and dst.stat().st_size % (1 << 32) == _gzip_size(src):
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dst.name + ".", suffix=".tmp", dir=dst.parent)
    try:
        with os.fdopen(fd, "wb") as out, gzip.open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the cache is plain data
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _resolve_idx_root(info: DatasetInfo, data_root: Path | None, cache_dir: Path) -> Path | None:
    """A root where torchvision's MNIST-style class finds ``<Class>/raw/<idx files>``, or None.

    Order: uncompressed files under ``data_root``; gz files under ``data_root`` (in torchvision's
    layout or flat) or a system folder, decompressed once into ``cache_dir``; a previous cache.
    """
    folder = _TV_FOLDER[info.name]
    if data_root is not None and all((data_root / folder / "raw" / f).is_file() for f in _IDX_FILES):
        return data_root
    gz_dirs = [data_root / folder / "raw", data_root] if data_root is not None else []
    gz_dirs += list(SYSTEM_IDX_DIRS.get(info.name, ()))
    cache_raw = cache_dir / folder / "raw"
    for d in gz_dirs:
        if all((d / f"{f}.gz").is_file() for f in _IDX_FILES):
            for f in _IDX_FILES:
                _decompress_once(d / f"{f}.gz", cache_raw / f)
            return cache_dir
    if all((cache_raw / f).is_file() for f in _IDX_FILES):
        return cache_dir
    return None


def _call_torchvision(info: DatasetInfo, make: Callable[[], Any], location: Path) -> Any:
    """Run a torchvision constructor, turning its errors into one-line ``DataError``s."""
    try:
        return make()
    except DataError:
        raise
    except Exception as exc:  # torchvision raises RuntimeError / OSError / URLError etc.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{info.name}: cannot read data under {location}: {first}") from exc


def _load_idx(info: DatasetInfo, data_root: Path | None, download: bool, cache_dir: Path) -> _Raw:
    from torchvision import datasets

    cls = datasets.MNIST if info.name == "mnist" else datasets.FashionMNIST
    root = _resolve_idx_root(info, data_root, cache_dir)
    if root is None and download:
        root = data_root if data_root is not None else cache_dir
    if root is None:
        folder = _TV_FOLDER[info.name]
        base = data_root if data_root is not None else Path("DATA_ROOT")
        system = "".join(f" or the .gz files in {d}" for d in SYSTEM_IDX_DIRS.get(info.name, ()))
        raise _missing(
            info, data_root,
            f"{base}/{folder}/raw/{{{','.join(_IDX_FILES)}}}[.gz]{system}",
        )
    train = _call_torchvision(info, lambda: cls(str(root), train=True, download=download), root)
    test = _call_torchvision(info, lambda: cls(str(root), train=False, download=download), root)
    return _Raw(
        train_images=train.data.unsqueeze(1).contiguous(),
        train_labels=train.targets.to(torch.int64),
        test_images=test.data.unsqueeze(1).contiguous(),
        test_labels=test.targets.to(torch.int64),
        classes=tuple(str(c) for c in train.classes),
        location=str(Path(root) / _TV_FOLDER[info.name] / "raw"),
    )


def _unverified(cls: type) -> type:
    """The torchvision class with its md5 checks turned into existence checks (for own files)."""
    extra: dict[str, Any] = {}
    if hasattr(cls, "train_list"):
        extra["train_list"] = [[f, None] for f, _ in cls.train_list]
        extra["test_list"] = [[f, None] for f, _ in cls.test_list]
        extra["meta"] = {**cls.meta, "md5": None}
    if hasattr(cls, "split_list"):
        extra["split_list"] = {k: [u, f, None] for k, (u, f, _) in cls.split_list.items()}
    return type(cls.__name__, (cls,), extra)


def _verify_md5(info: DatasetInfo, files: list[tuple[Path, str]]) -> None:
    """Check the official release's md5 sums; name the files that differ."""
    from torchvision.datasets.utils import check_integrity

    bad = [p.name for p, md5 in files if p.is_file() and not check_integrity(str(p), md5)]
    if bad:
        raise DataError(
            f"{info.name}: {', '.join(bad)} under {files[0][0].parent} fail the official md5 "
            "(corrupted or not the official release); pass verify_checksums=False to use them anyway"
        )


def _need_root(info: DatasetInfo, data_root: Path | None, download: bool, cache_dir: Path) -> Path:
    if data_root is not None:
        return data_root
    return cache_dir / info.name if download else Path("DATA_ROOT")


def _load_cifar(
    info: DatasetInfo, data_root: Path | None, download: bool, cache_dir: Path, verify: bool
) -> _Raw:
    from torchvision import datasets

    cls = datasets.CIFAR10 if info.name == "cifar10" else datasets.CIFAR100
    root = _need_root(info, data_root, download, cache_dir)
    files = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    base = root / cls.base_folder
    if not download and (data_root is None or not all((base / f).is_file() for f in files)):
        listed = (
            "{data_batch_1..5,test_batch,batches.meta}" if info.name == "cifar10" else "{train,test,meta}"
        )
        raise _missing(info, data_root, f"{base}/{listed}")
    if verify and not download:
        _verify_md5(info, [(base / f, md5) for f, md5 in cls.train_list + cls.test_list]
                    + [(base / cls.meta["filename"], cls.meta["md5"])])
    tv = cls if download else _unverified(cls)  # verified above; torchvision would hash again
    train = _call_torchvision(info, lambda: tv(str(root), train=True, download=download), root)
    test = _call_torchvision(info, lambda: tv(str(root), train=False, download=download), root)
    to_nchw = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()  # noqa: E731
    return _Raw(
        train_images=to_nchw(train.data),
        train_labels=torch.as_tensor(train.targets, dtype=torch.int64),
        test_images=to_nchw(test.data),
        test_labels=torch.as_tensor(test.targets, dtype=torch.int64),
        classes=tuple(str(c) for c in train.classes),
        location=str(base),
    )


def _load_svhn(
    info: DatasetInfo, data_root: Path | None, download: bool, cache_dir: Path, verify: bool
) -> _Raw:
    from torchvision import datasets

    root = _need_root(info, data_root, download, cache_dir)
    files = ["train_32x32.mat", "test_32x32.mat"]
    if not download and (data_root is None or not all((root / f).is_file() for f in files)):
        raise _missing(info, data_root, f"{root}/{{{','.join(files)}}}")
    if verify and not download:
        _verify_md5(info, [(root / f, md5) for k, (_, f, md5) in datasets.SVHN.split_list.items() if k != "extra"])
    tv = datasets.SVHN if download else _unverified(datasets.SVHN)
    train = _call_torchvision(info, lambda: tv(str(root), split="train", download=download), root)
    test = _call_torchvision(info, lambda: tv(str(root), split="test", download=download), root)
    return _Raw(
        train_images=torch.from_numpy(train.data).contiguous(),
        train_labels=torch.as_tensor(train.labels, dtype=torch.int64),
        test_images=torch.from_numpy(test.data).contiguous(),
        test_labels=torch.as_tensor(test.labels, dtype=torch.int64),
        classes=tuple(str(i) for i in range(10)),
        location=str(root),
    )


def _pad_images(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """Zero-pad square images symmetrically to ``size`` (once, at load time)."""
    h = images.shape[-1]
    if size is None or size == h:
        return images
    if size < h or (size - h) % 2:
        raise ValueError(f"pad_to={size} cannot be reached from {h}px by symmetric zero padding")
    p = (size - h) // 2
    return F.pad(images, (p, p, p, p))


# --------------------------------------------------------------------------------------------
# Public loader
# --------------------------------------------------------------------------------------------


def _check_args(val_split: float, val_source: str, subset: float, max_val: int | None, max_test: int | None) -> None:
    if val_source not in ("train", "test"):
        raise ValueError(f"val_source must be 'train' (held out) or 'test' (the paper's), not {val_source!r}")
    if val_source == "train" and not 0.0 < val_split < 1.0:
        raise ValueError(f"val_split must be in (0, 1) when val_source='train', not {val_split}")
    if not 0.0 < subset <= 1.0:
        raise ValueError(f"subset must be a fraction in (0, 1], not {subset}")
    for name, cap in (("max_val", max_val), ("max_test", max_test)):
        if cap is not None and cap < 1:
            raise ValueError(f"{name} must be a positive count or None, not {cap}")


def load_dataset(
    name: str,
    *,
    data_root: str | os.PathLike[str] | None = None,
    download: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    device: torch.device | str = "cpu",
    pad_to: int | None = 32,
    val_split: float = 0.1,
    val_source: str = "train",
    seed: int = 0,
    subset: float = 1.0,
    max_val: int | None = None,
    max_test: int | None = None,
    verify_checksums: bool = True,
) -> DataSplits:
    """Load ``name`` and split it into train / val / test, reproducibly from ``seed``.

    Small sets become device tensors (28-px images zero-padded to ``pad_to``; ``None`` keeps the
    native size); ImageNet becomes ``ImageFolder`` splits. ``val_source="train"`` holds out a
    stratified ``val_split`` of the training set; ``"test"`` validates on the test set (paper).
    ``subset`` keeps a stratified fraction of the training portion only; ``max_val``/``max_test``
    cap the evaluation sets. Missing files raise :class:`DataError`.
    """
    info = DATASETS[canonical_name(name)]
    _check_args(val_split, val_source, subset, max_val, max_test)
    root = Path(data_root).expanduser() if data_root is not None else None
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    dev = torch.device(device)
    if not info.tensor_resident:
        return _load_imagenet(info, root, dev, val_split, val_source, seed, subset, max_val, max_test)
    if info.name in _TV_FOLDER:
        raw = _load_idx(info, root, download, cache)
    elif info.name.startswith("cifar"):
        raw = _load_cifar(info, root, download, cache, verify_checksums)
    else:
        raw = _load_svhn(info, root, download, cache, verify_checksums)
    picks = _pick_splits(raw.train_labels, raw.test_labels, val_split, val_source, seed, subset, max_val, max_test)
    transform = Transform(info.mean, info.std, info.crop_padding, info.hflip)
    sources = {"train": (raw.train_images, raw.train_labels), "test": (raw.test_images, raw.test_labels)}

    def make(source: str, idx: torch.Tensor) -> TensorSplit:
        images, labels = sources[source]
        images = _pad_images(images.index_select(0, idx), pad_to)
        return TensorSplit(
            images=images.to(dev), labels=labels.index_select(0, idx).to(dev),
            source=source, source_indices=idx, transform=transform,
        )

    splits = _make_splits(picks, make)
    return DataSplits(
        name=info.name, num_classes=info.num_classes, in_channels=info.in_channels,
        image_size=int(splits["train"].images.shape[-1]), mean=info.mean, std=info.std,
        crop_padding=info.crop_padding, hflip=info.hflip, classes=raw.classes,
        train=splits["train"], val=splits["val"], test=splits["test"],
        val_source=val_source, val_split=val_split if val_source == "train" else 0.0,
        subset=subset, seed=seed, data_location=raw.location,
    )


def _pick_splits(
    train_labels: torch.Tensor,
    test_labels: torch.Tensor,
    val_split: float,
    val_source: str,
    seed: int,
    subset: float,
    max_val: int | None,
    max_test: int | None,
) -> dict[str, tuple[str, torch.Tensor]]:
    """Which source rows go to train / val / test: ``{split: (source, sorted positions)}``."""
    if val_source == "train":
        train_idx, val_idx = holdout_split(train_labels, val_split, seed)
        val_pick = ("train", val_idx)
    else:
        train_idx = torch.arange(train_labels.numel())
        val_pick = ("test", torch.arange(test_labels.numel()))
    if subset < 1.0:
        keep = stratified_sample(train_labels[train_idx], _subset_size(len(train_idx), subset), seed, "subset")
        train_idx = train_idx[keep]
    test_idx = torch.arange(test_labels.numel())
    if max_val is not None and max_val < len(val_pick[1]):
        src, idx = val_pick
        labels = train_labels if src == "train" else test_labels
        val_pick = (src, idx[stratified_sample(labels[idx], max_val, seed, "max_val")])
    if max_test is not None and max_test < len(test_idx):
        test_idx = stratified_sample(test_labels, max_test, seed, "max_test")
    return {"train": ("train", train_idx), "val": val_pick, "test": ("test", test_idx)}


def _make_splits(
    picks: dict[str, tuple[str, torch.Tensor]], make: Callable[[str, torch.Tensor], Split]
) -> dict[str, Split]:
    """Build each split once; a val pick identical to the test pick (paper mode) shares its tensors."""
    test_src, test_idx = picks["test"]
    out = {"test": make(test_src, test_idx), "train": make(*picks["train"])}
    val_src, val_idx = picks["val"]
    same = val_src == test_src and torch.equal(val_idx, test_idx)
    out["val"] = out["test"] if same else make(val_src, val_idx)
    return out


# --------------------------------------------------------------------------------------------
# ImageNet (on disk)
# --------------------------------------------------------------------------------------------


def imagenet_transforms(info: DatasetInfo = DATASETS["imagenet"]) -> tuple[Callable, Callable]:
    """The standard (train, eval) transforms: RandomResizedCrop(224)+flip / Resize(256)+CenterCrop(224)."""
    from torchvision import transforms as T

    norm = [T.ToTensor(), T.Normalize(info.mean, info.std)]
    train = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), *norm])
    evaluate = T.Compose([T.Resize(256), T.CenterCrop(224), *norm])
    return train, evaluate


def _load_imagenet(
    info: DatasetInfo,
    root: Path | None,
    dev: torch.device,
    val_split: float,
    val_source: str,
    seed: int,
    subset: float,
    max_val: int | None,
    max_test: int | None,
) -> DataSplits:
    from torchvision import datasets

    base = root if root is not None else Path("DATA_ROOT")
    if root is None or not (root / "train").is_dir() or not (root / "val").is_dir():
        raise DataError(
            f"{info.name}: {'no data under ' + str(root) if root else 'no data root given'}: expected "
            f"{base}/train/<class>/<image> and {base}/val/<class>/<image> (ImageFolder layout); "
            "pass --data-root"
        )
    train_set = _call_torchvision(info, lambda: datasets.ImageFolder(str(root / "train")), root)
    test_set = _call_torchvision(info, lambda: datasets.ImageFolder(str(root / "val")), root)
    if train_set.classes != test_set.classes:
        raise DataError(f"{info.name}: class folders of {root}/train and {root}/val differ")
    train_labels = torch.as_tensor(train_set.targets, dtype=torch.int64)
    test_labels = torch.as_tensor(test_set.targets, dtype=torch.int64)
    picks = _pick_splits(train_labels, test_labels, val_split, val_source, seed, subset, max_val, max_test)
    transform = Transform(info.mean, info.std, 0, info.hflip)
    sources = {"train": (train_set, train_labels), "test": (test_set, test_labels)}

    def make(source: str, idx: torch.Tensor) -> FolderSplit:
        dataset, labels = sources[source]
        return FolderSplit(
            dataset=dataset, labels=labels[idx], source=source, source_indices=idx,
            transform=transform, image_size=224, device=dev,
        )

    splits = _make_splits(picks, make)
    return DataSplits(
        name=info.name, num_classes=len(train_set.classes), in_channels=3, image_size=224,
        mean=info.mean, std=info.std, crop_padding=0, hflip=info.hflip,
        classes=tuple(train_set.classes), train=splits["train"], val=splits["val"],
        test=splits["test"], val_source=val_source,
        val_split=val_split if val_source == "train" else 0.0, subset=subset, seed=seed,
        data_location=str(root),
    )


class _FolderItems(torch.utils.data.Dataset):
    """Split positions → (normalised image, label); train items seeded by (seed, epoch, position)."""

    def __init__(self, split: FolderSplit, transform: Callable, seed_epoch: tuple[int, int] | None):
        self.split = split
        self.transform = transform
        self.seed_epoch = seed_epoch

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, pos: int) -> tuple[torch.Tensor, int]:
        base = self.split.dataset
        path, label = base.samples[int(self.split.source_indices[pos])]
        image = base.loader(path)
        if self.seed_epoch is None:
            return self.transform(image), label
        seed, epoch = self.seed_epoch
        with torch.random.fork_rng(devices=[]):  # torchvision's random transforms use the global RNG
            torch.manual_seed(derive_seed(seed, "augment", epoch, pos))
            return self.transform(image), label


# --------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------


def steps_per_epoch(n: int, batch_size: int, drop_last: bool = False) -> int:
    """Number of global batches in an epoch of ``n`` samples."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, not {batch_size}")
    return n // batch_size if drop_last else -(-n // batch_size)


def shard_bounds(size: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[lo, hi)`` of a global batch of ``size`` that ``rank`` takes (contiguous, sizes differ ≤ 1)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank} world_size={world_size}")
    q, r = divmod(size, world_size)
    lo = rank * q + min(rank, r)
    return lo, lo + q + (1 if rank < r else 0)


def _plan(
    order: torch.Tensor, batch_size: int, start_step: int, rank: int, world_size: int, drop_last: bool
) -> list[torch.Tensor]:
    """Per step from ``start_step``, the split positions this rank takes from the global batch.

    Built eagerly (views into ``order``) so bad arguments fail at the call, not at the first batch.
    """
    n = int(order.numel())
    steps = steps_per_epoch(n, batch_size, drop_last)
    if not 0 <= start_step <= steps:
        raise ValueError(f"start_step must be in [0, {steps}], not {start_step}")
    plan = []
    for step in range(start_step, steps):
        glob = order[step * batch_size : min((step + 1) * batch_size, n)]
        lo, hi = shard_bounds(int(glob.numel()), rank, world_size)
        plan.append(glob[lo:hi])
    shard_bounds(0, rank, world_size)  # validates rank even when the plan is empty
    return plan


def train_batches(
    split: Split,
    *,
    seed: int,
    epoch: int,
    batch_size: int,
    start_step: int = 0,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
    channels_last: bool = False,
    dtype: torch.dtype = torch.float32,
    augment: bool = True,
    num_workers: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Augmented ``(x, y)`` batches of one epoch, from step ``start_step``, for ``rank``.

    The global order and every sample's augmentation depend only on ``(seed, epoch, position)``;
    each global batch of ``batch_size`` is cut into ``world_size`` contiguous slices (rank ``r``
    takes slice ``r``, possibly empty on a short last batch), so the union over ranks is the
    one-process batch. ``num_workers`` only matters for on-disk (ImageNet) splits.
    """
    order = epoch_order(len(split), seed, epoch)
    if isinstance(split, TensorSplit):
        order = order.to(split.device)  # one copy per epoch; batches are views of it
    plan = _plan(order, batch_size, start_step, rank, world_size, drop_last)
    if isinstance(split, FolderSplit):
        train_tf, eval_tf = imagenet_transforms()
        items = _FolderItems(split, train_tf if augment else eval_tf, (seed, epoch) if augment else None)
        return _folder_batches(split, items, plan, num_workers, channels_last, dtype)
    return _tensor_train_batches(split, plan, seed, epoch, augment, channels_last, dtype)


def _tensor_train_batches(
    split: TensorSplit,
    plan: list[torch.Tensor],
    seed: int,
    epoch: int,
    augment: bool,
    channels_last: bool,
    dtype: torch.dtype,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    tf, dev = split.transform, split.device
    params = None
    if augment:
        params = epoch_augment_params(len(split), seed, epoch, padding=tf.crop_padding, hflip=tf.hflip).to(dev)
    for positions in plan:
        idx = positions.to(dev)
        x = split.images.index_select(0, idx)
        y = split.labels.index_select(0, idx)
        if params is None:
            yield normalize(x, tf.mean, tf.std, dtype=dtype, channels_last=channels_last), y
        else:
            yield augment_batch(
                x, params.take(idx), padding=tf.crop_padding, mean=tf.mean, std=tf.std,
                dtype=dtype, channels_last=channels_last,
            ), y


def eval_batches(
    split: Split,
    batch_size: int,
    *,
    start_step: int = 0,
    rank: int = 0,
    world_size: int = 1,
    channels_last: bool = False,
    dtype: torch.dtype = torch.float32,
    num_workers: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Normalised, unaugmented ``(x, y)`` batches in split order, sharded like :func:`train_batches`."""
    plan = _plan(torch.arange(len(split)), batch_size, start_step, rank, world_size, False)
    if isinstance(split, FolderSplit):
        items = _FolderItems(split, imagenet_transforms()[1], None)
        return _folder_batches(split, items, plan, num_workers, channels_last, dtype)
    return _tensor_eval_batches(split, plan, channels_last, dtype)


def _tensor_eval_batches(
    split: TensorSplit, plan: list[torch.Tensor], channels_last: bool, dtype: torch.dtype
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    tf = split.transform
    for positions in plan:
        if positions.numel():
            lo, hi = int(positions[0]), int(positions[-1]) + 1  # contiguous in eval order
        else:
            lo = hi = 0
        x = normalize(split.images[lo:hi], tf.mean, tf.std, dtype=dtype, channels_last=channels_last)
        yield x, split.labels[lo:hi]


def _folder_batches(
    split: FolderSplit,
    items: _FolderItems,
    plan: list[torch.Tensor],
    num_workers: int,
    channels_last: bool,
    dtype: torch.dtype,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    batches = [p.tolist() for p in plan]
    nonempty = [b for b in batches if b]
    loader = torch.utils.data.DataLoader(
        items, batch_sampler=nonempty, num_workers=num_workers,
        pin_memory=split.device.type == "cuda",
    )
    it = iter(loader)
    for b in batches:
        if not b:  # keep the step count equal across ranks
            yield (
                torch.zeros(0, 3, split.image_size, split.image_size, dtype=dtype, device=split.device),
                torch.zeros(0, dtype=torch.int64, device=split.device),
            )
            continue
        x, y = next(it)
        x = x.to(split.device, non_blocking=True).to(dtype)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        yield x, y.to(split.device, non_blocking=True)
