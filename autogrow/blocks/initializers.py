"""Initializers for a new block (paper §2.2), in one registry.

Every new block first gets the net's base init (`WEIGHT_INITS`: PyTorch's default, or the
Kaiming-normal fan-out of the original's ImageNet models), drawn from an explicit generator so
growth is bit-identical on every process; a named initializer then adjusts it:

- zero      (ZeroInit)  last BN γ=β=0: a residual block then adds nothing (function-preserving).
- uniform   (UniInit)   last BN γ, β ~ U(0, 1).
- gaussian  (GauInit, alias `gau`, the paper's best) last BN γ, β ~ N(0, 1).
- adam      (AdamInit)  nothing here; the engine runs `adam_init` afterwards.
- default               nothing: PyTorch's default init everywhere.
- identity  plain block: Dirac conv + pass-through BN, so the eval-mode function is preserved;
            residual block: same as `zero`.

On plain blocks `uniform`/`gaussian` leave the default init (the paper treats only the last BN of
a *residual* block specially) and `zero` is refused, since it would zero the signal of every
deeper layer.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from autogrow.errors import InputError

from .layers import Block

Initializer = Callable[[Block, "torch.Generator | None"], None]


@torch.no_grad()
def default_init_(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """PyTorch's default init for every layer of `module`, drawn from `generator`.

    Same law and same draw order as the layers' own `reset_parameters` (kaiming_uniform a=√5,
    bias U(±1/√fan_in); BN γ=1, β=0, fresh running stats), but with an explicit generator so it
    does not consume the global RNG.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
            if m.bias is not None:
                fan_in, _ = nn.init._calculate_fan_in_and_fan_out(m.weight)
                bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                nn.init.uniform_(m.bias, -bound, bound, generator=generator)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_parameters()
        elif any(True for _ in m.parameters(recurse=False)):
            raise TypeError(f"default_init_ does not know how to initialise {type(m).__name__}")


@torch.no_grad()
def kaiming_fan_out_init_(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """The init of torchvision's (and the AutoGrow authors' ImageNet) ResNets: every conv
    N(0, 2/(out_channels·k·k)) (Kaiming normal, fan-out, ReLU), BN γ=1, β=0; linear layers keep
    PyTorch's default. Drawn from ``generator`` in module order."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.Linear, nn.modules.batchnorm._BatchNorm)):
            default_init_(m, generator)
        elif any(True for _ in m.parameters(recurse=False)):
            raise TypeError(f"kaiming_fan_out_init_ does not know how to initialise {type(m).__name__}")


#: How a whole net (and each new block) starts, before any named initializer: ``torch`` is what
#: the original's CIFAR-size models got, ``kaiming-fan-out`` its ImageNet models.
WEIGHT_INITS: dict[str, Callable[[nn.Module, "torch.Generator | None"], None]] = {
    "torch": default_init_,
    "kaiming-fan-out": kaiming_fan_out_init_,
}


def base_init(name: str) -> Callable[[nn.Module, "torch.Generator | None"], None]:
    """The whole-module init called ``name``; ValueError naming the choices if unknown."""
    if name not in WEIGHT_INITS:
        raise InputError(f"unknown weight init {name!r}; choose one of: {', '.join(WEIGHT_INITS)}")
    return WEIGHT_INITS[name]


@torch.no_grad()
def zero_init_(block: Block, generator: torch.Generator | None = None) -> None:
    """ZeroInit: last BN γ=β=0, so a residual block starts as the identity."""
    _require_residual(block, "zero")
    block.last_bn.weight.zero_()
    block.last_bn.bias.zero_()


@torch.no_grad()
def uniform_init_(block: Block, generator: torch.Generator | None = None) -> None:
    """UniInit: last BN γ, β ~ U(0, 1) on a residual block; plain blocks keep default init."""
    if block.residual:
        nn.init.uniform_(block.last_bn.weight, 0.0, 1.0, generator=generator)
        nn.init.uniform_(block.last_bn.bias, 0.0, 1.0, generator=generator)


@torch.no_grad()
def gaussian_init_(block: Block, generator: torch.Generator | None = None) -> None:
    """GauInit: last BN γ, β ~ N(0, 1) on a residual block; plain blocks keep default init."""
    if block.residual:
        nn.init.normal_(block.last_bn.weight, 0.0, 1.0, generator=generator)
        nn.init.normal_(block.last_bn.bias, 0.0, 1.0, generator=generator)


def keep_default_(block: Block, generator: torch.Generator | None = None) -> None:
    """`default` and `adam`: leave PyTorch's init (AdamInit's training is run by the engine)."""


@torch.no_grad()
def identity_init_(block: Block, generator: torch.Generator | None = None) -> None:
    """Function-preserving init for any block (eval mode).

    Plain block: the conv becomes a Dirac (identity) kernel and the BN a pass-through for its
    running stats (γ=√(running_var+eps), β=running_mean); the block's input is post-ReLU, so the
    final ReLU keeps it. Residual block: ZeroInit.
    """
    if block.residual:
        zero_init_(block, generator)
        return
    conv: nn.Conv2d = block.conv  # type: ignore[assignment]
    if conv.in_channels != conv.out_channels or conv.stride != (1, 1):
        raise InputError("identity init needs a stride-1 block with equal in/out channels")
    nn.init.dirac_(conv.weight)
    bn = block.last_bn
    bn.weight.copy_(torch.sqrt(bn.running_var + bn.eps))
    bn.bias.copy_(bn.running_mean)


def _require_residual(block: Block, name: str) -> None:
    if not block.residual:
        raise InputError(
            f"initializer {name!r} zeroes the last BN, which on a plain block (no shortcut) "
            "would cut the signal; use 'identity' for a function-preserving plain block"
        )


_REGISTRY: dict[str, Initializer] = {
    "zero": zero_init_,
    "uniform": uniform_init_,
    "gaussian": gaussian_init_,
    "adam": keep_default_,
    "default": keep_default_,
    "identity": identity_init_,
}
_ALIASES = {"gau": "gaussian"}

#: Names `GrowableNet.grow` accepts (canonical names, then aliases).
INITIALIZERS: tuple[str, ...] = tuple(_REGISTRY) + tuple(_ALIASES)


def canonical_initializer(name: str) -> str:
    """The canonical name of an initializer (`gau` → `gaussian`); ValueError if unknown."""
    key = name.lower() if isinstance(name, str) else name
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise InputError(f"unknown initializer {name!r}; choose one of: {', '.join(INITIALIZERS)}")
    return key


def resolve_initializer(name: str, *, residual: bool) -> Initializer:
    """The initializer function for `name`, checked against the block kind before any work."""
    key = canonical_initializer(name)
    if key == "zero" and not residual:
        raise InputError(
            "initializer 'zero' is only for residual families: on a plain block it would cut "
            "the signal; use 'identity' (function-preserving) or 'default'"
        )
    return _REGISTRY[key]
