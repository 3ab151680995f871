"""RunConfig: every setting of a run, validated, from presets < a TOML file < command-line flags.

Pure Python (no torch): the config is checked before anything is written, so bad input exits with a
one-line error and leaves no run directory behind. Units are in the field comments.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from autogrow.arch import format_arch, parse_arch
from autogrow.errors import InputError
from autogrow.policies.settings import GROWTH_LRS, METRICS, POLICIES, PolicySettings

# Family names and stage counts, mirrored from autogrow.blocks without importing torch here
# (tests check the two agree).
FAMILY_STAGES = {
    "basic3resnet": 3,
    "plain3net": 3,
    "basic4resnet": 4,
    "plain4net": 4,
    "bottleneck4resnet": 4,
}
INITIALIZER_NAMES = ("zero", "uniform", "gaussian", "gau", "adam", "default", "identity")
DATASETS = ("mnist", "fashionmnist", "svhn", "cifar10", "cifar100", "imagenet")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
VAL_SOURCES = ("train", "test")
# How every conv of the seed net and of each new block starts. The original code used PyTorch's
# default for the small data sets (its cifar10/models) and Kaiming-normal fan-out with BN γ=1 for
# ImageNet (its imagenet/models/resnet.py); auto picks by data set, as the original did.
WEIGHT_INITS = ("auto", "torch", "kaiming-fan-out")


class ConfigError(InputError):
    """A setting is wrong; the message names it and says what would be right."""


def _choice(options: tuple[str, ...]):
    def check(_inst: Any, attribute: attrs.Attribute, value: str) -> None:
        if value not in options:
            raise ConfigError(f"unknown {attribute.name} {value!r}; choose one of: "
                              f"{', '.join(options)}")
    return check


def setting(default: Any, help: str, choices: tuple[str, ...] = ()) -> Any:
    """A RunConfig field and what it means, said once: ``help`` is its line in ``--help`` (the
    CLI's flags are made from these fields), ``choices`` the values it accepts (checked here,
    listed there)."""
    return attrs.field(default=default, metadata={"help": help, "choices": choices},
                       validator=_choice(choices) if choices else None)


@attrs.frozen(kw_only=True)
class RunConfig:
    """One run's settings. Field names are the TOML keys and, with '-' for '_', the CLI flags."""

    # network
    family: str = setting("basic3resnet", "network family to grow", tuple(FAMILY_STAGES))
    seed_arch: str = setting("", "blocks per stage to start from, e.g. 1-1-1")
    max_arch: str = setting("", "per-stage depth cap, e.g. 20-20-20 (default: none)")
    width: float = setting(1.0, "channel multiplier (use < 1 for quick CPU runs)")
    initializer: str = setting("gau", "how a new block's last BN starts (gau is the paper's best)",
                               INITIALIZER_NAMES)
    weight_init: str = setting(
        "auto", "base init of every conv, new blocks too: torch (PyTorch's default), "
        "kaiming-fan-out; auto = the original's choice (kaiming-fan-out on ImageNet)",
        WEIGHT_INITS)
    # growth policy (DESIGN §3)
    policy: str = setting("periodic", "periodic (p-AutoGrow) or convergent (c-AutoGrow) growth",
                          POLICIES)
    interval: int = setting(3, "K: epochs between policy checks")
    stop_window: int = setting(6, "J: epochs the stopping policy looks back (periodic)")
    tau: float = setting(0.05, "minimum improvement, in accuracy percentage points")
    metric: str = setting("best", "best: running max of val acc (paper); ema: its moving average",
                          METRICS)
    max_growth_epochs: int = setting(0, "cap on growth-phase epochs (0 = none)")
    finetune_epochs: int = setting(10, "N: fine-tune epochs after growth, staircase LR")
    scale_with_subset: bool = setting(True, "divide K by --subset (paper table 11 and its "
                                            "appendix)")
    # optimisation
    lr: float = setting(0.0, "learning rate (0 = 0.1 residual, 0.01 plain)")
    momentum: float = setting(0.9, "SGD momentum")
    weight_decay: float = setting(5e-4, "SGD weight decay")
    batch_size: int = setting(128, "training batch size")
    lr_milestones: str = setting(
        "1/2,3/4", "fractions of each phase (fine-tuning, a c-AutoGrow interval, `train`) where "
        "the LR drops x0.1, e.g. 1/3,2/3 (ImageNet's 30/60 of 90); '' = none")
    growth_lr: str = setting(
        "auto", "LR while growing: constant, or a staircase restarted every K epochs; auto = "
        "constant for periodic, staircase for convergent (paper table 3)", GROWTH_LRS)
    finetune_lr_scale: float = setting(1.0, "fine-tuning starts at lr x this (the original "
                                            "c-AutoGrow: 0.1)")
    finetune_milestones: str = setting("auto", "LR drops of fine-tuning as fractions of N "
                                               "(auto = --lr-milestones)")
    reset_momentum: bool = setting(False, "drop optimizer momentum at each growth")
    adam_init_epochs: int = setting(10, "AdamInit epoch cap")
    # data
    dataset: str = setting("fashionmnist", "data set to train on", DATASETS)
    data_root: str = setting("", "where the data set's files are")
    download: bool = setting(False, "download the data set if missing (needs internet)")
    crop_padding: int = setting(-1, "random-crop padding in px for small data sets (-1 = the "
                                    "original's: 4 for 32-px sets, none for MNIST/Fashion-MNIST)")
    subset: float = setting(1.0, "fraction of the training split to use, in (0, 1]")
    val_split: float = setting(0.1, "fraction of the training set held out for growth decisions")
    val_source: str = setting("train", "train: held-out split (default); test: the paper's "
                                       "test-as-validation", VAL_SOURCES)
    max_val: int = setting(0, "cap on validation images (0 = all)")
    max_test: int = setting(0, "cap on test images (0 = all)")
    # execution
    seed: int = setting(0, "seed of data order, augmentation and every initialisation")
    device: str = setting("auto", "auto picks CUDA when present", DEVICES)
    precision: str = setting("auto", "auto picks the fastest safe choice for the device",
                             PRECISIONS)
    channels_last: bool = setting(True, "use the channels_last memory format")
    deterministic: bool = setting(
        True, "bit-exact kernels, so a resumed run equals an uninterrupted one (free on CPU; on "
        "CUDA slower kernels and no cuDNN autotuning; --no-deterministic trades exact resume "
        "for speed)")
    threads: int = setting(0, "CPU threads (0 = torch's default); recorded, restored on resume")
    snapshot_keep: int = setting(3, "latest snapshots kept; older ones (not growth points) are "
                                    "deleted as the run goes, each deletion logged")
    snapshot_every_steps: int = setting(0, "also snapshot inside an epoch (0 = epoch ends only)")

    def __attrs_post_init__(self) -> None:
        stages = FAMILY_STAGES[self.family]
        if self.seed_arch:
            parse_arch(self.seed_arch, stages)
        if self.max_arch:
            parse_arch(self.max_arch, stages)
        if not 0.0 < self.subset <= 1.0:
            raise ConfigError(f"subset must be in (0, 1], got {self.subset}")
        if not 0.0 < self.val_split < 1.0 and self.val_source == "train":
            raise ConfigError(f"val_split must be in (0, 1), got {self.val_split}")
        if self.width <= 0:
            raise ConfigError(f"width must be positive, got {self.width}")
        for name in ("batch_size", "adam_init_epochs"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("max_growth_epochs", "max_val", "max_test", "threads", "snapshot_keep",
                     "snapshot_every_steps", "finetune_epochs"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.crop_padding < -1:
            raise ConfigError(f"crop_padding must be >= 0 px (or -1 for the data set's own), "
                              f"got {self.crop_padding}")
        if self.crop_padding > 0 and self.dataset == "imagenet":
            raise ConfigError("crop_padding is for the small data sets; ImageNet uses "
                              "RandomResizedCrop")
        if self.lr < 0 or self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ConfigError("lr and weight_decay must be >= 0 and momentum in [0, 1)")
        # The policy's own checks (K > 0, J >= K, tau >= 0, max_arch vs seed_arch).
        self.policy_settings()

    def policy_settings(self) -> PolicySettings:
        return PolicySettings.from_config(dict(self.to_dict(), seed_arch=self.seed_arch_or_default))

    @property
    def seed_arch_or_default(self) -> str:
        """The seed arch, with the paper's default of one block per stage."""
        return self.seed_arch or "-".join(["1"] * FAMILY_STAGES[self.family])

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)

    def resolved(self) -> RunConfig:
        """The config as the run uses it: automatic values made explicit (stored in the log)."""
        changes: dict[str, Any] = {}
        if self.lr == 0.0:
            changes["lr"] = 0.01 if self.family.startswith("plain") else 0.1
        if self.subset < 1.0 and self.scale_with_subset:
            # "K is divided by the percentage of dataset such that the number of mini-batches
            # between growths remains the same" (paper, appendix A.0.3); J is not scaled there
            # (it still has to cover K epochs).
            changes["interval"] = max(1, round(self.interval / self.subset))
            changes["stop_window"] = max(changes["interval"], self.stop_window)
            changes["scale_with_subset"] = False  # already applied
        changes["seed_arch"] = format_arch(parse_arch(self.seed_arch_or_default))
        changes["weight_init"] = self.weight_init_scheme
        if self.growth_lr == "auto":
            changes["growth_lr"] = "staircase" if self.policy == "convergent" else "constant"
        if self.finetune_milestones == "auto":
            changes["finetune_milestones"] = self.lr_milestones
        return attrs.evolve(self, **changes)

    @property
    def weight_init_scheme(self) -> str:
        """``weight_init`` with auto made explicit: the original's choice for the data set."""
        if self.weight_init != "auto":
            return self.weight_init
        return "kaiming-fan-out" if self.dataset == "imagenet" else "torch"

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "config") -> RunConfig:
        unknown = sorted(set(data) - FIELD_NAMES)
        if unknown:
            raise ConfigError(f"{source}: unknown setting(s) {', '.join(unknown)}; "
                              f"valid settings: {', '.join(sorted(FIELD_NAMES))}")
        return cls(**{k: coerce(k, v) for k, v in data.items()})


