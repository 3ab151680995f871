"""The snapshot store: exact round trips, content addressing, corruption, atomic writes."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from autogrow.storage import (
    InvalidDigest,
    Snapshot,
    SnapshotCorrupted,
    SnapshotMissing,
    SnapshotStore,
    StorageError,
    snapshot_bytes,
)

REPO = Path(__file__).resolve().parents[1]


def mixed_tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, 3, 3, 3, generator=g)
    return {
        "conv.weight": w,
        "conv.weight_t": w.transpose(0, 1),  # non-contiguous view of the same storage
        "bn.running_mean": torch.randn(4, generator=g, dtype=torch.float64),
        "fc.bf16": torch.randn(5, 7, generator=g).to(torch.bfloat16),
        "fc.fp16": torch.randn(7, generator=g).to(torch.float16),
        "step": torch.tensor(1234567890123, dtype=torch.int64),  # 0-dim
        "lr": torch.tensor(0.1),  # 0-dim float
        "rng.cpu": g.get_state(),  # uint8
        "mask": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 3),
    }


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert b[name].dtype == a[name].dtype and b[name].shape == a[name].shape, name
        assert torch.equal(a[name], b[name]), name


def test_round_trip_of_mixed_dtypes(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    tensors = mixed_tensors()
    metadata = {"epoch": "3", "arch": "1-2-1", "ünïcode": "✓", "json": '{"a": [1, 2]}'}
    digest = store.put(tensors, metadata)
    snap = store.get(digest)
    assert isinstance(snap, Snapshot) and snap.digest == digest
    assert_same(tensors, snap.tensors)
    assert snap.metadata == metadata
    assert all(t.device.type == "cpu" for t in snap.tensors.values())


def test_digest_names_the_file_and_is_deterministic(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    tensors = mixed_tensors()
    metadata = {k: str(i) for i, k in enumerate("zyxwvutsrq")}
    digest = store.put(tensors, metadata)
    path = store.path(digest)
    assert path == tmp_path / "snapshots" / f"{digest}.safetensors"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    # insertion order of tensors or metadata does not change the bytes
    reordered = dict(reversed(list(tensors.items())))
    assert hashlib.sha256(snapshot_bytes(reordered, dict(reversed(list(metadata.items()))))).hexdigest() == digest
    # safetensors writes metadata in hash-map order, which differs on every call: the store must not
    assert {snapshot_bytes(tensors, metadata) for _ in range(10)} == {path.read_bytes()}
    # different content, different digest
    assert store.put(tensors, {**metadata, "z": "changed"}) != digest
    assert store.digests() == sorted(store.digests()) and digest in store.digests()


def test_put_is_idempotent(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    tensors = {"w": torch.arange(6.0).reshape(2, 3)}
    digest = store.put(tensors, {"k": "v"})
    mtime = store.path(digest).stat().st_mtime_ns
    assert store.put({"w": torch.arange(6.0).reshape(2, 3)}, {"k": "v"}) == digest
    assert store.path(digest).stat().st_mtime_ns == mtime  # reused, not rewritten
    assert store.digests() == [digest] and store.exists(digest)
    assert sorted(p.name for p in store.dir.iterdir()) == [f"{digest}.safetensors"]


def test_put_repairs_a_damaged_file_with_the_same_name(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    tensors = {"w": torch.ones(3)}
    digest = store.put(tensors)
    store.path(digest).write_bytes(b"garbage")
    assert store.put(tensors) == digest
    assert_same(tensors, store.get(digest).tensors)


def test_flipped_byte_is_detected(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    digest = store.put(mixed_tensors(), {"epoch": "1"})
    path = store.path(digest)
    data = path.read_bytes()
    for pos in (0, 8, len(data) // 2, len(data) - 1):  # length, header, data
        path.write_bytes(data[:pos] + bytes([data[pos] ^ 0x01]) + data[pos + 1 :])
        with pytest.raises(SnapshotCorrupted, match=str(path)) as err:
            store.get(digest)
        assert isinstance(err.value, StorageError) and "\n" not in str(err.value)
    path.write_bytes(data[:-1])  # truncated
    with pytest.raises(SnapshotCorrupted):
        store.get(digest)


def test_valid_digest_but_not_safetensors_is_corrupted(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    junk = b"not a safetensors file"
    digest = hashlib.sha256(junk).hexdigest()
    store.dir.mkdir(parents=True)
    store.path(digest).write_bytes(junk)
    with pytest.raises(SnapshotCorrupted, match="not a valid safetensors"):
        store.get(digest)


def test_missing_and_invalid_digests(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    assert store.digests() == [] and store.clean_temp() == []
    absent = "ab" * 32
    assert not store.exists(absent)
    with pytest.raises(SnapshotMissing, match=absent):
        store.get(absent)
    with pytest.raises(SnapshotMissing):
        store.remove(absent)
    for bad in ["../../etc/passwd", "AB" * 32, "ab" * 31, 123]:
        with pytest.raises(InvalidDigest):
            store.get(bad)  # type: ignore[arg-type]
    digest = store.put({"x": torch.zeros(1)})
    store.remove(digest)
    assert store.digests() == [] and not store.exists(digest)


def test_bad_inputs_raise_type_errors(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    with pytest.raises(TypeError, match="str to str.*int"):
        store.put({"x": torch.zeros(1)}, {"epoch": 3})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="str to str"):
        store.put({"x": torch.zeros(1)}, {1: "a"})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="not a torch.Tensor"):
        store.put({"x": [1, 2]})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="names must be str"):
        store.put({1: torch.zeros(1)})  # type: ignore[dict-item]
    assert not store.dir.exists() or store.digests() == []


def test_shared_storage_and_parameters_are_stored(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    lin = torch.nn.Linear(3, 2)
    tied = {"a.weight": lin.weight, "b.weight": lin.weight, "bias": lin.bias}  # tied weights
    snap = store.get(store.put(tied))
    assert_same({k: v.detach() for k, v in tied.items()}, snap.tensors)
    assert not snap.tensors["a.weight"].requires_grad


def test_leftover_temp_file_is_ignored_and_cleaned(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    digest = store.put({"x": torch.ones(2)})
    leftover = store.dir / ".tmp-0123456789abcdef-99-deadbeef.partial"
    leftover.write_bytes(b"half a snapshot")
    assert store.digests() == [digest]
    assert store.clean_temp() == [leftover]
    assert not leftover.exists() and store.digests() == [digest]


CRASHING_PUT = """
import os, sys, torch
from autogrow.storage import SnapshotStore
os.environ["AUTOGROW_TEST_SNAPSHOT_PAUSE"] = "60"
print("putting", flush=True)
SnapshotStore(sys.argv[1]).put({"w": torch.ones(256, 256)}, {"epoch": "1"})
print("not reached", flush=True)
"""


def test_sigkill_mid_put_leaves_only_a_temp_file(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    child = subprocess.Popen([sys.executable, "-c", CRASHING_PUT, str(tmp_path)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    store = SnapshotStore(tmp_path)
    try:
        assert child.stdout.readline().strip() == "putting"
        # the hook says so once half of the temp file is written and synced
        assert child.stderr.readline().startswith("autogrow-test: paused mid-write")
        assert any(p.stat().st_size for p in store.dir.iterdir())
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert store.digests() == []
    (leftover,) = store.dir.iterdir()
    assert leftover.name.startswith(".tmp-") and leftover.name.endswith(".partial")
    assert store.clean_temp() == [leftover] and list(store.dir.iterdir()) == []
    digest = store.put({"w": torch.ones(256, 256)}, {"epoch": "1"})  # the retry completes
    assert store.digests() == [digest]


def test_each_failure_says_what_to_do(tmp_path: Path) -> None:
    """The messages of a missing, a damaged and a foreign snapshot file, and of removing a
    missing one (the mutation run found their advice unasserted)."""
    import autogrow.storage as storage

    store = SnapshotStore(tmp_path)
    digest = store.put({"w": torch.ones(2)}, {"label": "x"})
    absent = "a" * 64
    with pytest.raises(SnapshotMissing) as err:
        store.get(absent)
    assert str(err.value) == (f"no snapshot {absent} in {store.dir}; it was never written or was "
                              "pruned - resume or fork from a snapshot that digests() lists")
    with pytest.raises(SnapshotMissing) as err:
        store.remove(absent)
    assert str(err.value) == f"no snapshot {absent} in {store.dir} to remove"
    path = store.path(digest)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(SnapshotCorrupted) as err:
        store.get(digest)
    actual = hashlib.sha256(bytes(data)).hexdigest()
    assert str(err.value) == (f"{path} is corrupted: its sha256 is {actual[:12]}..., not the "
                              "digest it is named by; restore it from a backup or resume/fork "
                              "from another snapshot")
    foreign = b"not a safetensors file"
    named = hashlib.sha256(foreign).hexdigest()
    store.path(named).write_bytes(foreign)
    with pytest.raises(SnapshotCorrupted) as err:
        store.get(named)
    assert str(err.value).startswith(f"{store.path(named)} matches its digest but is not a valid "
                                     "safetensors file (")
    assert str(err.value).endswith("); it was not written by this store - remove it")
    with pytest.raises(AttributeError) as err:
        storage.no_such_name  # noqa: B018
    assert str(err.value) == "module 'autogrow.storage' has no attribute 'no_such_name'"


# -- reading without torch (what `autogrow verify` does) ----------------------------------------


def test_read_stored_gives_the_raw_entries_whose_weights_digest_is_the_tensors(tmp_path: Path) -> None:
    from autogrow.blocks import weights_digest
    from autogrow.storage.snapshots import TORCH_DTYPE_NAMES, stored_weights_digest

    store = SnapshotStore(tmp_path)
    tensors = mixed_tensors()
    digest = store.put(tensors, {"arch": "1-2-1"})
    stored, loaded = store.read_stored(digest), store.get(digest)
    assert stored.digest == digest and stored.metadata == loaded.metadata == {"arch": "1-2-1"}
    assert stored.entries.keys() == tensors.keys()
    for name, entry in stored.entries.items():
        t = loaded.tensors[name]
        assert TORCH_DTYPE_NAMES[entry.dtype] == str(t.dtype), name
        assert entry.shape == tuple(t.shape), name
        assert entry.data == t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes(), name
    assert stored_weights_digest(stored, "") == weights_digest(loaded.tensors)
    # a section: the model's entries only, named without the prefix, as verify digests them
    model = {"conv.weight": tensors["conv.weight"], "bn.num_batches_tracked": tensors["step"],
             "fc.bf16": tensors["fc.bf16"]}
    packed = {**{f"model.{k}": v for k, v in model.items()}, "momentum.conv.weight": tensors["lr"]}
    stored = store.read_stored(store.put(packed))
    assert stored_weights_digest(stored, "model.") == weights_digest(model)
    assert stored_weights_digest(stored, "model.") != weights_digest(packed)
    model["fc.bf16"] = model["fc.bf16"].clone()
    model["fc.bf16"][0, 0] += 1  # one value of one entry: another digest
    assert stored_weights_digest(stored, "model.") != weights_digest(model)


def test_read_stored_refuses_what_get_refuses(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    absent = "cd" * 32
    with pytest.raises(SnapshotMissing, match=absent):
        store.read_stored(absent)
    digest = store.put(mixed_tensors())
    path = store.path(digest)
    data = path.read_bytes()
    path.write_bytes(data[:-1])
    with pytest.raises(SnapshotCorrupted, match="its sha256 is"):
        store.read_stored(digest)
    for junk in (b"not a safetensors file", data[:-1]):  # garbage; a truncated file, renamed
        name = hashlib.sha256(junk).hexdigest()
        store.path(name).write_bytes(junk)
        with pytest.raises(SnapshotCorrupted, match="not a valid safetensors"):
            store.read_stored(name)


def test_an_entry_of_a_dtype_no_snapshot_holds_is_named(tmp_path: Path) -> None:
    import json
    import struct

    from autogrow.storage.snapshots import stored_weights_digest

    store = SnapshotStore(tmp_path)
    header = json.dumps({"model.w": {"dtype": "U16", "shape": [1], "data_offsets": [0, 2]}})
    header += " " * (-len(header) % 8)
    data = struct.pack("<Q", len(header)) + header.encode() + b"\0\1"  # a valid safetensors file
    digest = hashlib.sha256(data).hexdigest()
    store.dir.mkdir(parents=True)
    store.path(digest).write_bytes(data)
    stored = store.read_stored(digest)
    assert stored.entries["model.w"].dtype == "U16"
    with pytest.raises(SnapshotCorrupted, match="model.w has dtype U16"):
        stored_weights_digest(stored, "model.")
