"""ImageNet-style data as WebDataset tar shards, read at random by offset.

A shard is a plain (uncompressed) tar whose samples are consecutive members sharing a key (the
member name up to the first ``.`` of its base name, WebDataset's rule): one image
(``key.jpg``, ``.jpeg``, ``.png``, … any extension torchvision's ImageFolder reads) and its class
index as ASCII text (``key.cls``); other members of a sample (``key.json``, …) are ignored, and
so are hidden members (a ``.``-named part: macOS's ``._key.jpg``), as in a folder. A data
root holds them either as ``ROOT/train/*.tar`` and ``ROOT/val/*.tar`` (or ``ROOT/validation/``),
or directly, named as ``timm/imagenet-1k-wds`` names them: a ``.tar`` whose name has the word
``train`` is a train shard, ``val`` or ``validation`` a val shard (``imagenet1k-train-0000.tar``,
``imagenet1k-validation-00.tar``), any other is not read; or a brace pattern naming them
(:func:`expand_braces`); or the official ILSVRC2012 tars as downloaded (:func:`scan_official`).
Classes are the lines of ``classes.txt`` in the folder above all the shards (the converter,
``scripts/folder_to_shards.py``, writes the folder's class names there), else ``0`` … the
largest class index.

**Row order.** A split's samples are numbered in shard-name order (sorted), members in tar order:
the converter writes a folder's images in its listing's order into shards numbered in that order,
so the shards give the folder's rows, and so its batches, bit for bit.

**Index.** A new run reads every shard's headers once (:func:`members`; the data is skipped,
but for the few bytes of each ``.cls``) and keeps, per sample, its shard and its data's offset.
The manifest (:mod:`.manifest`, ``kind="shards"``) records each sample as ``shard/member``, its
byte size and its class, so resume, fork and verify refuse other data as for a folder; the
offsets go beside it (``RUN/data/shard-index.npz``) with each shard's size and mtime, and a
resume reads them instead of scanning again. There, each shard is ``stat``-ed: one whose size
and mtime are the indexed ones is taken as indexed; any other (touched, copied, rewritten) is
scanned again and its samples compared with the manifest's (names, sizes, classes), so a copy
elsewhere is fine and other data is refused naming the first difference (:func:`check`). Reads
are ``os.pread`` of (offset, size) on shard files each process opens itself
(:class:`ShardTable`).
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from autogrow.engine.data import layouts
from autogrow.engine.data.manifest import Listing, Manifest
from autogrow.engine.data.registry import DataError, cache_file
from autogrow.storage import fsync_dir

SUFFIX = ".tar"
CLASSES_FILE = "classes.txt"
INDEX_PATH = Path("data") / "shard-index.npz"  # inside the run directory, beside the manifest
VAL_FOLDERS = ("val", "validation")
#: The official ILSVRC2012 tars, read as they are downloaded (val labelled by the devkit).
OFFICIAL_TRAIN, OFFICIAL_VAL = "ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"
_WORDS = {"train": "train", "val": "val", "validation": "val"}


# --------------------------------------------------------------------------------------------
# Where the shards are
# --------------------------------------------------------------------------------------------


def _tars(folder: Path) -> list[Path]:
    """The visible ``.tar`` files directly in ``folder``, sorted by name."""
    try:
        with os.scandir(folder) as entries:
            names = [e.name for e in entries
                     if e.name.endswith(SUFFIX) and layouts.visible(e.name) and e.is_file()]
    except OSError:
        return []
    return [folder / n for n in sorted(names)]


def expand_braces(pattern: str) -> list[str]:
    """A brace pattern's strings, as bash and WebDataset expand it: ``{a,b}`` alternatives and
    ``{0000..1023}`` ranges (zero-padded to the longer bound's width when a bound has a leading
    zero), nested, left to right."""
    start = pattern.find("{")
    if start < 0:
        return [pattern]
    depth, commas = 0, []
    for at in range(start, len(pattern)):
        ch = pattern[at]
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if ch == "," and depth == 1:
            commas.append(at)
        if depth == 0:
            break
    else:
        raise ValueError(f"an unclosed brace in {pattern!r}")
    head, body, tail = pattern[:start], pattern[start + 1 : at], pattern[at + 1 :]
    span = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if span:
        a, b = span.groups()
        width = max(len(a), len(b)) if a.startswith("0") or b.startswith("0") else 0
        step = 1 if int(b) >= int(a) else -1
        parts = [str(i).zfill(width) for i in range(int(a), int(b) + step, step)]
    elif commas:
        cuts = [start, *commas, at]
        parts = [pattern[cuts[i] + 1 : cuts[i + 1]] for i in range(len(cuts) - 1)]
    else:
        parts = ["{" + body + "}"]  # not a pattern: a literal brace, as bash leaves it
        return [head + parts[0] + rest for rest in expand_braces(tail)]
    return [out for part in parts for out in expand_braces(head + part + tail)]


def _by_word(paths: list[Path]) -> dict[str, list[Path]]:
    """Tar files sorted into train and val by the word in their names (the rest left out)."""
    found: dict[str, list[Path]] = {"train": [], "val": []}
    for path in paths:
        words = {_WORDS[w] for w in re.split(r"[^a-z0-9]+", path.stem.lower()) if w in _WORDS}
        if len(words) == 1:
            found[words.pop()].append(path)
    return found


def _from_pattern(name: str, pattern: str) -> dict[str, list[Path]]:
    """The shards a brace pattern names (each must be there; named with train or val)."""
    try:
        paths = [Path(p) for p in expand_braces(pattern)]
    except ValueError as err:
        raise DataError(f"{name}: data root {pattern}: {err}") from None
    missing = [p for p in paths if not p.is_file()]
    found = _by_word(paths)
    odd = [p for p in paths if p not in found["train"] and p not in found["val"]]
    names = [p.name for p in paths]
    twice = sorted({n for n in names if names.count(n) > 1})
    if missing or odd or twice:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        said = (f"{missing[0]}{more} is not there" if missing else
                f"{odd[0].name} is named with neither 'train' nor 'val'" if odd else
                f"two shards are named {twice[0]}")
        raise DataError(f"{name}: of the {len(paths)} shards {pattern} names, {said}; "
                        "correct the pattern")
    return {split: sorted(v, key=lambda p: p.name) for split, v in found.items()}


def classes_folder(shards: Mapping[str, list[Path]]) -> Path:
    """Where ``classes.txt`` (and an official devkit) is: the folder above every shard."""
    return Path(os.path.commonpath([str(p.parent) for v in shards.values() for p in v]))


def find(root: Path | None, name: str = "imagenet") -> dict[str, list[Path]] | None:
    """The train and val shards under ``root`` (sorted by name), or None where ``root`` holds
    no train shard (another layout). A ``train/`` folder with class folders is an image folder's,
    even beside ``.tar`` files (the official ILSVRC2012 tars kept beside their extraction).
    ``root`` may be a brace pattern naming the shards (``…/imagenet1k-{train-{0000..1023},
    validation-{00..63}}.tar``), each named with ``train`` or ``val``, each refused if absent."""
    if root is None:
        return None
    if "{" in str(root) and not root.exists():
        return _from_pattern(name, str(root))
    if (not (root / "train").is_dir() and (root / OFFICIAL_TRAIN).is_file()
            and (root / OFFICIAL_VAL).is_file()):
        return {"train": [root / OFFICIAL_TRAIN], "val": [root / OFFICIAL_VAL]}
    if (root / "train").is_dir():
        train = _tars(root / "train")
        if not train:
            return None
        val = next((t for t in (_tars(root / v) for v in VAL_FOLDERS) if t), [])
        return {"train": train, "val": val}
    found = _by_word(_tars(root))
    return found if found["train"] else None


def locate(name: str, root: Path, shards: dict[str, list[Path]]) -> dict[str, list[Path]]:
    """``shards`` (from :func:`find`), refused with one line when there is no val shard."""
    if not shards["val"]:
        said = (f"{name}: {root} holds train shards but no val shard: expected {root}/val/*.tar "
                f"(or {root}/validation/*.tar) beside {root}/train/*.tar, or .tar files named "
                "with 'val' or 'validation' beside those named with 'train'")
        raise DataError(f"{said}; add them or set data_root to where they are",
                        cli=f"{said}; add them or pass --data-root")
    return shards


# --------------------------------------------------------------------------------------------
# One shard's samples
# --------------------------------------------------------------------------------------------


@attrs.frozen(eq=False)
class Scanned:
    """One shard's samples in tar order: image member names, data offsets, sizes, classes."""

    names: list[str]
    offsets: list[int]
    sizes: list[int]
    labels: list[int]
    classes: list[str] | None = None  # the official train tar's (its class tars' names)


