"""Where an ImageNet-style data root keeps its train and val images, and the labels of a flat
val folder.

Three layouts are accepted, as users have them (README, Data):

* **ImageFolder**: ``ROOT/train/<class>/<image>`` and ``ROOT/val/<class>/<image>`` (what
  ``valprep.sh`` or torchvision's ``ImageNet`` leave);
* **official**: ``ROOT/train/<wnid>/<image>`` and ``ROOT/val/`` flat (``ILSVRC2012_val_%08d.JPEG``),
  labelled by the ILSVRC2012 devkit: ``ROOT/ILSVRC2012_devkit_t12.tar.gz`` (read in memory,
  never extracted) or its ``data/`` folder (``ROOT/ILSVRC2012_devkit_t12/data`` or ``ROOT/data``);
* **Kaggle** (``imagenet-object-localization-challenge``): ``ROOT/ILSVRC/Data/CLS-LOC/{train,val}``
  with val flat, labelled by ``ROOT/LOC_val_solution.csv``; ``ROOT`` may also be the ``CLS-LOC``
  folder itself, the csv then in it or three levels up (the download's root). ``test/`` is not read.

Finding the folders costs a few ``stat`` calls (every launch does it: a resume finds a moved root
again); whether val is flat is decided by listing val (a new run's listing only: a run's manifest
says it), and the train tree is never walked for it. Labels equal torchvision's
``ImageNet(split="val")``: a devkit image's ILSVRC2012_ID (the ground truth's line numbered as the
image) names a leaf synset of ``meta.mat``, read as torchvision reads it (scipy's ``loadmat``);
torchvision's own parser checks the official archive's md5, so it is not called. Classes are
the train folder's (sorted wnids), as torchvision's ImageFolder over wnid folders numbers them.
Names starting with ``.`` (macOS's ``._x.JPEG``, ``.ipynb_checkpoints``) are neither classes nor
images.
"""

from __future__ import annotations

import csv
import io
import os
import re
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Callable

import attrs

from autogrow.engine.data.registry import DataError

KAGGLE_DATA = Path("ILSVRC", "Data", "CLS-LOC")  # below the Kaggle download's root
DEVKIT_ARCHIVE = "ILSVRC2012_devkit_t12.tar.gz"
DEVKIT_DIR = "ILSVRC2012_devkit_t12"
META = "meta.mat"
GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
KAGGLE_CSV = "LOC_val_solution.csv"
_VAL_NAME = re.compile(r"ILSVRC2012_val_(\d+)")  # a flat val image's stem: its number


def visible(name: str) -> bool:
    """A name that may be a class or an image: not hidden (``.``-prefixed)."""
    return not name.startswith(".")


def image_extensions() -> tuple[str, ...]:
    """The file name endings torchvision's ImageFolder reads (tested in lower case)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return IMG_EXTENSIONS


@attrs.frozen
class Layout:
    """Where one data root keeps its splits: ``base/train`` and ``base/val`` (``base`` is the
    root itself, or its Kaggle ``ILSVRC/Data/CLS-LOC``)."""

    root: Path
    base: Path

    @property
    def train(self) -> Path:
        return self.base / "train"

    @property
    def val(self) -> Path:
        return self.base / "val"

    @property
    def folders(self) -> dict[str, Path]:
        """The split folders by the manifest's name for each (``train``, ``val``)."""
        return {"train": self.train, "val": self.val}


def base_of(root: Path) -> Path:
    """The folder holding ``train/`` and ``val/``: ``root``, or the Kaggle folder under it."""
    kaggle = root / KAGGLE_DATA
    if not (root / "train").is_dir() and (kaggle / "train").is_dir():
        return kaggle
    return root


def locate(name: str, root: Path | None) -> Layout:
    """The layout of ``root``; one :class:`DataError` listing the accepted layouts when none
    is there. Cheap: a few ``stat`` calls, no listing."""
    if root is not None:
        layout = Layout(root, base_of(root))
        if layout.train.is_dir() and layout.val.is_dir():
            return layout
    r = root if root is not None else Path("DATA_ROOT")
    said = (f"{name}: {'no data under ' + str(root) if root is not None else 'no data root given'}"
            f": expected {r}/train/<class>/<image> and {r}/val/<class>/<image> (ImageFolder "
            f"layout), or {r}/train/<wnid>/<image> and {r}/val/ILSVRC2012_val_<n>.JPEG with the "
            f"devkit {r}/{DEVKIT_ARCHIVE} or its data/ folder (official layout), or "
            f"{r}/{KAGGLE_DATA}/{{train/<wnid>/<image>,val/<image>}} with {r}/{KAGGLE_CSV} "
            "(Kaggle's layout)")
    raise DataError(f"{said}; set data_root to where they are", cli=f"{said}; pass --data-root")


