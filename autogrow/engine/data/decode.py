"""One image's bytes become uint8 ``3×H×W`` RGB pixels.

Reading (a file, or a member of a tar shard: :mod:`.shards`) is kept apart from decoding, so
both sources decode the same way. TorchCodec (libjpeg-turbo) decodes when it is installed and
its native libraries load; otherwise PIL does, which gives the same pixels bit for bit
(measured on 40 varied JPEGs: RGB and grey, 4:2:0 and 4:4:4, quality 50-97; tested on the
fixture images) and is about 40 % slower. So the decoder is not part of a run's data identity: a
run may resume on a machine without TorchCodec. PIL also reads the formats TorchCodec does not
(BMP, TIFF, PPM, ...). Whether TorchCodec is usable is probed once per process
(:func:`torchcodec_problem`).
"""

from __future__ import annotations

import functools
import importlib
import io

import numpy as np
import structlog
import torch

from autogrow.engine.data.registry import DataError

_log = structlog.get_logger("autogrow.data")

#: How to get the faster decoder, for the notice that PIL is used.
INSTALL_HINT = ("pip install 'autogrow[torchcodec]' (a torchcodec release built for this "
                f"torch, {torch.__version__.split('+')[0]})")


@functools.cache
def torchcodec_problem() -> str | None:
    """Why TorchCodec cannot decode here (its import failing, or its native libraries not
    loading, which its import does), or None when it can. Probed once per process."""
    try:
        importlib.import_module("torchcodec.decoders")  # loads its image library
    except (ImportError, OSError, RuntimeError) as err:
        text = str(err).strip().splitlines()
        return f"{type(err).__name__}: {text[0][:300] if text else ''}".rstrip(": ")
    return None


def backend() -> str:
    """The decoder this process uses for JPEG/PNG/WebP/GIF: ``torchcodec`` or ``pil``."""
    return "pil" if torchcodec_problem() else "torchcodec"


@functools.cache
def announce() -> None:
    """Say once per process, as a reader is made (the training process; its loader workers
    decode without a word), that PIL decodes because TorchCodec cannot, and what to do."""
    problem = torchcodec_problem()
    if problem:
        _log.warning("TorchCodec is not usable here; images are decoded with PIL (the same "
                     "pixels, about 40 % slower)", problem=problem, to_use_it=INSTALL_HINT)


def read_file(path: str) -> np.ndarray:
    """The bytes of the image file at ``path``."""
    try:
        return np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise DataError(f"cannot read image {path}: {exc.strerror or exc}; the folder changed "
                        "since it was listed? restore the file or relaunch") from None


def decode(data: np.ndarray, name: str) -> torch.Tensor:
    """The uint8 ``3×H×W`` RGB pixels of an encoded image (``data``: its bytes; ``name``: what
    an error calls it)."""
    if torchcodec_problem() is None:
        image = decode_torchcodec(data)
        if image is not None:
            return image
    return decode_pil(data, name)


def decode_torchcodec(data: np.ndarray) -> torch.Tensor | None:
    """TorchCodec's pixels, or None for a format it does not read."""
    from torchcodec.decoders import ImageReadMode, decode_image

    try:
        image = decode_image(torch.from_numpy(data), mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError):
        return None  # BMP, TIFF, PPM, ... (or damaged: PIL then says why)
    return image[0] if image.ndim == 4 else image  # an animated GIF: its first frame


def decode_pil(data: np.ndarray, name: str) -> torch.Tensor:
    """PIL's pixels (its libjpeg-turbo: the same as TorchCodec's for JPEG)."""
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms.functional import pil_to_tensor

    try:
        with Image.open(io.BytesIO(memoryview(data))) as im:
            return pil_to_tensor(im.convert("RGB"))
    except UnidentifiedImageError:
        reason = "not an image in a format PIL reads"
    except (OSError, ValueError, SyntaxError) as exc:
        reason = str(exc)
    raise DataError(f"cannot decode image {name}: {reason}; replace or remove the file")


def decode_file(path: str) -> torch.Tensor:
    """The uint8 ``3×H×W`` RGB pixels of the image file at ``path``."""
    return decode(read_file(path), path)
