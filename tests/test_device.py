"""Execution settings: the deterministic switch reaches torch, is recorded, and restores."""

from __future__ import annotations

import pytest
import torch

from autogrow.config import resolve_config
from autogrow.engine.device import DeviceError, Execution, make_deterministic, resolve_execution


@pytest.fixture
def restore_determinism():
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


@pytest.mark.parametrize("flag", [True, False])
def test_the_deterministic_setting_reaches_torch_and_the_log(flag, restore_determinism):
    config = resolve_config("smoke", overrides={"deterministic": flag})
    execution = resolve_execution("cpu", "fp32", False, 0, config.deterministic)
    make_deterministic(execution)
    assert torch.are_deterministic_algorithms_enabled() is flag
    assert not torch.utils.deterministic.fill_uninitialized_memory  # costs 7-9 %, same results
    assert execution.describe()["deterministic"] is flag


def test_fp16_on_cpu_and_missing_cuda_are_refused():
    with pytest.raises(DeviceError, match="fp16 autocast is not supported for training on CPU"):
        resolve_execution("cpu", "fp16", False, 0)
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA device"):
            resolve_execution("cuda", "auto", False, 0)


@pytest.mark.parametrize("precision,tf32", [("fp32", False), ("bf16", True)])
def test_fp32_on_cuda_is_ieee_fp32_not_tf32(precision, tf32, restore_determinism):
    """The paper presets' fp32 is the authors' fp32: cuDNN's TF32 convolutions (PyTorch's
    default on Ampere+) are switched off for it. The flags are set without touching a GPU."""
    flags = (torch.backends.cudnn.allow_tf32, torch.backends.cudnn.deterministic,
             torch.backends.cudnn.benchmark)
    try:
        make_deterministic(Execution(device=torch.device("cuda"), precision=precision,
                                     channels_last=False, threads=1))
        assert torch.backends.cudnn.allow_tf32 is tf32
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    finally:
        (torch.backends.cudnn.allow_tf32, torch.backends.cudnn.deterministic,
         torch.backends.cudnn.benchmark) = flags
