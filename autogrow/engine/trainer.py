"""The trainer: SGD over a GrowableNet, evaluation, growth with momentum carried by name, and the
tensors of a snapshot. It executes what the run loop asks; it decides nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autogrow.blocks import GrowableNet, adam_init, build_net
from autogrow.engine.device import Execution
from autogrow.engine.distributed import SINGLE, Dist, all_reduce_sum, hold_rank0_buffers
from autogrow.storage.layout import (
    AMP_GROWTH,
    AMP_SCALE,
    MODEL_PREFIX,
    MOMENTUM_PREFIX,
    PROGRESS_CORRECT,
    PROGRESS_LOSS,
    PROGRESS_SEEN,
    section,
)



# Recorded as run_started.versions["eval_buffers"]: every evaluation of the run used rank 0's
# buffers on every rank (runs of several processes made before it did not; see evaluate).
EVAL_BUFFERS = "rank0"


@attrs.frozen
class EpochStats:
    loss: float
    acc: float  # percent
    samples: int


class Trainer:
    """Holds the net and its SGD optimizer; ``sgd_settings`` are momentum and weight decay."""

    def __init__(self, net: GrowableNet, execution: Execution, *, momentum: float,
                 weight_decay: float, group: Dist = SINGLE) -> None:
        self.execution = execution
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.group = group
        self.net = self._place(net)
        self.model = self._wrap()
        self.optimizer = self._new_optimizer()
        # fp16 needs loss scaling against gradient underflow; bf16 and fp32 do not.
        self.scaler = torch.amp.GradScaler(execution.device.type,
                                           enabled=execution.precision == "fp16")

    def _wrap(self) -> nn.Module:
        """What training runs forward through: the net, or DDP around it with several processes.

        DDP is built anew after every growth (its buckets are fixed at construction).
        """
        if not self.group.enabled:
            return self.net
        from torch.nn.parallel import DistributedDataParallel

        # this process's GPU by number (init_from_env selected it; "cuda" alone has no index)
        ids = [self.group.device.index] if self.group.device.type == "cuda" else None
        return DistributedDataParallel(self.net, device_ids=ids)

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def seeded(cls, execution: Execution, *, family: str, arch: str, in_channels: int,
               num_classes: int, image_size: int, width: float, seed: int, momentum: float,
               weight_decay: float, weight_init: str = "torch", group: Dist = SINGLE) -> Trainer:
        """A fresh seed net whose init is a pure function of ``seed`` (the same on every rank)."""
        generator = torch.Generator().manual_seed(seed)
        net = build_net(family, arch, in_channels=in_channels, num_classes=num_classes,
                        image_size=image_size, width=width, weight_init=weight_init,
                        generator=generator)
        return cls(net, execution, momentum=momentum, weight_decay=weight_decay, group=group)

    def _place(self, net: GrowableNet) -> GrowableNet:
        net = net.to(self.execution.device)
        if self.execution.channels_last:
            net = net.to(memory_format=torch.channels_last)
        return net

    def _new_optimizer(self, carry: dict[str, Tensor] | None = None) -> torch.optim.SGD:
        """SGD over all parameters; ``carry`` maps parameter names to momentum buffers to keep."""
        opt = torch.optim.SGD(self.net.parameters(), lr=0.0, momentum=self.momentum,
                              weight_decay=self.weight_decay)
        if carry:
            for name, param in self.net.named_parameters():
                buf = carry.get(name)
                if buf is not None:
                    opt.state[param]["momentum_buffer"] = buf.to(param.device).clone(
                        memory_format=torch.preserve_format)
        return opt

    def momentum_buffers(self) -> dict[str, Tensor]:
        """Momentum by parameter name (the optimizer keys state by tensor, not name)."""
        out: dict[str, Tensor] = {}
        for name, param in self.net.named_parameters():
            buf = self.optimizer.state.get(param, {}).get("momentum_buffer")
            if buf is not None:
                out[name] = buf
        return out

    # -- growth -----------------------------------------------------------------------------

    def grow(self, stage: int, initializer: str, init_seed: int, *, reset_momentum: bool = False,
             adam_batches: Callable[[], Iterator[tuple[Tensor, Tensor]]] | None = None,
             adam_target: float | None = None, adam_epochs: int = 10) -> dict[str, Any]:
        """Append a block to ``stage`` and rebuild the optimizer, keeping momentum by name."""
        carry = None if reset_momentum else self.momentum_buffers()
        generator = torch.Generator().manual_seed(init_seed)
        new_names = self.net.grow(stage, initializer=initializer, generator=generator)
        info: dict[str, Any] = {"new_params": len(new_names)}
        # As the original, AdamInit trains a residual block's last BN; a plain block keeps its
        # init (the original's parameter pattern never matches plain nets).
        if initializer == "adam" and self.net.spec.residual:
            if adam_batches is None:
                raise ValueError("the adam initializer needs training batches")
            info["adam"] = adam_init(self.net, new_names, adam_batches, max_epochs=adam_epochs,
                                     target_train_acc=adam_target,
                                     weight_decay=self.weight_decay,
                                     device=self.execution.device,
                                     amp_dtype=self.execution.amp_dtype)
        self.model = self.net  # let the old wrapper (and its hold on the group) go first
        self.model = self._wrap()
        self.optimizer = self._new_optimizer(carry)
        return info

    # -- training and evaluation ------------------------------------------------------------

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def train_epoch(self, batches: Iterable[tuple[Tensor, Tensor]], *, start_step: int = 0,
                    progress: dict[str, Tensor] | None = None,
                    after_step: Callable[[int, Callable[[], dict[str, Tensor]]], None] | None = None,
                    ) -> EpochStats:
        """One pass of SGD. Loss and correct counts stay on the device: one host sync per epoch.

        ``batches`` start at ``start_step``; ``progress`` restores the running sums of a resumed
        epoch. ``after_step(step, sums)`` runs at every step boundary (the run loop's snapshots,
        stop requests and progress lines); ``sums()`` gives the epoch's running sums over all
        ranks, for a snapshot inside the epoch (a collective: all ranks call it or none).
        """
        net = self.model
        net.train()
        dev = self.execution.device
        sums = progress or {}
        loss_sum = sums.get(PROGRESS_LOSS, torch.zeros((), dtype=torch.float64)).to(dev).clone()
        correct = sums.get(PROGRESS_CORRECT, torch.zeros((), dtype=torch.int64)).to(dev).clone()
        seen = int(sums[PROGRESS_SEEN]) if PROGRESS_SEEN in sums else 0
        step = start_step
        for x, y in batches:
            with self.execution.autocast():
                logits = net(x)
                loss = F.cross_entropy(logits, y)
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler.is_enabled():
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                loss.backward()
                self.optimizer.step()
            n = y.shape[0]
            loss_sum += loss.detach().double() * n
            correct += (logits.detach().argmax(1) == y).sum()
            seen += n
            step += 1
            if after_step is not None:
                after_step(step, lambda: self._global_sums(loss_sum, correct, seen))
        return self._stats(loss_sum, correct, seen)

    def _global_sums(self, loss_sum: Tensor, correct: Tensor, seen: int) -> dict[str, Tensor]:
        """The epoch's running sums over all ranks (what a mid-epoch snapshot stores)."""
        sums = [loss_sum.clone(), correct.clone(),
                torch.tensor(seen, dtype=torch.int64, device=loss_sum.device)]
        all_reduce_sum(self.group, *sums)
        return {PROGRESS_LOSS: sums[0].cpu(), PROGRESS_CORRECT: sums[1].cpu(),
                PROGRESS_SEEN: sums[2].cpu()}

    def _stats(self, loss_sum: Tensor, correct: Tensor, seen: int) -> EpochStats:
        """Mean loss and accuracy over all ranks: one host sync."""
        totals = torch.stack([loss_sum, correct.double(),
                              torch.tensor(float(seen), dtype=torch.float64, device=loss_sum.device)])
        all_reduce_sum(self.group, totals)
        loss, hits, count = totals.tolist()
        if count == 0:
            return EpochStats(loss=0.0, acc=0.0, samples=0)
        return EpochStats(loss=loss / count, acc=100.0 * hits / count, samples=int(count))

    @torch.no_grad()
    def evaluate(self, batches: Iterable[tuple[Tensor, Tensor]]) -> EpochStats:
        """Mean loss and accuracy over all ranks' shards, every rank with rank 0's buffers: the
        numbers are then a function of what a snapshot holds (rank 0's tensors)."""
        net = self.net
        hold_rank0_buffers(self.group, net)
        net.eval()
        dev = self.execution.device
        loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
        correct = torch.zeros((), dtype=torch.int64, device=dev)
        seen = 0
        for x, y in batches:
            with self.execution.autocast():
                logits = net(x)
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double()
            correct += (logits.argmax(1) == y).sum()
            seen += y.shape[0]
        return self._stats(loss_sum, correct, seen)

    # -- snapshots --------------------------------------------------------------------------

    def state_tensors(self) -> dict[str, Tensor]:
        """Model and momentum (and fp16 loss scaling) as named tensors for a safetensors snapshot.

        No RNG state: nothing in training draws from torch's global generator (data order,
        augmentation and every init have generators of their own), and the exact-resume tests
        would fail if something did."""
        tensors = {MODEL_PREFIX + k: v.detach() for k, v in self.net.state_dict().items()}
        tensors.update({MOMENTUM_PREFIX + k: v.detach() for k, v in self.momentum_buffers().items()})
        if self.scaler.is_enabled():  # fp16 loss scaling continues where it was
            state = self.scaler.state_dict()
            tensors[AMP_SCALE] = torch.tensor(float(state["scale"]), dtype=torch.float64)
            tensors[AMP_GROWTH] = torch.tensor(int(state["_growth_tracker"]), dtype=torch.int64)
        return tensors

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        """Restore what :meth:`state_tensors` saved (the net must already have the same arch)."""
        model = section(tensors, MODEL_PREFIX)
        missing, unexpected = self.net.load_state_dict(model, strict=False)
        if missing or unexpected:
            raise ValueError(f"snapshot does not fit the net {self.net.arch}: missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]}")
        carry = section(tensors, MOMENTUM_PREFIX)
        self.optimizer = self._new_optimizer(carry)
        if self.scaler.is_enabled() and AMP_SCALE in tensors:
            state = self.scaler.state_dict()
            state.update(scale=float(tensors[AMP_SCALE]),
                         _growth_tracker=int(tensors[AMP_GROWTH]))
            self.scaler.load_state_dict(state)
