"""The official and Kaggle ImageNet layouts (issue 24, item 2): a flat val folder labelled by the
ILSVRC2012 devkit (its archive or its extracted ``data/``) or by Kaggle's ``LOC_val_solution.csv``,
labelled as torchvision labels it; hidden entries are neither classes nor images; the manifest of
a flat val is written, read back and checked like an image folder's.

In-process and fast: fixtures of 8×8 JPEGs, a devkit made with scipy (``meta.mat``'s real fields,
non-leaf synsets, IDs out of wnid order), no training run. torchvision's own devkit and val
parsers run on the fixture with only their md5 check of the official archives turned off.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from autogrow.engine.data import DataError, load_dataset
from autogrow.engine.data import image_folder, layouts
from autogrow.engine.data import manifest as mf
from autogrow.engine.factories import check_data, record_data
from autogrow.errors import cli_message
from tests.conftest import write_image_folder

#: The fixture's classes, in sorted order (their class indices).
WNIDS = ["n01440764", "n01443537", "n01484850", "n01491361"]
#: Leaf synsets: ILSVRC2012_ID -> WNID, the IDs out of wnid order (as in the real devkit).
LEAVES = {1: "n01491361", 2: "n01440764", 3: "n01484850", 4: "n01443537"}
#: Non-leaf synsets (num_children > 0), as meta.mat lists after the 1,000 leaves.
INNER = {5: ("n01440000", [1, 2]), 6: ("n00001740", [3, 4, 5])}
#: Line n of the ground truth: the ILSVRC2012_ID of val image n.
TRUTH = [3, 1, 4, 2, 2, 1, 3, 4, 1, 2, 4, 3]
TRAIN_PER_CLASS = 2


def _val_name(n: int) -> str:
    return f"ILSVRC2012_val_{n:08d}.JPEG"


def _jpeg(path: Path, shade: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((8, 8, 3), (shade * 37) % 256, dtype=np.uint8)
    pixels[:, : 1 + shade % 7] = 255
    Image.fromarray(pixels).save(path, quality=90)


def _meta_mat(truth_ids=LEAVES) -> bytes:
    """``meta.mat`` as the devkit has it: a ``synsets`` struct array with the real fields."""
    import scipy.io

    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children",
              "wordnet_height", "num_train_images"]
    rows = [(i, w, f"{w} words, other words", f"gloss of {w}", 0, np.zeros(0, np.uint8), 0,
             TRAIN_PER_CLASS) for i, w in truth_ids.items()]
    rows += [(i, w, f"{w} group", "inner", len(kids), np.array(kids), 1, 0)
             for i, (w, kids) in INNER.items()]
    synsets = np.zeros((len(rows), 1), dtype=[(f, object) for f in fields])
    for r, row in enumerate(rows):
        for field, value in zip(fields, row):
            synsets[r, 0][field] = value
    out = io.BytesIO()
    scipy.io.savemat(out, {"synsets": synsets})
    return out.getvalue()


def _truth(ids=TRUTH) -> bytes:
    return "".join(f"{i}\n" for i in ids).encode()


def _devkit_archive(path: Path, meta: bytes, truth: bytes) -> Path:
    """``ILSVRC2012_devkit_t12.tar.gz`` with the official member names (and one file more)."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in (("COPYING", b"licence"), ("data/meta.mat", meta),
                           (f"data/{layouts.GROUND_TRUTH}", truth)):
            info = tarfile.TarInfo(f"{layouts.DEVKIT_DIR}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """``train/<wnid>/<wnid>_<i>.JPEG`` and a flat ``val/`` of ``len(TRUTH)`` images; never
    changed (tests copy it)."""
    root = tmp_path_factory.mktemp("images")
    for c, wnid in enumerate(WNIDS):
        for i in range(TRAIN_PER_CLASS):
            _jpeg(root / "train" / wnid / f"{wnid}_{i}.JPEG", c * 3 + i)
    for n in range(1, len(TRUTH) + 1):
        _jpeg(root / "val" / _val_name(n), 20 + n)
    return root


def _official(images: Path, root: Path, devkit: str) -> Path:
    """The official layout with the devkit as ``devkit`` says: ``archive``, ``extracted``
    (``ROOT/ILSVRC2012_devkit_t12/data``) or ``data`` (``ROOT/data``)."""
    shutil.copytree(images, root)
    if devkit == "archive":
        _devkit_archive(root / layouts.DEVKIT_ARCHIVE, _meta_mat(), _truth())
    else:
        data = root / layouts.DEVKIT_DIR / "data" if devkit == "extracted" else root / "data"
        data.mkdir(parents=True)
        (data / "meta.mat").write_bytes(_meta_mat())
        (data / layouts.GROUND_TRUTH).write_bytes(_truth())
    return root


def _kaggle(images: Path, root: Path) -> Path:
    """Kaggle's download: ``ILSVRC/Data/CLS-LOC/{train,val,test}``, the csv (rows in no order,
    several boxes a row) and the synset mapping, which is not read."""
    data = root / layouts.KAGGLE_DATA
    shutil.copytree(images / "train", data / "train")
    shutil.copytree(images / "val", data / "val")
    _jpeg(data / "test" / "ILSVRC2012_test_00000001.JPEG", 99)
    with open(root / layouts.KAGGLE_CSV, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["ImageId", "PredictionString"])
        for n in reversed(range(1, len(TRUTH) + 1)):
            wnid = LEAVES[TRUTH[n - 1]]
            out.writerow([_val_name(n)[:-5], f"{wnid} 1 2 7 7 {wnid} 0 0 3 3 "])
    (root / "LOC_synset_mapping.txt").write_text("".join(f"{w} words\n" for w in WNIDS))
    return root


def _labels(data) -> dict[str, int]:
    """Our val label of each file name."""
    listing = data.manifest.splits["val"]
    return {Path(p).name: c for p, c in zip(listing.paths, listing.labels)}


def _expected() -> dict[str, int]:
    """The fixture's truth: image n is of LEAVES[TRUTH[n-1]], numbered by sorted wnid."""
    return {_val_name(n): WNIDS.index(LEAVES[i]) for n, i in enumerate(TRUTH, 1)}


