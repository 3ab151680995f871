"""ImageNet-style data on disk (``ROOT/{train,val}/<class>/<image>``, or a flat val folder
labelled by the devkit or Kaggle's csv: :mod:`.layouts`), read by a persistent pool.

Each image is read (a file, or a tar shard's member: :mod:`.shards`), decoded (:mod:`.decode`:
TorchCodec's libjpeg-turbo decoder, the successor of torchvision.io's, or PIL where TorchCodec
is not installed and for formats it does not read), cropped and resized to ``CROP``×``CROP`` on
a ``DataLoader`` worker, and batches cross to a GPU as uint8 — a quarter of float32's bytes — to
be converted and normalised there, as the tensor-resident data sets are; for a CPU run the
workers normalise too (same operations, same bits), so the training process only receives its
input. Train crops are
the standard RandomResizedCrop (scale 0.08–1, ratio 3/4–4/3) + horizontal flip, eval crops the
standard Resize(256) + CenterCrop(224); the resize is torch's antialiased bilinear on
channels-last uint8 pixels, which matches PIL's to within one grey level and was faster than
PIL here (benchmarks/RESULTS.md §7).

Every sample's crop and flip come from a generator seeded by ``(seed, epoch, position)``, so a
batch is the same whatever the number of workers or processes, and a resumed epoch reads only
the images of the steps it still has to run. One pool per process serves train, val and test and
lives across epochs; its workers are spawned, not forked (see :func:`_pool_context`), and ignore
the stop signals (the main process decides when to stop and then shuts them down).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.context
import os
import signal
import weakref
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from autogrow.config import STOP_SIGNALS
from autogrow.engine.augment import derive_seed, normalize
from autogrow.engine.data import decode, layouts, shards
from autogrow.engine.data.manifest import SOURCES, Manifest, scan
from autogrow.engine.data.registry import DataError, DatasetInfo, call_torchvision
from autogrow.engine.data.splits import (
    DataSplits,
    FolderSplit,
    SplitChoice,
    Transform,
    make_splits,
    pick_splits,
)

CROP = 224                 # network input side
RESIZE = 256               # eval: shorter side before the centre crop
SCALE = (0.08, 1.0)        # RandomResizedCrop area fraction
RATIO = (3 / 4, 4 / 3)     # RandomResizedCrop aspect ratio
PREFETCH = 2               # batches in flight per worker
MAX_AUTO_WORKERS = 8

#: (source "train"/"test", row in that source, augmentation seed or -1 for the eval view)
Key = tuple[str, int, int]


def resolve_workers(spec: int | str) -> int:
    """``"auto"``: the CPU cores this process may use divided by the training processes on this
    machine (torchrun's ``LOCAL_WORLD_SIZE``), at least 1, at most 8; else the number given."""
    if spec != "auto":
        return int(spec)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE") or 1))
    return max(1, min(MAX_AUTO_WORKERS, cores // local))


# --------------------------------------------------------------------------------------------
# One image: crop, resize (runs on the workers; decoding: .decode)
# --------------------------------------------------------------------------------------------


def _resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Antialiased bilinear resize of uint8 ``3×H×W`` pixels to ``1×3×size`` (channels-last:
    torch's vectorised uint8 path)."""
    x = image.unsqueeze(0).contiguous(memory_format=torch.channels_last)
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)


def train_view(image: torch.Tensor, seed: int, hflip: bool) -> torch.Tensor:
    """RandomResizedCrop(``CROP``) + flip of ``image``, drawn from ``seed`` alone."""
    from torchvision.transforms import RandomResizedCrop

    with torch.random.fork_rng(devices=[]):  # torchvision draws from the global generator
        torch.manual_seed(seed)
        top, left, h, w = RandomResizedCrop.get_params(image, list(SCALE), list(RATIO))
        flip = hflip and bool(torch.rand(()) < 0.5)
    out = _resize(image[:, top : top + h, left : left + w], (CROP, CROP))
    return out.flip(-1) if flip else out


def eval_view(image: torch.Tensor) -> torch.Tensor:
    """Resize the shorter side to ``RESIZE`` (torchvision's rounding), then the centre
    ``CROP``×``CROP``."""
    h, w = image.shape[-2:]
    if h <= w:
        size = (RESIZE, int(RESIZE * w / h))
    else:
        size = (int(RESIZE * h / w), RESIZE)
    top = int(round((size[0] - CROP) / 2.0))
    left = int(round((size[1] - CROP) / 2.0))
    return _resize(image, size)[..., top : top + CROP, left : left + CROP]


# --------------------------------------------------------------------------------------------
# The images of a data set, as a DataLoader reads them
# --------------------------------------------------------------------------------------------


class _PathTable:
    """Many file paths as one byte string and offsets: no Python object per path, so forked
    workers do not copy the table by touching reference counts."""

    def __init__(self, paths: list[str]) -> None:
        text = "".join(paths)
        self.blob = os.fsencode(text)
        if len(self.blob) == len(text):  # one byte a character (ASCII names): no per-path encode
            self.ends = np.cumsum([len(p) for p in paths], dtype=np.int64)
        else:
            self.ends = np.cumsum([len(os.fsencode(p)) for p in paths], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, row: int) -> str:
        start = int(self.ends[row - 1]) if row else 0
        return os.fsdecode(self.blob[start : int(self.ends[row])])

    def read(self, row: int) -> np.ndarray:
        """The bytes of image ``row`` (a tar shard's table has the same two methods)."""
        return decode.read_file(self[row])


Stats = tuple[tuple[float, ...], tuple[float, ...]]


class FolderImages(torch.utils.data.Dataset):
    """The train and test images by :data:`Key` (files of a folder, or samples of tar shards:
    :class:`.shards.ShardTable`); a batch of keys becomes one channels-last ``N×3×CROP×CROP`` tensor and
    its int64 labels: uint8 pixels, or, given ``stats`` (mean, std), the normalised float32
    input itself — for a CPU run, whose "device" is the CPU: there are no bytes to save on a
    wire, and the workers' cores do the work."""

    def __init__(self, tables: dict, labels: dict[str, list[int]], hflip: bool,
                 stats: Stats | None = None) -> None:
        """``tables``, by source: objects with ``read(row)`` giving an image's bytes and
        ``[row]`` the name a message uses (:class:`_PathTable`, :class:`.shards.ShardTable`)."""
        self.paths = dict(tables)
        self.labels = {src: torch.tensor(rows, dtype=torch.int64) for src, rows in labels.items()}
        self.hflip = hflip
        self.stats = stats

    @classmethod
    def of_files(cls, samples: dict[str, list[tuple[str, int]]], hflip: bool,
                 stats: Stats | None = None) -> "FolderImages":
        """The images of an image folder: ``(path, class)`` rows by source."""
        return cls({src: _PathTable([p for p, _ in rows]) for src, rows in samples.items()},
                   {src: [c for _, c in rows] for src, rows in samples.items()}, hflip, stats)

    def __len__(self) -> int:
        return sum(len(t) for t in self.paths.values())

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.__getitems__([key])
        return x[0], y[0]

    def __getitems__(self, keys: list[Key]) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = _batch_buffer(len(keys), torch.uint8, shared=self.stats is None)
        labels = torch.empty(len(keys), dtype=torch.int64)
        with _one_thread():
            for i, (source, row, seed) in enumerate(keys):
                table = self.paths[source]
                image = decode.decode(table.read(row), table[row])
                pixels[i] = (train_view(image, seed, self.hflip) if seed >= 0 else eval_view(image))[0]
                labels[i] = self.labels[source][row]
            if self.stats is None:
                return pixels, labels
            out = _batch_buffer(len(keys), torch.float32, shared=True)
            return normalize(pixels, *self.stats, channels_last=True, out=out), labels


def _batch_buffer(n: int, dtype: torch.dtype, *, shared: bool) -> torch.Tensor:
    """A channels-last ``n×3×CROP×CROP`` tensor; ``shared`` and inside a loader worker, in shared
    memory (as torch's default collate allocates), so handing it over copies nothing."""
    shape = (n, 3, CROP, CROP)
    if not shared or torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=dtype, memory_format=torch.channels_last)
    storage = torch.UntypedStorage._new_shared(n * 3 * CROP * CROP * dtype.itemsize)
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape, (3 * CROP * CROP, 1, CROP * 3, 3))


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """One torch thread for per-image work in the training process (``workers=0``): the ops on
    one image are too small to split, and split across a busy core they ran 10-20× slower here.
    Loader workers already run on one thread."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _as_batch(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The DataLoader's collate step: ``__getitems__`` already made the batch."""
    return batch


def _ignore_stop_signals(_worker_id: int) -> None:
    """Workers leave stop signals to the main process: a SIGTERM sent to the whole job must not
    kill the pool before the run has suspended."""
    for name in STOP_SIGNALS:
        signal.signal(getattr(signal, f"SIG{name}"), signal.SIG_IGN)


def _pool_context() -> multiprocessing.context.BaseContext:
    """The pool's workers are spawned (a fresh interpreter each, once per launch: the pool is
    persistent), not forked from the training process.

    The training process has threads by the time its first pass starts (gloo's under torchrun,
    CUDA's on a GPU), and a fork while another thread holds one of the interpreter's own locks
    leaves the child hung inside ``os.fork()`` (CPython 3.11 takes its thread-state lock in the
    child before re-initialising it): seen here as a torchrun resume on an image folder whose
    rank-1 worker never started. A spawned worker also inherits no file descriptor of the run
    (its writer lock among them) and is still the training process's child, whose death its
    watchdog notices."""
    return multiprocessing.get_context("spawn")


def _stop_pool(loader: torch.utils.data.DataLoader) -> None:
    """Shut the workers down through their queues. Runs when the reader goes and at exit,
    before multiprocessing's own exit handler, which would SIGTERM the workers (they ignore it)
    and wait for them forever."""
    iterator = loader._iterator
    if iterator is not None:
        iterator._shutdown_workers()


class _Schedule:
    """The pool's batch sampler: the keys of the current pass. A persistent pool keeps its
    sampler object, so each pass replaces the list inside it."""

    def __init__(self) -> None:
        self.batches: list[list[Key]] = []

    def __iter__(self) -> Iterator[list[Key]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class FolderReader:
    """The images of one data set and the one ``DataLoader`` this process reads them with;
    its worker pool starts at the first pass and lives across epochs and splits."""

    def __init__(self, images: FolderImages, workers: int, pin_memory: bool) -> None:
        if workers < 0:
            raise ValueError(f"workers must be >= 0, not {workers}")
        decode.announce()
        self.images = images
        self.workers = workers
        self.pin_memory = pin_memory
        self._schedule = _Schedule()
        self._loader: torch.utils.data.DataLoader | None = None
        self._pass = 0

    def _get_loader(self) -> torch.utils.data.DataLoader:
        if self._loader is None:
            pool = self.workers > 0
            self._loader = torch.utils.data.DataLoader(
                self.images, batch_sampler=self._schedule, collate_fn=_as_batch,
                num_workers=self.workers, persistent_workers=pool,
                prefetch_factor=PREFETCH if pool else None, pin_memory=self.pin_memory,
                worker_init_fn=_ignore_stop_signals if pool else None,
                multiprocessing_context=_pool_context() if pool else None,
                # a generator of its own: each pass draws a base seed, which must not move the
                # global RNG (it is in every snapshot, and would then depend on the worker count)
                generator=torch.Generator(),
            )
            if pool:
                weakref.finalize(self, _stop_pool, self._loader)
        return self._loader

    def batches(
        self,
        split: FolderSplit,
        plan: list[torch.Tensor],
        seed_epoch: tuple[int, int] | None,
        *,
        channels_last: bool,
        dtype: torch.dtype,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Normalised batches of ``split`` at the positions of ``plan`` (one list per step),
        augmented from ``seed_epoch`` or, when None, the eval view. Only the images of
        ``plan`` are read; the pool starts on them at once. A newer pass makes this one stale."""
        rows = split.source_indices.tolist()
        keys = []
        for positions in plan:
            pos = positions.tolist()
            seeds = ([derive_seed(seed_epoch[0], "augment", seed_epoch[1], p) for p in pos]
                     if seed_epoch is not None else [-1] * len(pos))
            keys.append([(split.source, rows[p], s) for p, s in zip(pos, seeds)])
        self._schedule.batches = [k for k in keys if k]
        self._pass += 1
        fetched = iter(self._get_loader())
        return self._deliver(self._pass, keys, fetched, split, channels_last, dtype)

    def _deliver(self, token: int, keys: list[list[Key]], fetched: Iterator, split: FolderSplit,
                 channels_last: bool, dtype: torch.dtype) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        tf, dev = split.transform, split.device
        for step_keys in keys:
            if token != self._pass:
                raise RuntimeError("a newer pass over the image folder started; this one is stale")
            if not step_keys:  # keep the step count equal across ranks
                yield (torch.zeros(0, 3, CROP, CROP, dtype=dtype, device=dev),
                       torch.zeros(0, dtype=torch.int64, device=dev))
                continue
            try:
                x, y = next(fetched)
            except DataError as exc:  # from a worker: one line, not the worker's traceback
                raise DataError(str(exc).strip().splitlines()[-1].split("DataError: ", 1)[-1]) from None
            x = x.to(dev, non_blocking=True)
            if x.dtype == torch.uint8:  # pixels: normalised here, on the training device
                x = normalize(x, tf.mean, tf.std, dtype=dtype, channels_last=channels_last)
            else:  # normalised by the workers (a CPU run)
                layout = torch.channels_last if channels_last else torch.contiguous_format
                x = x.to(dtype).contiguous(memory_format=layout)
            yield x, y.to(dev, non_blocking=True)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _list_folder(info: DatasetInfo, folder: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """Class names and (path, class) of every image under ``folder`` (torchvision's rules), less
    hidden entries: a ``.``-named folder is no class, and nothing under a ``.``-named folder or
    file is an image."""
    from torchvision.datasets.folder import find_classes, has_file_allowed_extension, make_dataset

    found, _ = call_torchvision(info, lambda: find_classes(str(folder)), folder)
    classes = [c for c in found if layouts.visible(c)]
    if not classes:
        raise DataError(f"{info.name}: cannot read data under {folder}: no class folder in it")
    extensions = layouts.image_extensions()
    cut = len(os.path.join(str(folder), ""))

    hidden = os.sep + "."  # a component of the path below the folder starts with "."

    def is_image(path: str) -> bool:
        return has_file_allowed_extension(path, extensions) and hidden not in path[cut - 1:]

    samples = call_torchvision(info, lambda: make_dataset(
        str(folder), {c: i for i, c in enumerate(classes)}, is_valid_file=is_image), folder)
    return classes, samples


def _list_flat_val(info: DatasetInfo, layout: layouts.Layout,
                   classes: list[str]) -> list[tuple[str, int]]:
    """(path, class) of every image directly in a flat val folder, by file name, labelled by the
    devkit or Kaggle's csv (:mod:`.layouts`)."""
    try:
        files = layouts.flat_images(layout.val)
    except OSError as err:
        raise DataError(f"{info.name}: cannot list {layout.val}: {err.strerror or err}") from None
    labels = layouts.label_flat_val(info.name, layout, files,
                                    {c: i for i, c in enumerate(classes)})
    prefix = os.path.join(str(layout.val), "")
    return [(prefix + f, c) for f, c in zip(files, labels)]


def list_images(info: DatasetInfo, layout: layouts.Layout) -> Manifest:
    """The manifest of a fresh listing of ``layout``'s train and val images, in the order the
    reader numbers them (and :mod:`scripts/folder_to_shards.py` writes them)."""
    classes, train_samples = _list_folder(info, layout.train)
    if layouts.val_is_flat(info.name, layout):
        test_samples = _list_flat_val(info, layout, classes)
    else:
        test_classes, test_samples = _list_folder(info, layout.val)
        if classes != test_classes:
            raise DataError(f"{info.name}: class folders of {layout.train} and {layout.val} "
                            "differ")
    return scan(layout.folders, {"train": train_samples, "val": test_samples}, classes)


def load_folder_splits(
    info: DatasetInfo, root: Path | None, dev: torch.device, choice: SplitChoice, workers: int,
    manifest: Manifest | None = None,
) -> DataSplits:
    """List the train and val images under ``root`` (any layout of :mod:`.layouts`, or
    WebDataset tar shards: :mod:`.shards`) and split them as ``choice`` says; images are read
    later, batch by batch, by a pool of ``workers`` processes (0: in this process).

    Given a run's ``manifest``, the images are the manifest's, in its order, and the tree is not
    listed (:func:`~autogrow.engine.data.manifest.check_tree` compares it with the manifest);
    only the split folders are found again (a moved root)."""
    found = shards.find(root, info.name)
    if manifest is not None and (manifest.kind == "shards") != (found is not None):
        trained, now = (("tar shards", "no tar shards") if found is None
                        else ("an image folder", "tar shards"))
        said = f"{info.name}: the run trained on {trained}, but {root} holds {now}"
        raise DataError(f"{said}; set data_root to the run's data",
                        cli=f"{said}; pass --data-root with the run's data")
    if found is not None:
        return _shard_splits(info, root, shards.locate(info.name, root, found), dev, choice,
                             workers, manifest)
    layout = layouts.locate(info.name, root)
    if manifest is None:
        manifest = list_images(info, layout)
    images = FolderImages.of_files(manifest.samples(layout.folders), info.hflip,
                          (info.mean, info.std) if dev.type == "cpu" else None)
    return _splits(info, root, images, manifest, dev, choice, workers)


def _shard_splits(info: DatasetInfo, root: Path, found: dict[str, list[Path]],
                  dev: torch.device, choice: SplitChoice, workers: int,
                  manifest: Manifest | None) -> DataSplits:
    """:func:`load_folder_splits` of WebDataset tar shards (:mod:`.shards`): indexed once by a
    new run; a run's manifest comes with its index, refreshed for the shards found now."""
    manifest = (shards.index(info.name, root, found) if manifest is None
                else shards.refresh(manifest, found, info.name))
    names = {split: _PathTable(listing.paths) for split, listing in manifest.splits.items()}
    images = FolderImages(
        shards.tables(found, manifest, names),
        {SOURCES[split]: listing.labels for split, listing in manifest.splits.items()},
        info.hflip, (info.mean, info.std) if dev.type == "cpu" else None)
    return _splits(info, root, images, manifest, dev, choice, workers)


def _splits(info: DatasetInfo, root: Path | None, images: FolderImages, manifest: Manifest,
            dev: torch.device, choice: SplitChoice, workers: int) -> DataSplits:
    """The splits of ``images`` (by ``choice``), read through one pool of ``workers``."""
    classes = list(manifest.classes)
    reader = FolderReader(images, workers, pin_memory=dev.type == "cuda")
    picks = pick_splits(images.labels["train"], images.labels["test"], choice)
    transform = Transform(info.mean, info.std, 0, info.hflip)

    def make(source: str, idx: torch.Tensor) -> FolderSplit:
        return FolderSplit(reader=reader, labels=images.labels[source][idx], source=source,
                           source_indices=idx, transform=transform, image_size=CROP, device=dev)

    splits = make_splits(picks, make)
    return DataSplits(
        name=info.name, num_classes=len(classes), in_channels=3, image_size=CROP,
        mean=info.mean, std=info.std, crop_padding=0, hflip=info.hflip, classes=tuple(classes),
        train=splits["train"], val=splits["val"], test=splits["test"], data_location=str(root),
        manifest=manifest, **choice.describe(),
    )