def _split_key(member: str) -> tuple[str, str]:
    """WebDataset's (key, extension): the name up to the first ``.`` of its base name."""
    folder, _, base = member.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), (ext.lower() if dot else "")


BLOCK = 512


class _BadTar(Exception):
    """A header that is not a tar header, or a tar that ends inside one."""


def _number(field: bytes) -> int:
    """A header's numeric field: octal text, or GNU's base-256 (high bit set) for large sizes."""
    if field[:1] and field[0] & 0x80:
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise _BadTar(f"a numeric field holds {text[:12]!r}") from None


def members(fd: int, start: int = 0, end: int | None = None
            ) -> Iterator[tuple[str, int, int, bytes]]:
    """``(name, data offset, size, first bytes of the data)`` of each regular file of the
    uncompressed tar open at ``fd`` (the tar at bytes ``[start, end)`` of the file: a member
    of an outer tar), in tar order, reading only headers (one ``pread`` of two blocks each: a
    header and the start of its data). Reads POSIX ustar, GNU (long names) and pax (``path``,
    ``size``) headers as tarfile does, in a sixth of its time; checksums are checked."""
    offset, long_name, pax = start, None, {}
    while end is None or offset < end:
        chunk = os.pread(fd, 2 * BLOCK, offset)
        header = chunk[:BLOCK]
        if len(header) < BLOCK:
            if not header:  # no end-of-archive blocks: tolerated, as tarfile does
                return
            raise _BadTar(f"the file ends inside a header at byte {offset}")
        if header.count(0) == BLOCK:
            return
        stored = _number(header[148:156])
        if stored != sum(header) - sum(header[148:156]) + 8 * 32 and stored != (
                sum(struct.unpack("148b8x356b", header)) + 8 * 32):  # old tars sum signed bytes
            raise _BadTar(f"bad header checksum at byte {offset}")
        kind, size = header[156:157], _number(header[124:136])
        size = int(pax.get("size", size))
        data = offset + BLOCK
        if kind in (b"L", b"x", b"g"):  # a GNU long name, a pax header: about the next member
            text = os.pread(fd, size, data)
            if kind == b"L":
                long_name = text.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            elif kind == b"x":
                pax = _pax(text)
        else:
            if kind in (b"0", b"\0", b"7"):  # a regular file
                name = pax.get("path") or long_name
                if name is None:
                    name = header[:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                    prefix = header[345:500].split(b"\0", 1)[0]
                    if header[257:262] == b"ustar" and prefix:
                        name = prefix.decode("utf-8", "surrogateescape") + "/" + name
                yield name, data, size, chunk[BLOCK : BLOCK + size]
            long_name, pax = None, {}
        offset = data + -(-size // BLOCK) * BLOCK


def _pax(text: bytes) -> dict[str, str]:
    """The ``path`` and ``size`` records of a pax extended header (``"%d %s=%s\n"`` each)."""
    out, at = {}, 0
    while at < len(text):
        length = int(text[at : text.index(b" ", at)])
        key, _, value = text[text.index(b" ", at) + 1 : at + length - 1].partition(b"=")
        if key in (b"path", b"size"):
            out[key.decode()] = value.decode("utf-8", "surrogateescape")
        at += length
    return out


def scan_shard(path: Path) -> Scanned:
    """Read ``path``'s tar headers (the images are skipped; a ``.cls`` is read with its header)
    and return its samples; a sample without exactly one image and one ``.cls`` is refused."""
    images = tuple(e.lstrip(".") for e in layouts.image_extensions())
    out = Scanned([], [], [], [])

    def close(key: str | None, found: dict[str, tuple[str, int, int, bytes]]) -> None:
        if key is None:
            return
        kinds = [ext for ext in found if ext in images]
        if len(kinds) != 1 or "cls" not in found:
            what = ("a tar of tars (the official ILSVRC2012 train tar?): extract it, or convert "
                    "the folder with scripts/folder_to_shards.py"
                    if any(ext == "tar" for ext in found)
                    else f"members {sorted(found)}, not one image and one .cls")
            raise DataError(f"{path}: sample {key!r} is not a WebDataset image sample: {what}")
        name, offset, size, _ = found[kinds[0]]
        cls_name, _, _, head = found["cls"]
        text = head[:64].decode("ascii", "replace").strip()
        if not text.isdigit():
            raise DataError(f"{path}: {cls_name} holds {text[:20]!r}, not a class index")
        out.names.append(name)
        out.offsets.append(offset)
        out.sizes.append(size)
        out.labels.append(int(text))

    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as err:
        raise DataError(f"cannot read tar shard {path}: {err.strerror or err}") from None
    try:
        key, found = None, {}
        for member in members(fd):
            if not all(layouts.visible(part) for part in member[0].split("/")):
                continue  # macOS's ._name, .DS_Store: not data, as in a folder
            k, ext = _split_key(member[0])
            if k != key:
                close(key, found)
                key, found = k, {}
            found[ext] = member
        close(key, found)
    except (_BadTar, OSError, ValueError) as err:
        raise DataError(f"cannot read tar shard {path}: {err}; an uncompressed tar is expected "
                        "(restore the file, or write the shards again)") from None
    finally:
        os.close(fd)
    return out


def _images_of(fd: int, start: int = 0, end: int | None = None) -> list[tuple[str, int, int]]:
    """``(name, offset, size)`` of the images of a tar (or of a tar inside one), sorted by name
    as torchvision's ImageFolder sorts a folder's files; hidden and other files left out."""
    extensions = layouts.image_extensions()
    return sorted((name, offset, size) for name, offset, size, _ in members(fd, start, end)
                  if name.lower().endswith(extensions)
                  and all(layouts.visible(part) for part in name.split("/")))


def scan_official(path: Path, name: str, root: Path, classes: Sequence[str] | None) -> Scanned:
    """The official ``ILSVRC2012_img_train.tar`` (a tar of one tar per class,
    ``n01440764.tar``…; classes are their names, sorted) or ``ILSVRC2012_img_val.tar`` (flat,
    labelled by the devkit beside it, as a flat val folder: :mod:`.layouts`), in the row order
    of their extracted folders. The inner tars are uncompressed, so an image's bytes are at its
    class tar's offset plus its own: the index reads headers only, as for shards."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        if path.name == OFFICIAL_VAL:
            rows = _images_of(fd)
            labels = layouts.label_flat_val(name, layouts.Layout(root, root), [r[0] for r in rows],
                                            {c: i for i, c in enumerate(classes or [])})
            return Scanned([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                           labels)
        inner = sorted((n, offset, size) for n, offset, size, _ in members(fd)
                       if n.endswith(SUFFIX) and "/" not in n and layouts.visible(n))
        out = Scanned([], [], [], [], [n[: -len(SUFFIX)] for n, _, _ in inner])
        for c, (tar_name, offset, size) in enumerate(inner):
            for member, at, length in _images_of(fd, offset, offset + size):
                out.names.append(f"{tar_name}/{member}")
                out.offsets.append(at)
                out.sizes.append(length)
                out.labels.append(c)
        return out
    except (_BadTar, OSError, ValueError) as err:
        raise DataError(f"cannot read {path}: {err}; restore the official file") from None
    finally:
        os.close(fd)


def _scan(path: Path, name: str, root: Path, classes: Sequence[str] | None) -> Scanned:
    """One shard's samples, or one official tar's (``root``: the folder with its devkit)."""
    if path.name in (OFFICIAL_TRAIN, OFFICIAL_VAL):
        return scan_official(path, name, root, classes)
    return scan_shard(path)


# --------------------------------------------------------------------------------------------
# The index: where each sample's bytes are
# --------------------------------------------------------------------------------------------


@attrs.frozen(eq=False)
class ShardIndex:
    """Per split: the shard files' names (sorted) and their ``(size, mtime_ns)`` when indexed,
    and per sample its shard (a position in that list) and its data's offset. ``difference``:
    how the shards found now differ from the run's manifest (:func:`check` refuses them)."""

    shards: Mapping[str, list[str]]
    stats: Mapping[str, list[tuple[int, int]]]
    shard_of: Mapping[str, np.ndarray]  # int32 per sample
    offsets: Mapping[str, np.ndarray]   # int64 per sample
    difference: str | None = None


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _classes(name: str, root: Path, largest: int) -> list[str]:
    path = root / CLASSES_FILE
    if not path.is_file():
        return [str(i) for i in range(largest + 1)]
    classes = [line for line in path.read_text(encoding="utf-8").splitlines() if line]
    if largest >= len(classes):
        raise DataError(f"{name}: a shard under {root} has class index {largest}, but "
                        f"{path} names {len(classes)} classes; fix the file or remove it")
    return classes


def index(name: str, root: Path, shards: Mapping[str, list[Path]]) -> Manifest:
    """A new run's manifest of the shards, its :class:`ShardIndex` attached (every shard's
    headers read once)."""
    splits, index_of, classes = {}, {}, None
    for split, paths in shards.items():  # train first: the official val is labelled by its classes
        rows: list[tuple[str, int, int]] = []
        shard_of, offsets, stats = [], [], []
        for n, path in enumerate(paths):
            stats.append(_stat(path))
            scanned = _scan(path, name, classes_folder(shards), classes)
            classes = scanned.classes or classes
            rows += zip((f"{path.name}/{m}" for m in scanned.names), scanned.sizes, scanned.labels)
            shard_of += [n] * len(scanned.names)
            offsets += scanned.offsets
        if not rows:
            raise DataError(f"{name}: the {split} shards under {root} hold no image sample")
        splits[split] = Listing([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
        index_of[split] = (paths, stats, shard_of, offsets)
    largest = max(max(listing.labels) for listing in splits.values())
    built = ShardIndex(
        shards={s: [p.name for p in v[0]] for s, v in index_of.items()},
        stats={s: v[1] for s, v in index_of.items()},
        shard_of={s: np.asarray(v[2], dtype=np.int32) for s, v in index_of.items()},
        offsets={s: np.asarray(v[3], dtype=np.int64) for s, v in index_of.items()})
    return Manifest(tuple(classes or _classes(name, classes_folder(shards), largest)), splits,
                    kind="shards", index=built)


def refresh(manifest: Manifest, shards: Mapping[str, list[Path]],
            name: str = "imagenet") -> Manifest:
    """A run's shard manifest with an index for the shards found now: a shard whose size and
    mtime are the indexed ones keeps its offsets, any other is scanned again; the samples so
    found are compared with the manifest's, the first difference kept in the index for
    :func:`check` (a loader never refuses: under torchrun rank 0 alone decides)."""
    old: ShardIndex | None = manifest.index
    if old is not None and all(
            [p.name for p in shards.get(s, [])] == old.shards.get(s)
            and [_stat(p) for p in shards.get(s, [])] == old.stats.get(s) for s in manifest.splits):
        return manifest  # every shard as indexed: nothing read
    names, stats, shard_of, offsets, difference = {}, {}, {}, {}, None
    for split, listing in manifest.splits.items():
        paths = shards.get(split, [])
        found: list[tuple[str, int, int]] = []
        of, at, st = [], [], []
        for n, path in enumerate(paths):
            st.append(_stat(path))
            kept = _indexed_rows(old, split, path.name, st[-1])
            if kept is not None:
                rows = range(*kept)
                found += zip((listing.paths[r] for r in rows), (listing.sizes[r] for r in rows),
                             (listing.labels[r] for r in rows))
                at += old.offsets[split][kept[0]:kept[1]].tolist()
            else:
                scanned = _scan(path, name, classes_folder(shards), manifest.classes)
                found += zip((f"{path.name}/{m}" for m in scanned.names), scanned.sizes,
                             scanned.labels)
                at += scanned.offsets
            of += [n] * (len(found) - len(of))
        names[split], stats[split] = [p.name for p in paths], st
        shard_of[split] = np.asarray(of, dtype=np.int32)
        offsets[split] = np.asarray(at, dtype=np.int64)
        difference = difference or _first_difference(split, listing, found)
    return attrs.evolve(manifest, index=ShardIndex(names, stats, shard_of, offsets, difference))


def _indexed_rows(old: ShardIndex | None, split: str, shard: str,
                  stat: tuple[int, int] | None) -> tuple[int, int] | None:
    """The manifest rows ``[start, end)`` of ``shard`` where it is as indexed, else None."""
    if old is None or stat is None or shard not in old.shards.get(split, []):
        return None
    n = old.shards[split].index(shard)
    if old.stats[split][n] != stat:
        return None
    start, end = np.searchsorted(old.shard_of[split], [n, n + 1])  # rows are in shard order
    return int(start), int(end)


def _first_difference(split: str, listing: Listing,
                      found: Sequence[tuple[str, int, int]]) -> str | None:
    """The first sample in which ``found`` (``(path, size, class)`` in row order) and the
    manifest differ, in words; None where they are the same."""
    recorded = list(zip(listing.paths, listing.sizes, listing.labels))
    if recorded == list(found):
        return None
    at = next((i for i, (a, b) in enumerate(zip(recorded, found)) if a != b),
              min(len(recorded), len(found)))
    extra = len(found) - len(recorded)
    if at < len(recorded) and at < len(found) and recorded[at][0] == found[at][0]:
        (path, size, label), (_, now_size, now_label) = recorded[at], found[at]
        what = (f"is {now_size} bytes, the run's manifest says {size}" if now_size != size
                else f"has class {now_label}, the run's manifest says {label}")
        return f"{split}/{path} {what}"
    present = {p for p, _, _ in found}
    if at < len(recorded) and recorded[at][0] not in present:
        shard = recorded[at][0].split("/", 1)[0]
        kept = any(p.startswith(shard + "/") for p in present)
        gone = "" if kept else f" (shard {shard} is gone)"
        return f"{split}/{recorded[at][0]} is missing{gone}"
    if at < len(found):
        return f"{split}/{found[at][0]} is not in the run's manifest (added)" + (
            f" ({extra} more samples than the manifest's)" if extra > 0 else "")
    return f"{split}/{recorded[at][0]} is not where the run's manifest has it (reordered)"


def check(name: str, manifest: Manifest, root: Path) -> None:
    """Refuse shards other than the run's (the difference :func:`refresh` found), in the words
    of :func:`~autogrow.engine.data.manifest.check_tree`."""
    difference = manifest.index.difference if manifest.index is not None else None
    if difference is None:
        return
    said = f"{name}: the shards under {root} are not the data this run trained on: {difference}"
    raise DataError(
        f"{said}; restore the shards the run was started with (or point data_root at its copy "
        "of them), or start a new run on this data",
        cli=f"{said}; restore the shards the run was started with (or point --data-root at its "
            "copy of them; for fork, --set data_root=…), or start a new run on this data")


# --------------------------------------------------------------------------------------------
# The index beside the manifest
# --------------------------------------------------------------------------------------------


def write_index(run_dir: Path, shard_index: ShardIndex, manifest_digest: str) -> None:
    """``RUN/data/shard-index.npz``: the offsets, shard names and stats, tagged with the
    manifest's digest (temp file, fsync, rename)."""
    meta = {"manifest": manifest_digest, "shards": shard_index.shards,
            "stats": {s: [list(x) if x else None for x in v] for s, v in shard_index.stats.items()}}
    arrays = {"meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
    for split in shard_index.shards:
        arrays[f"shard_of.{split}"] = shard_index.shard_of[split]
        arrays[f"offsets.{split}"] = shard_index.offsets[split]
    path = run_dir / INDEX_PATH
    with cache_file(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    fsync_dir(path.parent)


def read_index(run_dir: Path, manifest_digest: str) -> ShardIndex | None:
    """The run's shard index, or None where it is missing, unreadable or of another manifest
    (then the shards are scanned again: it costs time, not correctness)."""
    try:
        with np.load(run_dir / INDEX_PATH, allow_pickle=False) as npz:
            meta: dict[str, Any] = json.loads(npz["meta"].tobytes())
            if meta.get("manifest") != manifest_digest:
                return None
            splits = list(meta["shards"])
            return ShardIndex(
                shards={s: list(meta["shards"][s]) for s in splits},
                stats={s: [tuple(x) if x else None for x in meta["stats"][s]] for s in splits},
                shard_of={s: npz[f"shard_of.{s}"] for s in splits},
                offsets={s: npz[f"offsets.{s}"] for s in splits})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def pin(run_dir: Path, manifest: Manifest, manifest_digest: str) -> Manifest:
    """A run's shard manifest with the index written beside it (when there is a usable one)."""
    return attrs.evolve(manifest, index=read_index(run_dir, manifest_digest))


# --------------------------------------------------------------------------------------------
# Reading samples
# --------------------------------------------------------------------------------------------


class ShardTable:
    """One source's samples as (shard, offset, size): their bytes read with ``os.pread``. The
    shard files are opened by each process on its first read (a loader worker gets the table
    pickled, never a file descriptor) and stay open, at most :attr:`MAX_OPEN` at a time (the
    longest open closed first): ImageNet's 1,088 shards would pass a 1,024-descriptor limit."""

    MAX_OPEN = 128

    def __init__(self, shards: list[str], shard_of: np.ndarray, offsets: np.ndarray,
                 sizes: Sequence[int], names: Sequence[str]) -> None:
        self._fds: dict[int, int] = {}
        self.shards = shards        # full paths
        self.shard_of = shard_of
        self.offsets = offsets
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.names = names          # shard/member, for messages

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fds": {}}

    def __del__(self) -> None:
        for fd in self._fds.values():
            os.close(fd)

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, row: int) -> str:
        """What a message calls sample ``row``: its shard's path and member name."""
        shard = self.shards[int(self.shard_of[row])]
        return f"{os.path.dirname(shard)}{os.sep}{self.names[row]}"

    def read(self, row: int) -> np.ndarray:
        """Sample ``row``'s image bytes."""
        n = int(self.shard_of[row])
        size, offset = int(self.sizes[row]), int(self.offsets[row])
        data = np.empty(size, dtype=np.uint8)
        try:
            fd = self._fds.get(n)
            if fd is None:
                if len(self._fds) >= self.MAX_OPEN:
                    os.close(self._fds.pop(next(iter(self._fds))))
                fd = self._fds[n] = os.open(self.shards[n], os.O_RDONLY)
            got = os.preadv(fd, [data], offset)
            while 0 < got < size:  # a short read (a network file system): the rest
                more = os.preadv(fd, [memoryview(data)[got:]], offset + got)
                got = got + more if more else got
                if not more:
                    break
        except OSError as exc:
            raise DataError(f"cannot read image {self[row]}: {exc.strerror or exc}; the shards "
                            "changed since they were indexed? restore them or relaunch") from None
        if got != size:
            raise DataError(f"cannot read image {self[row]}: the shard ends {size - got} bytes "
                            "early; the shards changed since they were indexed? restore them or "
                            "relaunch")
        return data


def tables(root_shards: Mapping[str, list[Path]], manifest: Manifest,
           names: Mapping[str, Sequence[str]]) -> dict[str, ShardTable]:
    """The reader's tables by its source names (``train``, and ``test`` for ``val``)."""
    from autogrow.engine.data.manifest import SOURCES

    idx: ShardIndex = manifest.index
    out = {}
    for split, listing in manifest.splits.items():
        paths = [str(p) for p in root_shards[split]]
        out[SOURCES[split]] = ShardTable(paths, idx.shard_of[split], idx.offsets[split],
                                         listing.sizes, names[split])
    return out