def _torchvision_val(images: Path, root: Path, monkeypatch) -> dict[str, int]:
    """``torchvision.datasets.ImageNet(root, split="val")`` on the fixture: its devkit parser
    (scipy's loadmat of meta.mat, leaf synsets, the ground truth) writes ``meta.bin``, its val
    parser sorts the val archive into wnid folders, and ImageNet reads them: file name -> target.
    Only the md5 check of the official archives is turned off."""
    import torchvision.datasets.imagenet as tv

    monkeypatch.setattr(tv, "_verify_archive", lambda *args, **kwargs: None)
    root.mkdir()
    _devkit_archive(root / layouts.DEVKIT_ARCHIVE, _meta_mat(), _truth())
    with tarfile.open(root / "ILSVRC2012_img_val.tar", "w") as tar:
        for path in sorted((images / "val").iterdir()):
            tar.add(path, arcname=path.name)
    tv.parse_devkit_archive(str(root))
    tv.parse_val_archive(str(root))
    dataset = tv.ImageNet(str(root), split="val")
    assert dataset.wnids == WNIDS
    return {Path(p).name: target for p, target in dataset.samples}


# -- the official layout -------------------------------------------------------------------------

@pytest.mark.parametrize("devkit", ["archive", "extracted", "data"])
def test_a_flat_val_is_labelled_by_the_devkit_as_torchvision_labels_it(images, tmp_path,
                                                                        monkeypatch, devkit):
    root = _official(images, tmp_path / "official", devkit)
    before = _tree(root)
    data = load_dataset("imagenet", data_root=root, val_split=0.25)
    assert data.classes == tuple(WNIDS)
    ours = _labels(data)
    theirs = _torchvision_val(images, tmp_path / "torchvision", monkeypatch)
    assert ours == theirs == _expected()
    assert data.manifest.splits["val"].paths == [_val_name(n) for n in range(1, 13)]
    assert data.manifest.splits["val"].flat and not data.manifest.splits["train"].flat
    assert data.train.reader.images.paths["test"][0] == str(root / "val" / _val_name(1))
    assert _tree(root) == before  # the archive is read in memory, nothing extracted
    assert len(data.test) == len(TRUTH) and sorted(data.test.labels.tolist()) == sorted(
        _expected().values())


