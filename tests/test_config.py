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
    with pytest.raises(ConfigError, match="interval expects an int"):
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


# What each paper-* preset must resolve to. O = the authors' code, wenwei202/autogrow at 4435ee0:
# mg = cifar10/main_gradual.py (p-AutoGrow), ma = cifar10/main_add.py (c-AutoGrow),
# ig = imagenet/main_gradual.py; paper = ../shared/paper/autogrow-paper.txt (line numbers).
_P_SMALL = {
    "policy": "periodic",          # paper:283-299, p-AutoGrow is the final AutoGrow (mg)
    "interval": 3,                 # K: paper:234-235 "K = 3 is very robust" (mg:41 --gi on the CLI)
    "stop_window": 100,            # J = T, epochs at the baseline's largest LR: paper:231-232, 246-247; mg:42
    "tau": 0.05,                   # paper:229; mg:36 --gt 0.05
    "metric": "best",              # maximum validation accuracy: paper:241; mg:53 'max'
    "growth_lr": "constant",       # paper:286-288; mg:32 --opt sgd keeps args.lr while growing
    "finetune_epochs": 200,        # mg:38 --tail-epochs 200
    "lr_milestones": "1/2,3/4",    # x0.1 at N//2 and N*3//4: mg:586-591; paper:246-247 (100, 150)
    "finetune_lr_scale": 1.0,      # mg:586 set_learning_rate(args.lr)
    "finetune_milestones": "1/2,3/4",
    "batch_size": 128,             # mg:56; paper:246
    "momentum": 0.9,               # mg:84; paper:242
    "weight_decay": 5e-4,          # mg:84 (all parameters); also AdamInit's, mg:230
    "initializer": "gau",          # mg:48 gaussian; paper:298-300
    "weight_init": "torch",        # O's cifar10/models/resnet.py has no init code
    "crop_padding": -1,            # the data set's own: mg:301-319 (see test_data.py)
    "val_source": "test",          # decisions on the test set: mg:341-346, 532-534
    "subset": 1.0,                 # mg:62 --dataset-ratio 1.0
    "precision": "fp32",           # O has no autocast; its GPUs and PyTorch predate TF32
    "seed_arch": "1-1-1",          # paper:240-241 "always starts from ... 1-1-1"; mg:43
}
_LR = {"plain3net": 0.01, "plain4net": 0.01, "basic3resnet": 0.1, "basic4resnet": 0.1}  # paper:242-243
PAPER_PRESETS = {
    **{f"paper-{name}": dict(_P_SMALL, dataset=name, family=family, lr=_LR[family],
                             seed_arch="-".join("1" * (4 if "4" in family else 3)))
       for name, family in (("mnist", "plain3net"), ("fashionmnist", "basic3resnet"),
                            ("svhn", "plain4net"), ("cifar10", "basic3resnet"),
                            ("cifar100", "basic4resnet"))},
    "paper-imagenet": dict(
        _P_SMALL, dataset="imagenet", family="basic4resnet", lr=0.1, seed_arch="1-1-1-1",
        stop_window=30,               # J = 30: paper:244-245; ig:49 --si 30
        finetune_epochs=90,           # ig:43 --tail-epochs 90; paper:244
        lr_milestones="1/3,2/3",      # ig:606-614 drops at N//3 and 2N//3 (30, 60); paper:245
        finetune_milestones="1/3,2/3",
        batch_size=256,               # ig:46; paper:244
        weight_decay=1e-4,            # ig:94; AdamInit's too, ig:220
        weight_init="kaiming-fan-out",  # O's imagenet/models/resnet.py:131-136
    ),
    **{f"paper-c-{name}": dict(
        _P_SMALL, dataset=name, family="basic3resnet", lr=0.1,
        policy="convergent",          # c-AutoGrow: paper:268-275; ma
        interval=100,                 # K = T: paper:233; ma:39 --gi 100
        stop_window=100,              # ma has no J (its window is K); here J must be >= K
        growth_lr="staircase",        # table 3's "Staircase" rows: paper:272-275, ma:443-450 sgdc
        initializer="zero",           # Network Morphism (ZeroInit, or AdamInit): paper:249, 268-269
        finetune_epochs=100,          # ma:48 --tail-epochs 100
        finetune_lr_scale=0.1,        # ma:481-485: one decay at the first fine-tune epoch...
        finetune_milestones="1/2",    # ...and one at N//2
    ) for name in ("cifar10", "cifar100")},
}


def test_every_paper_preset_resolves_to_the_paper_and_the_original_code():
    """Issue 12's preset table: each value is checked, its source named beside it above."""
    assert set(PAPER_PRESETS) == {name for name in PRESETS if name.startswith("paper-")}
    for name, expected in PAPER_PRESETS.items():
        config = resolve_config(name).to_dict()
        wrong = {k: (config[k], v) for k, v in expected.items() if config[k] != v}
        assert not wrong, f"{name}: (resolved, expected) {wrong}"
    assert resolve_config(None).val_source == "train"  # everywhere else: a held-out split


def test_bad_lr_milestones_are_a_config_error():
    with pytest.raises(ValueError, match="lr_milestones"):
        resolve_config("smoke", overrides={"lr_milestones": "3/4,1/2"})


def test_every_setting_says_what_it_means_once_and_the_cli_shows_it():
    """Each field carries its help and choices (issue 23 item 3); the parser is made from them,
    and a choice outside the list is refused in the config's words, naming the setting."""
    import attrs as _attrs

    from autogrow.cli import build_parser
    from autogrow.config import ConfigError, RunConfig
    text = build_parser()._subparsers._group_actions[0].choices["grow"].format_help()
    flat = "".join(text.split())  # argparse wraps lines, at hyphens too
    for field in _attrs.fields(RunConfig):
        help_text, choices = field.metadata["help"], field.metadata["choices"]
        assert help_text and "".join(help_text.split()) in flat, field.name
        if choices:
            assert "{" + ",".join(choices) + "}" in flat, field.name
            with pytest.raises(ConfigError, match=f"unknown {field.name} 'nope'; choose one of"):
                RunConfig(**{field.name: "nope"})


def test_every_launch_option_says_what_it_means_once_and_passes_on_as_flags():
    """LaunchOptions is the one launch type (issue 23 item 3): its fields make the flags of every
    command that launches a run, and ``as_flags`` (how sweep hands its launch to each cell's
    process) parses back, through those flags, to the same options."""
    import attrs as _attrs

    from autogrow.cli import _launch, build_parser
    from autogrow.config import LaunchOptions
    commands = build_parser()._subparsers._group_actions[0].choices
    flat = "".join(commands["grow"].format_help().split())
    for field in _attrs.fields(LaunchOptions):
        assert "".join(field.metadata["help"].split()) in flat, field.name
    assert "--resume-if-exists" not in commands["resume"].format_help()  # starts no run
    launch = LaunchOptions(resume_if_exists=True, stop_signals="USR2,TERM", time_limit="1h30m",
                           requeue=True, log_every=2.5, workers=3, tensorboard="tb")
    for options in (launch, LaunchOptions()):
        args = commands["grow"].parse_args(["--run-dir", "r", *options.as_flags()])
        assert _launch(args) == options
    assert "--requeue" not in launch.as_flags(skip=("requeue",))
