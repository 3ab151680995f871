"""Decoded tensor sets kept between launches, keyed by the sha256 of their source files.

A launch of a run on MNIST, Fashion-MNIST, SVHN or CIFAR digests the source files anyway (their
digests are the data's identity in the log). With those digests it looks here first: a hit reads
one safetensors file instead of importing torchvision and decoding the files again: a resume
after each preemption, each rank and each ``verify --reexecute`` has its data about 1 s sooner
on Fashion-MNIST here (benchmarks/RESULTS.md §11; CIFAR's pickles, not measured, cost more).

An entry is only a copy: the source files' digests name it, the sha256 of its tensors' bytes is
in its metadata and checked on every read, and anything unreadable, damaged or of another format
is a miss (read from the sources again and rewritten). An entry made without the official md5
check (``verify_checksums=False``) does not serve a launch that asks for the check. Writing is
best effort (temp file, fsync, rename): a cache that cannot be written costs speed, never a run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import structlog
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from autogrow.engine.data.registry import cache_file

FORMAT = "1"
_log = structlog.get_logger("autogrow.data")


def entry_path(cache_dir: Path, name: str, digests: Mapping[str, str]) -> Path:
    """Where the decoded tensors of the source files with these digests are kept."""
    key = json.dumps([FORMAT, name, sorted(digests.items())]).encode()
    return cache_dir / "tensors" / f"{name}-{hashlib.sha256(key).hexdigest()[:32]}.safetensors"


def content_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the tensors' names, dtypes, shapes and bytes (in name order)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(torch.uint8).numpy() if t.numel() else b"")
    return h.hexdigest()


def load(path: Path, *, need_md5: bool) -> tuple[dict[str, torch.Tensor], dict[str, str]] | None:
    """An entry's tensors and metadata, or None for a miss (absent, unreadable, damaged, another
    format, or not md5-checked where ``need_md5``)."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open API
    except Exception:  # noqa: BLE001 - any unreadable entry is a miss, rewritten below
        return None
    if (metadata.get("format") != FORMAT or (need_md5 and metadata.get("md5_checked") != "1")
            or metadata.get("content") != content_digest(tensors)):
        return None
    return tensors, metadata


def store(path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str], *,
          md5_checked: bool) -> None:
    """Write an entry atomically; an OSError (read-only or full disk) is logged, not raised."""
    meta = {**metadata, "format": FORMAT, "md5_checked": "1" if md5_checked else "0",
            "content": content_digest(tensors)}
    try:
        with cache_file(path) as tmp:
            save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=meta)
    except OSError as err:
        _log.warning("tensor cache not written", path=str(path), error=str(err))
