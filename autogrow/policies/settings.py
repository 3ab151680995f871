"""The settings the growth policy reads, taken from a run's stored config (pure Python)."""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction
from typing import Any

import attrs

from autogrow.arch import Arch, format_arch, parse_arch
from autogrow.errors import InputError
from autogrow.policies.schedule import DEFAULT_MILESTONES, parse_milestones, staircase

POLICIES = ("periodic", "convergent")
METRICS = ("best", "ema")
#: The LR while growing: constant (p-AutoGrow; the original's ``--opt sgd``), a staircase restarted
#: every K epochs (c-AutoGrow's "staircase" rows of the paper's table 3; ``--opt sgdc``), or auto:
#: constant for periodic growth, staircase for convergent.
GROWTH_LRS = ("auto", "constant", "staircase")


class PolicyConfigError(InputError):
    """A policy setting is out of range; the message names the setting and the valid range."""


@attrs.frozen
class PolicySettings:
    """K, J, τ and friends (DESIGN §3). ``tau`` is in accuracy percentage points."""

    seed_arch: Arch
    policy: str = "periodic"
    interval: int = 3
    stop_window: int = 6
    tau: float = 0.05
    max_arch: Arch | None = None
    max_growth_epochs: int | None = None
    finetune_epochs: int = 0
    initializer: str = "gau"
    seed: int = 0
    metric: str = "best"
    ema_decay: float = 0.95
    lr_milestones: tuple[Fraction, ...] = DEFAULT_MILESTONES  # where the LR drops ×0.1
    growth_lr: str = "auto"
    finetune_lr_scale: float = 1.0  # fine-tuning starts at lr × this (original c-AutoGrow: 0.1)
    finetune_milestones: tuple[Fraction, ...] | None = None  # None: lr_milestones

    def __attrs_post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise PolicyConfigError(f"unknown policy {self.policy!r}; choose one of {', '.join(POLICIES)}")
        if self.metric not in METRICS:
            raise PolicyConfigError(f"unknown metric {self.metric!r}; choose one of {', '.join(METRICS)}")
        if self.interval <= 0:
            raise PolicyConfigError(f"interval (K) must be a positive number of epochs, got {self.interval}")
        if self.stop_window < self.interval:
            raise PolicyConfigError(
                f"stop_window (J={self.stop_window}) must be at least interval (K={self.interval})"
            )
        if self.growth_lr not in GROWTH_LRS:
            raise PolicyConfigError(f"unknown growth_lr {self.growth_lr!r}; choose one of "
                                    f"{', '.join(GROWTH_LRS)}")
        if not self.finetune_lr_scale > 0:
            raise PolicyConfigError(f"finetune_lr_scale must be positive, got {self.finetune_lr_scale}")
        if self.tau < 0:
            raise PolicyConfigError(f"tau must be >= 0 percentage points, got {self.tau}")
        if self.finetune_epochs < 0:
            raise PolicyConfigError(f"finetune_epochs must be >= 0, got {self.finetune_epochs}")
        if self.max_growth_epochs is not None and self.max_growth_epochs <= 0:
            raise PolicyConfigError(f"max_growth_epochs must be positive, got {self.max_growth_epochs}")
        if not 0.0 < self.ema_decay < 1.0:
            raise PolicyConfigError(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.max_arch is not None:
            if len(self.max_arch) != len(self.seed_arch):
                raise PolicyConfigError(
                    f"max_arch {format_arch(self.max_arch)} and seed_arch {format_arch(self.seed_arch)} "
                    "have different stage counts"
                )
            if any(m < s for m, s in zip(self.max_arch, self.seed_arch)):
                raise PolicyConfigError(
                    f"max_arch {format_arch(self.max_arch)} is shallower than seed_arch "
                    f"{format_arch(self.seed_arch)} in some stage"
                )

    @property
    def stages(self) -> int:
        return len(self.seed_arch)

    @property
    def stop_span(self) -> int:
        """Epochs the stopping policy looks back: J for periodic growth, K for convergent."""
        return self.stop_window if self.policy == "periodic" else self.interval

    @property
    def growth_staircase(self) -> bool:
        """Whether growth-phase epochs follow a staircase restarted every K epochs."""
        if self.growth_lr == "auto":
            return self.policy == "convergent"
        return self.growth_lr == "staircase"

    def learning_rate(self, base_lr: float, phase: str, index: int) -> float:
        """The LR of epoch ``index`` (0-based, within ``phase``: "grow" or "finetune").

        Growing: ``base_lr``, or a staircase over each K-epoch interval. Fine-tuning: one
        staircase over the N epochs, from ``base_lr × finetune_lr_scale``.
        """
        if phase == "grow":
            if not self.growth_staircase:
                return base_lr
            return staircase(base_lr, index % self.interval, self.interval, self.lr_milestones)
        if phase == "finetune":
            milestones = self.lr_milestones if self.finetune_milestones is None else self.finetune_milestones
            return staircase(base_lr * self.finetune_lr_scale, index, self.finetune_epochs, milestones)
        raise ValueError(f"unknown phase {phase!r}; expected 'grow' or 'finetune'")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PolicySettings:
        """The policy's view of a run config (the mapping stored in ``run_started``)."""
        seed_arch = parse_arch(str(config["seed_arch"]))
        max_arch_text = config.get("max_arch")
        max_arch = parse_arch(str(max_arch_text), len(seed_arch)) if max_arch_text else None
        cap = config.get("max_growth_epochs")
        return cls(
            seed_arch=seed_arch,
            policy=str(config.get("policy", "periodic")),
            interval=int(config.get("interval", 3)),
            stop_window=int(config.get("stop_window", 6)),
            tau=float(config.get("tau", 0.05)),
            max_arch=max_arch,
            max_growth_epochs=int(cap) if cap else None,
            finetune_epochs=int(config.get("finetune_epochs", 0)),
            initializer=str(config.get("initializer", "gau")),
            seed=int(config.get("seed", 0)),
            metric=str(config.get("metric", "best")),
            ema_decay=float(config.get("ema_decay", 0.95)),
            lr_milestones=_milestones(config.get("lr_milestones", "1/2,3/4")),
            growth_lr=str(config.get("growth_lr", "auto")),
            finetune_lr_scale=float(config.get("finetune_lr_scale", 1.0)),
            finetune_milestones=(None if config.get("finetune_milestones", "auto") == "auto"
                                 else _milestones(config["finetune_milestones"], "finetune_milestones")),
        )


def _milestones(text: str, name: str = "lr_milestones") -> tuple[Fraction, ...]:
    try:
        return parse_milestones(text, name)
    except ValueError as err:
        raise PolicyConfigError(str(err)) from None
