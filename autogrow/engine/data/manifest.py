"""Which files a run trained on: the data manifest of an image folder, and the digests of a
tensor set's source files.

On a run's first start the folder reader lists the train and val folders once (torchvision's
rules, wherever the root's layout keeps them: :mod:`.layouts`) and rank 0 writes what it found to
``RUN/data/manifest``: per split, every image's path relative to the split's folder (a flat val
folder's: the file name), its size in bytes and its class index, in the listing's order
(the order the rows of every split, and so every batch, are drawn from). ``run_started`` records
the manifest's digest and the class list (:func:`folder_identity`). A resume, a fork and a
re-execution read the manifest instead of listing the tree again, and check the tree against it
(:func:`check_tree`; a resume on rank 0 alone): a moved data root is the same data; a missing,
added or resized file is not, and is refused before anything trains, naming the first
difference.

WebDataset tar shards have a manifest of the same form (:mod:`.shards`: its own first line, each
path ``shard/member``) and an index of offsets beside it.

The file is gzip'd UTF-8 text (one line per image: ``path<TAB>size<TAB>class``; a backslash,
tab, newline or carriage return in a name is backslash-escaped), written with no timestamp, so
the same listing gives the same bytes; its digest is the sha256 of the text.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from autogrow.engine.data import layouts
from autogrow.engine.data.registry import DataError
from autogrow.storage import fsync_dir

MANIFEST_PATH = Path("data") / "manifest"  # inside the run directory
HEADER = "autogrow data manifest 1"
SHARDS_HEADER = "autogrow data manifest 1 shards"  # a shard manifest (:mod:`.shards`)
#: The folders under the data root a manifest lists, and the reader's name for each.
SOURCES = {"train": "train", "val": "test"}
_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))


@attrs.frozen(eq=False)
class Listing:
    """One split's images: paths relative to its folder, sizes in bytes and class indices, in
    the order the reader numbers them."""

    paths: list[str]
    sizes: list[int]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def flat(self) -> bool:
        """Images directly in the split's folder (an official or Kaggle val), not in class
        folders: a class folder's paths always hold a separator, a flat folder's never."""
        return bool(self.paths) and os.sep not in self.paths[0]


@attrs.frozen(eq=False)
class Manifest:
    """The files of an image-folder data set: its classes and one :class:`Listing` per source.

    ``kind="shards"``: the samples of WebDataset tar shards (:mod:`.shards`), each path
    ``shard/member``; ``index`` then says where their bytes are (not part of the text)."""

    classes: tuple[str, ...]
    splits: Mapping[str, Listing]  # by folder: "train", "val"
    kind: str = "folder"
    index: Any = None

    def samples(self, folders: Mapping[str, Path]) -> dict[str, list[tuple[str, int]]]:
        """``(path, class)`` of every image, its split's folder taken from ``folders`` (by the
        manifest's split name), by the reader's source name (``train``, and ``test`` for
        ``val``)."""
        out = {}
        for folder, listing in self.splits.items():
            prefix = os.path.join(str(folders[folder]), "")
            out[SOURCES[folder]] = [(prefix + p, c) for p, c in zip(listing.paths, listing.labels)]
        return out

    def encode(self) -> bytes:
        """The manifest's text (what its digest is of); the same manifest, the same bytes."""
        out = io.StringIO()
        header = SHARDS_HEADER if self.kind == "shards" else HEADER
        out.write(f"{header}\nclasses\t{json.dumps(list(self.classes))}\n")
        for folder, listing in self.splits.items():
            out.write(f"split\t{folder}\t{len(listing)}\n")
            out.writelines(f"{_escape(p)}\t{s}\t{c}\n"
                           for p, s, c in zip(listing.paths, listing.sizes, listing.labels))
        return out.getvalue().encode("utf-8", "surrogateescape")


def _escape(path: str) -> str:
    if "\\" in path or "\t" in path or "\n" in path or "\r" in path:
        for raw, escaped in _ESCAPES:
            path = path.replace(raw, escaped)
    return path


def _unescape(path: str) -> str:
    if "\\" not in path:
        return path
    out, chars = [], iter(path)
    for ch in chars:
        if ch == "\\":
            ch = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}.get(next(chars, ""), "")
        out.append(ch)
    return "".join(out)


