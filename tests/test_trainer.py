"""Trainer: snapshot tensors round-trip (momentum by name, fp16 loss scale), growth keeps momentum."""

from __future__ import annotations

import torch

from autogrow.engine.device import Execution
from autogrow.engine.trainer import Trainer


def _trainer(precision: str = "fp32", arch: str = "1-1-1", family: str = "basic3resnet") -> Trainer:
    ex = Execution(device=torch.device("cpu"), precision=precision, channels_last=False, threads=1)
    return Trainer.seeded(ex, family=family, arch=arch, in_channels=1, num_classes=10,
                          image_size=32, width=0.25, seed=3, momentum=0.9, weight_decay=5e-4)


def _step(trainer: Trainer) -> None:
    x, y = torch.randn(8, 1, 32, 32, generator=torch.Generator().manual_seed(1)), torch.arange(8)
    trainer.set_lr(0.1)
    trainer.train_epoch([(x, y)])


def test_growth_keeps_momentum_of_existing_parameters_by_name():
    trainer = _trainer()
    _step(trainer)
    before = {k: v.clone() for k, v in trainer.momentum_buffers().items()}
    trainer.grow(1, "gau", init_seed=5)
    after = trainer.momentum_buffers()
    assert set(before) == set(after)  # new parameters start with no momentum
    assert all(torch.equal(before[k], after[k]) for k in before)
    trainer.grow(0, "gau", init_seed=6, reset_momentum=True)
    assert trainer.momentum_buffers() == {}


def test_state_tensors_round_trip_including_fp16_loss_scale():
    trainer = _trainer("fp16")
    _step(trainer)
    state = trainer.scaler.state_dict()
    state.update(scale=1024.0, _growth_tracker=7)
    trainer.scaler.load_state_dict(state)
    tensors = trainer.state_tensors()
    other = _trainer("fp16")
    other.load_state_tensors(tensors)
    assert other.scaler.state_dict()["scale"] == 1024.0
    assert other.scaler.state_dict()["_growth_tracker"] == 7
    assert all(torch.equal(a, b) for a, b in zip(trainer.net.state_dict().values(),
                                                 other.net.state_dict().values()))
    mine, theirs = trainer.momentum_buffers(), other.momentum_buffers()
    assert mine and set(theirs) == set(mine)
    # by value, not only by name (fails if a snapshot restores momentum scaled or stale)
    assert all(torch.equal(theirs[k], mine[k]) for k in mine)


def test_adam_init_trains_residual_blocks_only_as_the_original():
    """The original's AdamInit trains the new block's last BN of residual nets; its parameter
    pattern never matches a plain net, so plain blocks keep their init (main_gradual.py:193-202)."""
    x, y = torch.randn(8, 1, 32, 32, generator=torch.Generator().manual_seed(1)), torch.arange(8)
    calls = []

    def batches():
        calls.append(1)
        return iter([(x, y)])

    residual = _trainer()
    info = residual.grow(1, "adam", init_seed=5, adam_batches=batches, adam_target=100.0,
                         adam_epochs=2)
    assert info["adam"]["epochs"] == 2 and len(calls) == 2
    plain = _trainer(family="plain3net")
    ref = _trainer(family="plain3net")
    info = plain.grow(1, "adam", init_seed=5, adam_batches=batches, adam_target=100.0)
    ref.grow(1, "default", init_seed=5)
    assert "adam" not in info and len(calls) == 2
    assert all(torch.equal(a, b) for a, b in zip(plain.net.state_dict().values(),
                                                 ref.net.state_dict().values()))
