"""The data layer: load a data set once, split it reproducibly, and serve deterministic batches.

- :mod:`.registry` — what is known about each data set before reading a file;
- :mod:`.splits` — which rows each split holds (held-out validation, subsets, caps);
- :mod:`.tensor_sets` — MNIST, Fashion-MNIST, SVHN, CIFAR as uint8 tensors on the device;
- :mod:`.image_folder` — ImageNet-style folders, decoded by a persistent worker pool;
- :mod:`.shards` — the same images as WebDataset tar shards, read at random through an index;
- :mod:`.decode` — an image's bytes to pixels (TorchCodec, or PIL without it);
- :mod:`.manifest` — which files a run trained on, and the check that they are still there;
- :mod:`.batches` — each epoch's order, each rank's share, the batches themselves.

Whatever the source, batch order and augmentation are pure functions of ``(seed, epoch,
position)``, and images reach the training device as uint8 and are normalised there.
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs
import torch

from autogrow.engine.data.batches import eval_batches, shard_bounds, steps_per_epoch, train_batches
from autogrow.engine.data.image_folder import load_folder_splits, resolve_workers
from autogrow.engine.data.manifest import Manifest
from autogrow.engine.data.registry import (
    DATASETS,
    DataError,
    DatasetInfo,
    canonical_name,
    default_cache_dir,
)
from autogrow.engine.data.splits import (
    DataSplits,
    FolderSplit,
    SplitChoice,
    TensorSplit,
    Transform,
    holdout_split,
    pick_splits,
    stratified_sample,
)
from autogrow.engine.data.tensor_sets import SYSTEM_IDX_DIRS, load_tensor_splits

__all__ = [
    "DATASETS",
    "SYSTEM_IDX_DIRS",
    "DataError",
    "DataSplits",
    "DatasetInfo",
    "FolderSplit",
    "Manifest",
    "SplitChoice",
    "TensorSplit",
    "Transform",
    "canonical_name",
    "default_cache_dir",
    "eval_batches",
    "holdout_split",
    "load_dataset",
    "pick_splits",
    "resolve_workers",
    "shard_bounds",
    "steps_per_epoch",
    "stratified_sample",
    "train_batches",
]


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
    workers: int | str = 0,
    crop_padding: int | None = None,
    manifest: Manifest | None = None,
) -> DataSplits:
    """Load ``name`` and split it into train / val / test, reproducibly from ``seed``.

    Small sets become device tensors (28-px images zero-padded to ``pad_to``; ``None`` keeps the
    native size); ImageNet becomes on-disk splits read by ``workers`` loader processes (``"auto"``
    or a count; 0 reads in this process). ``val_source="train"`` holds out a stratified
    ``val_split`` of the training set; ``"test"`` validates on the test set (paper). ``subset``
    keeps a stratified fraction of the training portion only; ``max_val``/``max_test`` cap the
    evaluation sets. ``crop_padding`` replaces a small set's random-crop padding (``None``: the
    data set's own, as the original code). ``manifest``: an image folder's files as a run
    recorded them (:mod:`.manifest`), read instead of listing the folder (whose check against
    it is :func:`.manifest.check_tree`). Missing files raise :class:`DataError`.
    """
    info = DATASETS[canonical_name(name)]
    if crop_padding is not None and info.tensor_resident:
        if crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {crop_padding}")
        info = attrs.evolve(info, crop_padding=crop_padding)
    choice = SplitChoice(val_split=val_split, val_source=val_source, seed=seed, subset=subset,
                         max_val=max_val, max_test=max_test)
    root = Path(data_root).expanduser() if data_root is not None else None
    dev = torch.device(device)
    if not info.tensor_resident:
        return load_folder_splits(info, root, dev, choice, resolve_workers(workers), manifest)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return load_tensor_splits(info, root, download, cache, dev, pad_to, verify_checksums, choice)
