"""AdamInit (paper §2.2): after a growth, train only the new block's last BN with Adam until the
deeper net's training accuracy is back to (within half a point of) the shallower net's, so growth
is (nearly) a morphism.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import Block

#: Percentage points the target may be missed by: the original stops once the running training
#: accuracy is *above* the pre-growth accuracy minus 0.5 (cifar10/main_gradual.py:227-241).
TARGET_SLACK = 0.5

Batches = Union[Callable[[], Iterator[tuple[Tensor, Tensor]]], Iterable[tuple[Tensor, Tensor]]]


def adam_init(
    net: nn.Module,
    new_param_names: list[str],
    batches: Batches,
    *,
    max_epochs: int = 10,
    target_train_acc: float | None = None,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    device: str | torch.device | None = None,
    amp_dtype: torch.dtype | None = None,
) -> dict[str, Any]:
    """Train the last BN (γ, β) of the new block with Adam; everything else stays frozen.

    `new_param_names` is what `GrowableNet.grow` returned. `batches` is called once per epoch
    (or iterated, if it is a re-iterable such as a list or DataLoader) to give (x, y) batches.
    Stops after the first epoch whose running training accuracy (percent, measured in train
    mode while training, like the engine's) is above `target_train_acc - TARGET_SLACK`; with no
    target it runs `max_epochs` epochs. `weight_decay` is Adam's (coupled L2, as the original
    passes the run's SGD weight decay). The net runs in train mode, so BN running statistics update as in any
    training step; only the last BN's γ/β change among parameters. `requires_grad` flags and the
    train/eval mode are restored afterwards. Under an initialised torch.distributed group with
    more than one process, gradients and accuracy are averaged across processes so every rank
    takes the same steps and stops at the same epoch (pass the unwrapped net, not the DDP one).

    Returns {"epochs", "train_acc", "loss", "reached", "target_train_acc", "trained_params",
    "history": [{"epoch", "loss", "train_acc"}, ...]}.
    """
    if isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1:
        raise ValueError(f"max_epochs must be a positive int, got {max_epochs!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    prefix, block = _new_block(net, new_param_names)
    bn = block.last_bn
    trained = [p for p in (bn.weight, bn.bias) if p is not None]
    trained_names = [
        f"{prefix}.{n}" for n, p in block.named_parameters() if any(p is t for t in trained)
    ]

    ref = next(net.parameters())
    dev = torch.device(device) if device is not None else ref.device
    dist = _process_group()
    saved_flags = {name: p.requires_grad for name, p in net.named_parameters()}
    was_training = net.training
    optimizer = torch.optim.Adam(trained, lr=lr, weight_decay=weight_decay)
    history: list[dict[str, float]] = []
    reached = False
    try:
        for p in net.parameters():
            p.requires_grad_(False)
        for p in trained:
            p.requires_grad_(True)
        net.train()
        for epoch in range(1, max_epochs + 1):
            totals = torch.zeros(3, dtype=torch.float64, device=dev)  # loss sum, correct, seen
            for x, y in _epoch(batches):
                x = x.to(dev, non_blocking=True)
                if x.is_floating_point() and amp_dtype is None:
                    x = x.to(ref.dtype)
                y = y.to(dev, non_blocking=True)
                autocast = (
                    torch.autocast(dev.type, dtype=amp_dtype)
                    if amp_dtype is not None
                    else contextlib.nullcontext()
                )
                with autocast:
                    logits = net(x)
                    loss = F.cross_entropy(logits.float(), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if dist is not None:
                    for p in trained:
                        dist.all_reduce(p.grad)
                        p.grad.div_(dist.get_world_size())
                optimizer.step()
                with torch.no_grad():  # accumulate on the device: no sync per batch
                    n = y.shape[0]
                    totals[0] += loss.detach().double() * n
                    totals[1] += (logits.argmax(1) == y).sum()
                    totals[2] += n
            if dist is not None:
                dist.all_reduce(totals)
            totals = totals.cpu()
            if totals[2] == 0:
                raise ValueError("adam_init got no batches to train on")
            loss_avg = float(totals[0] / totals[2])
            acc = float(100.0 * totals[1] / totals[2])
            history.append({"epoch": epoch, "loss": loss_avg, "train_acc": acc})
            if target_train_acc is not None and acc > target_train_acc - TARGET_SLACK:
                reached = True
                break
    finally:
        for name, p in net.named_parameters():
            p.requires_grad_(saved_flags[name])
        net.train(was_training)
    return {
        "epochs": len(history),
        "train_acc": history[-1]["train_acc"],
        "loss": history[-1]["loss"],
        "reached": reached,
        "target_train_acc": target_train_acc,
        "trained_params": trained_names,
        "history": history,
    }


def _new_block(net: nn.Module, names: list[str]) -> tuple[str, Block]:
    """The block whose parameters `names` are (they share a `stages.i.j` prefix)."""
    if not names:
        raise ValueError("adam_init needs the new block's parameter names (from net.grow)")
    prefixes = {".".join(n.split(".")[:3]) for n in names}
    if len(prefixes) != 1:
        raise ValueError(f"new_param_names span several blocks: {sorted(prefixes)}")
    prefix = prefixes.pop()
    try:
        block = net.get_submodule(prefix)
    except AttributeError:
        block = None
    if not isinstance(block, Block):
        raise ValueError(f"{prefix!r} is not a block of this net (names: {names[:3]}…)")
    return prefix, block


def _epoch(batches: Batches) -> Iterator[tuple[Tensor, Tensor]]:
    return iter(batches()) if callable(batches) else iter(batches)


def _process_group() -> Any:
    """torch.distributed when a multi-process group is running, else None."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist
    return None

