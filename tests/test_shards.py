"""WebDataset tar shards: the index of member offsets and reads by ``pread``, the converter's
bytes, batches bitwise equal to the folder's they were written from, and a run's manifest and
index on resume (kept when the shards are as indexed, a changed shard refused). The kill and
resume of a run on shards is in tests/test_image_folder.py (beside the folder run it equals)."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import shutil
import sys
import tarfile
from pathlib import Path

import attrs
import numpy as np
import pytest
import torch

from autogrow.engine import factories
from autogrow.engine.data import (
    DataError,
    eval_batches,
    load_dataset,
    manifest,
    shards,
    train_batches,
)
from autogrow.engine.data.shards import ShardTable, find, scan_shard
from tests.conftest import REPO, write_image_folder

sys.path.insert(0, str(REPO / "scripts"))
import folder_to_shards  # noqa: E402


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def converted(folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards") / "out"
    assert folder_to_shards.convert(folder, out, 5) == {"train": 10, "val": 4}  # 48 and 18
    return out


def _copy(converted: Path, tmp_path: Path) -> Path:
    """A copy of the shards to change (mtimes kept, as ``cp -a`` keeps them)."""
    return Path(shutil.copytree(converted, tmp_path / "shards"))


def _tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


# ------------------------------------------------------------------ index and reads


def _listing(folder: Path, split: str) -> list[str]:
    """The folder's images of ``split`` in the reader's row order."""
    from autogrow.engine.data import DATASETS, layouts
    from autogrow.engine.data.image_folder import list_images

    return list_images(DATASETS["imagenet"], layouts.Layout(folder, folder)).splits[split].paths


def test_the_index_gives_each_images_bytes_and_class_and_pread_reads_them(folder, converted):
    path = converted / "train" / "train-000003.tar"  # train rows 15-19: class0's last, class1's
    scanned = scan_shard(path)
    assert scanned.names == _listing(folder, "train")[15:20]
    assert scanned.labels == [0, 1, 1, 1, 1]
    with tarfile.open(path) as tar:  # tarfile's own reading: the same offsets and sizes
        infos = [i for i in tar if not i.name.endswith(".cls")]
    assert [i.offset_data for i in infos] == scanned.offsets
    assert [i.size for i in infos] == scanned.sizes
    table = ShardTable([str(path)], np.zeros(5, np.int32), np.asarray(scanned.offsets),
                       scanned.sizes, [f"train-000003.tar/{n}" for n in scanned.names])
    for row, name in enumerate(scanned.names):
        assert table.read(row).tobytes() == (folder / "train" / name).read_bytes()
    assert table[1] == f"{path}/class1/0.png"  # what a message calls it

    worker_copy = pickle.loads(pickle.dumps(table))  # what a spawned worker gets: no descriptor
    assert table._fds and worker_copy._fds == {}
    assert worker_copy.read(4).tobytes() == table.read(4).tobytes()

    paths = sorted(str(p) for p in (converted / "train").glob("*.tar"))  # 10 shards, 3 open
    starts = [scan_shard(Path(p)) for p in paths]
    many = ShardTable(paths, np.arange(10, dtype=np.int32),
                      np.asarray([s.offsets[0] for s in starts]), [s.sizes[0] for s in starts],
                      [f"s/{s.names[0]}" for s in starts])
    many.MAX_OPEN = 3
    for _ in range(2):
        for row in range(10):
            expected = (folder / "train" / starts[row].names[0]).read_bytes()
            assert many.read(row).tobytes() == expected
            assert len(many._fds) == min(row + 1, 3) if not _ else len(many._fds) == 3
    assert list(many._fds) == [7, 8, 9]


def test_a_shard_cut_short_is_a_data_error_naming_the_image(converted, tmp_path):
    root = _copy(converted, tmp_path)
    path = root / "train" / "train-000000.tar"
    scanned = scan_shard(path)
    table = ShardTable([str(path)], np.zeros(5, np.int32), np.asarray(scanned.offsets),
                       scanned.sizes, [f"train-000000.tar/{n}" for n in scanned.names])
    os.truncate(path, scanned.offsets[4] + 10)
    assert table.read(0).size == scanned.sizes[0]
    with pytest.raises(DataError, match=rf"cannot read image .*train-000000.tar/"
                                        rf"{scanned.names[4]}: the shard ends \d+ bytes early"):
        table.read(4)


@pytest.mark.parametrize("form", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_the_header_reader_finds_what_tarfile_finds(tmp_path, form):
    """Long names (ustar's prefix, GNU's long-name member, pax's path), non-ASCII names, folders
    and links among the files: each regular file's name, data offset and size as tarfile's."""
    names = ["a.jpg", "d/" * 60 + "long.jpg", "x" * 120 + "/y.cls", "é/ü.jpg", "z" * 99 + ".png"]
    if form == tarfile.USTAR_FORMAT:  # ustar cannot hold a name of 120 characters past a "/"
        names = [n for n in names if len(n.rpartition("/")[2]) <= 100 and len(n) < 255
                 and n.isascii()]
    path = tmp_path / "t.tar"
    with tarfile.open(path, "w", format=form) as tar:
        tar.addfile(_info("folder", 0, tarfile.DIRTYPE))
        for i, name in enumerate(names):
            data = bytes(range(256)) * i + b"end"
            tar.addfile(_info(name, len(data)), io.BytesIO(data))
            tar.addfile(_info(f"link{i}", 0, tarfile.SYMTYPE))
    with tarfile.open(path) as tar:
        expected = [(m.name, m.offset_data, m.size) for m in tar if m.isfile()]
    fd = os.open(path, os.O_RDONLY)
    try:
        found = list(shards.members(fd))
    finally:
        os.close(fd)
    assert [f[:3] for f in found] == expected and len(expected) == len(names)
    assert [f[3] for f in found][1][:3] == bytes([0, 1, 2])  # the data's first bytes


def _info(name: str, size: int, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.type = size, kind
    if kind == tarfile.SYMTYPE:
        info.linkname = "a.jpg"
    return info


def test_samples_group_by_key_and_others_are_refused(tmp_path):
    good = _tar(tmp_path / "a.tar", [("x/k1.jpg", b"J1"), ("x/._k1.jpg", b"mac"),
                                     ("x/k1.cls", b" 7\n"), ("x/k1.json", b"{}"),
                                     (".hidden/k3.jpg", b"J3"), ("k2.JPEG", b"J2"),
                                     ("k2.cls", b"0")])
    scanned = scan_shard(good)
    assert scanned.names == ["x/k1.jpg", "k2.JPEG"] and scanned.labels == [7, 0]
    assert scanned.sizes == [2, 2]
    no_cls = _tar(tmp_path / "b.tar", [("k1.jpg", b"J1"), ("k1.cls", b"1"), ("k2.jpg", b"J2")])
    with pytest.raises(DataError, match=r"b.tar: sample 'k2' is not a WebDataset image sample: "
                                        r"members \['jpg'\]"):
        scan_shard(no_cls)
    bad_cls = _tar(tmp_path / "c.tar", [("k1.jpg", b"J1"), ("k1.cls", b"dog")])
    with pytest.raises(DataError, match=r"k1.cls holds 'dog', not a class index"):
        scan_shard(bad_cls)
    official = _tar(tmp_path / "ILSVRC2012_img_train.tar", [("n01440764.tar", b"x" * 10)])
    with pytest.raises(DataError, match="a tar of tars"):
        scan_shard(official)
    gz = tmp_path / "d.tar"
    with tarfile.open(gz, "w:gz") as tar:
        tar.addfile(tarfile.TarInfo("k.cls"), io.BytesIO(b""))
    with pytest.raises(DataError, match=r"cannot read tar shard .*d.tar: .*uncompressed"):
        scan_shard(gz)


def test_where_the_shards_are_found(tmp_path, folder):
    timm = tmp_path / "timm"  # timm/imagenet-1k-wds's names, all in one folder
    for name in ("imagenet1k-train-0001.tar", "imagenet1k-train-0000.tar",
                 "imagenet1k-validation-00.tar", "readme.tar", "._imagenet1k-train-0002.tar"):
        _tar(timm / name, [])
    assert find(timm) == {"train": [timm / "imagenet1k-train-0000.tar",
                                    timm / "imagenet1k-train-0001.tar"],
                          "val": [timm / "imagenet1k-validation-00.tar"]}
    sub = tmp_path / "sub"
    for name in ("train/b.tar", "train/a.tar", "validation/v.tar"):
        _tar(sub / name, [])
    assert find(sub) == {"train": [sub / "train/a.tar", sub / "train/b.tar"],
                         "val": [sub / "validation/v.tar"]}
    assert find(folder) is None  # an image folder
    beside = tmp_path / "official"  # the official tars beside their extracted folders
    shutil.copytree(folder, beside)
    _tar(beside / shards.OFFICIAL_TRAIN, [])
    _tar(beside / shards.OFFICIAL_VAL, [])
    assert find(beside) is None and find(tmp_path / "nothing") is None
    shutil.rmtree(beside / "train")  # the official tars alone (their test: below)
    assert find(beside) == {"train": [beside / shards.OFFICIAL_TRAIN],
                            "val": [beside / shards.OFFICIAL_VAL]}
    (sub / "validation" / "v.tar").unlink()
    with pytest.raises(DataError, match=r"holds train shards but no val shard: expected "
                                        r".*val/\*.tar"):
        load_dataset("imagenet", data_root=sub)


def test_a_brace_pattern_names_the_shards(converted, tmp_path):
    assert shards.expand_braces("a{08..10}b{x,y{1..2}}") == [
        "a08bx", "a08by1", "a08by2", "a09bx", "a09by1", "a09by2", "a10bx", "a10by1", "a10by2"]
    assert shards.expand_braces("s-{3..1}{}.tar") == ["s-3{}.tar", "s-2{}.tar", "s-1{}.tar"]
    assert shards.expand_braces("{7..10}") == ["7", "8", "9", "10"]  # no leading zero: no pad
    pattern = f"{converted}/{{val/val-{{000000..000003}},train/train-{{000000..000009}}}}.tar"
    found = find(Path(pattern))
    assert found == find(converted)
    by_pattern = load_dataset("imagenet", data_root=pattern, seed=1)
    by_folder = load_dataset("imagenet", data_root=converted, seed=1)
    assert by_pattern.manifest.encode() == by_folder.manifest.encode()  # classes.txt found too
    assert by_pattern.classes == ("class0", "class1", "class2")
    for bad, said in ((pattern.replace("000009", "000010"), r"of the 15 shards .* names, "
                                                            r".*train-000010.tar is not there"),
                      (pattern.replace("000003", "000005"), r"val-000004.tar \(and 1 more\)"),
                      (f"{converted}/{{train/train-000000,classes}}.tar", "is not there"),
                      (f"{converted}/train/train-{{000000..000001", "an unclosed brace")):
        with pytest.raises(DataError, match=said):
            find(Path(bad))
    odd = _tar(tmp_path / "other-0.tar", [])
    with pytest.raises(DataError, match="other-0.tar is named with neither 'train' nor 'val'"):
        find(Path(f"{{{odd},{converted}/train/train-000000.tar}}"))


# ------------------------------------------------------------------ the converter


def test_the_converter_writes_the_same_bytes_for_the_same_folder(folder, converted, tmp_path):
    again = tmp_path / "again"
    folder_to_shards.convert(folder, again, 5)
    names = sorted(p.relative_to(converted) for p in converted.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert len(names) == 10 + 4 + 1  # shards and classes.txt
    for name in names:
        assert (converted / name).read_bytes() == (again / name).read_bytes(), name
    with tarfile.open(converted / "val" / "val-000000.tar") as tar:
        infos = tar.getmembers()
    assert [i.name for i in infos[:4]] == ["class0/0.png", "class0/0.cls", "class0/1.jpg",
                                           "class0/1.cls"]
    assert {(i.mtime, i.uid, i.gid, i.uname, i.gname, i.mode) for i in infos} == {
        (0, 0, 0, "", "", 0o644)}
    assert (converted / "classes.txt").read_text() == "class0\nclass1\nclass2\n"
    assert folder_to_shards.key_of(os.path.join("n01", "a.b.JPEG")) == ("n01/a_b", "jpeg")
    with pytest.raises(DataError, match="holds shards already"):
        folder_to_shards.convert(folder, again, 5)
    assert folder_to_shards.main([str(folder), str(tmp_path / "cli"), "--shard-size", "0"]) == 2


# ------------------------------------------------------------------ the same batches


def _passes(data) -> dict[str, list]:
    def take(batches):
        return [(x.clone(), y.clone()) for x, y in batches]
    return {
        "epoch": take(train_batches(data.train, seed=4, epoch=2, batch_size=7)),
        "resumed": take(train_batches(data.train, seed=4, epoch=3, batch_size=7, start_step=2)),
        "rank1": take(train_batches(data.train, seed=4, epoch=2, batch_size=7, rank=1,
                                    world_size=2)),
        "eval": take(eval_batches(data.test, 5)),
    }


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_are_bitwise_equal_to_the_folders(folder, converted, workers):
    ours = load_dataset("imagenet", data_root=converted, seed=4, val_split=0.25, workers=workers)
    theirs = load_dataset("imagenet", data_root=folder, seed=4, val_split=0.25, workers=workers)
    assert ours.classes == theirs.classes == ("class0", "class1", "class2")
    assert ours.manifest.kind == "shards" and ours.manifest.index is not None
    a, b = _passes(ours), _passes(theirs)
    assert [x.shape[0] for x, _ in a["epoch"]] == [7, 7, 7, 7, 7, 1]
    for kind in a:
        assert len(a[kind]) == len(b[kind]) > 0, kind
        for (xa, ya), (xb, yb) in zip(a[kind], b[kind]):
            assert torch.equal(xa, xb) and torch.equal(ya, yb), kind


# ------------------------------------------------------------------ a run's manifest and index


def _start(root: Path, run_dir: Path) -> tuple[dict, object]:
    """What a new run on ``root`` records (``run_started``'s data), and its data."""
    data = load_dataset("imagenet", data_root=root, seed=1)
    return factories.record_data(data, run_dir), data


def _resume(root: Path, run_dir: Path, identity: dict):
    """The data a resume builds (the manifest and index read from the run, then checked)."""
    pinned = manifest.read(run_dir, identity)
    if pinned.kind == "shards":  # as factories.load_data
        pinned = shards.pin(run_dir, pinned, identity["manifest"])
    data = load_dataset("imagenet", data_root=root, seed=1, manifest=pinned)
    factories.check_data(data, identity)
    return data


def test_a_resume_reads_the_index_and_scans_no_shard_that_is_as_indexed(
        converted, tmp_path, monkeypatch):
    identity, started = _start(converted, tmp_path / "run")
    assert (tmp_path / "run" / "data" / "manifest").is_file()
    assert (tmp_path / "run" / shards.INDEX_PATH).is_file()
    with gzip.open(tmp_path / "run" / "data" / "manifest") as gz:
        text = gz.read().decode()
    assert text.startswith(manifest.SHARDS_HEADER + "\n")
    assert "train-000000.tar/class0/0.png\t" in text and identity["images"] == {"train": 48,
                                                                                "val": 18}
    scanned = []
    monkeypatch.setattr(shards, "scan_shard", lambda p: scanned.append(p) or scan_shard(p))
    moved = Path(shutil.copytree(converted, tmp_path / "moved"))  # mtimes kept: as indexed
    resumed = _resume(moved, tmp_path / "run", identity)
    assert scanned == []
    for split in ("train", "val"):
        assert np.array_equal(resumed.manifest.index.offsets[split],
                              started.manifest.index.offsets[split])
    x, _ = next(iter(eval_batches(resumed.test, 4)))
    y, _ = next(iter(eval_batches(started.test, 4)))
    assert torch.equal(x, y)

    os.utime(moved / "train" / "train-000002.tar")  # touched: scanned again, the same samples
    (tmp_path / "run" / shards.INDEX_PATH).unlink()  # and no index: every shard scanned
    _resume(moved, tmp_path / "run", identity)
    assert len(scanned) == 14


def test_a_changed_shard_is_refused_on_resume_naming_the_first_difference(
        folder, converted, tmp_path):
    identity, _ = _start(converted, tmp_path / "run")
    run = tmp_path / "run"

    def refused(root: Path, match: str) -> None:
        with pytest.raises(DataError, match=match) as err:
            _resume(root, run, identity)
        assert "restore the shards the run was started with" in str(err.value)
        assert "--data-root" in err.value.cli

    # the second image of shard 2 (rows 10-14) replaced by the first's bytes: its size differs
    changed = _copy(converted, tmp_path / "a")
    rows = _listing(folder, "train")[10:15]
    files = [folder / "train" / rows[0], folder / "train" / rows[0], *(folder / "train" / r
                                                                      for r in rows[2:])]
    assert files[0].stat().st_size != (folder / "train" / rows[1]).stat().st_size
    folder_to_shards.write_shard(changed / "train" / "train-000002.tar", [
        (r.rsplit(".", 1)[0], "jpg", f, 0) for r, f in zip(rows, files)])
    refused(changed, rf"not the data this run trained on: train/train-000002.tar/{rows[1]} "
                     r"is \d+ bytes, the run's manifest says \d+")

    gone = _copy(converted, tmp_path / "b")
    (gone / "val" / "val-000001.tar").unlink()
    refused(gone, r"val/val-000001.tar/class0/5.jpg is missing \(shard val-000001.tar is gone\)")

    added = _copy(converted, tmp_path / "c")
    shutil.copy(added / "train" / "train-000000.tar", added / "train" / "train-000010.tar")
    refused(added, r"train/train-000010.tar/class0/0.png is not in the run's manifest \(added\)")

    relabelled = _copy(converted, tmp_path / "d")  # the same bytes, another class
    path = relabelled / "val" / "val-000003.tar"  # rows 15-17: class2/3.jpg, 4.jpg, 5.jpg
    folder_to_shards.write_shard(path, [(f"class2/{i}", "jpg", folder / f"val/class2/{i}.jpg",
                                         1 if i == 4 else 2) for i in (3, 4, 5)])
    refused(relabelled, r"val/val-000003.tar/class2/4.jpg has class 1, the run's manifest says 2")

    with pytest.raises(DataError, match=r"the run trained on tar shards, but .* holds no tar "
                                        r"shards; set data_root"):
        _resume(folder, run, identity)
    folder_identity, _ = (lambda d: (factories.record_data(d, tmp_path / "f"), d))(
        load_dataset("imagenet", data_root=folder, seed=1))
    with pytest.raises(DataError, match=r"the run trained on an image folder, but .* holds tar "
                                        r"shards"):
        _resume(converted, tmp_path / "f", folder_identity)


def test_an_index_of_another_manifest_is_not_used(converted, tmp_path):
    identity, data = _start(converted, tmp_path / "run")
    assert shards.read_index(tmp_path / "run", identity["manifest"]) is not None
    assert shards.read_index(tmp_path / "run", "0" * 64) is None
    (tmp_path / "run" / shards.INDEX_PATH).write_bytes(b"garbage")
    assert shards.read_index(tmp_path / "run", identity["manifest"]) is None
    stale = attrs.evolve(data.manifest, index=None)
    assert shards.refresh(stale, find(converted)).index.difference is None


# ------------------------------------------------------------------ the official ILSVRC2012 tars


def _official_tars(extracted: Path, out: Path) -> Path:
    """``ILSVRC2012_img_train.tar`` (one tar per class, in a tar) and ``ILSVRC2012_img_val.tar``
    (flat) of an extracted official layout, every member list in reverse order (the reader
    sorts), and its devkit archive beside them."""
    from autogrow.engine.data import layouts

    out.mkdir()
    shutil.copy(extracted / layouts.DEVKIT_ARCHIVE, out)
    with tarfile.open(out / shards.OFFICIAL_TRAIN, "w") as outer:
        for wnid in sorted((extracted / "train").iterdir(), reverse=True):
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w") as tar:
                for image in sorted(wnid.iterdir(), reverse=True):
                    tar.add(image, arcname=image.name)
            outer.addfile(_info(f"{wnid.name}.tar", len(inner.getvalue())),
                          io.BytesIO(inner.getvalue()))
    with tarfile.open(out / shards.OFFICIAL_VAL, "w") as tar:
        for image in sorted((extracted / "val").iterdir(), reverse=True):
            tar.add(image, arcname=image.name)
    return out


def test_the_official_tars_are_read_as_their_extracted_folders(tmp_path):
    from tests import test_layouts
    from tests.test_layouts import _official

    source = tmp_path / "images"
    for c, wnid in enumerate(test_layouts.WNIDS):
        for i in range(test_layouts.TRAIN_PER_CLASS):
            test_layouts._jpeg(source / "train" / wnid / f"{wnid}_{i}.JPEG", c * 3 + i)
    for n in range(1, len(test_layouts.TRUTH) + 1):
        test_layouts._jpeg(source / "val" / test_layouts._val_name(n), 20 + n)
    extracted = _official(source, tmp_path / "extracted", "archive")
    tars = _official_tars(extracted, tmp_path / "tars")
    assert find(tars) == {"train": [tars / shards.OFFICIAL_TRAIN],
                          "val": [tars / shards.OFFICIAL_VAL]}
    folder = load_dataset("imagenet", data_root=extracted, seed=2, val_split=0.25)
    packed = load_dataset("imagenet", data_root=tars, seed=2, val_split=0.25, workers=2)
    assert packed.classes == folder.classes == tuple(test_layouts.WNIDS)
    listing = packed.manifest.splits["train"]
    assert listing.paths[:2] == [f"{shards.OFFICIAL_TRAIN}/n01440764.tar/n01440764_0.JPEG",
                                 f"{shards.OFFICIAL_TRAIN}/n01440764.tar/n01440764_1.JPEG"]
    val = packed.manifest.splits["val"]
    assert val.paths[0] == f"{shards.OFFICIAL_VAL}/{test_layouts._val_name(1)}"
    assert val.labels == folder.manifest.splits["val"].labels
    assert val.sizes == folder.manifest.splits["val"].sizes
    for kind, passes in {
            "train": lambda d: train_batches(d.train, seed=2, epoch=1, batch_size=3),
            "test": lambda d: eval_batches(d.test, 5)}.items():
        a = [(x.clone(), y.clone()) for x, y in passes(packed)]
        b = [(x.clone(), y.clone()) for x, y in passes(folder)]
        assert len(a) == len(b) > 1, kind
        for (xa, ya), (xb, yb) in zip(a, b):
            assert torch.equal(xa, xb) and torch.equal(ya, yb), kind

    # a resume needs no devkit (the val tar is as indexed); a changed val tar is refused
    identity = factories.record_data(packed, tmp_path / "run")
    (tars / "ILSVRC2012_devkit_t12.tar.gz").unlink()
    _resume(tars, tmp_path / "run", identity)
    last = extracted / "val" / test_layouts._val_name(len(test_layouts.TRUTH))
    with tarfile.open(tars / shards.OFFICIAL_VAL, "w") as tar:  # written again, one image less
        for image in sorted((extracted / "val").iterdir()):
            if image != last:
                tar.add(image, arcname=image.name)
    shutil.copy(extracted / "ILSVRC2012_devkit_t12.tar.gz", tars)  # a rescan labels val again
    with pytest.raises(DataError, match=rf"val/{shards.OFFICIAL_VAL}/"
                                        rf"{test_layouts._val_name(len(test_layouts.TRUTH))} is "
                                        r"missing"):
        _resume(tars, tmp_path / "run", identity)
