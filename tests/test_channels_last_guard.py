"""The guard against PyTorch's CPU failures in 1x1 strided convs in channels_last.

torch 2.14.1's oneDNN breaks in the weight gradient of such a conv with few input channels, in
a range that depends on the CPU: on an Intel Xeon (AVX-512) it corrupted the heap ("corrupted
double-linked list", SIGSEGV) with 2-15 channels at 48-112 px (the projection shortcut of a
narrow net at ImageNet sizes); on an AMD EPYC Zen 3 (AVX2) it died or hung with 2-6 channels at
8 px and up, the smoke preset's own 4 channels at 28 px included. The subprocess tests run those
shapes through the project's layers; with the guard they finish. With the guard switched off
the 4@56, 2@56 and 15@112 shapes and the Basic4ResNet fp32 case crashed the Xeon, and the 4@28
and 6@14 shapes the EPYC (the corruption is not certain to strike in every run).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from autogrow.blocks import build_net
from autogrow.blocks.layers import StridedPointwiseConv, conv1x1, cpu_channels_last_unsafe
from tests.conftest import REPO

CL = torch.channels_last


def _x(c: int, size: int, fmt=CL) -> torch.Tensor:
    return torch.randn(2, c, size, size).contiguous(memory_format=fmt)


@pytest.mark.parametrize("channels, size, fmt, kernel, stride, unsafe", [
    (4, 56, CL, 1, 2, True), (8, 48, CL, 1, 2, True), (15, 112, CL, 1, 2, True),
    (2, 33, CL, 1, 2, True),
    (4, 28, CL, 1, 2, True), (6, 8, CL, 1, 2, True),  # broke on a Zen 3, not on a Xeon
    (64, 32, CL, 1, 2, True),  # never seen to break: guarded all the same (no CPU's range)
    (4, 56, torch.contiguous_format, 1, 2, False),  # NCHW never broke
    (4, 56, CL, 1, 1, False), (4, 56, CL, 3, 2, False),  # nor other convs
])
def test_the_rule(channels, size, fmt, kernel, stride, unsafe):
    x = _x(channels, size, fmt)
    assert cpu_channels_last_unsafe((kernel, kernel), (stride, stride), x) is unsafe


GUARDED_STEPS = """
import sys, torch
from autogrow.blocks.layers import conv1x1
c, size = int(sys.argv[1]), int(sys.argv[2])
torch.manual_seed(0)
conv = conv1x1(c, 2 * c, 2).to(memory_format=torch.channels_last)
for _ in range(300):
    x = torch.randn(8, c, size, size).contiguous(memory_format=torch.channels_last)
    y = conv(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    y.sum().backward()
print("ok")
"""

NET_STEPS = """
import sys, torch
import torch.nn.functional as F
from autogrow.blocks import build_net
family, width, precision = sys.argv[1], float(sys.argv[2]), sys.argv[3]
torch.manual_seed(0)
net = build_net(family, "1-1-1-1", in_channels=3, num_classes=10, image_size=224, width=width,
                generator=torch.Generator().manual_seed(0)).to(memory_format=torch.channels_last)
opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
for _ in range(12):
    x = torch.randn(8, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        loss = F.cross_entropy(net(x), torch.randint(0, 10, (8,)))
    opt.zero_grad()
    loss.backward()
    opt.step()
print("ok")
"""


def _survives(code: str, *args: str) -> None:
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          cwd=REPO, timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", (proc.returncode, proc.stderr[-2000:])


@pytest.mark.parametrize("channels, size", [(4, 56), (8, 112), (2, 56), (15, 112), (4, 28),
                                            (6, 14)])
def test_the_exact_crashing_shapes_train_in_a_fresh_process(channels, size):
    _survives(GUARDED_STEPS, str(channels), str(size))


@pytest.mark.parametrize("family, width, precision", [
    ("basic4resnet", 0.125, "fp32"), ("basic4resnet", 0.125, "bf16"),
    ("bottleneck4resnet", 0.03125, "fp32"),
])
def test_narrow_imagenet_nets_train_in_channels_last(family, width, precision):
    """The case the guard exists for: stage 1 of 8 channels at 56 px into a stride-2 shortcut."""
    _survives(NET_STEPS, family, str(width), precision)


@pytest.mark.parametrize("family", ["basic3resnet", "basic4resnet", "bottleneck4resnet"])
@pytest.mark.parametrize("width", [0.03125, 0.125, 0.5])
def test_every_strided_pointwise_conv_of_every_family_is_guarded(family, width):
    stages = 3 if family.startswith("basic3") else 4
    net = build_net(family, "-".join(["2"] * stages), image_size=224 if stages == 4 else 32,
                    in_channels=3, width=width)
    for name, m in net.named_modules():
        if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and max(m.stride) > 1:
            assert isinstance(m, StridedPointwiseConv), name


def test_the_guarded_conv_computes_what_the_same_conv_computes_in_nchw():
    """Forward and both gradients, bit for bit, at a CIFAR and an ImageNet size; the output
    and the weight's gradient keep the channels_last strides of the input and the weight."""
    for channels, size in ((4, 28), (4, 56), (32, 16)):
        torch.manual_seed(0)
        guarded = conv1x1(channels, 2 * channels, 2)
        plain = nn.Conv2d(channels, 2 * channels, 1, stride=2, bias=False)
        plain.load_state_dict(guarded.state_dict())
        guarded = guarded.to(memory_format=CL)
        x = _x(channels, size)
        x_cl, x_nchw = x.clone().requires_grad_(), x.contiguous().requires_grad_()
        out, reference = guarded(x_cl), plain(x_nchw)
        assert out.is_contiguous(memory_format=CL)
        assert torch.equal(out, reference)
        grad = torch.randn_like(reference)
        out.backward(grad)
        reference.backward(grad)
        assert torch.equal(x_cl.grad, x_nchw.grad)
        assert torch.equal(guarded.weight.grad, plain.weight.grad)
        assert guarded.weight.grad.stride() == guarded.weight.stride()
