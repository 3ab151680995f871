"""The tensor cache: a tensor set decoded once, read back by later launches without torchvision,
never trusted beyond what its source files' digests and its own content digest say."""

from __future__ import annotations

import pytest
import torch

from autogrow.engine.data import load_dataset, tensor_cache, tensor_sets
from autogrow.engine.data.registry import DataError
from tests.test_data import _write_cifar, _write_mnist


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """The data set names torchvision was asked to read (every call of call_torchvision)."""
    calls: list[str] = []
    real = tensor_sets.call_torchvision

    def counting(info, make, location):
        calls.append(info.name)
        return real(info, make, location)

    monkeypatch.setattr(tensor_sets, "call_torchvision", counting)
    return calls


def _entries(cache) -> list:
    return sorted((cache / "tensors").glob("*.safetensors"))


def _same(a, b) -> None:
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(a, split).images, getattr(b, split).images)
        assert torch.equal(getattr(a, split).labels, getattr(b, split).labels)
    assert a.classes == b.classes and a.source_digests == b.source_digests


def test_a_second_load_reads_the_cache_and_not_torchvision(tmp_path, reads):
    _write_mnist(tmp_path / "MNIST" / "raw", gz=False)
    cache = tmp_path / "cache"
    first = load_dataset("mnist", data_root=tmp_path, cache_dir=cache, val_split=0.2)
    assert reads == ["mnist", "mnist"] and len(_entries(cache)) == 1  # train and test files
    again = load_dataset("mnist", data_root=tmp_path, cache_dir=cache, val_split=0.2)
    assert reads == ["mnist", "mnist"]  # no torchvision read the second time
    _same(first, again)
    assert again.data_location == first.data_location


def test_changed_source_files_are_read_again_into_an_entry_of_their_own(tmp_path, reads):
    _write_mnist(tmp_path / "MNIST" / "raw", gz=False, seed=1)
    cache = tmp_path / "cache"
    first = load_dataset("mnist", data_root=tmp_path, cache_dir=cache)
    _write_mnist(tmp_path / "MNIST" / "raw", gz=False, seed=2)  # same sizes, other pixels
    second = load_dataset("mnist", data_root=tmp_path, cache_dir=cache)
    assert len(reads) == 4 and len(_entries(cache)) == 2
    assert first.source_digests != second.source_digests
    assert not torch.equal(first.test.images, second.test.images)


def test_a_damaged_entry_is_a_miss_read_again_and_rewritten(tmp_path, reads):
    _write_mnist(tmp_path / "MNIST" / "raw", gz=False)
    cache = tmp_path / "cache"
    first = load_dataset("mnist", data_root=tmp_path, cache_dir=cache)
    entry, = _entries(cache)
    data = bytearray(entry.read_bytes())
    data[-1] ^= 0x01  # one pixel of the last tensor: still a valid safetensors file
    entry.write_bytes(bytes(data))
    again = load_dataset("mnist", data_root=tmp_path, cache_dir=cache)
    assert len(reads) == 4  # the content digest caught it: torchvision read the files again
    _same(first, again)
    assert tensor_cache.load(entry, need_md5=False) is not None  # rewritten whole
    entry.write_bytes(b"not a safetensors file")
    assert tensor_cache.load(entry, need_md5=False) is None
    _same(first, load_dataset("mnist", data_root=tmp_path, cache_dir=cache))
    assert len(reads) == 6


def test_an_entry_made_without_the_md5_check_does_not_serve_a_checked_load(tmp_path):
    _write_cifar(tmp_path, "cifar10")
    cache = tmp_path / "cache"
    load_dataset("cifar10", data_root=tmp_path, cache_dir=cache, verify_checksums=False)
    entry, = _entries(cache)
    assert tensor_cache.load(entry, need_md5=True) is None
    with pytest.raises(DataError, match="fail the official md5"):  # not served from the cache
        load_dataset("cifar10", data_root=tmp_path, cache_dir=cache)


def test_a_cache_that_cannot_be_written_costs_speed_not_the_load(tmp_path, reads):
    _write_mnist(tmp_path / "MNIST" / "raw", gz=False)
    blocked = tmp_path / "a-file"
    blocked.write_text("the cache dir cannot be made under a file")
    for _ in range(2):
        d = load_dataset("mnist", data_root=tmp_path, cache_dir=blocked / "cache")
        assert len(d.test) == 20
    assert len(reads) == 4  # read by torchvision each time


def test_a_write_that_fails_midway_leaves_no_entry_and_no_temp_file(tmp_path, reads):
    """A full disk while the entry is written (its temp file exists by then): the load goes on,
    nothing half-written is left to be mistaken for an entry, and the next load reads again."""
    import errno

    _write_mnist(tmp_path / "MNIST" / "raw", gz=False)
    cache = tmp_path / "cache"

    def disk_full(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tensor_cache, "save_file", disk_full)
        assert len(load_dataset("mnist", data_root=tmp_path, cache_dir=cache).test) == 20
    assert list((cache / "tensors").iterdir()) == []
    load_dataset("mnist", data_root=tmp_path, cache_dir=cache)
    assert len(reads) == 4 and len(_entries(cache)) == 1


def test_cifar_and_svhn_file_names_are_torchvisions():
    """The cache looks up CIFAR's and SVHN's files without importing torchvision, so it names
    them itself: they must be the ones torchvision's classes read."""
    from torchvision import datasets

    for name, cls in (("cifar10", datasets.CIFAR10), ("cifar100", datasets.CIFAR100)):
        folder, files = tensor_sets._CIFAR_FILES[name]
        assert folder == cls.base_folder
        assert files == tuple(f for f, _ in cls.train_list + cls.test_list) + (
            cls.meta["filename"],)
    assert tensor_sets._SVHN_FILES == tuple(
        f for k, (_, f, _) in datasets.SVHN.split_list.items() if k != "extra")
