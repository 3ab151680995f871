"""The units a GrowableNet is made of: stems and the three growable block types.

Every block exposes `last_bn` (the BatchNorm the paper's initializers act on), `residual`
(whether it has a shortcut, i.e. whether zeroing `last_bn` preserves the function) and
`out_channels`. Child names are fixed (conv1/bn1/…) because optimizer state and snapshots
map parameters by dotted name.
"""

from __future__ import annotations

from torch import Tensor, nn


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (a BatchNorm follows)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution without bias (projection shortcuts, bottleneck ends)."""
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
