"""RunConfig: precedence, TOML files, coercion, defaults that follow the family."""

from __future__ import annotations

import pytest

from autogrow.blocks import FAMILIES, INITIALIZERS, get_family
from autogrow.config import (
    FAMILY_STAGES,
    INITIALIZER_NAMES,
    PRESETS,
    ConfigError,
    RunConfig,
    coerce,
    resolve_config,
)


def test_preset_then_file_then_flags(tmp_path):
    path = tmp_path / "my.toml"
    path.write_text('[run]\ninterval = 2\nstop_window = 5\ntau = 0.2\n')
    config = resolve_config("smoke", path, {"tau": 0.3, "seed": None})
    assert config.interval == 2 and config.stop_window == 5  # file over preset
    assert config.tau == 0.3  # flag over file
    assert config.width == PRESETS["smoke"]["width"]  # preset over defaults


def test_stored_config_round_trips(tmp_path):
    import tomli_w

    config = resolve_config("demo")
    path = tmp_path / "config.toml"
    path.write_text(tomli_w.dumps({"run": config.to_dict()}))
    assert resolve_config(None, path) == config


def test_automatic_values_are_made_explicit():
    assert resolve_config(None, None, {"family": "plain3net"}).lr == 0.01
    assert resolve_config(None, None, {"family": "basic4resnet"}).seed_arch == "1-1-1-1"
    scaled = resolve_config("paper-cifar10", None, {"subset": 0.25})
    # the paper (A.0.3) divides K by the data fraction, not J
    assert (scaled.interval, scaled.stop_window, scaled.scale_with_subset) == (12, 100, False)
    short = resolve_config(None, None, {"subset": 0.1, "interval": 3, "stop_window": 6})
    assert (short.interval, short.stop_window) == (30, 30)  # J still covers K epochs
    assert resolve_config(None, None, {"subset": 0.5, "scale_with_subset": False}).interval == 3


def test_unknown_keys_and_bad_types_are_named(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("intervall = 3\n")
    with pytest.raises(ConfigError, match="intervall"):
        resolve_config(None, path)
    path.write_text("interval = [\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        resolve_config(None, path)
    with pytest.raises(ConfigError, match="interval expects a int"):
        coerce("interval", "three")
    with pytest.raises(ConfigError, match="bool"):
        coerce("download", "perhaps")
    assert coerce("download", "yes") is True and coerce("tau", "0.5") == 0.5


def test_registries_agree_with_the_networks():
    """The torch-free config mirrors the family and initializer names of autogrow.blocks."""
    assert set(FAMILY_STAGES) == set(FAMILIES)
    assert all(get_family(name).num_stages == stages for name, stages in FAMILY_STAGES.items())
    assert set(INITIALIZER_NAMES) == set(INITIALIZERS)


def test_every_preset_is_valid():
    for name in PRESETS:
        assert isinstance(resolve_config(name), RunConfig)


@pytest.mark.parametrize("name", ["paper-mnist", "paper-fashionmnist", "paper-svhn",
                                  "paper-cifar10", "paper-cifar100", "paper-imagenet"])
def test_paper_presets_decide_on_the_test_set_with_the_whole_training_set(name):
    """As the original code: decisions on the test set, all training images (issue 12 item 1);
    small data sets fine-tune 200 epochs, its default (item 2)."""
    config = resolve_config(name)
    assert config.val_source == "test" and config.subset == 1.0
    assert config.precision == "fp32"  # as the authors ran (their GPUs and PyTorch predate TF32)
    assert config.lr_milestones == ("1/3,2/3" if name == "paper-imagenet" else "1/2,3/4")
    assert config.finetune_epochs == (90 if name == "paper-imagenet" else 200)
    assert resolve_config(None).val_source == "train"  # everywhere else: a held-out split


def test_bad_lr_milestones_are_a_config_error():
    with pytest.raises(ValueError, match="lr_milestones"):
        resolve_config("smoke", overrides={"lr_milestones": "3/4,1/2"})