def baseline_overrides(overrides: Mapping[str, Any], arch: str,
                       epochs: int | None = None) -> dict[str, Any]:
    """``overrides`` for the fixed-arch baseline (`autogrow train`, a sweep's train cell): the arch
    as seed and cap, ``epochs`` of training on the baseline's schedule (paper:242-247) — full LR
    and ``lr_milestones`` unless asked otherwise, not a c-AutoGrow preset's shortened fine-tune."""
    out = dict(overrides, seed_arch=arch, max_arch=arch)
    out.setdefault("finetune_lr_scale", 1.0)
    out.setdefault("finetune_milestones", "auto")
    if epochs is not None:
        out["finetune_epochs"] = epochs
    return out


FIELD_NAMES = frozenset(f.name for f in attrs.fields(RunConfig))
_FIELD_TYPES = {f.name: f.type for f in attrs.fields(RunConfig)}


def coerce(key: str, value: Any) -> Any:
    """``value`` (from TOML or a ``key=value`` string) as the type of setting ``key``."""
    kind = _FIELD_TYPES.get(key)
    if kind is None:
        raise ConfigError(f"unknown setting {key!r}; valid settings: {', '.join(sorted(FIELD_NAMES))}")
    try:
        if kind == "bool":
            return coerce_bool(key, value)
        if kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if kind == "float":
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        article = "an" if kind[0] in "aeiou" else "a"
        raise ConfigError(f"setting {key} expects {article} {kind}, got {value!r}") from None


