"""The names of the tensors inside a run snapshot (one place for the writer and every reader).

A snapshot holds ``model.<state_dict name>``, ``momentum.<parameter name>``, fp16 loss scaling
(``amp.*``) and, for a snapshot taken inside an epoch, that epoch's running sums (``epoch.*``).
(Snapshots of earlier versions also hold ``rng.torch_cpu``, which is ignored.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MODEL_PREFIX = "model."
MOMENTUM_PREFIX = "momentum."
AMP_SCALE = "amp.scale"            # fp16 GradScaler state
AMP_GROWTH = "amp.growth_tracker"
PROGRESS_PREFIX = "epoch."
PROGRESS_LOSS = PROGRESS_PREFIX + "loss_sum"
PROGRESS_CORRECT = PROGRESS_PREFIX + "correct"
PROGRESS_SEEN = PROGRESS_PREFIX + "seen"


def section(tensors: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The tensors under ``prefix``, keyed without it (e.g. the model's state dict)."""
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
