"""Learning-rate staircases as pure functions of (epoch index, phase length) — DESIGN §3.

`PolicySettings.learning_rate` picks which one each phase uses."""

from __future__ import annotations

import math
from fractions import Fraction

from autogrow.errors import InputError

#: ×0.1 at ½ and ¾ of a phase: the small data sets' 100/150-of-200 schedule.
DEFAULT_MILESTONES = (Fraction(1, 2), Fraction(3, 4))


def parse_milestones(text: str, name: str = "lr_milestones") -> tuple[Fraction, ...]:
    """``"1/2,3/4"`` or ``"0.5,0.75"`` (fractions of a phase, increasing, in (0, 1)) as exact
    fractions, so ``1/3`` of 90 epochs is epoch 30, not 29; ``""`` = a constant LR."""
    try:
        values = tuple(Fraction(part.strip()) for part in str(text).split(",") if part.strip())
    except (ValueError, ZeroDivisionError):
        raise InputError(f"{name} {text!r}: expected fractions of the phase like "
                         "1/2,3/4 or 0.5,0.75") from None
    if any(not 0 < v < 1 for v in values) or list(values) != sorted(set(values)):
        raise InputError(f"{name} {text!r}: fractions must increase within (0, 1)")
    return values


def staircase(base_lr: float, index: int, length: int,
              milestones: tuple[Fraction, ...] = DEFAULT_MILESTONES) -> float:
    """``base_lr`` ×0.1 at each milestone fraction of ``length`` epochs (``index`` from 0; a drop
    never lands on the first epoch)."""
    drops = sum(index >= max(1, math.floor(m * length)) for m in milestones)
    return base_lr * (0.1**drops)