def val_is_flat(name: str, layout: Layout) -> bool:
    """Whether val holds its images directly (official, Kaggle) rather than in class folders.
    Both at once (a half-sorted val) is refused: either way some images would be left out."""
    folders, images = [], []
    extensions = image_extensions()
    try:
        with os.scandir(layout.val) as entries:
            for entry in entries:
                if not visible(entry.name):
                    continue
                if entry.is_dir():
                    folders.append(entry.name)
                elif entry.name.lower().endswith(extensions):
                    images.append(entry.name)
    except OSError as err:
        raise DataError(f"{name}: cannot list {layout.val}: {err.strerror or err}") from None
    if folders and images:
        raise DataError(f"{name}: {layout.val} holds both class folders ({min(folders)}, …) and "
                        f"{len(images)} images beside them ({min(images)}, …): sort every image "
                        "into its class folder, or move them all back to a flat val")
    return bool(images)


def flat_images(folder: Path) -> list[str]:
    """The names of the images directly in ``folder``, sorted (symlinks followed; a dangling
    one is listed, and refused when its size is read, as in a class folder)."""
    extensions = image_extensions()
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries
                      if visible(e.name) and e.name.lower().endswith(extensions)
                      and not e.is_dir())


# --------------------------------------------------------------------------------------------
# The labels of a flat val folder
# --------------------------------------------------------------------------------------------


@attrs.frozen
class ValLabels:
    """Where a flat val folder's labels come from (for messages), and the wnid of an image by
    its file name (a :class:`DataError` naming the file when the source has none for it)."""

    source: str
    wnid_of: Callable[[str], str]


def _label_sources(layout: Layout) -> list[tuple[str, Path]]:
    """Every place a flat val's labels may be, in the order they are tried."""
    root = layout.root
    out = [("archive", root / DEVKIT_ARCHIVE), ("devkit", root / DEVKIT_DIR / "data"),
           ("devkit", root / "data"), ("csv", root / KAGGLE_CSV)]
    real = root.resolve()
    if layout.base == root and real.parts[-3:] == KAGGLE_DATA.parts:  # ROOT = …/CLS-LOC
        out.append(("csv", real.parents[2] / KAGGLE_CSV))
    return out


def val_labels(name: str, layout: Layout) -> ValLabels:
    """The labels of ``layout``'s flat val folder: the devkit (its archive, then its extracted
    ``data/`` folder), else Kaggle's csv; the first found is read. None found: a
    :class:`DataError` naming every file looked for."""
    sources = _label_sources(layout)
    for kind, path in sources:
        if kind == "archive" and path.is_file():
            return _from_archive(name, path)
        if kind == "devkit" and ((path / META).is_file() or (path / GROUND_TRUTH).is_file()):
            return _from_devkit_folder(name, path)
        if kind == "csv" and path.is_file():
            return _from_csv(name, path)
    looked = ", ".join(str(p / f"{{{META},{GROUND_TRUTH}}}") if kind == "devkit" else str(p)
                       for kind, p in sources)
    raise DataError(f"{name}: {layout.val} holds images but no class folders, and nothing says "
                    f"their classes: looked for {looked}; put the ILSVRC2012 devkit "
                    f"({DEVKIT_ARCHIVE}) or Kaggle's {KAGGLE_CSV} there, or sort val into "
                    "class folders")


def _from_archive(name: str, archive: Path) -> ValLabels:
    """The devkit archive's two files, read from the archive in memory."""
    wanted = {META: None, GROUND_TRUTH: None}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                parts = member.name.split("/")
                if member.isfile() and parts[-1] in wanted and parts[-2:-1] == ["data"]:
                    wanted[parts[-1]] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DataError(f"{name}: cannot read the devkit {archive}: {err}; replace it with the "
                        "official ILSVRC2012_devkit_t12.tar.gz") from None
    for file, data in wanted.items():
        if data is None:
            raise DataError(f"{name}: the devkit {archive} holds no {DEVKIT_DIR}/data/{file}; "
                            "replace it with the official ILSVRC2012_devkit_t12.tar.gz")
    return _devkit_labels(name, f"{archive}:{DEVKIT_DIR}/data/", wanted[META],
                          wanted[GROUND_TRUTH])


