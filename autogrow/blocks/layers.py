"""The units a GrowableNet is made of: stems and the three growable block types.

Every block exposes `last_bn` (the BatchNorm the paper's initializers act on), `residual`
(whether it has a shortcut, i.e. whether zeroing `last_bn` preserves the function) and
`out_channels`. Child names are fixed (conv1/bn1/…) because optimizer state and snapshots
map parameters by dotted name.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# PyTorch's CPU convolution (oneDNN, torch 2.14.1) breaks in the weight gradient of a 1x1
# strided conv in channels_last with few input channels, and where it breaks depends on the CPU:
# on an Intel Xeon (AVX-512) it corrupted the heap with 2-15 input channels at 48-112 px; on an
# AMD EPYC Zen 3 (AVX2) with 2-6 channels at every size from 8 px (SIGSEGV with one thread, a
# hang with two) -- the smoke preset's own shortcut (4 channels at 28 px) among them. No other
# conv ever broke (1x1 stride 1, 3x3 at any stride, any conv in NCHW: benchmarks/RESULTS.md §6).
# A rule drawn from one CPU's range failed on the next, so on CPU every 1x1 strided conv on a
# channels_last input computes in NCHW, whatever its width or input size: the projection
# shortcuts only, one or two per net, whose copies cost little.


def cpu_channels_last_unsafe(kernel: tuple[int, ...], stride: tuple[int, ...], x: Tensor) -> bool:
    """Whether a conv of this shape on ``x`` is one whose channels_last weight gradient oneDNN
    can break on CPU: a 1x1 strided conv on a channels_last CPU input, of any width and size
    (the range that breaks differs between CPUs, see above)."""
    return (x.device.type == "cpu" and x.dim() == 4
            and tuple(kernel) == (1, 1) and max(stride) > 1
            and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())


class _NCHWCopy(torch.autograd.Function):
    """``w.clone(memory_format=torch.contiguous_format)`` whose gradient comes back in ``w``'s
    own strides. A plain clone hands back an NCHW-strided gradient for a channels_last
    parameter; a 1x1 weight's two stride sets describe the same memory, so autograd keeps it,
    but DDP's gradient buckets follow the parameter's strides and warn on every process
    ("Grad strides do not match bucket view strides", and a copy per step). Only strides
    change here, never a value."""

    @staticmethod
    def forward(ctx: object, w: Tensor) -> Tensor:
        ctx.geometry = (w.shape, w.stride())  # type: ignore[attr-defined]
        return w.clone(memory_format=torch.contiguous_format)

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> Tensor:
        shape, stride = ctx.geometry  # type: ignore[attr-defined]
        return torch.empty_strided(shape, stride, dtype=grad.dtype, device=grad.device).copy_(grad)


class StridedPointwiseConv(nn.Conv2d):
    """A 1x1 strided conv that computes in NCHW where channels_last would crash on CPU
    (:func:`cpu_channels_last_unsafe`); elsewhere exactly ``nn.Conv2d``. Its output keeps the
    input's memory format, so the rest of the net is unaffected."""

    def _conv_forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if cpu_channels_last_unsafe(self.kernel_size, self.stride, x):
            # a copy: a 1x1 weight counts as contiguous in both formats, so .contiguous() would
            # keep its channels_last strides and oneDNN would still take the channels_last path
            nchw_weight = _NCHWCopy.apply(weight)
            out = super()._conv_forward(x.contiguous(), nchw_weight, bias)
            return out.contiguous(memory_format=torch.channels_last)
        return super()._conv_forward(x, weight, bias)


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (a BatchNorm follows)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution without bias (projection shortcuts, bottleneck ends)."""
    if stride > 1:
        return StridedPointwiseConv(in_channels, out_channels, 1, stride=stride, bias=False)
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """Identity when shapes match, else 1x1 conv + BN (ResNet option B)."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))


class Block(nn.Module):
    """Base of the growable sub-modules (paper: "sub-module")."""

    residual: bool = False
    expansion: int = 1
    out_channels: int

    @property
    def last_bn(self) -> nn.BatchNorm2d:  # pragma: no cover - overridden
        raise NotImplementedError


class PlainBlock(Block):
    """conv3x3-BN-ReLU: the sub-module of Plain3Net / Plain4Net."""

    residual = False
    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.out_channels = planes
        self.conv = conv3x3(in_channels, planes, stride)
        self.bn = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(x)))


class BasicBlock(Block):
    """Two 3x3 convs with a shortcut (He et al. 2016): the sub-module of Basic3/4ResNet."""

    residual = True
    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.out_channels = planes
        self.conv1 = conv3x3(in_channels, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_channels, planes, stride)
        self.relu = nn.ReLU(inplace=True)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class Bottleneck(Block):
    """1x1-3x3-1x1 residual block, expansion 4, stride on the 3x3 (torchvision's ResNet v1.5)."""

    residual = True
    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.out_channels = out
        self.conv1 = conv1x1(in_channels, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out)
        self.bn3 = nn.BatchNorm2d(out)
        self.shortcut = _shortcut(in_channels, out, stride)
        self.relu = nn.ReLU(inplace=True)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


class Stem(nn.Module):
    """conv-BN-ReLU(-maxpool) in front of stage 0.

    `imagenet=False`: 3x3 stride-1 conv for 28–32 px inputs (CIFAR/MNIST-style).
    `imagenet=True`: 7x7 stride-2 conv + 3x3 stride-2 max-pool (He et al. 2016).
    """

    def __init__(self, in_channels: int, out_channels: int, imagenet: bool) -> None:
        super().__init__()
        self.imagenet = imagenet
        if imagenet:
            self.conv = nn.Conv2d(in_channels, out_channels, 7, stride=2, padding=3, bias=False)
        else:
            self.conv = conv3x3(in_channels, out_channels)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.pool: nn.Module = (
            nn.MaxPool2d(3, stride=2, padding=1) if imagenet else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.relu(self.bn(self.conv(x))))
