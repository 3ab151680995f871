"""Deterministic batch order and batched, device-side augmentation.

Everything random in the data pipeline is a pure function of ``(seed, epoch, index)``: the epoch's
permutation and every sample's crop offset and flip bit are drawn for the whole epoch at once from
a ``torch.Generator`` seeded by a stable hash, then indexed by the sample's position in its split.
So any batch, any resume point and any rank of a sharded run sees the same values for the same
sample, and the tensors never go through a per-image Python loop.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Sequence

import attrs
import torch
import torch.nn.functional as F


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed from ``seed`` and a path of labels (stable across processes, unlike ``hash``)."""
    text = "\x1f".join([str(int(seed))] + [str(p) for p in parts])
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def seeded_generator(seed: int, *parts: object) -> torch.Generator:
    """A CPU generator seeded by :func:`derive_seed` (CPU, so every device draws the same values)."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(derive_seed(seed, *parts))
    return gen


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of ``range(n)`` that epoch ``epoch`` visits (int64, CPU)."""
    return torch.randperm(n, generator=seeded_generator(seed, "order", epoch))


@attrs.frozen
class AugmentParams:
    """Per-sample crop offsets (top, left into the padded image) and flip bits for one epoch.

    Row ``i`` belongs to the sample at position ``i`` of the split, whatever batch it lands in.
    """

    top: torch.Tensor  # int64 [n]
    left: torch.Tensor  # int64 [n]
    flip: torch.Tensor  # bool [n]

    def to(self, device: torch.device | str) -> "AugmentParams":
        """The same parameters on ``device`` (move once per epoch, then :meth:`take` per batch)."""
        return AugmentParams(top=self.top.to(device), left=self.left.to(device), flip=self.flip.to(device))

    def take(self, index: torch.Tensor) -> "AugmentParams":
        """The parameters of the samples at split positions ``index``."""
        return AugmentParams(top=self.top[index], left=self.left[index], flip=self.flip[index])


def epoch_augment_params(n: int, seed: int, epoch: int, *, padding: int, hflip: bool) -> AugmentParams:
    """Crop offsets in ``[0, 2*padding]`` and flip bits for all ``n`` samples of one epoch.

    Both are always drawn (flip bits are then zeroed when ``hflip`` is off) so the offsets do not
    depend on whether flipping is enabled.
    """
    gen = seeded_generator(seed, "augment", epoch)
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=gen)
    flip = torch.randint(0, 2, (n,), generator=gen).bool()
    if not hflip:
        flip = torch.zeros_like(flip)
    return AugmentParams(top=offsets[0], left=offsets[1], flip=flip)


@functools.lru_cache(maxsize=32)
def _stats(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean/std as ``1×C×1×1`` float32 tensors on ``device``, made once (no copy per batch)."""
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return m, s


def normalize(
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """uint8 ``N×C×H×W`` (any memory format) → ``(x/255 - mean)/std`` in ``dtype`` and the asked
    layout (the ToTensor+Normalize of torchvision). ``out``: a float32 buffer of the same shape
    to compute in (e.g. in shared memory); returned when ``dtype`` and layout allow."""
    m, s = _stats(tuple(mean), tuple(std), images.device)
    # in place on one float copy: the same operations (so the same bits) in half the time
    x = out.copy_(images) if out is not None else images.to(torch.float32, copy=True)
    x = x.div_(255.0).sub_(m).div_(s).to(dtype)
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def crop_and_flip(images: torch.Tensor, params: AugmentParams, padding: int) -> torch.Tensor:
    """Zero-pad by ``padding``, crop back to ``H×W`` at each sample's offset, mirror where flipped.

    One ``gather`` over flattened pixels (flip folded into the column index); uint8 in, uint8 out.
    Measured faster than 4-tensor advanced indexing or an ``unfold`` window view on CPU.
    """
    n, c, h, w = images.shape
    if n == 0:
        return images
    dev = images.device
    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    wp = w + 2 * padding
    ar_h = torch.arange(h, device=dev)
    ar_w = torch.arange(w, device=dev)
    cols = torch.where(params.flip.to(dev).view(n, 1), w - 1 - ar_w, ar_w) + params.left.to(dev).view(n, 1)
    rows = params.top.to(dev).view(n, 1) + ar_h
    flat = (rows.view(n, h, 1) * wp + cols.view(n, 1, w)).view(n, 1, h * w).expand(n, c, h * w)
    return padded.reshape(n, c, -1).gather(2, flat).view(n, c, h, w)


def augment_batch(
    images: torch.Tensor,
    params: AugmentParams,
    *,
    padding: int,
    mean: Sequence[float],
    std: Sequence[float],
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
) -> torch.Tensor:
    """Random-crop (pad ``padding``) + flip + normalise a uint8 batch in one vectorised pass."""
    return normalize(
        crop_and_flip(images, params, padding), mean, std, dtype=dtype, channels_last=channels_last
    )
