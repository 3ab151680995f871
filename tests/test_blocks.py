"""GrowableNet: families, shapes, arch validation, growth mechanics, determinism, counts."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from torch import nn

from autogrow.blocks import (
    FAMILIES,
    INITIALIZERS,
    Block,
    GrowableNet,
    arch_cost,
    build_net,
    count_flops,
    count_params,
    weights_digest,
)

W = 0.25  # width multiplier that keeps every test CPU-cheap
STAGES = {f: (3 if "3" in f else 4) for f in FAMILIES}


def seed_arch(family: str, depth: int = 1) -> str:
    return "-".join([str(depth)] * STAGES[family])


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- families and shapes ----------------------------------------------------------------------


def test_registry_lists_the_five_families() -> None:
    assert FAMILIES == ("basic3resnet", "plain3net", "basic4resnet", "plain4net", "bottleneck4resnet")
    assert set(INITIALIZERS) >= {"zero", "uniform", "gaussian", "gau", "adam", "default", "identity"}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("depth_pattern", ["seed", "mixed"])
@pytest.mark.parametrize("in_channels,size", [(1, 28), (3, 32)])
def test_output_shape_small_images(family: str, depth_pattern: str, in_channels: int, size: int) -> None:
    arch = seed_arch(family) if depth_pattern == "seed" else "-".join("2131"[: STAGES[family]])
    net = build_net(
        family, arch, in_channels=in_channels, num_classes=7, image_size=size, width=W, generator=gen(0)
    )
    assert net.arch == arch and net.family == family
    assert net.depths == tuple(int(d) for d in arch.split("-"))
    assert not net.stem.imagenet
    out = net(torch.randn(2, in_channels, size, size))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("family", [f for f in FAMILIES if STAGES[f] == 4])
def test_imagenet_stem_output_shape(family: str) -> None:
    net = build_net(family, "1-2-1-1", num_classes=1000, image_size=224, width=W, generator=gen(0))
    assert net.stem.imagenet and isinstance(net.stem.pool, nn.MaxPool2d)
    assert net.stem.conv.kernel_size == (7, 7) and net.stem.conv.stride == (2, 2)
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 224, 224)).shape == (1, 1000)
        # resolution after stem: 56, then strides 1/2/2/2 → 7x7 at the last stage
        x = net.stem(torch.randn(1, 3, 224, 224))
        assert x.shape[-1] == 56
        for stage in net.stages:
            x = stage(x)
        assert x.shape[-1] == 7


def test_stem_rule_by_family_and_image_size() -> None:
    assert not build_net("plain4net", "1-1-1-1", image_size=63, width=W).stem.imagenet
    assert build_net("plain4net", "1-1-1-1", image_size=64, width=W).stem.imagenet
    # 3-stage families always keep the small stem
    net = build_net("basic3resnet", "1-1-1", image_size=224, width=W)
    assert not net.stem.imagenet and net.stem.conv.kernel_size == (3, 3)


def test_stage_layout_widths_strides_and_shortcuts() -> None:
    net = build_net("basic3resnet", "2-2-2", width=1.0)
    assert net.stem.conv.out_channels == 16
    assert [s[0].out_channels for s in net.stages] == [16, 32, 64]
    assert [s[0].conv1.stride for s in net.stages] == [(1, 1), (2, 2), (2, 2)]
    assert isinstance(net.stages[0][0].shortcut, nn.Identity)  # 16→16, stride 1
    assert isinstance(net.stages[1][0].shortcut, nn.Sequential)  # 16→32, stride 2: 1x1 conv + BN
    assert all(isinstance(s[1].shortcut, nn.Identity) and s[1].conv1.stride == (1, 1) for s in net.stages)

    bott = build_net("bottleneck4resnet", "1-1-1-1", width=W)
    assert [s[0].out_channels for s in bott.stages] == [64, 128, 256, 512]  # 16..128 planes x 4
    assert bott.stages[0][0].conv2.stride == (1, 1) and bott.stages[1][0].conv2.stride == (2, 2)
    assert bott.head.in_features == 512

    plain = build_net("plain4net", "1-1-1-1", width=0.5)
    assert [s[0].out_channels for s in plain.stages] == [32, 64, 128, 256]
    assert not hasattr(plain.stages[0][0], "shortcut")


def test_width_never_goes_below_four_channels() -> None:
    net = build_net("plain3net", "1-1-1", width=0.01)
    assert [s[0].out_channels for s in net.stages] == [4, 4, 4]
    assert net(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_arch_tuple_and_string_agree() -> None:
    a = build_net("plain3net", (2, 1, 3), width=W, generator=gen(1))
    b = build_net("plain3net", "2-1-3", width=W, generator=gen(1))
    assert a.arch == "2-1-3" and a.depths == (2, 1, 3)
    assert weights_digest(a) == weights_digest(b)


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "family,arch,match",
    [
        ("basic3resnet", "3-x-3", "malformed"),
        ("basic3resnet", "0-1-1", "at least 1 block"),
        ("basic3resnet", "", "empty"),
        ("basic3resnet", "1-1", "has 2 stages but this family has 3"),
        ("basic4resnet", "1-1-1", "has 3 stages but this family has 4"),
        ("plain3net", (1, 0, 1), "at least 1 block"),
        ("plain3net", (1, "2", 1), "ints"),
        ("plain3net", 3, "arch must be"),
    ],
)
def test_bad_arch_raises_value_error(family: str, arch: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_net(family, arch)  # type: ignore[arg-type]


def test_unknown_family_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown network family 'resnet50'") as info:
        build_net("resnet50", "1-1-1")
    for name in FAMILIES:
        assert name in str(info.value)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"width": 0}, "width"),
        ({"width": -1.0}, "width"),
        ({"width": math.nan}, "width"),
        ({"in_channels": 0}, "in_channels"),
        ({"num_classes": 0}, "num_classes"),
        ({"image_size": 0}, "image_size"),
    ],
)
def test_bad_constructor_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_net("plain3net", "1-1-1", **kwargs)


def test_bad_grow_arguments_leave_net_untouched() -> None:
    net = build_net("plain3net", "1-1-1", width=W, generator=gen(0))
    before = weights_digest(net)
    with pytest.raises(ValueError, match="unknown initializer 'xavier'") as info:
        net.grow(0, "xavier")
    for name in INITIALIZERS:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="'zero' is only for residual"):
        net.grow(0, "zero")
    with pytest.raises(ValueError, match=r"stage must be an int in 0\.\.2"):
        net.grow(3)
    with pytest.raises(ValueError, match="stage must be"):
        net.grow(-1)
    assert net.arch == "1-1-1" and weights_digest(net) == before


# -- growth -----------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_grow_appends_stride1_block_and_keeps_existing_params(family: str) -> None:
    net = build_net(family, seed_arch(family), width=W, generator=gen(0))
    old = {k: v.clone() for k, v in net.state_dict().items()}
    old_order = [n for n, _ in net.named_parameters()]
    stage = 1
    names = net.grow(stage, "gau", generator=gen(5))

    expect = list(seed_arch(family, 1).replace("-", ""))
    expect[stage] = "2"
    assert net.arch == "-".join(expect)
    new = net.stages[stage][-1]
    assert isinstance(new, Block)
    assert all(m.stride == (1, 1) for m in new.modules() if isinstance(m, nn.Conv2d))
    assert new.out_channels == net.stages[stage][0].out_channels
    # returned names: exactly the new block's parameters, under their full dotted names
    params = dict(net.named_parameters())
    assert names == [n for n in params if n.startswith(f"stages.{stage}.1.")]
    assert set(params) - set(old_order) == set(names)
    # old names unchanged, in the same relative order; old values bit-identical
    assert [n for n in params if n not in names] == old_order
    state = net.state_dict()
    for k, v in old.items():
        assert torch.equal(state[k], v), k
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_grow_repeatedly_names_blocks_in_order() -> None:
    net = build_net("basic3resnet", "1-1-1", width=W)
    assert net.grow(2, "zero", gen(0))[0] == "stages.2.1.conv1.weight"
    assert net.grow(2, "zero", gen(1))[0] == "stages.2.2.conv1.weight"
    assert net.grow(0, "zero", gen(2))[0] == "stages.0.1.conv1.weight"
    assert net.arch == "2-1-3"


def test_same_generator_seed_gives_bit_identical_growth() -> None:
    torch.manual_seed(1)
    a = build_net("basic3resnet", "1-1-1", width=W)
    torch.manual_seed(2)  # different seed net, different global RNG state
    b = build_net("basic3resnet", "1-1-1", width=W)
    na = a.grow(1, "gau", generator=gen(42))
    rng_before = torch.random.get_rng_state()
    nb = b.grow(1, "gau", generator=gen(42))
    assert torch.equal(rng_before, torch.random.get_rng_state()), "grow must not touch the global RNG"
    assert na == nb
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    for n in na:
        assert torch.equal(pa[n], pb[n]), n
    c = build_net("basic3resnet", "1-1-1", width=W)
    nc = c.grow(1, "gau", generator=gen(43))
    assert not torch.equal(pa[na[0]], dict(c.named_parameters())[nc[0]])


_SUBPROCESS_GROW = """
import torch
from autogrow.blocks import build_net, weights_digest
net = build_net("basic3resnet", "1-1-1", width=0.25, generator=torch.Generator().manual_seed(3))
net.grow(2, "gau", generator=torch.Generator().manual_seed(9))
print(weights_digest(net))
"""


def test_growth_is_bit_identical_in_another_process() -> None:
    net = build_net("basic3resnet", "1-1-1", width=W, generator=gen(3))
    net.grow(2, "gau", generator=gen(9))
    out = subprocess.run(
        [sys.executable, "-c", _SUBPROCESS_GROW], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == weights_digest(net)


def test_build_net_with_generator_is_deterministic_and_leaves_global_rng() -> None:
    state = torch.random.get_rng_state()
    a = build_net("plain4net", "1-1-1-1", width=W, generator=gen(7))
    assert torch.equal(state, torch.random.get_rng_state())
    b = build_net("plain4net", "1-1-1-1", width=W, generator=gen(7))
    assert weights_digest(a) == weights_digest(b)
    assert weights_digest(a) != weights_digest(build_net("plain4net", "1-1-1-1", width=W, generator=gen(8)))


def test_new_block_follows_channels_last_dtype_and_mode() -> None:
    net = build_net("basic3resnet", "1-1-1", width=W).to(memory_format=torch.channels_last)
    net.grow(1, "gau", gen(0))
    new = net.stages[1][-1]
    for conv in (new.conv1, new.conv2):
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)
        assert not conv.weight.is_contiguous()
    assert new.training
    x = torch.randn(2, 3, 32, 32).to(memory_format=torch.channels_last)
    assert net(x).shape == (2, 10)

    plain = build_net("plain3net", "1-1-1", width=W).to(torch.float64).eval()
    plain.grow(0, "default", gen(0))
    new = plain.stages[0][-1]
    assert new.conv.weight.dtype == torch.float64 and new.bn.running_var.dtype == torch.float64
    assert new.bn.num_batches_tracked.dtype == torch.int64
    assert new.conv.weight.is_contiguous() and not new.training


def test_bf16_growth_matches_fp32_growth_cast() -> None:
    a = build_net("basic3resnet", "1-1-1", width=W, generator=gen(0))
    b = build_net("basic3resnet", "1-1-1", width=W, generator=gen(0)).to(torch.bfloat16)
    na = a.grow(0, "gau", gen(4))
    b.grow(0, "gau", gen(4))
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    for n in na:  # init drawn in fp32 on CPU, then cast
        assert pb[n].dtype == torch.bfloat16 and torch.equal(pa[n].to(torch.bfloat16), pb[n])


# -- counts -----------------------------------------------------------------------------------


def test_plain3net_params_and_flops_match_hand_count() -> None:
    c0, c1, c2, k = 4, 8, 16, 9  # width 0.25: 16/32/64 → 4/8/16
    net = build_net("plain3net", "1-1-1", width=W, num_classes=10)
    bn = lambda c: 2 * c  # noqa: E731  γ and β; running stats are buffers
    params = (3 * c0 * k + bn(c0)) + (c0 * c0 * k + bn(c0)) + (c0 * c1 * k + bn(c1))
    params += (c1 * c2 * k + bn(c2)) + (c2 * 10 + 10)
    assert count_params(net) == params == 1926
    # FLOPs: 2 per multiply-add, convs + head only; 32x32 → 32 → 16 → 8
    flops = 2 * (32 * 32 * c0 * 3 * k + 32 * 32 * c0 * c0 * k + 16 * 16 * c1 * c0 * k)
    flops += 2 * (8 * 8 * c2 * c1 * k + c2 * 10)
    assert count_flops(net, 32) == flops == 811328

    net.grow(1, "default", gen(0))
    assert count_params(net) == params + c1 * c1 * k + bn(c1)
    assert count_flops(net) == flops + 2 * 16 * 16 * c1 * c1 * k


@pytest.mark.parametrize("family", FAMILIES)
def test_counts_grow_with_depth_and_arch_cost_matches(family: str) -> None:
    net = build_net(family, seed_arch(family), width=W)
    p0, f0 = count_params(net), count_flops(net)
    assert arch_cost(family, seed_arch(family), width=W) == {"params": p0, "flops": f0}
    net.train()
    net.grow(STAGES[family] - 1, "default", gen(0))
    assert net.training  # count_flops restores the mode
    p1, f1 = count_params(net), count_flops(net)
    assert p1 > p0 and f1 > f0
    assert arch_cost(family, net.arch, width=W) == {"params": p1, "flops": f1}


def test_full_width_counts_match_torchvision_resnets() -> None:
    """Bottleneck4ResNet 3-4-6-3 is ResNet-50, Basic4ResNet 2-2-2-2 is ResNet-18."""
    import torchvision
    from torch.utils.flop_counter import FlopCounterMode

    for family, arch, ctor in [
        ("bottleneck4resnet", "3-4-6-3", torchvision.models.resnet50),
        ("basic4resnet", "2-2-2-2", torchvision.models.resnet18),
    ]:
        with torch.device("meta"):
            ref = ctor().eval()
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                ref(torch.zeros(1, 3, 224, 224))
        ours = arch_cost(family, arch, num_classes=1000, image_size=224)
        assert ours == {"params": count_params(ref), "flops": counter.get_total_flops()}
    # ResNet-20 (CIFAR) with projection shortcuts: ~0.27 M parameters
    assert 269_000 < arch_cost("basic3resnet", "3-3-3")["params"] < 280_000


def test_growable_net_is_a_module_with_repr() -> None:
    net = build_net("plain3net", "1-2-1", width=W)
    assert isinstance(net, GrowableNet) and isinstance(net, nn.Module)
    assert "arch='1-2-1'" in repr(net)
    assert net.config == {"in_channels": 3, "num_classes": 10, "image_size": 32, "width": 0.25,
                          "weight_init": "torch"}