def coerce_bool(key: str, value: Any) -> bool:
    """``true/false/1/0/yes/no`` (any case) or a bool."""
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError(f"setting {key} expects a bool, got {value!r}")
        return lowered in ("true", "1", "yes")
    return bool(value)


PRESETS: dict[str, dict[str, Any]] = {
    # A real growth on Fashion-MNIST on CPU in a few minutes: a 10 % training subset, a small width.
    "demo": dict(
        dataset="fashionmnist", family="basic3resnet", width=0.5,
        policy="periodic", interval=1, stop_window=3, tau=0.5, max_arch="6-6-6",
        max_growth_epochs=12, finetune_epochs=3, subset=0.1, scale_with_subset=False,
        max_val=2000, batch_size=128, lr=0.1,
    ),
    # Seconds, for tests: a thin net on a slice of the data; grows at least twice, then stops.
    "smoke": dict(
        dataset="fashionmnist", family="basic3resnet", width=0.25,
        policy="periodic", interval=1, stop_window=2, tau=100.0, max_growth_epochs=8,
        finetune_epochs=1, subset=0.02, scale_with_subset=False, max_val=500, max_test=1000,
        batch_size=64, lr=0.1,
    ),
}

# The paper's settings (§3) as the authors' code (wenwei202/autogrow at 4435ee0) runs them;
# tests/test_config.py checks every value against its source line. p-AutoGrow: K=3, tau=0.05 %,
# J = the epochs at the baseline's largest LR (100 of 200; 30 of 90 on ImageNet), a constant LR
# while growing, N fine-tune epochs on the baseline's staircase. Decisions use the test set and
# training the whole training set (val_source "test"), fp32, GauInit.
_PAPER_SMALL = dict(policy="periodic", interval=3, stop_window=100, tau=0.05, finetune_epochs=200,
                    batch_size=128, weight_decay=5e-4, initializer="gau", val_source="test",
                    precision="fp32", growth_lr="constant")
