"""Execution settings: the deterministic switch reaches torch, is recorded, and restores."""

from __future__ import annotations

import pytest
import torch

from autogrow.config import resolve_config
from autogrow.engine.device import DeviceError, make_deterministic, resolve_execution


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
