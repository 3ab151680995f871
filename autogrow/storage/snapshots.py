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
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import struct
from collections.abc import Mapping
from pathlib import Path

import attrs
import torch
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

from ._fs import disk_full, fsync_dir, is_disk_full, write_with_test_pause
from .errors import InvalidDigest, SnapshotCorrupted, SnapshotMissing

SNAPSHOT_DIR = "snapshots"
SUFFIX = ".safetensors"
TEMP_PREFIX = ".tmp-"
TEMP_SUFFIX = ".partial"
PAUSE_ENV = "AUTOGROW_TEST_SNAPSHOT_PAUSE"

_DIGEST_RE = re.compile(r"[0-9a-f]{64}")


@attrs.frozen
class Snapshot:
    """A verified snapshot: its tensors (on CPU), metadata and digest."""

    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]
    digest: str


def _check_digest(digest: object) -> str:
    if not isinstance(digest, str) or not _DIGEST_RE.fullmatch(digest):
        raise InvalidDigest(f"{digest!r} is not a snapshot digest (64 lowercase hex digits)")
    return digest


def _prepare(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU tensors; storage shared between entries (tied weights) is
    cloned, because safetensors refuses tensors that share memory."""
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
    meta = _check_metadata(metadata)
    data = _st_save(_prepare(tensors), meta or None)
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

    def get(self, digest: str) -> Snapshot:
        """Read a snapshot, verifying its bytes against the digest before parsing them."""
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
        try:
            header, _ = _split(data)
            metadata = header.get("__metadata__") or {}
            tensors = _st_load(data)
        except Exception as err:  # noqa: BLE001 - any parse failure means a bad file
            raise SnapshotCorrupted(
                f"{path} matches its digest but is not a valid safetensors file ({err}); "
                "it was not written by this store - remove it"
            ) from None
        return Snapshot(tensors=tensors, metadata=dict(metadata), digest=digest)

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
