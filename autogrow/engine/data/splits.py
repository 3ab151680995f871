"""Which rows of a data set's sources each split holds, chosen reproducibly, and the split objects.

A seeded, class-stratified validation set is held out of the training set for growth decisions by
default, and the test set is only reported (``val_source="test"`` restores the paper's
test-as-validation). ``subset`` shrinks only the training portion; ``max_val`` / ``max_test`` cap
the evaluation sets. Every choice is a pure function of the labels, the sizes and the seed.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Callable, Union

import attrs
import torch

from autogrow.engine.augment import seeded_generator

if TYPE_CHECKING:
    from autogrow.engine.data.image_folder import FolderReader


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
    """An on-disk split (ImageNet): rows of a ``source`` folder, read through ``reader``'s pool.

    ``reader`` is shared by every split of the data set, so one worker pool serves train, val
    and test for the whole run.
    """

    reader: "FolderReader"
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
    #: an image folder's files (:class:`~autogrow.engine.data.manifest.Manifest`), else None
    manifest: Any = None
    #: a tensor set's source files: ``{file name: sha256}``, else None
    source_digests: Any = None

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


@attrs.frozen
class SplitChoice:
    """How a data set is split: the validation source and size, the training subset, the caps
    on the evaluation sets and the seed. Checked on construction (``ValueError``)."""

    val_split: float = 0.1           # fraction of the training set held out (val_source "train")
    val_source: str = "train"        # "train": held out; "test": the paper's test-as-validation
    seed: int = 0
    subset: float = 1.0              # fraction of the training portion kept, (0, 1]
    max_val: int | None = None
    max_test: int | None = None

    def __attrs_post_init__(self) -> None:
        if self.val_source not in ("train", "test"):
            raise ValueError("val_source must be 'train' (held out) or 'test' (the paper's), "
                             f"not {self.val_source!r}")
        if self.val_source == "train" and not 0.0 < self.val_split < 1.0:
            raise ValueError(f"val_split must be in (0, 1) when val_source='train', not {self.val_split}")
        if not 0.0 < self.subset <= 1.0:
            raise ValueError(f"subset must be a fraction in (0, 1], not {self.subset}")
        for name, cap in (("max_val", self.max_val), ("max_test", self.max_test)):
            if cap is not None and cap < 1:
                raise ValueError(f"{name} must be a positive count or None, not {cap}")

    def describe(self) -> dict[str, Any]:
        """The fields :class:`DataSplits` records (``val_split`` is 0 for test-as-validation)."""
        return {"val_source": self.val_source, "subset": self.subset, "seed": self.seed,
                "val_split": self.val_split if self.val_source == "train" else 0.0}


def pick_splits(
    train_labels: torch.Tensor, test_labels: torch.Tensor, choice: SplitChoice
) -> dict[str, tuple[str, torch.Tensor]]:
    """Which source rows go to train / val / test: ``{split: (source, sorted positions)}``."""
    seed = choice.seed
    if choice.val_source == "train":
        train_idx, val_idx = holdout_split(train_labels, choice.val_split, seed)
        val_pick = ("train", val_idx)
    else:
        train_idx = torch.arange(train_labels.numel())
        val_pick = ("test", torch.arange(test_labels.numel()))
    if choice.subset < 1.0:
        size = _subset_size(len(train_idx), choice.subset)
        train_idx = train_idx[stratified_sample(train_labels[train_idx], size, seed, "subset")]
    test_idx = torch.arange(test_labels.numel())
    max_val, max_test = choice.max_val, choice.max_test
    if max_val is not None and max_val < len(val_pick[1]):
        src, idx = val_pick
        labels = train_labels if src == "train" else test_labels
        val_pick = (src, idx[stratified_sample(labels[idx], max_val, seed, "max_val")])
    if max_test is not None and max_test < len(test_idx):
        test_idx = stratified_sample(test_labels, max_test, seed, "max_test")
    return {"train": ("train", train_idx), "val": val_pick, "test": ("test", test_idx)}


def make_splits(
    picks: dict[str, tuple[str, torch.Tensor]], make: Callable[[str, torch.Tensor], Split]
) -> dict[str, Split]:
    """Build each split once; a val pick identical to the test pick (paper mode) shares its tensors."""
    test_src, test_idx = picks["test"]
    out = {"test": make(test_src, test_idx), "train": make(*picks["train"])}
    val_src, val_idx = picks["val"]
    same = val_src == test_src and torch.equal(val_idx, test_idx)
    out["val"] = out["test"] if same else make(val_src, val_idx)
    return out

