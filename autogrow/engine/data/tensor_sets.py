"""Small data sets (MNIST, Fashion-MNIST, SVHN, CIFAR-10/100) as device-resident uint8 tensors.

Each is read with torchvision's own dataset class (gzipped idx files are decompressed once
into a cache, official md5 sums checked), kept decoded in the tensor cache for later launches
(:mod:`autogrow.engine.data.tensor_cache`, keyed by the source files' sha256) and converted to a
uint8 ``N×C×H×W`` tensor on the training device; augmentation then runs batched on that device
(:mod:`autogrow.engine.augment`).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any, Callable

import attrs
import torch
import torch.nn.functional as F

from autogrow.engine.data import tensor_cache
from autogrow.engine.data.manifest import file_digests
from autogrow.engine.data.registry import DataError, DatasetInfo, cache_file, call_torchvision
from autogrow.engine.data.splits import (
    DataSplits,
    SplitChoice,
    TensorSplit,
    Transform,
    make_splits,
    pick_splits,
)

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


@attrs.frozen(eq=False)
class _Raw:
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: tuple[str, ...]

    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k) for k in _TENSORS}


_TENSORS = ("train_images", "train_labels", "test_images", "test_labels")


@attrs.frozen(eq=False)
class _Source:
    """Where a tensor set's files are (found without importing torchvision) and how torchvision
    reads them; ``md5_checked``: whether ``read`` checks the official md5 sums."""

    files: tuple[Path, ...]  # the source files (their digests are the data's identity)
    location: str
    read: Callable[[], _Raw]
    md5_checked: bool


def _missing(info: DatasetInfo, data_root: Path | None, expected: str) -> DataError:
    where = f"no data under {data_root}" if data_root is not None else "no data root given"
    said = f"{info.name}: {where}: expected {expected}"
    return DataError(f"{said}; set data_root to where they are, or download=True",
                     cli=f"{said}; pass --data-root or --download")


def _gzip_size(path: Path) -> int:
    """Uncompressed size from the gzip trailer (ISIZE, mod 2**32) without decompressing."""
    with open(path, "rb") as f:
        f.seek(-4, os.SEEK_END)
        return struct.unpack("<I", f.read(4))[0]


def _decompress_once(src: Path, dst: Path) -> None:
    """Write ``gunzip(src)`` to ``dst`` atomically (temp + fsync + rename), unless ``dst`` is
    already that: the same size, written after ``src`` last changed."""
    if dst.is_file():
        st = dst.stat()
        if (st.st_size % (1 << 32) == _gzip_size(src)
                and st.st_mtime_ns >= src.stat().st_mtime_ns):
            return
    with cache_file(dst) as tmp, open(tmp, "wb") as out, gzip.open(src, "rb") as inp:
        shutil.copyfileobj(inp, out, 1 << 20)


def _resolve_idx_root(info: DatasetInfo, data_root: Path | None, cache_dir: Path) -> Path | None:
    """A root where torchvision's MNIST-style class finds ``<Class>/raw/<idx files>``, or None.

    Order: uncompressed files under ``data_root``; gz files under ``data_root`` (in torchvision's
    layout or flat) or a system folder, decompressed once into a folder of ``cache_dir`` kept for
    that source (two sources never share decompressed files); what ``--download`` put in
    ``cache_dir``.
    """
    folder = _TV_FOLDER[info.name]
    if data_root is not None and all((data_root / folder / "raw" / f).is_file() for f in _IDX_FILES):
        return data_root
    gz_dirs = [data_root / folder / "raw", data_root] if data_root is not None else []
    gz_dirs += list(SYSTEM_IDX_DIRS.get(info.name, ()))
    for d in gz_dirs:
        if all((d / f"{f}.gz").is_file() for f in _IDX_FILES):
            root = cache_dir / f"gunzip-{hashlib.sha256(str(d.resolve()).encode()).hexdigest()[:12]}"
            for f in _IDX_FILES:
                _decompress_once(d / f"{f}.gz", root / folder / "raw" / f)
            return root
    cache_raw = cache_dir / folder / "raw"
    if all((cache_raw / f).is_file() for f in _IDX_FILES):
        return cache_dir
    return None


def _locate_idx(info: DatasetInfo, data_root: Path | None, download: bool,
                cache_dir: Path) -> _Source:
    folder = _TV_FOLDER[info.name]
    root = _resolve_idx_root(info, data_root, cache_dir)
    if root is None and download:
        root = data_root if data_root is not None else cache_dir
    if root is None:
        base = data_root if data_root is not None else Path("DATA_ROOT")
        system = "".join(f" or the .gz files in {d}" for d in SYSTEM_IDX_DIRS.get(info.name, ()))
        raise _missing(
            info, data_root,
            f"{base}/{folder}/raw/{{{','.join(_IDX_FILES)}}}[.gz]{system}",
        )

    def read() -> _Raw:
        from torchvision import datasets

        cls = datasets.MNIST if info.name == "mnist" else datasets.FashionMNIST
        train = call_torchvision(info, lambda: cls(str(root), train=True, download=download), root)
        test = call_torchvision(info, lambda: cls(str(root), train=False, download=download), root)
        return _Raw(
            train_images=train.data.unsqueeze(1).contiguous(),
            train_labels=train.targets.to(torch.int64),
            test_images=test.data.unsqueeze(1).contiguous(),
            test_labels=test.targets.to(torch.int64),
            classes=tuple(str(c) for c in train.classes),
        )

    raw_dir = Path(root) / folder / "raw"
    return _Source(files=tuple(raw_dir / f for f in _IDX_FILES), location=str(raw_dir),
                   read=read, md5_checked=True)  # no md5 sums for files found locally


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


#: CIFAR's folder and files as torchvision's classes name them (train, test, meta; the test
#: suite checks them against torchvision), known here so that a cache hit needs no torchvision.
_CIFAR_FILES: dict[str, tuple[str, tuple[str, ...]]] = {
    "cifar10": ("cifar-10-batches-py",
                tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")),
    "cifar100": ("cifar-100-python", ("train", "test", "meta")),
}
_SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")


def _locate_cifar(
    info: DatasetInfo, data_root: Path | None, download: bool, cache_dir: Path, verify: bool
) -> _Source:
    folder, files = _CIFAR_FILES[info.name]
    root = _need_root(info, data_root, download, cache_dir)
    base = root / folder
    if not download and (data_root is None or not all((base / f).is_file() for f in files)):
        listed = (
            "{data_batch_1..5,test_batch,batches.meta}" if info.name == "cifar10" else "{train,test,meta}"
        )
        raise _missing(info, data_root, f"{base}/{listed}")

    def read() -> _Raw:
        from torchvision import datasets

        cls = datasets.CIFAR10 if info.name == "cifar10" else datasets.CIFAR100
        if verify and not download:
            _verify_md5(info, [(base / f, md5) for f, md5 in cls.train_list + cls.test_list]
                        + [(base / cls.meta["filename"], cls.meta["md5"])])
        tv = cls if download else _unverified(cls)  # verified above; torchvision would hash again
        train = call_torchvision(info, lambda: tv(str(root), train=True, download=download), root)
        test = call_torchvision(info, lambda: tv(str(root), train=False, download=download), root)
        to_nchw = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()  # noqa: E731
        return _Raw(
            train_images=to_nchw(train.data),
            train_labels=torch.as_tensor(train.targets, dtype=torch.int64),
            test_images=to_nchw(test.data),
            test_labels=torch.as_tensor(test.targets, dtype=torch.int64),
            classes=tuple(str(c) for c in train.classes),
        )

    return _Source(files=tuple(base / f for f in files), location=str(base), read=read,
                   md5_checked=verify or download)


def _locate_svhn(
    info: DatasetInfo, data_root: Path | None, download: bool, cache_dir: Path, verify: bool
) -> _Source:
    root = _need_root(info, data_root, download, cache_dir)
    if not download and (data_root is None or not all((root / f).is_file() for f in _SVHN_FILES)):
        raise _missing(info, data_root, f"{root}/{{{','.join(_SVHN_FILES)}}}")

    def read() -> _Raw:
        from torchvision import datasets

        if verify and not download:
            _verify_md5(info, [(root / f, md5) for k, (_, f, md5) in datasets.SVHN.split_list.items()
                               if k != "extra"])
        tv = datasets.SVHN if download else _unverified(datasets.SVHN)
        train = call_torchvision(info, lambda: tv(str(root), split="train", download=download), root)
        test = call_torchvision(info, lambda: tv(str(root), split="test", download=download), root)
        return _Raw(
            train_images=torch.from_numpy(train.data).contiguous(),
            train_labels=torch.as_tensor(train.labels, dtype=torch.int64),
            test_images=torch.from_numpy(test.data).contiguous(),
            test_labels=torch.as_tensor(test.labels, dtype=torch.int64),
            classes=tuple(str(i) for i in range(10)),
        )

    return _Source(files=tuple(root / f for f in _SVHN_FILES), location=str(root), read=read,
                   md5_checked=verify or download)


def _read(info: DatasetInfo, source: _Source, cache_dir: Path,
          need_md5: bool) -> tuple[_Raw, dict[str, str]]:
    """The decoded set and its source digests: from the tensor cache when it holds these files'
    tensors, else read by torchvision (downloading where asked) and put in the cache."""
    if not all(f.is_file() for f in source.files):  # --download fetches them
        raw = source.read()
        return raw, file_digests(list(source.files))
    digests = file_digests(list(source.files))
    entry = tensor_cache.entry_path(cache_dir, info.name, digests)
    hit = tensor_cache.load(entry, need_md5=need_md5)
    if hit is not None:
        tensors, metadata = hit
        return _Raw(**tensors, classes=tuple(json.loads(metadata["classes"]))), digests
    raw = source.read()
    tensor_cache.store(entry, raw.tensors(), {"dataset": info.name,
                                              "classes": json.dumps(list(raw.classes))},
                       md5_checked=source.md5_checked)
    return raw, digests


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


def load_tensor_splits(
    info: DatasetInfo,
    root: Path | None,
    download: bool,
    cache: Path,
    dev: torch.device,
    pad_to: int | None,
    verify_checksums: bool,
    choice: SplitChoice,
) -> DataSplits:
    """Read ``info``'s files into uint8 tensors on ``dev`` and split them as ``choice`` says."""
    if info.name in _TV_FOLDER:
        source = _locate_idx(info, root, download, cache)
    elif info.name.startswith("cifar"):
        source = _locate_cifar(info, root, download, cache, verify_checksums)
    else:
        source = _locate_svhn(info, root, download, cache, verify_checksums)
    raw, digests = _read(info, source, cache, need_md5=verify_checksums)
    picks = pick_splits(raw.train_labels, raw.test_labels, choice)
    transform = Transform(info.mean, info.std, info.crop_padding, info.hflip)
    sources = {"train": (raw.train_images, raw.train_labels), "test": (raw.test_images, raw.test_labels)}

    def make(source: str, idx: torch.Tensor) -> TensorSplit:
        images, labels = sources[source]
        images = _pad_images(images.index_select(0, idx), pad_to)
        return TensorSplit(
            images=images.to(dev), labels=labels.index_select(0, idx).to(dev),
            source=source, source_indices=idx, transform=transform,
        )

    splits = make_splits(picks, make)
    return DataSplits(
        name=info.name, num_classes=info.num_classes, in_channels=info.in_channels,
        image_size=int(splits["train"].images.shape[-1]), mean=info.mean, std=info.std,
        crop_padding=info.crop_padding, hflip=info.hflip, classes=raw.classes,
        train=splits["train"], val=splits["val"], test=splits["test"],
        data_location=source.location, source_digests=digests,
        **choice.describe(),
    )
