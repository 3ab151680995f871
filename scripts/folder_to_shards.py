#!/usr/bin/env python3
"""Write an ImageNet-style folder (any layout ``--data-root`` accepts) as WebDataset tar shards.

    python scripts/folder_to_shards.py ROOT OUT [--shard-size 1000]

``OUT/train/train-000000.tar`` … and ``OUT/val/val-000000.tar`` …, each sample an image's bytes
as they are (not re-encoded; ``key.<its extension, lower case>``) and its class index as ASCII
text (``key.cls``); ``OUT/classes.txt`` holds the class names, one a line. The images go in the
order the engine numbers the folder's rows (its listing: classes sorted, then file names), in
shards numbered in that order, so a run on OUT draws the same batches, bit for bit, as a run on
ROOT (``autogrow.engine.data.shards``). A key is the image's path below its split folder without
its extension (``n01440764/n01440764_10026``), any other ``.`` in its base name made ``_`` (a
WebDataset key ends at the first dot).

Deterministic: the same folder gives the same bytes (GNU tar headers with mtime 0, uid and gid
0, no user or group names, mode 0644). Each shard is written to a temp file, fsynced and
renamed; OUT must hold no shards yet.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from autogrow.engine.data import DATASETS, DataError, layouts  # noqa: E402
from autogrow.engine.data.image_folder import list_images  # noqa: E402
from autogrow.engine.data.registry import cache_file  # noqa: E402
from autogrow.engine.data.shards import CLASSES_FILE, SUFFIX  # noqa: E402


def key_of(relative: str) -> tuple[str, str]:
    """``(key, extension)`` of an image's path below its split folder."""
    parts = relative.split(os.sep)
    stem, _, ext = parts[-1].rpartition(".")
    parts[-1] = stem.replace(".", "_")
    return "/".join(parts), ext.lower()


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_shard(path: Path, samples: list[tuple[str, str, Path, int]]) -> None:
    """One tar of ``(key, extension, image file, class)`` samples, byte for byte the same for
    the same samples."""
    with cache_file(path) as tmp:
        with tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tar:
            for key, ext, image, label in samples:
                data = image.read_bytes()
                tar.addfile(_member(f"{key}.{ext}", len(data)), io.BytesIO(data))
                cls = str(label).encode("ascii")
                tar.addfile(_member(f"{key}.cls", len(cls)), io.BytesIO(cls))


def convert(root: Path, out: Path, shard_size: int) -> dict[str, int]:
    """Write ``root``'s images as shards under ``out``; the number of shards per split."""
    if shard_size < 1:
        raise ValueError(f"--shard-size must be at least 1, not {shard_size}")
    info = DATASETS["imagenet"]
    layout = layouts.locate(info.name, root)
    manifest = list_images(info, layout)
    for split in manifest.splits:
        if any(p.name.endswith(SUFFIX) for p in (out / split).glob("*")):
            raise DataError(f"{out / split} holds shards already; write to an empty folder")
    written = {}
    for split, listing in manifest.splits.items():
        folder = layout.folders[split]
        samples, keys = [], set()
        for rel, label in zip(listing.paths, listing.labels):
            key, ext = key_of(rel)
            if key in keys:
                raise DataError(f"{folder / rel}: its key {key!r} is another image's too (names "
                                "that differ only by '.' and '_'); rename one")
            keys.add(key)
            samples.append((key, ext, folder / rel, label))
        count = 0
        for start in range(0, len(samples), shard_size):
            write_shard(out / split / f"{split}-{count:06d}{SUFFIX}",
                        samples[start : start + shard_size])
            count += 1
        written[split] = count
    with cache_file(out / CLASSES_FILE) as tmp:
        Path(tmp).write_text("".join(f"{c}\n" for c in manifest.classes), encoding="utf-8")
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", type=Path, help="the image folder (any layout --data-root accepts)")
    ap.add_argument("out", type=Path, help="where the shards go (OUT/train, OUT/val)")
    ap.add_argument("--shard-size", type=int, default=1000, help="images per shard")
    args = ap.parse_args(argv)
    try:
        written = convert(args.root.expanduser(), args.out.expanduser(), args.shard_size)
    except (DataError, ValueError) as err:
        print(f"folder_to_shards: {err}", file=sys.stderr)
        return 2
    for split, count in written.items():
        print(f"{split}: {count} shard{'s' if count != 1 else ''} in {args.out / split}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
