"""Learning-rate schedules as pure functions of (settings, phase, epoch index) — DESIGN §3."""

from __future__ import annotations


def staircase(base_lr: float, index: int, length: int) -> float:
    """``base_lr`` ×0.1 at ½ and again at ¾ of ``length`` epochs (``index`` counts from 0)."""
    half = max(1, length // 2)
    three_quarters = max(1, (3 * length) // 4)
    drops = int(index >= half) + int(index >= three_quarters)
    return base_lr * (0.1**drops)


def learning_rate(base_lr: float, policy: str, phase: str, index: int, interval: int,
                  finetune_epochs: int) -> float:
    """The LR of epoch ``index`` (0-based, within its phase).

    Growing: p-AutoGrow keeps ``base_lr``; c-AutoGrow restarts a staircase every interval.
    Fine-tuning: one staircase over the N fine-tune epochs.
    """
    if phase == "grow":
        if policy == "periodic":
            return base_lr
        return staircase(base_lr, index % interval, interval)
    if phase == "finetune":
        return staircase(base_lr, index, finetune_epochs)
    raise ValueError(f"unknown phase {phase!r}; expected 'grow' or 'finetune'")