for _name, _family in (("mnist", "plain3net"), ("fashionmnist", "basic3resnet"),
                       ("svhn", "plain4net"), ("cifar10", "basic3resnet"),
                       ("cifar100", "basic4resnet")):
    PRESETS[f"paper-{_name}"] = dict(_PAPER_SMALL, dataset=_name, family=_family)
PRESETS["paper-imagenet"] = dict(
    policy="periodic", interval=3, stop_window=30, tau=0.05, finetune_epochs=90, batch_size=256,
    lr_milestones="1/3,2/3",  # epochs 30 and 60 of 90, as the original's ImageNet schedule
    weight_decay=1e-4, initializer="gau", dataset="imagenet", family="basic4resnet",
    val_source="test", precision="fp32", growth_lr="constant", weight_init="kaiming-fan-out",
)
# c-AutoGrow (paper §3.1, table 3; the original's cifar10/main_add.py): convergent growth with
# K = T = 100, a staircase restarted every interval, ZeroInit (AdamInit is the other
# network-morphism row), then 100 fine-tune epochs from lr x 0.1 with one drop at N/2.
_PAPER_CONVERGENT = dict(
    policy="convergent", interval=100, stop_window=100, tau=0.05, growth_lr="staircase",
    initializer="zero", finetune_epochs=100, finetune_lr_scale=0.1, finetune_milestones="1/2",
    batch_size=128, weight_decay=5e-4, val_source="test", precision="fp32",
    family="basic3resnet",
)
for _name in ("cifar10", "cifar100"):
    PRESETS[f"paper-c-{_name}"] = dict(_PAPER_CONVERGENT, dataset=_name)


# -- launch options -------------------------------------------------------------------------------
# How one launch of a run behaves (signals, time budget, relaunch, progress lines). They are not
# part of the run: they are never logged, may differ between launches, and resume takes them from
# its own command line.

STOP_SIGNALS = ("TERM", "INT", "USR1", "USR2", "HUP", "QUIT", "XCPU")
# The exit code of a launch that suspended the run (os.EX_TEMPFAIL, "try again later"): relaunch.
EXIT_RESUMABLE = 75
# The exit code of a launch stopped by a full file system or disk quota (os.EX_IOERR): the run is
# intact up to its last durable write; free space (or move the run), then `autogrow resume RUN`.
EXIT_DISK_FULL = 74
_DURATION_RE = re.compile(r"(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?"
                          r"(?:(\d+(?:\.\d+)?)s)?")


