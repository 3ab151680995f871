"""What a run is built from: its execution settings, data and trainer, and the software it ran
on. Shared by the run's lifecycle (start, resume, fork) and by re-execution, which must build
exactly what the run built."""

from __future__ import annotations

import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

import autogrow
from autogrow.config import RunConfig
from autogrow.engine.data import DataSplits, load_dataset, manifest, shards
from autogrow.engine.device import Execution, hardware, make_deterministic, resolve_execution
from autogrow.engine.distributed import SINGLE, Dist
from autogrow.engine.trainer import EVAL_BUFFERS, Trainer


def software_versions(execution: Execution, group: Dist = SINGLE) -> dict[str, Any]:
    """What ``run_started`` records of the software and machine (verify and re-execution
    compare a later process against it)."""
    return {
        "autogrow": autogrow.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processes": group.world_size,
        "eval_buffers": EVAL_BUFFERS,
        **execution.describe(),
        **hardware(execution),
    }


def load_data(config: RunConfig, execution: Execution, workers: int | str = "auto",
              recorded: tuple[Path, Mapping[str, Any] | None] | None = None, *,
              check: bool = True) -> DataSplits:
    """The run's data splits on the training device (raises DataError before anything is written).

    ``recorded``: a run that exists already — its directory and the data its ``run_started``
    records (None in runs logged before data was recorded: then the data is read as for a new
    run). An image folder is then read from the run's manifest, not listed, and unless ``check``
    is False the data is compared with the record (:func:`check_data`)."""
    identity = recorded[1] if recorded is not None else None
    pinned = (manifest.read(recorded[0], identity)
              if identity is not None and "manifest" in identity else None)
    if pinned is not None and pinned.kind == "shards":  # with its offsets, when they are there
        pinned = shards.pin(recorded[0], pinned, identity["manifest"])
    data = load_dataset(
        config.dataset,
        data_root=config.data_root or None,
        download=config.download,
        device=execution.device,
        pad_to=32,
        val_split=config.val_split,
        val_source=config.val_source,
        seed=config.seed,
        subset=config.subset,
        max_val=config.max_val or None,
        max_test=config.max_test or None,
        workers=workers,
        crop_padding=None if config.crop_padding < 0 else config.crop_padding,
        manifest=pinned,
    )
    if check:
        check_data(data, identity)
    return data


def check_data(data: DataSplits, identity: Mapping[str, Any] | None) -> None:
    """Refuse data other than a run's (``identity``: what its ``run_started`` records; None:
    nothing, an old run): an image folder's tree must hold exactly the manifest's images, at
    their sizes; a tensor set's source files must have the recorded digests. Raises
    :class:`~autogrow.engine.data.DataError` naming the first difference."""
    if identity is None:
        return
    if "manifest" in identity and data.manifest.kind == "shards":
        shards.check(data.name, data.manifest, Path(data.data_location))
    elif "manifest" in identity:
        manifest.check_tree(data.name, data.manifest, Path(data.data_location))
    if "files" in identity:
        manifest.check_files(data.name, identity["files"], data.source_digests or {},
                             data.data_location)


def record_data(data: DataSplits, run_dir: Path) -> dict[str, Any]:
    """What ``run_started`` records of the data (rank 0, as the run begins): an image folder's
    manifest is written to ``RUN/data/manifest`` and named by its digest; a tensor set's source
    files by theirs."""
    if data.manifest is not None:
        identity = manifest.write(run_dir, data.manifest)
        if data.manifest.kind == "shards":  # the offsets beside it: a resume reads no header
            shards.write_index(run_dir, data.manifest.index, identity["manifest"])
        return identity
    return {"files": dict(data.source_digests or {})}


def trainer_for(config: RunConfig, execution: Execution, data: DataSplits, arch: str,
                group: Dist = SINGLE, tensors: dict | None = None) -> Trainer:
    """A trainer for ``arch``: the seed net's init, or a snapshot's ``tensors`` when given."""
    trainer = Trainer.seeded(
        execution, family=config.family, arch=arch, in_channels=data.in_channels,
        num_classes=data.num_classes, image_size=data.image_size, width=config.width,
        seed=config.seed, momentum=config.momentum, weight_decay=config.weight_decay,
        weight_init=config.weight_init_scheme, group=group)
    if tensors is not None:
        trainer.load_state_tensors(tensors)
    return trainer


def prepare(config: RunConfig, group: Dist = SINGLE, *, arch: str | None = None,
            tensors: dict | None = None, workers: int | str = "auto",
            recorded: tuple[Path, Mapping[str, Any] | None] | None = None,
            check: bool = True) -> tuple[Execution, DataSplits, Trainer]:
    """Execution settings, data and a trainer; the trainer's tensors come from a snapshot if given,
    the data is a run's ``recorded`` data if given (:func:`load_data`; ``check``: compared).

    Everything here can fail on bad input (no device, no data, other data) before the caller
    writes a byte.
    """
    execution = prepare_execution(config)
    data = load_data(config, execution, workers, recorded, check=check)
    trainer = trainer_for(config, execution, data, arch or config.seed_arch, group, tensors)
    return execution, data, trainer


def prepare_execution(config: RunConfig) -> Execution:
    """The run's device, precision and threads, with deterministic kernels set up for them."""
    execution = resolve_execution(config.device, config.precision, config.channels_last,
                                  config.threads, config.deterministic)
    make_deterministic(execution)
    torch.manual_seed(config.seed)  # for code outside the engine; the engine never draws from it
    return execution