def digest_of(text: bytes) -> str:
    return hashlib.sha256(text).hexdigest()


def scan(folders: Mapping[str, Path], listed: Mapping[str, list[tuple[str, int]]],
         classes: list[str]) -> Manifest:
    """The manifest of a fresh listing: ``{split: [(path, class)…]}`` as the reader listed each
    split's folder (``folders[split]``), each file's size read now."""
    splits = {}
    for folder, samples in listed.items():
        cut = len(os.path.join(str(folders[folder]), ""))
        paths = [p[cut:] for p, _ in samples]
        try:
            sizes = [os.stat(p).st_size for p, _ in samples]
        except OSError as err:
            raise DataError(f"cannot read image {err.filename}: {err.strerror or err}; "
                            "replace or remove the file") from None
        splits[folder] = Listing(paths, sizes, [c for _, c in samples])
    return Manifest(tuple(classes), splits)


def write(run_dir: Path, manifest: Manifest) -> dict[str, Any]:
    """Write ``RUN/data/manifest`` durably (temp file, fsync, rename) and return the data
    identity ``run_started`` records: the manifest's digest, the classes and the file counts."""
    text = manifest.encode()
    path = run_dir / MANIFEST_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz:
            gz.write(text)
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(tmp, path)
    for folder in (path.parent, run_dir):  # the rename and data/ itself durable, as snapshots
        fsync_dir(folder)
    return folder_identity(manifest, digest_of(text))


def folder_identity(manifest: Manifest, digest: str) -> dict[str, Any]:
    return {"manifest": digest, "classes": list(manifest.classes),
            "images": {folder: len(listing) for folder, listing in manifest.splits.items()}}


def read(run_dir: Path, identity: Mapping[str, Any]) -> Manifest:
    """The run's manifest, which must be the one its ``run_started`` names (``identity``)."""
    path = run_dir / MANIFEST_PATH
    what = f"{path} (the list of the files the run trained on)"
    try:
        with gzip.open(path, "rb") as gz:
            text = gz.read()
    except FileNotFoundError:
        raise DataError(f"{what} is missing; restore it from a copy of the run") from None
    except (OSError, EOFError) as err:
        raise DataError(f"{what} cannot be read ({err}); restore it from a copy of the run") from None
    if digest_of(text) != identity.get("manifest"):
        raise DataError(f"{what} is not the one the run's run_started names (sha256 "
                        f"{digest_of(text)[:12]}…, logged {str(identity.get('manifest'))[:12]}…); "
                        "restore it from a copy of the run")
    return parse(text)


def parse(text: bytes) -> Manifest:
    """The manifest of :meth:`Manifest.encode`'s text. Escaped paths hold no tab, so each
    split's rows become columns through one ``join`` and one ``split``."""
    escaped = b"\\" in text
    lines = text.decode("utf-8", "surrogateescape").split("\n")
    if (lines[0] not in (HEADER, SHARDS_HEADER) or len(lines) < 2
            or not lines[1].startswith("classes\t")):
        raise DataError(f"not an autogrow data manifest (it begins {lines[0][:40]!r})")
    classes = tuple(json.loads(lines[1].split("\t", 1)[1]))
    splits, at = {}, 2
    while at < len(lines) and lines[at].startswith("split\t"):
        _, folder, count = lines[at].split("\t")
        end = at + 1 + int(count)
        cells = "\t".join(lines[at + 1 : end]).split("\t") if end > at + 1 else []
        paths = cells[0::3]
        if escaped:
            paths = [_unescape(p) for p in paths]
        splits[folder] = Listing(paths, list(map(int, cells[1::3])), list(map(int, cells[2::3])))
        at = end
    return Manifest(classes, splits, kind="shards" if lines[0] == SHARDS_HEADER else "folder")


# --------------------------------------------------------------------------------------------
# The tree against the manifest
# --------------------------------------------------------------------------------------------


def _files(folder: str, extensions: tuple[str, ...]) -> Iterator[os.DirEntry]:
    """Every image under ``folder`` as torchvision's ``make_dataset`` finds them (symlinks
    followed, the extension tested in lower case), in no particular order."""
    stack = [folder]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir():
                    stack.append(entry.path)
                elif entry.name.lower().endswith(extensions):
                    yield entry


