"""Content-addressed snapshot store ``RUN/snapshots/<sha256>.safetensors``.

A snapshot is a flat ``{name: tensor}`` dict plus ``{str: str}`` metadata, serialised with
safetensors (no pickle). The file is named by the sha256 of its bytes, so an event can reference a
snapshot by digest and a reader can prove it got exactly those bytes. The store knows tensors, not
models: packing a model, optimizer and RNG states into tensors is the caller's job.

Determinism: safetensors writes ``__metadata__`` in hash-map order, which differs between
processes; the header is re-serialised with sorted metadata keys so equal content always gives the
same digest (the tensor entries and data are left exactly as safetensors wrote them).

Durability: bytes go to a temp file in the same directory (``.tmp-*.partial``), are fsync'd,
renamed over ``<digest>.safetensors`` and the directory is fsync'd - only then does ``put`` return,
so an event naming the digest can be appended safely. A crash leaves at most a temp file, which
``digests()`` ignores and ``clean_temp()`` removes; a full file system removes it at once and
raises ``DiskFull``.

Test hook: when ``AUTOGROW_TEST_SNAPSHOT_PAUSE`` holds ``SECONDS`` (or ``SECONDS@N``: only the
process's N-th put that writes), ``put`` writes half of the temp file, syncs it, says so on stderr
and sleeps that long before writing the rest, so crash tests can SIGKILL a writer mid-snapshot;
``full@N`` fills the disk there instead (see ``_fs.write_with_test_pause``).

Reading without torch: :meth:`SnapshotStore.read_stored` checks a file as :meth:`~SnapshotStore.get`
does and hands back its raw entries (safetensors' own parser, no tensors made), and
:func:`stored_weights_digest` digests them as :func:`autogrow.blocks.weights_digest` digests the
same tensors, so ``autogrow verify`` never imports torch (a launch's largest cost).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path

from typing import TYPE_CHECKING

import attrs
import safetensors

from ._fs import disk_full, fsync_dir, is_disk_full, write_with_test_pause
from .errors import InvalidDigest, SnapshotCorrupted, SnapshotMissing

SNAPSHOT_DIR = "snapshots"
SUFFIX = ".safetensors"
TEMP_PREFIX = ".tmp-"
TEMP_SUFFIX = ".partial"
PAUSE_ENV = "AUTOGROW_TEST_SNAPSHOT_PAUSE"

_DIGEST_RE = re.compile(r"[0-9a-f]{64}")

if TYPE_CHECKING:
    import torch

#: safetensors' dtype codes as torch names them (``str(tensor.dtype)``), which the weights
#: digest hashes; a code not here is no dtype a snapshot of this project holds.
TORCH_DTYPE_NAMES = {
    "F64": "torch.float64", "F32": "torch.float32", "F16": "torch.float16",
    "BF16": "torch.bfloat16", "F8_E4M3": "torch.float8_e4m3fn", "F8_E5M2": "torch.float8_e5m2",
    "I64": "torch.int64", "I32": "torch.int32", "I16": "torch.int16", "I8": "torch.int8",
    "U8": "torch.uint8", "BOOL": "torch.bool",
}


@attrs.frozen
class Snapshot:
    """A verified snapshot: its tensors (on CPU), metadata and digest."""

    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]
    digest: str


@attrs.frozen
class StoredTensor:
    """One entry of a snapshot file as stored: safetensors' dtype code, shape and raw
    (little-endian) bytes."""

    dtype: str
    shape: tuple[int, ...]
    data: bytes


@attrs.frozen
class StoredSnapshot:
    """A verified snapshot read without torch: its raw entries, metadata and digest."""

    entries: dict[str, StoredTensor]
    metadata: dict[str, str]
    digest: str


def digest_entries(entries: Iterator[tuple[str, str, tuple[int, ...], bytes]]) -> str:
    """The weights digest's sha256 over ``(name, torch dtype name, shape, raw bytes)`` in the
    order given (callers sort by name): each header field NUL-separated, then the bytes. One
    definition for live tensors (:func:`autogrow.blocks.weights_digest`) and stored ones
    (:func:`stored_weights_digest`)."""
    h = hashlib.sha256()
    for name, dtype, shape, data in entries:
        h.update(f"{name}\0{dtype}\0{shape}\0".encode())
        h.update(data)
    return h.hexdigest()


def stored_weights_digest(snapshot: StoredSnapshot, prefix: str) -> str:
    """The weights digest of the entries under ``prefix`` (keyed without it), equal to
    :func:`autogrow.blocks.weights_digest` of the same tensors loaded with torch."""
    section = {k[len(prefix):]: v for k, v in snapshot.entries.items() if k.startswith(prefix)}

    def entries() -> Iterator[tuple[str, str, tuple[int, ...], bytes]]:
        for name in sorted(section):
            t = section[name]
            if t.dtype not in TORCH_DTYPE_NAMES:
                raise SnapshotCorrupted(f"snapshot {snapshot.digest[:12]}…: {prefix}{name} has "
                                        f"dtype {t.dtype}, which no snapshot of this project holds")
            yield name, TORCH_DTYPE_NAMES[t.dtype], t.shape, t.data

    return digest_entries(entries())


def _check_digest(digest: object) -> str:
    if not isinstance(digest, str) or not _DIGEST_RE.fullmatch(digest):
        raise InvalidDigest(f"{digest!r} is not a snapshot digest (64 lowercase hex digits)")
    return digest


def _prepare(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU tensors; storage shared between entries (tied weights) is
    cloned, because safetensors refuses tensors that share memory."""
    import torch

    if not isinstance(tensors, Mapping):
        raise TypeError(f"snapshot tensors must be a dict of str to Tensor, got {type(tensors).__name__}")
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"snapshot tensor names must be str, got {name!r}")
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"snapshot entry {name!r} is a {type(tensor).__name__}, not a torch.Tensor")
        t = tensor.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen:
            t = t.clone()
            ptr = t.untyped_storage().data_ptr()
        seen.add(ptr)
        out[name] = t
    return out


