"""Save/load a GrowableNet as one safetensors file: tensors + the recipe to rebuild it. No pickle."""

from __future__ import annotations

import json
import os
from os import PathLike
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save

from autogrow.errors import InputError

from .net import GrowableNet

#: Value of the `format` metadata key; bump the suffix if the layout ever changes.
FORMAT = "autogrow.growable_net.v1"
_KWARGS = ("in_channels", "num_classes", "image_size", "width")
_OPTIONAL_KWARGS = ("weight_init",)  # absent in files written before it existed


def save_model(net: GrowableNet, path: str | PathLike[str]) -> None:
    """Write the state dict (params + BN buffers, contiguous CPU copies) and metadata strings:
    `format`, `family`, `arch` and `kwargs` (constructor keyword arguments as JSON)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "family": net.family,
        "arch": net.arch,
        "kwargs": json.dumps(net.config, sort_keys=True),
    }
    path = Path(path)
    data = save(tensors, metadata=metadata)
    partial = path.with_name(f".{path.name}.partial")  # never a half-written model at `path`
    try:
        partial.write_bytes(data)  # Python's own write: a failure is an OSError with its errno
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def load_model(path: str | PathLike[str], *, device: str | torch.device = "cpu") -> GrowableNet:
    """Rebuild a saved GrowableNet in eval mode with the saved tensors (dtypes as saved).

    The net is built on the meta device and the tensors are assigned, so loading neither
    initialises weights nor consumes the global RNG. Raises ValueError for a file that is not
    an autogrow model, FileNotFoundError when the file is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for a bad header
        raise InputError(f"{path} is not a readable safetensors file: {exc}") from None

    family, arch, kwargs = _read_metadata(metadata, path)
    try:
        with torch.device("meta"):
            net = GrowableNet(family, arch, **kwargs)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{path}: metadata does not describe a valid net: {exc}") from None
    try:
        net.load_state_dict(tensors, strict=True, assign=True)
    except RuntimeError as exc:
        raise InputError(
            f"{path}: tensors do not match {family} {arch}: {str(exc).splitlines()[0]}"
        ) from None
    return net.to(device).eval()


def _read_metadata(metadata: dict[str, str], path: Path) -> tuple[str, str, dict]:
    if metadata.get("format") != FORMAT:
        raise InputError(
            f"{path} is not an autogrow model file (metadata 'format' is "
            f"{metadata.get('format')!r}, expected {FORMAT!r})"
        )
    missing = [k for k in ("family", "arch", "kwargs") if k not in metadata]
    if missing:
        raise InputError(f"{path}: model metadata lacks {', '.join(missing)}")
    try:
        kwargs = json.loads(metadata["kwargs"])
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: metadata 'kwargs' is not valid JSON: {exc}") from None
    if not isinstance(kwargs, dict) or not set(_KWARGS) <= set(kwargs) <= set(_KWARGS + _OPTIONAL_KWARGS):
        raise InputError(
            f"{path}: metadata 'kwargs' must be a JSON object with keys {', '.join(_KWARGS)} "
            f"(and optionally {', '.join(_OPTIONAL_KWARGS)}), "
            f"got {metadata['kwargs']!r}"
        )
    return metadata["family"], metadata["arch"], kwargs
