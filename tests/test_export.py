"""safetensors export / load_model round trip, its error messages, and weights_digest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from autogrow.blocks import FORMAT, GrowableNet, build_net, load_model, weights_digest

W = 0.25


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def grown_net(family: str = "basic3resnet") -> GrowableNet:
    arch = "1-1-1" if "3" in family else "1-1-1-1"
    net = build_net(family, arch, in_channels=1, num_classes=5, image_size=28, width=W, generator=gen(0))
    net.grow(1, "gau", gen(1))
    net.grow(0, "gau", gen(2))
    with torch.no_grad():  # non-default BN running stats must travel too
        net.train()(torch.randn(8, 1, 28, 28, generator=gen(3)))
    return net.eval()


# -- round trip -------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["basic3resnet", "plain3net", "bottleneck4resnet"])
def test_save_then_load_gives_identical_outputs(tmp_path: Path, family: str) -> None:
    net = grown_net(family)
    path = tmp_path / "model.safetensors"
    net.save(path)
    rng = torch.random.get_rng_state()
    loaded = load_model(path)
    assert torch.equal(rng, torch.random.get_rng_state()), "loading must not consume the RNG"
    assert isinstance(loaded, GrowableNet) and not loaded.training
    assert loaded.family == family and loaded.arch == net.arch and loaded.config == net.config
    assert weights_digest(loaded) == weights_digest(net)
    x = torch.randn(3, 1, 28, 28, generator=gen(4))
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))
    # the loaded net is a normal trainable, growable net
    assert all(p.requires_grad for p in loaded.parameters())
    assert loaded.grow(2, "gau", gen(5))[0].startswith("stages.2.1.")


def test_file_metadata_and_bf16_channels_last_round_trip(tmp_path: Path) -> None:
    net = grown_net().to(torch.bfloat16).to(memory_format=torch.channels_last)
    path = tmp_path / "m.safetensors"
    net.save(path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        keys = set(f.keys())
    assert meta["format"] == FORMAT and meta["family"] == "basic3resnet" and meta["arch"] == "2-2-1"
    assert json.loads(meta["kwargs"]) == {"in_channels": 1, "num_classes": 5, "image_size": 28,
                                          "width": 0.25, "weight_init": "torch"}
    assert keys == set(net.state_dict())  # BN buffers included
    assert any(k.endswith("running_var") for k in keys)
    loaded = load_model(path)
    assert loaded.stem.conv.weight.dtype == torch.bfloat16
    assert weights_digest(loaded) == weights_digest(net)


# -- bad files --------------------------------------------------------------------------------


def _tensors() -> dict[str, torch.Tensor]:
    return {k: v.contiguous() for k, v in build_net("plain3net", "1-1-1", width=W).state_dict().items()}


def _meta(**overrides: str) -> dict[str, str]:
    meta = {
        "format": FORMAT,
        "family": "plain3net",
        "arch": "1-1-1",
        "kwargs": json.dumps({"in_channels": 3, "num_classes": 10, "image_size": 32, "width": 0.25}),
    }
    meta.update(overrides)
    return {k: v for k, v in meta.items() if v is not None}


@pytest.mark.parametrize(
    "metadata,match",
    [
        (None, "not an autogrow model file"),
        (_meta(format="something.else"), "not an autogrow model file"),
        (_meta(arch=None), "lacks arch"),
        (_meta(kwargs="{not json"), "not valid JSON"),
        (_meta(kwargs=json.dumps({"in_channels": 3})), "keys in_channels, num_classes"),
        (_meta(family="resnet9"), "unknown network family 'resnet9'"),
        (_meta(arch="1-x-1"), "malformed arch"),
        (_meta(arch="2-1-1"), "tensors do not match plain3net 2-1-1"),
        (_meta(family="basic3resnet"), "tensors do not match basic3resnet"),
    ],
)
def test_bad_metadata_raises_value_error(tmp_path: Path, metadata: dict | None, match: str) -> None:
    path = tmp_path / "bad.safetensors"
    save_file(_tensors(), str(path), metadata=metadata)
    with pytest.raises(ValueError, match=match):
        load_model(path)


def test_not_a_safetensors_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"\x00\x01not a safetensors file at all")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_model(path)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.safetensors")


# -- weights digest ---------------------------------------------------------------------------


def _reference_digest(state: dict[str, torch.Tensor]) -> str:
    """The digest as the spec words it (bf16 viewed as int16 for numpy)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update((t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes())
    return h.hexdigest()


def test_weights_digest_matches_reference_and_detects_changes() -> None:
    net = build_net("basic3resnet", "1-1-1", width=W, generator=gen(0))
    d = weights_digest(net)
    assert len(d) == 64 and d == _reference_digest(net.state_dict())
    assert d == weights_digest(build_net("basic3resnet", "1-1-1", width=W, generator=gen(0)))
    # order of the mapping does not matter; a state dict works like the module
    assert weights_digest(dict(reversed(list(net.state_dict().items())))) == d
    # channels_last is a layout, not a value
    assert weights_digest(build_net("basic3resnet", "1-1-1", width=W, generator=gen(0)).to(
        memory_format=torch.channels_last)) == d

    with torch.no_grad():
        net.stages[0][0].conv1.weight[0, 0, 0, 0] += 1e-7
    assert weights_digest(net) != d
    d2 = weights_digest(net)
    net.stages[0][0].bn1.num_batches_tracked += 1  # buffers count too
    assert weights_digest(net) != d2

    bf = build_net("plain3net", "1-1-1", width=W, generator=gen(0)).to(torch.bfloat16)
    assert weights_digest(bf) == _reference_digest(bf.state_dict())
    assert weights_digest(bf) != weights_digest(build_net("plain3net", "1-1-1", width=W, generator=gen(0)))
