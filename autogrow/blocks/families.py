"""Registry of network families (paper §2.1): one place the CLI, config and nets read from."""

from __future__ import annotations

import math
from dataclasses import dataclass

from autogrow.errors import InputError

from .layers import BasicBlock, Block, Bottleneck, PlainBlock

#: 4-stage families switch to the 7x7/2 + max-pool stem at this input size and above.
IMAGENET_STEM_MIN_SIZE = 64

#: No layer gets fewer channels than this, whatever the width multiplier.
MIN_CHANNELS = 4


@dataclass(frozen=True)
class FamilySpec:
    """What a family is made of: block type, per-stage widths (before expansion) and strides."""

    name: str
    block: type[Block]
    stem_channels: int
    stage_planes: tuple[int, ...]
    strides: tuple[int, ...]
    imagenet_stem_allowed: bool

    @property
    def num_stages(self) -> int:
        return len(self.stage_planes)

    @property
    def residual(self) -> bool:
        return self.block.residual

    def uses_imagenet_stem(self, image_size: int) -> bool:
        """3-stage families always use the small stem; 4-stage ones switch at 64 px."""
        return self.imagenet_stem_allowed and image_size >= IMAGENET_STEM_MIN_SIZE


_REGISTRY: dict[str, FamilySpec] = {
    spec.name: spec
    for spec in (
        FamilySpec("basic3resnet", BasicBlock, 16, (16, 32, 64), (1, 2, 2), False),
        FamilySpec("plain3net", PlainBlock, 16, (16, 32, 64), (1, 2, 2), False),
        FamilySpec("basic4resnet", BasicBlock, 64, (64, 128, 256, 512), (1, 2, 2, 2), True),
        FamilySpec("plain4net", PlainBlock, 64, (64, 128, 256, 512), (1, 2, 2, 2), True),
        FamilySpec("bottleneck4resnet", Bottleneck, 64, (64, 128, 256, 512), (1, 2, 2, 2), True),
    )
}

#: Family names, in registry order (CLI choices).
FAMILIES: tuple[str, ...] = tuple(_REGISTRY)


def get_family(name: str) -> FamilySpec:
    """The spec of a family; ValueError naming the valid families otherwise."""
    key = name.lower() if isinstance(name, str) else name
    try:
        return _REGISTRY[key]
    except (KeyError, TypeError):
        raise InputError(
            f"unknown network family {name!r}; choose one of: {', '.join(FAMILIES)}"
        ) from None


def scaled(channels: int, width: float) -> int:
    """Channel count under a width multiplier: rounded, never below MIN_CHANNELS."""
    return max(MIN_CHANNELS, int(math.floor(channels * width + 0.5)))