def test_val_images_are_labelled_by_the_number_in_their_name_with_files_missing(images, tmp_path):
    root = _official(images, tmp_path / "official", "archive")
    for n in (1, 5, 6):
        (root / "val" / _val_name(n)).unlink()
    (root / "val" / "ILSVRC2012_val_00000011.jpeg").write_bytes(
        (root / "val" / _val_name(11)).read_bytes())  # another extension spelling: still n=11
    (root / "val" / _val_name(11)).unlink()
    ours = _labels(load_dataset("imagenet", data_root=root))
    gone = {_val_name(n) for n in (1, 5, 6, 11)}
    expected = {k: v for k, v in _expected().items() if k not in gone}
    assert ours == {**expected, "ILSVRC2012_val_00000011.jpeg": _expected()[_val_name(11)]}


@pytest.mark.parametrize("name, why", [
    ("photo.JPEG", "its name is not ILSVRC2012_val_<n>.<ext>"),
    (_val_name(13), "the ground truth {root}/ILSVRC2012_devkit_t12.tar.gz:ILSVRC2012_devkit_t12/"
                    "data/ILSVRC2012_validation_ground_truth.txt has 12 lines, none numbered 13"),
    ("ILSVRC2012_val_00000000.JPEG", "the ground truth .* none numbered 0"),
])
def test_a_flat_val_file_the_devkit_cannot_label_is_named(images, tmp_path, name, why):
    root = _official(images, tmp_path / "official", "archive")
    _jpeg(root / "val" / name, 1)
    with pytest.raises(DataError) as err:
        load_dataset("imagenet", data_root=root)
    assert re.fullmatch(re.escape(f"imagenet: val image {name} has no label in the devkit: ")
                        + why.format(root=re.escape(str(root)))
                        + re.escape("; remove it from the flat val folder"), str(err.value))


def test_a_ground_truth_id_that_is_no_leaf_synset_is_refused(images, tmp_path):
    root = shutil.copytree(images, tmp_path / "official")
    data = root / "data"
    data.mkdir()
    (data / "meta.mat").write_bytes(_meta_mat())
    (data / layouts.GROUND_TRUTH).write_bytes(_truth([*TRUTH[:2], 5, *TRUTH[3:]]))
    with pytest.raises(DataError, match=re.escape(
            f"imagenet: val image {_val_name(3)}: line 3 of {data}/{layouts.GROUND_TRUTH} says "
            f"ILSVRC2012_ID 5, which is no leaf synset of {data}/meta.mat")):
        load_dataset("imagenet", data_root=root)


def test_a_flat_val_without_labels_names_every_file_looked_for(images, tmp_path):
    root = shutil.copytree(images, tmp_path / "official")
    with pytest.raises(DataError) as err:
        load_dataset("imagenet", data_root=root)
    gt = "{meta.mat,ILSVRC2012_validation_ground_truth.txt}"
    assert str(err.value) == (
        f"imagenet: {root}/val holds images but no class folders, and nothing says their "
        f"classes: looked for {root}/ILSVRC2012_devkit_t12.tar.gz, "
        f"{root}/ILSVRC2012_devkit_t12/data/{gt}, {root}/data/{gt}, {root}/LOC_val_solution.csv; "
        "put the ILSVRC2012 devkit (ILSVRC2012_devkit_t12.tar.gz) or Kaggle's "
        "LOC_val_solution.csv there, or sort val into class folders")
    (root / "data").mkdir()
    (root / "data" / "meta.mat").write_bytes(_meta_mat())  # half a devkit: the other half named
    with pytest.raises(DataError, match=re.escape(
            f"cannot read the devkit's {root}/data/{layouts.GROUND_TRUTH}: No such file")):
        load_dataset("imagenet", data_root=root)


