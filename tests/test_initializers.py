"""Initializers of a new block (ZeroInit, UniInit, GauInit, identity, default) and AdamInit."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from autogrow.blocks import FAMILIES, adam_init, build_net, canonical_initializer, default_init_
from autogrow.blocks.initializers import identity_init_, zero_init_
from autogrow.blocks.layers import BasicBlock, PlainBlock

W = 0.25
STAGES = {f: (3 if "3" in f else 4) for f in FAMILIES}
RESIDUAL = [f for f in FAMILIES if "plain" not in f]
PLAIN = [f for f in FAMILIES if "plain" in f]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def trained_stats_net(family: str, size: int = 32) -> nn.Module:
    """A net whose BN running stats are not the defaults, in eval mode."""
    net = build_net(family, "-".join(["1"] * STAGES[family]), width=W, generator=gen(0))
    net.train()
    with torch.no_grad():
        for i in range(3):
            net(torch.randn(8, 3, size, size, generator=gen(100 + i)) * 2 + 0.5)
    return net.eval()


# -- default init law -------------------------------------------------------------------------


def test_default_init_matches_pytorch_reset_parameters() -> None:
    torch.manual_seed(3)
    ref = BasicBlock(8, 8)
    mine = BasicBlock(8, 8)
    default_init_(mine, gen(3))
    for (n, a), (_, b) in zip(ref.state_dict().items(), mine.state_dict().items()):
        assert torch.equal(a, b), n
    torch.manual_seed(5)
    lin = nn.Linear(6, 3)
    lin2 = nn.Linear(6, 3)
    default_init_(lin2, gen(5))
    assert torch.equal(lin.weight, lin2.weight) and torch.equal(lin.bias, lin2.bias)


def test_aliases_and_canonical_names() -> None:
    assert canonical_initializer("gau") == "gaussian"
    assert canonical_initializer("GAU") == "gaussian"
    assert canonical_initializer("zero") == "zero"


# -- function preservation --------------------------------------------------------------------


@pytest.mark.parametrize("family", RESIDUAL)
@pytest.mark.parametrize("initializer", ["zero", "identity"])
def test_zero_init_on_residual_block_preserves_eval_output(family: str, initializer: str) -> None:
    net = trained_stats_net(family)
    x = torch.randn(4, 3, 32, 32, generator=gen(1))
    with torch.no_grad():
        before = net(x)
        for stage in range(STAGES[family]):
            names = net.grow(stage, initializer, gen(stage))
            bn = net.stages[stage][-1].last_bn
            assert torch.count_nonzero(bn.weight) == 0 and torch.count_nonzero(bn.bias) == 0
            assert f"stages.{stage}.1.conv1.weight" in names
        after = net(x)
    assert not net.training and net.arch == "-".join(["2"] * STAGES[family])
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", PLAIN)
def test_identity_init_on_plain_block_preserves_eval_output(family: str) -> None:
    net = trained_stats_net(family)
    x = torch.randn(4, 3, 32, 32, generator=gen(1))
    with torch.no_grad():
        before = net(x)
        for stage in range(STAGES[family]):
            net.grow(stage, "identity", gen(stage))
            net.grow(stage, "identity", gen(10 + stage))  # stacking identities stays identity
        after = net(x)
    assert net.arch == "-".join(["3"] * STAGES[family])
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)


def test_identity_plain_block_parameters() -> None:
    block = PlainBlock(4, 4)
    default_init_(block, gen(0))
    identity_init_(block, gen(0))
    w = block.conv.weight
    assert torch.equal(w[:, :, 1, 1], torch.eye(4)) and w.sum() == 4
    assert torch.allclose(block.bn.weight, torch.full((4,), (1 + block.bn.eps) ** 0.5))
    assert torch.equal(block.bn.bias, torch.zeros(4))
    x = torch.relu(torch.randn(2, 4, 5, 5))
    torch.testing.assert_close(block.eval()(x), x, atol=1e-6, rtol=0)


def test_default_init_on_plain_block_changes_output() -> None:
    """Sanity check that the preservation tests above are not vacuous."""
    net = trained_stats_net("plain3net")
    x = torch.randn(2, 3, 32, 32, generator=gen(1))
    with torch.no_grad():
        before = net(x)
        net.grow(1, "default", gen(0))
        assert not torch.allclose(net(x), before, atol=1e-3)


def test_zero_init_function_refuses_plain_block() -> None:
    with pytest.raises(ValueError, match="plain block"):
        zero_init_(PlainBlock(4, 4))


# -- random last-BN initializers --------------------------------------------------------------


def _grow_pair(family: str, initializer: str, seed: int = 7):
    """Grow the same stage of two identical nets, one with `default`, one with `initializer`."""
    a = build_net(family, "-".join(["1"] * STAGES[family]), width=W, generator=gen(0))
    b = build_net(family, "-".join(["1"] * STAGES[family]), width=W, generator=gen(0))
    old = {k: v.clone() for k, v in b.state_dict().items()}
    ga = gen(seed)
    names_a = a.grow(1, "default", ga)
    names_b = b.grow(1, initializer, gen(seed))
    assert names_a == names_b
    return a, b, names_b, old, ga


@pytest.mark.parametrize("family", RESIDUAL)
@pytest.mark.parametrize("initializer", ["gaussian", "gau", "uniform"])
def test_random_inits_change_only_the_last_bn_of_the_new_block(family: str, initializer: str) -> None:
    a, b, names, old, ga = _grow_pair(family, initializer)
    last_bn = b.stages[1][-1].last_bn
    last = {n for n in names if any(p is dict(b.named_parameters())[n] for p in (last_bn.weight, last_bn.bias))}
    assert len(last) == 2 and all(n.split(".")[3].startswith("bn") for n in last)

    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    for n in names:  # every other param of the new block: default init from the same draws
        if n not in last:
            assert torch.equal(pa[n], pb[n]), n
    # the last BN follows the initializer's law, drawn right after the default init
    gamma, beta = torch.empty_like(last_bn.weight), torch.empty_like(last_bn.bias)
    if initializer == "uniform":
        gamma.uniform_(0, 1, generator=ga), beta.uniform_(0, 1, generator=ga)
        assert (last_bn.weight >= 0).all() and (last_bn.weight < 1).all()
    else:
        gamma.normal_(0, 1, generator=ga), beta.normal_(0, 1, generator=ga)
        assert (last_bn.weight < 0).any()
    assert torch.equal(last_bn.weight, gamma) and torch.equal(last_bn.bias, beta)
    # old parameters and buffers are bit-identical
    state = b.state_dict()
    for k, v in old.items():
        assert torch.equal(state[k], v), k


@pytest.mark.parametrize("initializer", ["gaussian", "uniform", "adam", "default"])
def test_plain_block_keeps_default_init_for_non_zero_initializers(initializer: str) -> None:
    a, b, names, _, _ = _grow_pair("plain3net", initializer)
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    for n in names:
        assert torch.equal(pa[n], pb[n]), n


@pytest.mark.parametrize("family", ["basic3resnet", "plain3net"])
def test_adam_initializer_leaves_default_init_at_grow_time(family: str) -> None:
    a, b, names, _, _ = _grow_pair(family, "adam")
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    assert all(torch.equal(pa[n], pb[n]) for n in names)
    bn = b.stages[1][-1].last_bn
    assert torch.equal(bn.weight, torch.ones_like(bn.weight)) and torch.equal(bn.bias, torch.zeros_like(bn.bias))


# -- AdamInit procedure -----------------------------------------------------------------------


def _toy_batches(n_batches: int = 4, batch: int = 16, size: int = 16):
    """Fixed, learnable 2-class data: class = sign of the image mean."""
    xs = [torch.randn(batch, 3, size, size, generator=gen(50 + i)) for i in range(n_batches)]
    data = [(x, (x.mean(dim=(1, 2, 3)) > 0).long()) for x in xs]
    return lambda: iter(data)


def test_adam_init_trains_only_the_new_last_bn_and_restores_flags() -> None:
    net = build_net("basic3resnet", "1-1-1", num_classes=2, image_size=16, width=W, generator=gen(0))
    names = net.grow(2, "adam", gen(1))
    net.head.bias.requires_grad_(False)  # a pre-existing frozen flag must survive
    net.eval()
    flags = {n: p.requires_grad for n, p in net.named_parameters()}
    before = {n: p.detach().clone() for n, p in net.named_parameters()}

    stats = adam_init(net, names, _toy_batches(), max_epochs=4, lr=0.05)

    assert stats["epochs"] == 4 and not stats["reached"] and stats["target_train_acc"] is None
    assert stats["trained_params"] == ["stages.2.1.bn2.weight", "stages.2.1.bn2.bias"]
    hist = stats["history"]
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
    assert hist[-1]["loss"] < hist[0]["loss"]  # the BN was actually trained
    assert stats["train_acc"] == hist[-1]["train_acc"] and 0 <= stats["train_acc"] <= 100
    after = dict(net.named_parameters())
    for n, v in before.items():
        changed = not torch.equal(after[n], v)
        assert changed == (n in stats["trained_params"]), n
    assert {n: p.requires_grad for n, p in net.named_parameters()} == flags
    assert not net.training


def test_adam_init_stops_when_target_is_reached_and_accepts_iterables() -> None:
    net = build_net("plain3net", "1-1-1", num_classes=2, image_size=16, width=W, generator=gen(0))
    names = net.grow(0, "adam", gen(1))
    data = list(_toy_batches()())
    stats = adam_init(net, names, data, target_train_acc=0.0)
    assert stats["epochs"] == 1 and stats["reached"]
    stats = adam_init(net, names, data, max_epochs=2, target_train_acc=101.0)
    assert stats["epochs"] == 2 and not stats["reached"]
    assert stats["trained_params"] == ["stages.0.1.bn.weight", "stages.0.1.bn.bias"]


def test_adam_init_stops_within_half_a_point_of_the_target_strictly() -> None:
    """The original stops once accuracy > pre-growth accuracy - 0.5 (cifar10/main_gradual.py:
    227-241): a target 0.4 above the first epoch's accuracy stops there, 0.5 above does not."""
    net = build_net("basic3resnet", "1-1-1", num_classes=2, image_size=16, width=W, generator=gen(0))
    names = net.grow(2, "adam", gen(1))
    data = list(_toy_batches()())
    first = adam_init(copy.deepcopy(net), names, data, max_epochs=1)["train_acc"]
    assert adam_init(copy.deepcopy(net), names, data, max_epochs=3,
                     target_train_acc=first + 0.4)["epochs"] == 1
    assert adam_init(copy.deepcopy(net), names, data, max_epochs=3,
                     target_train_acc=first + 0.5)["epochs"] > 1


