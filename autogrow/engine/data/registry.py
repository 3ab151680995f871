"""What the data layer knows about each data set before reading a file (shape, classes,
normalisation, the original code's augmentation), where caches go, and the data layer's one
error type."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import attrs

from autogrow.errors import UserError


class DataError(UserError, RuntimeError):
    """Data that cannot be found or read; the message is one line that says what to do."""


@attrs.frozen
class DatasetInfo:
    """Fixed facts about a data set: shape, classes, normalisation and augmentation, as the
    AutoGrow authors' code has them (cifar10/main_gradual.py:299-325, cifar10/utils.py:17-23).

    ``crop_padding`` is the random-crop padding in px on the image as trained (28-px sets are
    zero-padded to 32 first, as the original's ``RandomCrop(32, padding=2)`` does: one position,
    no translation)."""

    name: str
    num_classes: int
    in_channels: int
    native_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    hflip: bool
    crop_padding: int = 4
    tensor_resident: bool = True


DATASETS: dict[str, DatasetInfo] = {
    # MNIST and Fashion-MNIST: no normalisation (the original's table gives mean 0, std 1), no
    # translation; Fashion-MNIST is flipped, MNIST is not.
    "mnist": DatasetInfo("mnist", 10, 1, 28, (0.0,), (1.0,), hflip=False, crop_padding=0),
    "fashionmnist": DatasetInfo("fashionmnist", 10, 1, 28, (0.0,), (1.0,), hflip=True,
                                crop_padding=0),
    # CIFAR-10's std is the data's true one; the original uses (0.2023, 0.1994, 0.2010), which its
    # own comment calls wrong (README, fidelity table).
    "svhn": DatasetInfo(
        "svhn", 10, 3, 32, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), hflip=False
    ),
    "cifar10": DatasetInfo(
        "cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), hflip=True
    ),
    "cifar100": DatasetInfo(
        "cifar100", 100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), hflip=True
    ),
    "imagenet": DatasetInfo(
        "imagenet", 1000, 3, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
        hflip=True, crop_padding=0, tensor_resident=False,
    ),
}


def canonical_name(name: str) -> str:
    """``"Fashion-MNIST"`` → ``"fashionmnist"``; unknown names raise ``ValueError`` listing valid ones."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(sorted(DATASETS))}")
    return key


def default_cache_dir() -> Path:
    """Where decompressed files go: ``$AUTOGROW_CACHE_DIR``, else ``$XDG_CACHE_HOME/autogrow``, else ``~/.cache/autogrow``."""
    if os.environ.get("AUTOGROW_CACHE_DIR"):
        return Path(os.environ["AUTOGROW_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "autogrow"


@contextlib.contextmanager
def cache_file(dst: Path) -> Iterator[str]:
    """A temp file beside ``dst`` for the block to write; when the block ends it is fsynced, made
    plain data (0644) and renamed to ``dst`` (so a reader sees the old file or the whole new one);
    when the block raises it is removed."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dst.name + ".", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the cache is plain data
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def call_torchvision(info: DatasetInfo, make: Callable[[], Any], location: Path) -> Any:
    """Run a torchvision constructor, turning its errors into one-line ``DataError``s."""
    try:
        return make()
    except DataError:
        raise
    except Exception as exc:  # torchvision raises RuntimeError / OSError / URLError etc.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{info.name}: cannot read data under {location}: {first}") from exc
