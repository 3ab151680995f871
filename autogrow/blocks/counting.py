"""Parameter and FLOP counts of any arch (paper tables report both as growth goes on)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..arch import Arch
from .net import GrowableNet


def count_params(net: nn.Module) -> int:
    """Number of parameters (BN running stats are buffers and not counted)."""
    return sum(p.numel() for p in net.parameters())


def count_flops(net: GrowableNet, image_size: int | None = None) -> int:
    """FLOPs of one forward pass on one image, as torch's FlopCounterMode reports them.

    A multiply-add counts as 2 FLOPs (torch's convention); only convs and the linear head are
    counted (BN, ReLU, pooling are not). Runs in eval mode under no_grad and restores the mode.
    """
    size = net.image_size if image_size is None else int(image_size)
    ref = next(net.parameters())
    x = torch.zeros(1, net.in_channels, size, size, device=ref.device, dtype=ref.dtype)
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            net(x)
    finally:
        net.train(was_training)
    return int(counter.get_total_flops())


def arch_cost(
    family: str,
    arch: str | Arch,
    *,
    in_channels: int = 3,
    num_classes: int = 10,
    image_size: int = 32,
    width: float = 1.0,
) -> dict[str, int]:
    """{"params", "flops"} of an arch without allocating or initialising weights (meta device)."""
    with torch.device("meta"):
        net = GrowableNet(
            family,
            arch,
            in_channels=in_channels,
            num_classes=num_classes,
            image_size=image_size,
            width=width,
        )
    return {"params": count_params(net), "flops": count_flops(net, image_size)}