def test_adam_init_applies_the_runs_weight_decay() -> None:
    """Adam gets the run's weight decay, as the original (weight_decay=5e-4 or 1e-4)."""
    net = build_net("basic3resnet", "1-1-1", num_classes=2, image_size=16, width=W, generator=gen(0))
    names = net.grow(2, "adam", gen(1))
    data = list(_toy_batches()())
    bns = []
    for wd in (0.0, 0.5):
        trial = copy.deepcopy(net)
        adam_init(trial, names, data, max_epochs=2, weight_decay=wd)
        bns.append(trial.stages[2][1].bn2.weight.detach().clone())
    assert not torch.equal(bns[0], bns[1])
    with pytest.raises(ValueError, match="weight_decay"):
        adam_init(net, names, data, weight_decay=-1.0)


# -- base init of whole nets (the original's ImageNet models) ----------------------------------


def _conv_stds(module: nn.Module) -> list[tuple[float, float]]:
    """(measured std, Kaiming fan-out std) of every conv with enough weights to measure."""
    out = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d) and m.weight.numel() >= 2000:
            k = m.kernel_size[0] * m.kernel_size[1]
            out.append((float(m.weight.detach().std()), (2.0 / (m.out_channels * k)) ** 0.5))
    return out


@pytest.mark.parametrize("family", ["basic4resnet", "bottleneck4resnet", "plain4net"])
def test_kaiming_fan_out_init_of_seed_net_and_new_blocks(family: str) -> None:
    """As the original's imagenet/models/resnet.py:131-136: every conv N(0, 2/(out·k·k)), BN
    γ=1 β=0 (new blocks included, since the original rebuilds the whole model at a growth)."""
    net = build_net(family, "1-1-1-1", image_size=64, width=0.5, weight_init="kaiming-fan-out",
                    generator=gen(0))
    names = net.grow(1, "default", gen(1))
    new_block = net.stages[1][-1]
    assert names and _conv_stds(new_block)
    for measured, expected in _conv_stds(net):
        assert measured == pytest.approx(expected, rel=0.08)
    torch_net = build_net(family, "1-1-1-1", image_size=64, width=0.5, generator=gen(0))
    assert any(abs(m - e) / e > 0.3 for m, e in _conv_stds(torch_net))  # a different law
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert bool((m.weight == 1).all()) and bool((m.bias == 0).all())
    # the head keeps PyTorch's default U(±1/√fan_in), as the original's fc
    assert float(net.head.weight.detach().abs().max()) <= 1 / net.head.in_features ** 0.5