def launched_by_torchrun() -> bool:
    """torchrun (or a launcher like it) describes a process group in the environment (here, not
    in engine.distributed, so that commands that only read a run need not import torch)."""
    return "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def parse_duration(text: str | float | int) -> float:
    """Seconds in ``3h50m``, ``90m``, ``1d2h``, ``45s``, ``HH:MM:SS``, ``MM:SS`` or a plain number."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        raw = str(text).strip().lower()
        try:
            if ":" in raw:
                parts = [float(p) for p in raw.split(":")]
                if len(parts) > 3:
                    raise ValueError(raw)
                seconds = sum(v * 60 ** i for i, v in enumerate(reversed(parts)))
            else:
                seconds = float(raw)
        except ValueError:
            match = _DURATION_RE.fullmatch(raw)
            if not raw or match is None or not any(match.groups()):
                raise ConfigError(f"time limit {text!r}: expected a duration like 3h50m, 90m, "
                                  "45s, 1d2h or HH:MM:SS") from None
            d, h, m, s = (float(g or 0) for g in match.groups())
            seconds = ((d * 24 + h) * 60 + m) * 60 + s
    if seconds < 0:
        raise ConfigError(f"time limit {text!r} is negative")
    return seconds


def parse_workers(value: str | int) -> int | str:
    """``"auto"`` or a count >= 0 of loader worker processes."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        count = int(value)
        if count < 0 or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(value)
    except (TypeError, ValueError):
        raise ConfigError(f"workers {value!r}: expected auto or a count >= 0") from None
    return count