def test_a_damaged_devkit_is_named(images, tmp_path):
    root = _official(images, tmp_path / "official", "archive")
    archive = root / layouts.DEVKIT_ARCHIVE
    archive.write_bytes(archive.read_bytes()[:40])
    with pytest.raises(DataError, match=re.escape(f"imagenet: cannot read the devkit {archive}: ")):
        load_dataset("imagenet", data_root=root)
    with tarfile.open(archive, "w:gz") as tar:  # an archive without the ground truth
        info = tarfile.TarInfo(f"{layouts.DEVKIT_DIR}/data/meta.mat")
        meta = _meta_mat()
        info.size = len(meta)
        tar.addfile(info, io.BytesIO(meta))
    with pytest.raises(DataError, match=re.escape(
            f"the devkit {archive} holds no ILSVRC2012_devkit_t12/data/{layouts.GROUND_TRUTH}")):
        load_dataset("imagenet", data_root=root)
    _devkit_archive(archive, b"not a mat file", _truth())
    with pytest.raises(DataError, match=re.escape(
            f"{archive}:ILSVRC2012_devkit_t12/data/meta.mat is not the devkit's list of synsets")):
        load_dataset("imagenet", data_root=root)


# -- Kaggle's layout -----------------------------------------------------------------------------

def _sorted_val(images: Path, root: Path) -> Path:
    """The fixture with val sorted into wnid folders (what valprep.sh does): ImageFolder layout."""
    shutil.copytree(images / "train", root / "train")
    for name, label in _expected().items():
        (root / "val" / WNIDS[label]).mkdir(parents=True, exist_ok=True)
        shutil.copy(images / "val" / name, root / "val" / WNIDS[label] / name)
    return root


def test_kaggles_layout_is_labelled_as_imagefolder_labels_the_sorted_val(images, tmp_path):
    from torchvision.datasets import ImageFolder

    sorted_root = _sorted_val(images, tmp_path / "sorted")
    reference = ImageFolder(str(sorted_root / "val"))
    theirs = {Path(p).name: target for p, target in reference.samples}
    kaggle = _kaggle(images, tmp_path / "kaggle")
    data = load_dataset("imagenet", data_root=kaggle)
    assert data.classes == tuple(reference.classes) == tuple(WNIDS)
    assert _labels(data) == theirs == _expected()
    assert data.train.reader.images.paths["train"][0] == str(
        kaggle / layouts.KAGGLE_DATA / "train" / WNIDS[0] / f"{WNIDS[0]}_0.JPEG")
    assert data.manifest.splits["train"].paths == load_dataset(
        "imagenet", data_root=sorted_root).manifest.splits["train"].paths  # test/ not read
    assert len(data.train) + len(data.val) == len(WNIDS) * TRAIN_PER_CLASS


def test_the_cls_loc_folder_may_be_the_root_its_csv_three_levels_up_or_in_it(images, tmp_path):
    kaggle = _kaggle(images, tmp_path / "kaggle")
    cls_loc = kaggle / layouts.KAGGLE_DATA
    assert _labels(load_dataset("imagenet", data_root=cls_loc)) == _expected()
    shutil.move(kaggle / layouts.KAGGLE_CSV, cls_loc / layouts.KAGGLE_CSV)
    assert _labels(load_dataset("imagenet", data_root=cls_loc)) == _expected()
    moved = shutil.move(cls_loc, tmp_path / "elsewhere")  # no longer under ILSVRC/Data: in it only
    assert _labels(load_dataset("imagenet", data_root=Path(moved))) == _expected()
    (Path(moved) / layouts.KAGGLE_CSV).unlink()
    with pytest.raises(DataError, match="nothing says their classes"):
        load_dataset("imagenet", data_root=Path(moved))


def test_a_val_image_kaggles_csv_does_not_list_or_a_class_without_train_folder_is_named(
        images, tmp_path):
    kaggle = _kaggle(images, tmp_path / "kaggle")
    val = kaggle / layouts.KAGGLE_DATA / "val"
    _jpeg(val / _val_name(13), 1)
    with pytest.raises(DataError, match=re.escape(
            f"imagenet: val image {_val_name(13)} has no row in {kaggle}/LOC_val_solution.csv; "
            "remove it from the flat val folder")):
        load_dataset("imagenet", data_root=kaggle)
    (val / _val_name(13)).unlink()
    shutil.rmtree(kaggle / layouts.KAGGLE_DATA / "train" / WNIDS[2])
    first = next(n for n in range(1, 13) if LEAVES[TRUTH[n - 1]] == WNIDS[2])
    with pytest.raises(DataError, match=re.escape(
            f"imagenet: val image {_val_name(first)} is of class {WNIDS[2]} "
            f"({kaggle}/LOC_val_solution.csv), which has no folder in "
            f"{kaggle / layouts.KAGGLE_DATA / 'train'}")):
        load_dataset("imagenet", data_root=kaggle)