def test_weight_init_is_validated_and_kept_by_export(tmp_path) -> None:
    from autogrow.blocks import load_model

    with pytest.raises(ValueError, match="weight init"):
        build_net("basic3resnet", "1-1-1", weight_init="xavier")
    net = build_net("basic3resnet", "1-1-1", width=W, weight_init="kaiming-fan-out")
    net.save(tmp_path / "m.safetensors")
    assert load_model(tmp_path / "m.safetensors").weight_init == "kaiming-fan-out"


def test_adam_init_bad_arguments() -> None:
    net = build_net("basic3resnet", "1-1-1", width=W)
    names = net.grow(0, "adam", gen(0))
    data = _toy_batches()
    with pytest.raises(ValueError, match="parameter names"):
        adam_init(net, [], data)
    with pytest.raises(ValueError, match="several blocks"):
        adam_init(net, names + ["stages.1.0.conv1.weight"], data)
    with pytest.raises(ValueError, match="not a block"):
        adam_init(net, ["head.weight"], data)
    with pytest.raises(ValueError, match="max_epochs"):
        adam_init(net, names, data, max_epochs=0)
    with pytest.raises(ValueError, match="no batches"):
        adam_init(net, names, lambda: iter([]))
    assert all(p.requires_grad for p in net.parameters())