def _from_devkit_folder(name: str, data: Path) -> ValLabels:
    """The extracted devkit's ``data/`` folder."""
    contents = {}
    for file in (META, GROUND_TRUTH):
        try:
            contents[file] = (data / file).read_bytes()
        except OSError as err:
            raise DataError(f"{name}: cannot read the devkit's {data / file}: "
                            f"{err.strerror or err}; the devkit's data/ folder needs both "
                            f"{META} and {GROUND_TRUTH}") from None
    return _devkit_labels(name, f"{data}/", contents[META], contents[GROUND_TRUTH])


def leaf_synsets(name: str, where: str, meta: bytes) -> dict[int, str]:
    """``{ILSVRC2012_ID: WNID}`` of ``meta.mat``'s leaf synsets (``num_children == 0``), read as
    torchvision's ``parse_meta_mat`` reads them."""
    import numpy as np
    import scipy.io

    try:
        synsets = np.atleast_1d(scipy.io.loadmat(io.BytesIO(meta), squeeze_me=True)["synsets"])
        return {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets
                if int(s["num_children"]) == 0}
    except Exception as err:  # scipy raises ValueError, KeyError, TypeError, … on other files
        raise DataError(f"{name}: {where}{META} is not the devkit's list of synsets "
                        f"({type(err).__name__}: {err}); replace it with the official "
                        "one") from None


def _devkit_labels(name: str, where: str, meta: bytes, truth: bytes) -> ValLabels:
    """Image ``ILSVRC2012_val_<n>`` is of the leaf synset whose ID is line ``n`` of the ground
    truth (torchvision pairs the lines with the sorted file names: the same on the full set, and
    still right with files missing)."""
    idx_to_wnid = leaf_synsets(name, where, meta)
    lines = truth.decode("ascii", "replace").split()
    try:
        ids = [int(v) for v in lines]
    except ValueError as err:
        raise DataError(f"{name}: {where}{GROUND_TRUTH} is not one ILSVRC2012_ID a line ({err}); "
                        "replace it with the official one") from None

    def wnid_of(file: str) -> str:
        match = _VAL_NAME.fullmatch(os.path.splitext(file)[0])
        number = int(match.group(1)) if match else 0
        if not match or not 1 <= number <= len(ids):
            why = ("its name is not ILSVRC2012_val_<n>.<ext>" if not match else
                   f"the ground truth {where}{GROUND_TRUTH} has {len(ids)} lines, none numbered "
                   f"{number}")
            raise DataError(f"{name}: val image {file} has no label in the devkit: {why}; "
                            "remove it from the flat val folder")
        found = idx_to_wnid.get(ids[number - 1])
        if found is None:
            raise DataError(f"{name}: val image {file}: line {number} of {where}{GROUND_TRUTH} "
                            f"says ILSVRC2012_ID {ids[number - 1]}, which is no leaf synset of "
                            f"{where}{META}; the two files are not of one devkit")
        return found

    return ValLabels(f"{where}{{{META},{GROUND_TRUTH}}}", wnid_of)


def _from_csv(name: str, path: Path) -> ValLabels:
    """Kaggle's ``ImageId,PredictionString`` rows; the label is the prediction's first token."""
    table: dict[str, str] = {}
    try:
        with open(path, newline="") as f:
            rows = csv.reader(f)
            header = next(rows, [])
            if "ImageId" not in header or "PredictionString" not in header:
                raise DataError(f"{name}: {path} does not begin ImageId,PredictionString; "
                                f"replace it with Kaggle's {KAGGLE_CSV}")
            image, prediction = header.index("ImageId"), header.index("PredictionString")
            for line, row in enumerate(rows, 2):
                tokens = row[prediction].split() if len(row) > max(image, prediction) else []
                if not tokens:
                    raise DataError(f"{name}: line {line} of {path} has no ImageId and "
                                    f"PredictionString; replace it with Kaggle's {KAGGLE_CSV}")
                table[row[image]] = tokens[0]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{name}: cannot read {path}: {err}") from None

    def wnid_of(file: str) -> str:
        found = table.get(os.path.splitext(file)[0])
        if found is None:
            raise DataError(f"{name}: val image {file} has no row in {path}; remove it from the "
                            "flat val folder")
        return found

    return ValLabels(str(path), wnid_of)


def label_flat_val(name: str, layout: Layout, files: list[str],
                   class_to_idx: Mapping[str, int]) -> list[int]:
    """The class index of each flat val image in ``files`` (names in ``layout.val``); a class
    with no train folder is refused."""
    labels = val_labels(name, layout)
    out = []
    for file in files:
        wnid = labels.wnid_of(file)
        if wnid not in class_to_idx:
            raise DataError(f"{name}: val image {file} is of class {wnid} ({labels.source}), "
                            f"which has no folder in {layout.train}; the train and val images "
                            "are not of one data set")
        out.append(class_to_idx[wnid])
    return out
