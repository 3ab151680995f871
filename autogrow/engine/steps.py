"""What one training epoch, one evaluation and one growth do, given a trainer and the run's config.

The run loop and the audit's re-execution (:mod:`autogrow.engine.reexecute`) both call these, so
an audit re-executes the very code that ran: same batches (a pure function of seed, epoch and
position), same sharding over ranks, same growth with the logged seed.
"""

from __future__ import annotations

from collections.abc import Callable
import json
from typing import Any

from torch import Tensor

from autogrow.config import RunConfig
from autogrow.engine.data import DataSplits, eval_batches, train_batches
from autogrow.engine.device import Execution
from autogrow.engine.trainer import EpochStats, Trainer
from autogrow.events import BlockAdded


def drop_last(data: DataSplits, config: RunConfig, trainer: Trainer) -> bool:
    """With several processes, a last global batch too small to give every rank a sample is
    dropped: DDP needs every rank in every step."""
    group = trainer.group
    n, b = len(data.train), config.batch_size
    return group.enabled and 0 < n % b < group.world_size


def epoch_batches(data: DataSplits, config: RunConfig, execution: Execution, trainer: Trainer,
                  epoch: int, start_step: int = 0):
    """This rank's training batches of ``epoch`` (1-based; AdamInit after epoch E reuses E's)."""
    group = trainer.group
    return train_batches(data.train, seed=config.seed, epoch=epoch, batch_size=config.batch_size,
                         start_step=start_step, channels_last=execution.channels_last,
                         rank=group.rank, world_size=group.world_size,
                         drop_last=drop_last(data, config, trainer))


def train_epoch(trainer: Trainer, data: DataSplits, config: RunConfig, execution: Execution,
                epoch: int, lr: float, *, start_step: int = 0,
                progress: dict[str, Tensor] | None = None,
                after_step: Callable[[int, Callable[[], dict]], None] | None = None) -> EpochStats:
    """One epoch of SGD at ``lr`` (from ``start_step`` with the cut epoch's ``progress``)."""
    trainer.set_lr(lr)
    batches = epoch_batches(data, config, execution, trainer, epoch, start_step)
    return trainer.train_epoch(batches, start_step=start_step, progress=progress,
                               after_step=after_step)


def evaluate(trainer: Trainer, split: Any, config: RunConfig, execution: Execution) -> EpochStats:
    """Loss and accuracy on ``split`` (validation or test), sharded over the ranks."""
    group = trainer.group
    return trainer.evaluate(eval_batches(split, config.batch_size * 2, rank=group.rank,
                                         world_size=group.world_size,
                                         channels_last=execution.channels_last))


def grow(trainer: Trainer, event: BlockAdded, data: DataSplits, config: RunConfig,
         execution: Execution, epoch: int, last_train_acc: float | None) -> dict[str, Any]:
    """Add the block ``event`` names with its logged initializer and seed; AdamInit (residual
    nets) trains on epoch ``epoch``'s batches towards ``last_train_acc``."""
    return trainer.grow(
        event.stage, event.initializer, event.init_seed, reset_momentum=config.reset_momentum,
        adam_batches=lambda: epoch_batches(data, config, execution, trainer, epoch),
        adam_target=last_train_acc, adam_epochs=config.adam_init_epochs)


def snapshot_metadata(trainer: Trainer, arch: str, epoch: int, step: int,
                      label: str) -> dict[str, str]:
    """A snapshot's metadata (stored in the file, so covered by its digest): the point it was
    taken at, the arch the fold says the net has, and the net config its tensors fit."""
    net = trainer.net
    return {"arch": arch, "epoch": str(epoch), "step": str(step), "label": label,
            "family": net.family, "net": json.dumps(net.config, sort_keys=True)}
