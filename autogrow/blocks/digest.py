"""A content digest of a model's weights: equal digests mean bit-identical state dicts.

The engine records it in `run_finished.weights_digest`; resume/replay tests compare it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import nn

from autogrow.storage.snapshots import digest_entries


def weights_digest(module: nn.Module | Mapping[str, torch.Tensor]) -> str:
    """sha256 hex over the state dict in sorted name order.

    For each tensor it hashes the name, dtype string, shape and raw bytes (CPU, contiguous,
    native byte order), each header field NUL-separated. Parameters and buffers (BN running
    stats) both count; memory format and device do not. The byte stream is
    :func:`~autogrow.storage.snapshots.digest_entries`', which ``verify`` feeds from a snapshot
    file's bytes without torch (:func:`~autogrow.storage.snapshots.stored_weights_digest`).
    """
    state = module.state_dict() if isinstance(module, nn.Module) else module

    def entries() -> Iterator[tuple[str, str, tuple[int, ...], bytes]]:
        for name in sorted(state):
            t = state[name].detach().cpu().contiguous()
            # A uint8 view gives the raw bytes of any dtype (bf16, fp8, …) that numpy cannot hold.
            raw = t.reshape(-1).view(torch.uint8).numpy().tobytes()
            yield name, str(t.dtype), tuple(t.shape), raw

    return digest_entries(entries())