_DDP_SCRIPT = """
import os, sys, torch, torch.distributed as dist, torch.multiprocessing as mp
from autogrow.blocks import build_net, adam_init, weights_digest
# before any group starts (see the module): the group is then freed when destroyed
from autogrow.engine.distributed import Dist, shutdown, thread_count

def run(rank, world, store, q):
    before = thread_count()
    # a file rendezvous: no free port to race other processes for
    dist.init_process_group("gloo", init_method="file://" + store, rank=rank, world_size=world)
    torch.set_num_threads(1)
    net = build_net("basic3resnet", "1-1-1", num_classes=2, image_size=16, width=0.25,
                    generator=torch.Generator().manual_seed(0))
    names = net.grow(2, "adam", torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(10 + rank)  # a different data shard on each rank
    xs = [torch.randn(8, 3, 16, 16, generator=g) for _ in range(3)]
    stats = adam_init(net, names, [(x, (x.mean((1, 2, 3)) > 0).long()) for x in xs],
                      max_epochs=2, lr=0.05)
    bn = net.stages[2][1].bn2
    result = (stats["epochs"], stats["train_acc"],
              weights_digest({"w": bn.weight.detach(), "b": bn.bias.detach()}))
    shutdown(Dist(rank=rank, world_size=world, launched=True))
    q.put((result, before, thread_count()))

if __name__ == "__main__":
    q = mp.get_context("spawn").SimpleQueue()
    mp.spawn(run, args=(2, sys.argv[1], q), nprocs=2)
    print(repr(sorted(q.get() for _ in range(2))))
"""


def test_adam_init_under_torch_distributed_keeps_ranks_in_step(tmp_path) -> None:
    """Two gloo ranks on different shards end with the same BN and the same global accuracy,
    and each process ends with the threads it had before its group started: nothing of the
    group is left to be torn down at interpreter exit (where it aborted the process, issue 21)."""
    import ast
    import subprocess
    import sys

    script = tmp_path / "ddp_adam.py"
    script.write_text(_DDP_SCRIPT)
    out = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "store")], capture_output=True, text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    ranks = ast.literal_eval(out.stdout.strip().splitlines()[-1])
    (r0, _, _), (r1, _, _) = ranks
    assert r0 == r1 and r0[0] == 2
    assert all(before == after for _, before, after in ranks), ranks
