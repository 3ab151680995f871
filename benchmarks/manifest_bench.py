"""The start of a resume on ImageNet's scale: reading a run's data manifest instead of listing the
tree, and what checking the tree against it costs per file.

Run: ``.venv/bin/python benchmarks/manifest_bench.py [--train 1281167] [--val 50000]
[--files 20000]``; prints one JSON object.

1. A synthetic manifest of ImageNet's shape (1,000 classes, ``--train`` + ``--val`` entries,
   ImageNet-like names and sizes; no images) is written as a run writes it, then read back as a
   resume reads it: ``read_s`` (gunzip, digest against the logged one, parse) and
   ``resume_data_s``, the whole data load of a resume (``load_dataset`` with the manifest: read,
   the reader's path tables, the splits) without the check of the tree, which needs files.
2. The check of the tree against a manifest (one listing per folder, one ``stat`` per file) on a
   real tree of ``--files`` empty sparse files, beside torchvision's listing of the same tree (a
   new run's walk) and a new run's listing plus sizes (``scan``): per file, and projected to the
   manifest's size. On a network file system a ``stat`` costs more than here.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

from _common import emit, machine, median

from autogrow.engine.data import load_dataset
from autogrow.engine.data import manifest as mf
from autogrow.engine.data.image_folder import _list_folder
from autogrow.engine.data.registry import DATASETS

INFO = DATASETS["imagenet"]


def synthetic(train: int, val: int, classes: int, seed: int = 0) -> mf.Manifest:
    """ImageNet's shape: wnid-like class names, ``n…_NNNN.JPEG`` files, sizes around 110 kB."""
    rng = random.Random(seed)
    names = [f"n{1440764 + 7919 * c:08d}" for c in range(classes)]

    def listing(count: int, val_names: bool) -> mf.Listing:
        paths, sizes, labels = [], [], []
        for i in range(count):
            c = i * classes // count
            stem = f"ILSVRC2012_val_{i + 1:08d}" if val_names else f"{names[c]}_{i}"
            paths.append(f"{names[c]}/{stem}.JPEG")
            sizes.append(rng.randint(20_000, 200_000))
            labels.append(c)
        rows = sorted(zip(paths, sizes, labels))  # the order a listing of the tree gives
        return mf.Listing(*(list(column) for column in zip(*rows)))

    return mf.Manifest(tuple(names), {"train": listing(train, False), "val": listing(val, True)})


def sparse_tree(root: Path, manifest: mf.Manifest) -> None:
    """The manifest's files as empty sparse files of their sizes (no data blocks)."""
    for folder, listing in manifest.splits.items():
        for c in manifest.classes:
            (root / folder / c).mkdir(parents=True, exist_ok=True)
        for path, size in zip(listing.paths, listing.sizes):
            with open(root / folder / path, "wb") as f:
                f.truncate(size)


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=1_281_167, help="train entries (ImageNet's)")
    parser.add_argument("--val", type=int, default=50_000, help="val entries (ImageNet's)")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--files", type=int, default=20_000,
                        help="sparse files of the tree the check is timed on")
    parser.add_argument("--repeats", type=int, default=3, help="timings per figure (median)")
    args = parser.parse_args()
    info = machine()
    big = synthetic(args.train, args.val, args.classes)
    small = synthetic(args.files * 24 // 25, args.files - args.files * 24 // 25,
                      min(args.classes, max(1, args.files // 100)), seed=1)
    with tempfile.TemporaryDirectory(prefix="autogrow-manifest-bench-") as tmp:
        run, root = Path(tmp) / "run", Path(tmp) / "data"
        for folder in ("train", "val"):
            (root / folder).mkdir(parents=True)
        write_s, identity = timed(lambda: mf.write(run, big), args.repeats)
        read_s, back = timed(lambda: mf.read(run, identity), args.repeats)
        assert back.encode() == big.encode()

        def resume_data():  # what a resume loads before its check of the tree (no files here)
            return load_dataset("imagenet", data_root=root, manifest=mf.read(run, identity))

        resume_s, data = timed(resume_data, args.repeats)
        assert len(data.train) + len(data.val) == args.train and len(data.test) == args.val
        del data, back

        tree = Path(tmp) / "tree"
        sparse_tree(tree, small)
        _list_folder(INFO, tree / "val")  # torchvision's imports, outside the timing
        listing_s, _ = timed(lambda: (_list_folder(INFO, tree / "train"),
                                      _list_folder(INFO, tree / "val")), args.repeats)
        scan_s, scanned = timed(lambda: load_dataset("imagenet", data_root=tree).manifest,
                                args.repeats)
        assert scanned.encode() == small.encode()
        check_s, _ = timed(lambda: mf.check_tree("imagenet", small, tree), args.repeats)
        manifest_bytes = (run / mf.MANIFEST_PATH).stat().st_size
    entries = args.train + args.val
    per_file = check_s / args.files
    emit({
        "benchmark": "manifest",
        "command": " ".join(["python benchmarks/manifest_bench.py", *sys.argv[1:]]),
        "machine": info,
        "tmpdir": tempfile.gettempdir(),
        "entries": entries,
        "classes": args.classes,
        "manifest_bytes": manifest_bytes,
        "write_s": write_s,
        "read_s": read_s,
        "resume_data_s": resume_s,
        "tree": {
            "files": args.files,
            "torchvision_listing_s": listing_s,
            "new_run_scan_s": scan_s,
            "check_s": check_s,
            "check_us_per_file": per_file * 1e6,
            "listing_us_per_file": listing_s / args.files * 1e6,
            "check_projected_s": per_file * entries,
        },
        "resume_start_projected_s": resume_s + per_file * entries,
    })


if __name__ == "__main__":
    main()