# -- no layout, a half-sorted val ----------------------------------------------------------------

def test_no_layout_is_one_error_listing_the_accepted_ones(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError) as err:
        load_dataset("imagenet", data_root=tmp_path)
    r = str(tmp_path)
    said = (f"imagenet: no data under {r}: expected {r}/train/<class>/<image> and "
            f"{r}/val/<class>/<image> (ImageFolder layout), or {r}/train/<wnid>/<image> and "
            f"{r}/val/ILSVRC2012_val_<n>.JPEG with the devkit {r}/ILSVRC2012_devkit_t12.tar.gz "
            f"or its data/ folder (official layout), or {r}/ILSVRC/Data/CLS-LOC/"
            f"{{train/<wnid>/<image>,val/<image>}} with {r}/LOC_val_solution.csv (Kaggle's layout)")
    assert str(err.value) == f"{said}; set data_root to where they are"
    assert cli_message(err.value) == f"{said}; pass --data-root"


def test_a_half_sorted_val_is_refused(images, tmp_path):
    root = _official(images, tmp_path / "official", "archive")
    (root / "val" / WNIDS[0]).mkdir()
    shutil.move(root / "val" / _val_name(2), root / "val" / WNIDS[0] / _val_name(2))
    with pytest.raises(DataError, match=re.escape(
            f"imagenet: {root}/val holds both class folders ({WNIDS[0]}, …) and 11 images beside "
            f"them ({_val_name(1)}, …)")):
        load_dataset("imagenet", data_root=root)


# -- hidden entries ------------------------------------------------------------------------------

def _clutter(root: Path, split_folders: list[Path]) -> None:
    """What macOS, Jupyter and editors leave: hidden folders and files, and non-images."""
    for folder in split_folders:
        _jpeg(folder / ".ipynb_checkpoints" / "x.JPEG", 3)  # a hidden "class"
        (folder / ".DS_Store").write_bytes(b"\0\1")
        _jpeg(folder / "._stray.JPEG", 4)
        for cls in (c for c in folder.iterdir() if c.is_dir() and not c.name.startswith(".")):
            _jpeg(cls / f"._{cls.name}_0.JPEG", 5)  # AppleDouble beside each image folder's
            _jpeg(cls / ".thumbs" / "t.JPEG", 6)
            (cls / "notes.txt").write_text("not an image")


@pytest.mark.parametrize("layout", ["imagefolder", "official"])
def test_hidden_entries_are_neither_classes_nor_images(images, tmp_path, layout):
    if layout == "imagefolder":
        clean = _sorted_val(images, tmp_path / "clean")
    else:
        clean = _official(images, tmp_path / "clean", "archive")
    reference = load_dataset("imagenet", data_root=clean).manifest
    cluttered = shutil.copytree(clean, tmp_path / "cluttered")
    _clutter(cluttered, [cluttered / "train", cluttered / "val"])
    if layout == "official":
        _jpeg(cluttered / "val" / f"._{_val_name(1)}", 7)
    manifest = load_dataset("imagenet", data_root=cluttered).manifest
    assert manifest.encode() == reference.encode()
    mf.check_tree("imagenet", reference, cluttered)  # the check ignores them too
    mf.check_tree("imagenet", manifest, clean)
    _jpeg(cluttered / "train" / WNIDS[1] / "new.JPEG", 8)
    with pytest.raises(DataError, match=f"train/{WNIDS[1]}/new.JPEG is not in the run's manifest"):
        mf.check_tree("imagenet", reference, cluttered)


