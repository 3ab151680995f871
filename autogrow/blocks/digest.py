"""A content digest of a model's weights: equal digests mean bit-identical state dicts.

The engine records it in `run_finished.weights_digest`; resume/replay tests compare it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch
from torch import nn


def weights_digest(module: nn.Module | Mapping[str, torch.Tensor]) -> str:
    """sha256 hex over the state dict in sorted name order.

    For each tensor it hashes the name, dtype string, shape and raw bytes (CPU, contiguous,
    native byte order), each header field NUL-separated. Parameters and buffers (BN running
    stats) both count; memory format and device do not.
    """
    state = module.state_dict() if isinstance(module, nn.Module) else module
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        # A uint8 view gives the raw bytes of any dtype (bf16, fp8, …) that numpy cannot hold.
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
