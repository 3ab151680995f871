"""Images/s of the on-disk (ImageNet) input pipeline against a plain torchvision loader.

Writes a synthetic ImageNet-like folder to a temp dir (``--classes`` classes, ``--images`` JPEGs
of about 500×375 at quality 90, with smooth colour fields, shapes and texture so they compress
like photographs), then for each worker count (``--workers 0,1,2``) times, side by side and in
turn (``--repeats``), one steady pass of ``--batches`` train batches of ``--batch-size``:

- ``engine``: ``autogrow.engine.data.train_batches`` (decode + crop on the workers, uint8 over
  the wire, float32 normalisation on ``--device``);
- ``plain``: ``torchvision.datasets.ImageFolder`` + ``DataLoader`` (shuffle) with the standard
  ``RandomResizedCrop(224)``, ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize`` (PIL), the
  same worker count, batch tensors moved to ``--device``.

Each pool is started and warmed (``--warmup`` batches) before its timed pass. A ``decoders``
section times one image's decode + crop + resize per backend in this process (1 thread): PIL's,
and the engine's (``torchcodec_…``, or ``pil_…`` where TorchCodec is not usable: the result's
``engine_decoder`` and ``torchcodec_problem`` say which and why).
Prints one JSON object: images/s per loader and worker count, the engine/plain ratio and the
speed-up from 1 to 2 workers.

Run: ``.venv/bin/python benchmarks/input_pipeline.py [--images 2000] [--workers 0,1,2]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import _common  # noqa: F401  (puts the repo root on sys.path)
import numpy as np
import torch
from _common import emit, machine, median

from autogrow.engine.data import DATASETS, decode, load_dataset, train_batches
from autogrow.engine.data.image_folder import CROP, RATIO, SCALE, train_view


def write_folder(root: Path, classes: int, images: int, seed: int = 0) -> Path:
    """``root/{train,val}/<class>/<n>.jpg``: photograph-like JPEGs of about 500×375."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    for part, count in (("train", images), ("val", max(classes, images // 20))):
        for n in range(count):
            c = n % classes
            folder = root / part / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            w, h = int(rng.integers(440, 560)), int(rng.integers(330, 420))
            field = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)  # a smooth colour field
            image = Image.fromarray(field).resize((w, h), Image.BICUBIC)
            draw = ImageDraw.Draw(image)
            for _ in range(int(rng.integers(3, 9))):  # objects
                x0, y0 = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
                box = (x0, y0, x0 + int(rng.integers(20, w // 2)), y0 + int(rng.integers(20, h // 2)))
                colour = tuple(int(v) for v in rng.integers(0, 256, 3))
                (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
            image = image.filter(ImageFilter.GaussianBlur(1.2))
            texture = rng.normal(0, 8, (h, w, 3))  # sensor-like noise
            pixels = (np.asarray(image, dtype=np.float32) + texture).clip(0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{n}.jpg", quality=90)
    return root


def _engine(root: Path, workers: int, device: str, batch_size: int) -> Callable[[int], Iterator]:
    data = load_dataset("imagenet", data_root=root, workers=workers, device=device, val_split=0.05)

    def epoch(index: int) -> Iterator:
        return train_batches(data.train, seed=0, epoch=index, batch_size=batch_size)
    return epoch


def _plain(root: Path, workers: int, device: str, batch_size: int) -> Callable[[int], Iterator]:
    from torchvision import datasets
    from torchvision import transforms as T

    info = DATASETS["imagenet"]
    transform = T.Compose([T.RandomResizedCrop(CROP, SCALE, RATIO), T.RandomHorizontalFlip(),
                           T.ToTensor(), T.Normalize(info.mean, info.std)])
    loader = torch.utils.data.DataLoader(
        datasets.ImageFolder(str(root / "train"), transform=transform), batch_size=batch_size,
        shuffle=True, num_workers=workers, persistent_workers=workers > 0,
        pin_memory=device == "cuda")

    def epoch(_index: int) -> Iterator:
        for x, y in loader:
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    return epoch


def _time_pass(epoch: Callable[[int], Iterator], index: int, warmup: int, batches: int,
               device: str) -> float:
    """Images/s over ``batches`` batches after ``warmup`` (pool started, queues filled)."""
    it = iter(epoch(index))
    for _ in range(warmup):
        next(it)
    if device == "cuda":
        torch.cuda.synchronize()
    images, start = 0, time.perf_counter()
    for _ in range(batches):
        x, _ = next(it)
        images += x.shape[0]
    if device == "cuda":
        torch.cuda.synchronize()
    return images / (time.perf_counter() - start)


def _decoders(root: Path, count: int) -> dict[str, float]:
    """Images/s of one train view per backend, in this process, on one thread."""
    from PIL import Image
    from torchvision.transforms import RandomResizedCrop
    from torchvision.transforms import functional as TF

    paths = sorted((root / "train").rglob("*.jpg"))[:count]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    def pil(path: Path, seed: int) -> torch.Tensor:
        im = Image.open(path).convert("RGB")
        torch.manual_seed(seed)
        box = RandomResizedCrop.get_params(im, list(SCALE), list(RATIO))
        return TF.pil_to_tensor(TF.resized_crop(im, *box, [CROP, CROP]))

    def engine(path: Path, seed: int) -> torch.Tensor:
        return train_view(decode.decode_file(str(path)), seed, hflip=True)

    out = {}
    try:
        engine_label = f"{decode.backend()}_decode_torch_resize"  # the engine's decoder here
        for name, view in (("pil_decode_resize", pil), (engine_label, engine)):
            rates = []
            for _ in range(3):
                start = time.perf_counter()
                for seed, path in enumerate(paths):
                    view(path, seed)
                rates.append(len(paths) / (time.perf_counter() - start))
            out[name] = max(rates)
    finally:
        torch.set_num_threads(threads)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=2000, help="train JPEGs to write")
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--workers", default="0,1,2", help="comma-separated worker counts")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--batches", type=int, default=0,
                    help="timed batches per pass (0 = as many as one epoch gives after warm-up)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed batches per pass")
    ap.add_argument("--repeats", type=int, default=2, help="passes per loader and worker count")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--decoder-images", type=int, default=100,
                    help="images for the per-backend decode timing (0 = skip)")
    ap.add_argument("--root", default=None, help="reuse or write the folder here (default: temp)")
    args = ap.parse_args()
    workers = [int(w) for w in args.workers.split(",") if w.strip()]

    with tempfile.TemporaryDirectory(prefix="autogrow-input-") as tmp:
        root = Path(args.root) if args.root else Path(tmp)
        started = time.perf_counter()
        if not (root / "train").is_dir():
            write_folder(root, args.classes, args.images)
        result: dict[str, Any] = {
            "benchmark": "input_pipeline", "machine": machine(),
            # the engine's decoder here: TorchCodec, or PIL (same pixels, slower) without it
            "engine_decoder": decode.backend(), "torchcodec_problem": decode.torchcodec_problem(),
            "settings": {k: getattr(args, k) for k in ("images", "classes", "batch_size",
                                                        "warmup", "repeats", "device")},
            "write_seconds": time.perf_counter() - started,
        }
        per_epoch = (len(list((root / "train").rglob("*.jpg"))) * 95 // 100) // args.batch_size
        batches = args.batches or max(1, per_epoch - args.warmup)
        if batches + args.warmup > per_epoch:
            raise SystemExit(f"--batches {batches} + --warmup {args.warmup} exceed the "
                             f"{per_epoch} batches of an epoch; write more --images")
        result["settings"]["timed_batches"] = batches
        rows: dict[str, dict[str, Any]] = {}
        for w in workers:
            loaders = {"engine": _engine(root, w, args.device, args.batch_size),
                       "plain": _plain(root, w, args.device, args.batch_size)}
            rates: dict[str, list[float]] = {name: [] for name in loaders}
            for rep in range(args.repeats):  # interleaved, so drifts of the machine hit both
                for name, epoch in loaders.items():
                    rates[name].append(_time_pass(epoch, rep, args.warmup, batches, args.device))
            row = {f"{name}_images_per_s": median(r) for name, r in rates.items()}
            row["engine_over_plain"] = row["engine_images_per_s"] / row["plain_images_per_s"]
            row["passes"] = rates
            rows[str(w)] = row
            del loaders
        result["workers"] = rows
        for name in ("engine", "plain"):
            if "1" in rows and "2" in rows:
                one = rows["1"][f"{name}_images_per_s"]
                result[f"{name}_speedup_1_to_2_workers"] = rows["2"][f"{name}_images_per_s"] / one
        if args.decoder_images:
            result["decoders_images_per_s_1_thread"] = _decoders(root, args.decoder_images)
        emit(result)


if __name__ == "__main__":
    main()