def test_a_manifest_that_lists_a_hidden_entry_still_checks_it(tmp_path):
    """A run listed before hidden entries were left out compares them like any file."""
    root = write_image_folder(tmp_path / "images", classes=2, train=2, val=1)
    listed = load_dataset("imagenet", data_root=root).manifest
    hidden = root / "train" / ".hidden"
    _jpeg(hidden / "h.JPEG", 1)
    train = listed.splits["train"]
    old = mf.Manifest((".hidden", *listed.classes), {
        "train": mf.Listing([".hidden/h.JPEG", *train.paths],
                            [(hidden / "h.JPEG").stat().st_size, *train.sizes],
                            [0, *(c + 1 for c in train.labels)]),
        "val": listed.splits["val"]})
    _jpeg(root / "val" / ".hidden" / "v.JPEG", 2)
    old = mf.Manifest(old.classes, {**old.splits, "val": mf.Listing(
        [".hidden/v.JPEG", *old.splits["val"].paths],
        [(root / "val/.hidden/v.JPEG").stat().st_size, *old.splits["val"].sizes],
        [0, *(c + 1 for c in old.splits["val"].labels)])})
    mf.check_tree("imagenet", old, root)
    (hidden / "h.JPEG").unlink()
    with pytest.raises(DataError, match="train/.hidden/h.JPEG is missing"):
        mf.check_tree("imagenet", old, root)


# -- the manifest of a flat val ------------------------------------------------------------------

def test_a_flat_vals_manifest_is_read_back_and_checked(images, tmp_path, monkeypatch):
    root = _official(images, tmp_path / "official", "archive")
    first = load_dataset("imagenet", data_root=root, val_split=0.25)
    run = tmp_path / "run"
    identity = record_data(first, run)
    assert identity["images"] == {"train": 8, "val": 12} and identity["classes"] == WNIDS
    back = mf.read(run, identity)
    assert back.encode() == first.manifest.encode() and back.splits["val"].flat

    def listed(*args):
        raise AssertionError("the tree was listed again")

    for name in ("_list_folder", "_list_flat_val"):
        monkeypatch.setattr(image_folder, name, listed)
    monkeypatch.setattr(layouts, "val_is_flat", listed)
    monkeypatch.setattr(layouts, "val_labels", listed)
    again = load_dataset("imagenet", data_root=root, val_split=0.25, manifest=back)
    assert again.test.labels.tolist() == first.test.labels.tolist()
    assert again.train.reader.images.paths["test"][3] == str(root / "val" / _val_name(4))
    check_data(again, identity)

    # the same files in Kaggle's layout are the same data (paths are relative to each split)
    kaggle = tmp_path / "kaggle" / layouts.KAGGLE_DATA
    shutil.copytree(root / "train", kaggle / "train")
    shutil.copytree(root / "val", kaggle / "val")
    moved = load_dataset("imagenet", data_root=kaggle.parents[2], manifest=back)
    check_data(moved, identity)

    (root / "val" / _val_name(3)).unlink()
    with pytest.raises(DataError, match=re.escape(
            f"imagenet: the data under {root} is not the data this run trained on: "
            f"val/{_val_name(3)} is missing; restore the files")):
        check_data(again, identity)
    shutil.copy(root / "val" / _val_name(4), root / "val" / _val_name(3))
    with pytest.raises(DataError, match=re.escape(f"val/{_val_name(3)} is ")):  # resized
        check_data(again, identity)
    (root / "val" / _val_name(3)).unlink()
    shutil.copy(kaggle / "val" / _val_name(3), root / "val" / _val_name(3))
    _jpeg(root / "val" / _val_name(13), 9)
    with pytest.raises(DataError, match=re.escape(
            f"val/{_val_name(13)} is not in the run's manifest (added)")):
        check_data(again, identity)
    (root / "val" / _val_name(13)).unlink()
    check_data(again, identity)
    (root / "val" / WNIDS[0]).mkdir()  # val sorted since: every flat file gone from its place
    for n in range(1, 13):
        shutil.move(root / "val" / _val_name(n), root / "val" / WNIDS[0] / _val_name(n))
    with pytest.raises(DataError, match=re.escape(
            f"val/{_val_name(1)} is missing (and 11 other differences)")):
        check_data(again, identity)

