"""Test hooks a launcher installs on a run from outside its loop (the loop never reads them).

:func:`hooks_from_env` is what :class:`~autogrow.engine.run.Controls` holds by default, so the
process that builds the controls (the CLI, under ``torchrun`` too) reads the environment once;
each hook is a function that installs itself on the :class:`~autogrow.engine.run.Run` when the
run is built: a :class:`~autogrow.engine.writer.Subscriber` of its events or a growth hook
(``run.growth_hooks``, called on every rank right after a growth, before the ranks compare
their weights).

- ``AUTOGROW_RANK_DIGESTS=DIR``: each rank appends the digest of its net's whole state
  (parameters and buffers) to ``DIR/rank<r>.jsonl`` after every growth (``"growth N"``, at the
  growth's snapshot) and every evaluation (``"val EPOCH"`` at its ``epoch_completed``,
  ``"test"`` at ``run_finished``, which leave the state as it evaluated it), so a test can
  compare ranks independently.
- ``AUTOGROW_TEST_PERTURB_RANK=R``: rank R nudges its head's bias after every growth, as a rank
  that drew a different block would, so a test can show the ranks' digest check stops the run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from autogrow.blocks import weights_digest
from autogrow.events import BlockAdded, EpochCompleted, Event, RunFinished, SnapshotWritten
from autogrow.policies import GrowthState
from autogrow.storage import LogRecord

if TYPE_CHECKING:
    from autogrow.engine.run import Run

RANK_DIGESTS_ENV = "AUTOGROW_RANK_DIGESTS"
PERTURB_RANK_ENV = "AUTOGROW_TEST_PERTURB_RANK"

Hook = Callable[["Run"], None]


class RankDigests:
    """Subscriber: this rank's net digest at each growth and evaluation, to ``DIR/rank<r>.jsonl``."""

    def __init__(self, run: Run, target: Path) -> None:
        self.trainer = run.trainer
        self.path = Path(target) / f"rank{run.group.rank}.jsonl"
        self.growth: int | None = None

    def on_event(self, record: LogRecord | None, event: Event, state: GrowthState) -> None:
        point = None
        if isinstance(event, BlockAdded):
            self.growth = event.growth_index
        elif isinstance(event, SnapshotWritten) and event.label == "growth":
            point = f"growth {self.growth}"
        elif isinstance(event, EpochCompleted):
            point = f"val {event.epoch}"
        elif isinstance(event, RunFinished):
            point = "test"
        if point is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as out:
                out.write(json.dumps({"point": point,
                                      "digest": weights_digest(self.trainer.net)}) + "\n")

    def close(self) -> None:
        pass


def perturb_rank(rank: int) -> Hook:
    """The growth hook of ``AUTOGROW_TEST_PERTURB_RANK``: rank ``rank`` nudges its head's bias."""

    def install(run: Run) -> None:
        if run.group.rank == rank:
            run.growth_hooks.append(_nudge_head)

    return install


def _nudge_head(run: Run, event: BlockAdded) -> None:
    with torch.no_grad():
        run.trainer.net.head.bias.add_(1e-3)


def hooks_from_env(environ: Mapping[str, str] | None = None) -> tuple[Hook, ...]:
    """The test hooks the environment asks for (none in a normal run)."""
    environ = os.environ if environ is None else environ
    hooks: list[Hook] = []
    target = environ.get(RANK_DIGESTS_ENV)
    if target:
        hooks.append(lambda run: run.writer.subscribe(RankDigests(run, Path(target))))
    rank = environ.get(PERTURB_RANK_ENV)
    if rank is not None:
        hooks.append(perturb_rank(int(rank)))
    return tuple(hooks)