def _check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise TypeError(f"snapshot metadata must be a dict of str to str, got {type(metadata).__name__}")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(
                f"snapshot metadata must map str to str; {key!r} -> {type(value).__name__} "
                f"{value!r} is not (encode it, e.g. with json.dumps or str, before storing)"
            )
    return dict(metadata)


def _split(data: bytes) -> tuple[dict, int]:
    """The parsed safetensors header and where the data section starts."""
    if len(data) < 8:
        raise ValueError("shorter than the 8-byte header length")
    (n,) = struct.unpack_from("<Q", data)
    if 8 + n > len(data):
        raise ValueError(f"header length {n} runs past the end of the file")
    header = json.loads(data[8 : 8 + n])
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    return header, 8 + n


def snapshot_bytes(
    tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> bytes:
    """The exact bytes ``put`` stores (its digest is their sha256)."""
    from safetensors.torch import save

    meta = _check_metadata(metadata)
    data = save(_prepare(tensors), meta or None)
    header, start = _split(data)
    stored_meta = header.pop("__metadata__", None)
    if stored_meta is not None:
        header = {"__metadata__": dict(sorted(stored_meta.items())), **header}
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)  # keep the data section 8-byte aligned, as safetensors does
    return b"".join((struct.pack("<Q", len(text)), text, memoryview(data)[start:]))