def parse_signals(text: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``"TERM,USR1"`` (or ``SIGTERM``, any case) as ``("TERM", "USR1")``; ``""`` = none."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names: list[str] = []
    for item in items:
        name = str(item).strip().upper().removeprefix("SIG")
        if not name:
            continue
        if name not in STOP_SIGNALS:
            raise ConfigError(f"stop signal {item!r} is not one of {', '.join(STOP_SIGNALS)}")
        if name not in names:
            names.append(name)
    return tuple(names)


def launch_option(default: Any, help: str, *, metavar: str = "", converter: Any = None,
                  relaunch_only: bool = False) -> Any:
    """A LaunchOptions field and what it means, said once: ``help`` (with ``metavar``) is its
    line in ``--help``, where the CLI's flag is made from it; ``relaunch_only`` options exist
    only on the commands that can start a run (grow, train)."""
    return attrs.field(default=default, converter=converter,
                       metadata={"help": help, "metavar": metavar,
                                 "relaunch_only": relaunch_only})


@attrs.frozen(kw_only=True)
class LaunchOptions:
    """How this launch behaves, never stored in the run: TOML keys of a --config file and flags
    of the same names (``-`` for ``_``). The CLI, ``sweep`` (which passes them on to each cell's
    command) and the engine's :class:`~autogrow.engine.run.Controls` take this one type."""

    resume_if_exists: bool = launch_option(
        False, "if --run-dir holds a run with these very settings, continue it (or print its "
        "result if it finished); refuse if settings differ. Makes the same command safe to "
        "relaunch (job scripts, requeue, torchrun --max-restarts)", relaunch_only=True)
    stop_signals: tuple[str, ...] = launch_option(
        ("TERM", "INT", "USR1"), "signals that suspend the run at the next step boundary with a "
        f"snapshot, exit {EXIT_RESUMABLE}; comma-separated from {','.join(STOP_SIGNALS)}; '' = "
        "none (default TERM,INT,USR1)", metavar="SIGS", converter=parse_signals)
    time_limit: float = launch_option(
        0.0, "suspend the same way before this much wall time has passed, e.g. 3h50m, 90m, "
        "1:30:00; inside a SLURM job also the job's end (SLURM_JOB_END_TIME, else squeue), "
        "whichever is first (default none)", metavar="DURATION", converter=parse_duration)
    requeue: bool = launch_option(
        False, "after a suspend by USR1 (SLURM's --signal=USR1@N) or the time budget, `scontrol "
        "requeue` this job (an array task by its own ARRAYJOB_TASK id); after SIGTERM "
        "(scancel's signal) only while SLURM is preempting the job")
    log_every: float = launch_option(
        60.0, "seconds between progress lines when stderr is not a terminal (default 60; 0 = "
        "every step)", metavar="SECONDS")
    workers: int | str = launch_option(
        "auto", "loader processes that decode on-disk images (ImageNet folders); auto = the CPU "
        "cores available / processes on this machine, at most 8; 0 = decode in the training "
        "process. Batches are the same whatever the count (default auto)", metavar="N",
        converter=parse_workers)
    tensorboard: str = launch_option(
        "", "also write TensorBoard files as the run goes, to LOGDIR/<run directory name> "
        "(scalars per epoch, decisions, config as hparams; a resume rewrites them from the log, "
        "so no epoch appears twice); needs pip install 'autogrow[tensorboard]' (default none)",
        metavar="LOGDIR",
        converter=attrs.converters.pipe(attrs.converters.default_if_none(""), str))

    def __attrs_post_init__(self) -> None:
        if self.log_every < 0:
            raise ConfigError(f"log_every must be >= 0 seconds, got {self.log_every}")

    def as_flags(self, *, skip: Iterable[str] = ()) -> list[str]:
        """These options as the flags that give them, for a command that launches another
        (``sweep`` passes its launch on to each cell's process)."""
        argv: list[str] = []
        for field in attrs.fields(type(self)):
            if field.name in skip:
                continue
            flag, value = field.name.replace("_", "-"), getattr(self, field.name)
            if field.type == "bool":
                argv.append(f"--{flag}" if value else f"--no-{flag}")
            else:
                argv += [f"--{flag}", ",".join(value) if isinstance(value, tuple) else str(value)]
        return argv

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> LaunchOptions:
        values = dict(data)
        for key in ("resume_if_exists", "requeue"):
            if key in values and isinstance(values[key], str):
                values[key] = coerce_bool(key, values[key])
        if "log_every" in values:
            try:
                values["log_every"] = float(values["log_every"])
            except (TypeError, ValueError):
                raise ConfigError(f"log_every expects seconds, got {values['log_every']!r}") from None
        return cls(**values)


LAUNCH_KEYS = frozenset(f.name for f in attrs.fields(LaunchOptions))


def split_launch(data: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A TOML file's settings as (run settings, launch options)."""
    run = {k: v for k, v in data.items() if k not in LAUNCH_KEYS}
    launch = {k: v for k, v in data.items() if k in LAUNCH_KEYS}
    return run, launch


def load_toml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """The settings in a TOML file (top level, or under a ``[run]`` table); errors call the
    file ``what``."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} {p} does not exist")
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{what} {p} is not valid TOML: {err}") from None
    if set(data) == {"run"} and isinstance(data["run"], dict):
        data = data["run"]
    return data


def resolve_config(preset: str | None = None, config_file: str | Path | None = None,
                   overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """Preset < config file < overrides, validated and with automatic values made explicit."""
    merged: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; choose one of: {', '.join(sorted(PRESETS))}")
        merged.update(PRESETS[preset])
    if config_file is not None:
        merged.update(split_launch(load_toml(config_file))[0])
    if overrides:
        merged.update({k: v for k, v in overrides.items() if v is not None})
    return RunConfig.from_mapping(merged).resolved()


def resolve_launch(config_file: str | Path | None = None,
                   overrides: Mapping[str, Any] | None = None) -> LaunchOptions:
    """Launch options: defaults < the config file's launch keys < flags."""
    merged: dict[str, Any] = {}
    if config_file is not None:
        merged.update(split_launch(load_toml(config_file))[1])
    if overrides:
        merged.update({k: v for k, v in overrides.items() if v is not None})
    return LaunchOptions.from_mapping(merged)