def check_tree(name: str, manifest: Manifest, root: Path) -> None:
    """Raise :class:`DataError` naming the first difference between the images under ``root``
    (its split folders found again: :mod:`.layouts`) and the manifest: a class folder, then a
    missing or resized file (in the manifest's order), then an added one. A split the manifest
    lists flat is compared with the images directly in its folder. Hidden entries (``.``-named,
    anywhere below a split's folder) are not data unless the manifest lists them. Lists the
    folders and stats every file; nothing is decoded."""
    extensions = layouts.image_extensions()

    def refuse(difference: str, more: int = 0) -> DataError:
        if more:
            difference += f" (and {more} other difference{'s' if more > 1 else ''})"
        said = f"{name}: the data under {root} is not the data this run trained on: {difference}"
        return DataError(
            f"{said}; restore the files the run was started with (or point data_root at its "
            "copy of the data), or start a new run on this data",
            cli=f"{said}; restore the files the run was started with (or point --data-root at "
                "its copy of the data; for fork, --set data_root=…), or start a new run on this "
                "data")

    folders = layouts.Layout(root, layouts.base_of(root)).folders
    known = set(manifest.classes)
    for part, listing in manifest.splits.items():
        folder = folders[part]
        try:
            with os.scandir(folder) as entries:
                top = list(entries)
        except OSError as err:
            raise refuse(f"{folder} cannot be listed ({err.strerror or err})") from None
        found: Iterator[os.DirEntry]
        if listing.flat:
            found = (e for e in top if not e.is_dir() and e.name.lower().endswith(extensions))
        else:
            on_disk = sorted(e.name for e in top
                             if e.is_dir() and (layouts.visible(e.name) or e.name in known))
            if on_disk != list(manifest.classes):
                gone = [c for c in manifest.classes if c not in set(on_disk)]
                new = [c for c in on_disk if c not in known]
                raise refuse(f"class folder {part}/{(gone or new)[0]} is "
                             + ("missing" if gone else "not in the run's manifest (added)"))
            found = (e for cls in manifest.classes
                     for e in _files(os.path.join(str(folder), cls), extensions))
        unseen = dict(zip(listing.paths, listing.sizes))
        cut = len(os.path.join(str(folder), ""))
        added, resized = [], {}
        for entry in found:
            rel = entry.path[cut:]
            size = unseen.pop(rel, None)
            if size is None:
                if os.sep + "." not in os.sep + rel:  # hidden (a "."-named part): not data
                    added.append(rel)
                continue
            try:
                actual = entry.stat().st_size
            except OSError:  # a dangling link: as good as missing
                unseen[rel] = size
                continue
            if actual != size:
                resized[rel] = f"is {actual} bytes, the run's manifest says {size}"
        if unseen or resized or added:
            more = len(unseen) + len(resized) + len(added) - 1
            if unseen or resized:
                rel = next(p for p in listing.paths if p in unseen or p in resized)
                raise refuse(f"{part}/{rel} {resized.get(rel, 'is missing')}", more)
            raise refuse(f"{part}/{min(added)} is not in the run's manifest (added)", more)


# --------------------------------------------------------------------------------------------
# Tensor data sets: the digests of their source files
# --------------------------------------------------------------------------------------------


def file_digests(files: list[Path]) -> dict[str, str]:
    """``{file name: sha256}`` of a tensor set's source files."""
    out = {}
    for path in files:
        with open(path, "rb") as f:
            out[path.name] = hashlib.file_digest(f, "sha256").hexdigest()
    return out


def check_files(name: str, recorded: Mapping[str, str], now: Mapping[str, str],
                location: str) -> None:
    """Refuse source files other than the run's (a tensor set)."""
    for file, digest in recorded.items():
        if now.get(file) != digest:
            found = f"is sha256 {now[file][:12]}…" if file in now else "is not read any more"
            raise DataError(
                f"{name}: {file} under {location} is not the file this run trained on: it "
                f"{found}, the run's was {digest[:12]}…; restore the run's copy of the data, "
                "or start a new run on this data")
