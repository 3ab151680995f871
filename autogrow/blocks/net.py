"""GrowableNet: stem → stages → global average pool → linear head, deepened one block at a time.

Parameter names are stable across growth: `stem.*`, `stages.{i}.{j}.*`, `head.*`; a grown block
is appended at the end of its stage as `stages.{i}.{depth}`, so existing names (and therefore
optimizer state and snapshots keyed by name) never change.
"""

from __future__ import annotations

import math
from os import PathLike
from typing import Any

import torch
from torch import Tensor, nn

from ..arch import Arch, format_arch, parse_arch
from .families import FamilySpec, get_family, scaled
from .initializers import base_init, resolve_initializer
from .layers import Block, Stem


class GrowableNet(nn.Module):
    """A network of one family whose stages can each grow by one block (paper Algorithm 1)."""

    def __init__(
        self,
        family: str,
        arch: str | Arch,
        *,
        in_channels: int = 3,
        num_classes: int = 10,
        image_size: int = 32,
        width: float = 1.0,
        weight_init: str = "torch",
    ) -> None:
        super().__init__()
        base_init(weight_init)  # a clear error for an unknown name
        spec = get_family(family)
        depths = _parse_depths(arch, spec)
        _check_positive_int("in_channels", in_channels)
        _check_positive_int("num_classes", num_classes)
        _check_positive_int("image_size", image_size)
        if isinstance(width, bool) or not isinstance(width, (int, float)) or not (
            math.isfinite(width) and width > 0
        ):
            raise ValueError(f"width must be a positive finite number, got {width!r}")

        self.spec: FamilySpec = spec
        self.family: str = spec.name
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.image_size = int(image_size)
        self.width = float(width)
        self.weight_init = weight_init  # the base init of new blocks too

        stem_out = scaled(spec.stem_channels, self.width)
        self.stem = Stem(self.in_channels, stem_out, spec.uses_imagenet_stem(self.image_size))
        self.stages = nn.ModuleList()
        channels = stem_out
        for planes, stride, depth in zip(spec.stage_planes, spec.strides, depths):
            planes = scaled(planes, self.width)
            blocks = [spec.block(channels, planes, stride)]
            channels = blocks[0].out_channels
            blocks += [spec.block(channels, planes, 1) for _ in range(depth - 1)]
            self.stages.append(nn.Sequential(*blocks))
        self.head = nn.Linear(channels, self.num_classes)

    # -- description ---------------------------------------------------------------------------
    @property
    def depths(self) -> Arch:
        """Blocks per stage, e.g. (1, 2, 1)."""
        return tuple(len(stage) for stage in self.stages)

    @property
    def arch(self) -> str:
        """The arch string, e.g. "1-2-1"."""
        return format_arch(self.depths)

    @property
    def config(self) -> dict[str, Any]:
        """Constructor keyword arguments (what export stores to rebuild the net)."""
        return {
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "image_size": self.image_size,
            "width": self.width,
            "weight_init": self.weight_init,
        }

    def block(self, stage: int, index: int) -> Block:
        """Block `index` of `stage` (negative indices count from the end)."""
        return self.stages[stage][index]  # type: ignore[return-value]

    def extra_repr(self) -> str:
        return f"family={self.family!r}, arch={self.arch!r}"

    # -- compute -------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        # global average pool as a mean: AdaptiveAvgPool2d has no deterministic CUDA backward
        return self.head(x.mean(dim=(2, 3)))

    # -- growth --------------------------------------------------------------------------------
    def grow(
        self,
        stage: int,
        initializer: str = "gau",
        generator: torch.Generator | None = None,
    ) -> list[str]:
        """Append one stride-1 block at the end of `stage`; return its parameter names.

        All random init of the new block is drawn from `generator` (a CPU generator) on a
        float32 CPU copy, then moved to the net's device/dtype/memory format, so the same
        generator state gives bit-identical blocks on every process and device. With a
        generator the global RNG is not touched. The block takes the net's train/eval mode.
        """
        if isinstance(stage, bool) or not isinstance(stage, int) or not (
            0 <= stage < len(self.stages)
        ):
            raise ValueError(
                f"stage must be an int in 0..{len(self.stages) - 1} for {self.family}, got {stage!r}"
            )
        init_fn = resolve_initializer(initializer, residual=self.spec.residual)
        if generator is not None and generator.device.type != "cpu":
            raise ValueError("grow needs a CPU torch.Generator (init is drawn on CPU, then moved)")

        last: Block = self.stages[stage][-1]  # type: ignore[assignment]
        planes = last.out_channels // self.spec.block.expansion
        with torch.device("meta"):
            block = self.spec.block(last.out_channels, planes, 1)
        block.to_empty(device="cpu")
        base_init(self.weight_init)(block, generator)
        init_fn(block, generator)

        ref = next(last.parameters())
        block.to(device=ref.device, dtype=ref.dtype)
        if _is_channels_last(self):
            block.to(memory_format=torch.channels_last)
        block.train(self.training)

        index = len(self.stages[stage])
        self.stages[stage].append(block)
        return [f"stages.{stage}.{index}.{name}" for name, _ in block.named_parameters()]

    # -- export --------------------------------------------------------------------------------
    def save(self, path: str | PathLike[str]) -> None:
        """Write weights + BN buffers and the rebuild recipe to a safetensors file."""
        from .export import save_model

        save_model(self, path)


def build_net(
    family: str,
    arch: str | Arch,
    *,
    in_channels: int = 3,
    num_classes: int = 10,
    image_size: int = 32,
    width: float = 1.0,
    weight_init: str = "torch",
    generator: torch.Generator | None = None,
) -> GrowableNet:
    """Build a seed net with the `weight_init` base init (PyTorch's default unless asked),
    drawn from `generator` when given.

    The net is built on the meta device and materialised on CPU, so with a generator the global
    RNG is left untouched.
    """
    with torch.device("meta"):
        net = GrowableNet(
            family,
            arch,
            in_channels=in_channels,
            num_classes=num_classes,
            image_size=image_size,
            width=width,
            weight_init=weight_init,
        )
    net.to_empty(device="cpu")
    base_init(weight_init)(net, generator)
    return net


def _parse_depths(arch: str | Arch, spec: FamilySpec) -> Arch:
    if isinstance(arch, str):
        return parse_arch(arch, spec.num_stages)
    if isinstance(arch, (tuple, list)):
        if not all(isinstance(d, int) and not isinstance(d, bool) for d in arch):
            raise ValueError(f"arch {arch!r} must contain ints (blocks per stage)")
        return parse_arch(format_arch(tuple(arch)) if arch else "", spec.num_stages)
    raise ValueError(f"arch must be a string like '1-1-1' or a tuple of ints, got {arch!r}")


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _is_channels_last(net: nn.Module) -> bool:
    """True when some 4-D parameter is strictly channels_last (not also plain contiguous)."""
    for p in net.parameters():
        if p.dim() == 4 and not p.is_contiguous() and p.is_contiguous(
            memory_format=torch.channels_last
        ):
            return True
    return False