class SnapshotStore:
    """Snapshots of one run directory. Writes assume the caller holds the run's writer lock."""

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = Path(run_dir)
        self.dir = self.run_dir / SNAPSHOT_DIR

    def path(self, digest: str) -> Path:
        """Where the snapshot with this digest lives (whether or not it exists)."""
        return self.dir / f"{_check_digest(digest)}{SUFFIX}"

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def digests(self) -> list[str]:
        """Digests of the stored snapshots, sorted; temp files are not snapshots."""
        if not self.dir.is_dir():
            return []
        names = (p.name for p in self.dir.iterdir())
        return sorted(
            n[: -len(SUFFIX)]
            for n in names
            if n.endswith(SUFFIX) and _DIGEST_RE.fullmatch(n[: -len(SUFFIX)])
        )

    def put(
        self, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
    ) -> str:
        """Store a snapshot durably and return its digest. Storing equal content again reuses the
        file (a same-named file with other bytes is replaced)."""
        data = snapshot_bytes(tensors, metadata)
        digest = hashlib.sha256(data).hexdigest()
        final = self.path(digest)
        try:
            if final.stat().st_size == len(data) and final.read_bytes() == data:
                return digest
        except FileNotFoundError:
            pass
        tmp = self.dir / f"{TEMP_PREFIX}{digest[:16]}-{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}"
        try:
            if not self.dir.is_dir():
                self.dir.mkdir(parents=True, exist_ok=True)
                fsync_dir(self.run_dir)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                write_with_test_pause(fd, data, PAUSE_ENV)
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                tmp.unlink(missing_ok=True)  # frees what the failed write took
                raise
            os.close(fd)
            os.replace(tmp, final)
            fsync_dir(self.dir)
        except OSError as err:
            if is_disk_full(err):
                raise disk_full(err, final, self.run_dir) from err
            raise
        return digest

    def _verified_bytes(self, digest: str) -> tuple[Path, bytes]:
        """The file's bytes, proven to be the ones named by ``digest``."""
        path = self.path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise SnapshotMissing(
                f"no snapshot {digest} in {self.dir}; it was never written or was pruned - "
                "resume or fork from a snapshot that digests() lists"
            ) from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise SnapshotCorrupted(
                f"{path} is corrupted: its sha256 is {actual[:12]}..., not the digest it is named "
                "by; restore it from a backup or resume/fork from another snapshot"
            )
        return path, data

    @staticmethod
    def _not_safetensors(path: Path, err: Exception) -> SnapshotCorrupted:
        return SnapshotCorrupted(
            f"{path} matches its digest but is not a valid safetensors file ({err}); "
            "it was not written by this store - remove it"
        )

    def get(self, digest: str) -> Snapshot:
        """Read a snapshot, verifying its bytes against the digest before parsing them."""
        from safetensors.torch import load

        path, data = self._verified_bytes(digest)
        try:
            header, _ = _split(data)
            metadata = header.get("__metadata__") or {}
            tensors = load(data)
        except Exception as err:  # noqa: BLE001 - any parse failure means a bad file
            raise self._not_safetensors(path, err) from None
        return Snapshot(tensors=tensors, metadata=dict(metadata), digest=digest)

    def read_stored(self, digest: str) -> StoredSnapshot:
        """:meth:`get`'s checks and the file's raw entries, without torch (what ``verify``
        needs: metadata and the weights digest)."""
        path, data = self._verified_bytes(digest)
        try:
            header, _ = _split(data)
            metadata = header.get("__metadata__") or {}
            entries = {name: StoredTensor(entry["dtype"], tuple(entry["shape"]),
                                          bytes(entry["data"]))
                       for name, entry in safetensors.deserialize(data)}
        except Exception as err:  # noqa: BLE001 - any parse failure means a bad file
            raise self._not_safetensors(path, err) from None
        return StoredSnapshot(entries=entries, metadata=dict(metadata), digest=digest)

    def remove(self, digest: str) -> None:
        """Delete a snapshot (for explicit pruning)."""
        path = self.path(digest)
        try:
            path.unlink()
        except FileNotFoundError:
            raise SnapshotMissing(f"no snapshot {digest} in {self.dir} to remove") from None
        fsync_dir(self.dir)

    def clean_temp(self) -> list[Path]:
        """Remove temp files left by a crash mid-``put``; returns what was removed. Call it only
        while holding the run's writer lock (a live writer's temp file would be removed too)."""
        if not self.dir.is_dir():
            return []
        removed = []
        for p in self.dir.iterdir():
            if p.name.startswith(TEMP_PREFIX) and p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
        if removed:
            fsync_dir(self.dir)
        return sorted(removed)
