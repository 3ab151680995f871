"""``autogrow plot``: the paper's Figure 2 for one run, drawn from its event log.

Figure 2 of the paper ("p-AutoGrow on CIFAR10 (K = 3)") shows, against the epoch, the training
accuracy, the validation accuracy and its running maximum on the left axis, and the depth of the
net on the right axis, with the "Growing" and "Fine-tuning" stages marked. :func:`plot_data` turns
the live events into those series (pure, no matplotlib, so tests check the numbers); :func:`plot_run`
draws them with matplotlib's Agg canvas (no display, no change to matplotlib's global state).

The series are what the log observed, so :func:`plot_data` reads the events alone, not the growth
state of :func:`~autogrow.replay.projection.project`: it draws any log, also one the policy's fold
rejects (``verify`` says why), and any stream of events a test hands it.

X axis convention: epoch ``e`` is the interval ``(e-1, e]``. A block added after epoch ``e`` shows as
a step of the layers line at ``x = e``, and the fine-tune phase starts at ``x = GrowthFinished.epoch``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from autogrow.arch import DEFAULT_FAMILY, layer_count
from autogrow.errors import InputError, writing
from autogrow.events import (
    BlockAdded,
    EpochCompleted,
    Event,
    FinetuneStarted,
    GrowthFinished,
    RunFailed,
    RunFinished,
    RunStarted,
    StageStopped,
)

_POLICY_PREFIX = {"periodic": "p-", "convergent": "c-"}


def _events_only(events: Iterable[Any]) -> list[Event]:
    """Accept ``live_events`` output (``(seq, event)`` pairs) or bare events."""
    out: list[Event] = []
    for item in events:
        out.append(item[1] if isinstance(item, tuple) else item)
    return out


def plot_data(events: Iterable[tuple[int, Event]] | Iterable[Event]) -> dict[str, Any]:
    """The series of Figure 2 from a run's live events (``live_events(log.records)``).

    Keys:

    - ``family``, ``dataset``, ``policy``, ``interval``, ``seed_arch`` (from RunStarted.config),
      ``seed_layers`` (layers of the seed arch);
    - per completed epoch, in log order: ``epochs``, ``phases`` ("grow"/"finetune"), ``archs``,
      ``layers``, ``train_acc``, ``val_acc``, ``max_val_acc`` (running maximum of ``val_acc``),
      ``lr``;
    - ``growths``: one dict per BlockAdded — ``epoch`` (the last completed epoch before it, 0 if
      none), ``stage``, ``arch``, ``layers`` (after the growth);
    - ``stops``: one dict per StageStopped — ``epoch``, ``stage``, ``reason``, ``layers`` (then);
    - ``growth_end``: the x where fine-tuning starts (GrowthFinished.epoch; else the last grow
      epoch before the first fine-tune epoch or FinetuneStarted), None while still growing;
    - ``found_arch``, ``finished`` (``{"arch", "val_acc", "test_acc"}`` or None), ``failed``
      (the RunFailed reason or None).
    """
    config: Mapping[str, Any] = {}
    family = DEFAULT_FAMILY
    data: dict[str, Any] = {
        "family": family, "dataset": None, "policy": None, "interval": None,
        "seed_arch": None, "seed_layers": None,
        "epochs": [], "phases": [], "archs": [], "layers": [],
        "train_acc": [], "val_acc": [], "max_val_acc": [], "lr": [],
        "growths": [], "stops": [], "growth_end": None,
        "found_arch": None, "finished": None, "failed": None,
    }
    last_epoch = 0
    last_grow_epoch = 0
    arch: str | None = None
    best = float("-inf")

    def layers_of(a: str | None) -> int | None:
        return None if a is None else layer_count(family, a)

    for ev in _events_only(events):
        if isinstance(ev, RunStarted):
            config = ev.config
            family = str(config.get("family") or DEFAULT_FAMILY)
            arch = str(config["seed_arch"]) if config.get("seed_arch") else None
            data.update(family=family, dataset=config.get("dataset"), policy=config.get("policy"),
                        interval=config.get("interval"), seed_arch=arch, seed_layers=layers_of(arch))
        elif isinstance(ev, EpochCompleted):
            if ev.phase == "finetune" and data["growth_end"] is None:
                data["growth_end"] = last_grow_epoch
            if ev.phase != "finetune":
                last_grow_epoch = ev.epoch
            arch = ev.arch
            best = max(best, float(ev.val_acc))
            data["epochs"].append(int(ev.epoch))
            data["phases"].append(ev.phase)
            data["archs"].append(ev.arch)
            data["layers"].append(layer_count(family, ev.arch))
            data["train_acc"].append(float(ev.train_acc))
            data["val_acc"].append(float(ev.val_acc))
            data["max_val_acc"].append(best)
            data["lr"].append(float(ev.lr))
            last_epoch = int(ev.epoch)
        elif isinstance(ev, BlockAdded):
            arch = ev.arch
            data["growths"].append({"epoch": last_epoch, "stage": int(ev.stage), "arch": ev.arch,
                                    "layers": layer_count(family, ev.arch)})
        elif isinstance(ev, StageStopped):
            data["stops"].append({"epoch": last_epoch, "stage": int(ev.stage), "reason": ev.reason,
                                  "layers": layers_of(arch)})
        elif isinstance(ev, GrowthFinished):
            data["growth_end"] = int(ev.epoch)
            data["found_arch"] = ev.arch
        elif isinstance(ev, FinetuneStarted):
            if data["growth_end"] is None:
                data["growth_end"] = last_epoch
            data["found_arch"] = ev.arch
        elif isinstance(ev, RunFinished):
            data["found_arch"] = ev.arch
            data["finished"] = {"arch": ev.arch, "val_acc": float(ev.val_acc),
                                "test_acc": float(ev.test_acc)}
        elif isinstance(ev, RunFailed):
            data["failed"] = ev.reason
    return data


def _title(data: Mapping[str, Any], run_dir: Path) -> str:
    family = data.get("family") or "?"
    policy = data.get("policy")
    head = f"{_POLICY_PREFIX.get(str(policy), '')}AutoGrow" if policy else "AutoGrow"
    if data.get("interval"):
        head += f" (K = {data['interval']})"
    where = f"{family}-{data['seed_arch']}" if data.get("seed_arch") else family
    if data.get("dataset"):
        where += f" on {data['dataset']}"
    if data["finished"] is not None:
        fin = data["finished"]
        layers = layer_count(family, fin["arch"])
        tail = f"found {fin['arch']} ({layers} layers), test acc {fin['test_acc']:.2f}%"
    elif data["failed"] is not None:
        reason = str(data["failed"]).splitlines()[0] if data["failed"] else ""
        tail = f"failed: {reason[:60]}"
    elif data["found_arch"]:
        tail = f"found {data['found_arch']}, fine-tuning…"
    else:
        tail = f"growing, now {data['archs'][-1]}"
    return f"{head}: {where} — {tail}\nrun {run_dir.name}"


def plot_run(run_dir: Path, out: Path, *, dpi: int = 150) -> Path:
    """Draw Figure 2 for the run in ``run_dir`` into ``out`` (format from its extension, PNG when
    it has none); parent directories are created. Returns ``out``.

    Raises InputError when the run has no completed epoch yet.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    from autogrow.replay.projection import live_events
    from autogrow.storage import EventLog

    run_dir, out = Path(run_dir), Path(out)
    with EventLog.open(run_dir, readonly=True) as log:
        events = live_events(log.records)
    data = plot_data(events)
    if not data["epochs"]:
        raise InputError(f"run {run_dir} has no completed epoch yet; nothing to plot")

    epochs = data["epochs"]
    last = epochs[-1]
    first = epochs[0] - 1
    n = len(epochs)
    mark = n <= 40  # dots on the accuracy curves only while they stay readable

    fig = Figure(figsize=(10, 5.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax2 = ax.twinx()
    # accuracies in front of the layers line
    ax.set_zorder(ax2.get_zorder() + 1)
    ax.patch.set_visible(False)

    # phases
    growth_end = data["growth_end"]
    grow_right = last if growth_end is None else growth_end
    ax.axvspan(first, grow_right, color="tab:green", alpha=0.07, lw=0)
    ax.text((first + grow_right) / 2, 1.01, "Growing", transform=ax.get_xaxis_transform(),
            ha="center", va="bottom", fontsize=9, color="darkgreen")
    if growth_end is not None:
        ax.axvspan(growth_end, max(last, growth_end), color="tab:purple", alpha=0.08, lw=0)
        ax.axvline(growth_end, color="tab:purple", lw=1.2, ls="--")
        ax.text((growth_end + max(last, growth_end)) / 2, 1.01, "Fine-tuning",
                transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=9,
                color="indigo")

    # accuracies
    style: dict[str, Any] = {"marker": "o", "ms": 3, "clip_on": False} if mark else {}
    ax.plot(epochs, data["train_acc"], color="tab:blue", lw=1.4, label="train acc", **style)
    ax.plot(epochs, data["val_acc"], color="tab:orange", lw=1.0, alpha=0.85, label="val acc", **style)
    ax.plot(epochs, data["max_val_acc"], color="tab:red", lw=1.8, ls="--", label="max val acc",
            clip_on=False)
    acc = data["train_acc"] + data["val_acc"]
    lo, hi = min(acc), max(acc)
    ax.set_ylim(max(0.0, lo - 5.0), min(101.0, hi + 5.0))
    ax.set_xlim(first, last)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.25)

    # layers: epoch e is (e-1, e], so a step drawn "pre" changes at the epoch a block was added
    seed_layers = data["seed_layers"] if data["seed_layers"] is not None else data["layers"][0]
    xs = [first] + epochs
    ys = [seed_layers] + data["layers"]
    ax2.plot(xs, ys, drawstyle="steps-pre", color="0.25", lw=1.6, label="layers")
    growths = [g for g in data["growths"] if first <= g["epoch"] <= last]
    if growths:
        ax2.plot([g["epoch"] for g in growths], [g["layers"] for g in growths], ls="none",
                 marker="^", ms=4 if len(growths) <= 60 else 2.5, color="0.25")
    stops_at: dict[int, list[dict[str, Any]]] = {}
    for s in data["stops"]:
        if s["layers"] is not None:
            stops_at.setdefault(s["epoch"], []).append(s)
    span = max(last - first, 1)
    prev_x, drop, anchor_y = None, 0, 0
    for epoch, group in sorted(stops_at.items()):
        layers_now = group[0]["layers"]
        ax2.plot([epoch], [layers_now], ls="none", marker="X", ms=8, color="crimson",
                 markeredgecolor="white", markeredgewidth=0.6, zorder=5)
        # stops a few epochs apart would print their labels on top of each other: a cluster
        # shares the first stop's height and steps its labels down
        if prev_x is not None and epoch - prev_x < 0.08 * span:
            drop += 1
        else:
            drop, anchor_y = 0, layers_now
        prev_x = epoch
        label = "stop " + ",".join(f"s{s['stage']}" for s in group)
        # drawn on the front axes (over the accuracy curves), placed in layers coordinates; below
        # and right of the corner is under the staircase, usually free
        ax.annotate(label, (epoch, anchor_y), xycoords=ax2.transData,
                    xytext=(5, -6 - 13 * drop),
                    textcoords="offset points", ha="left", va="top", fontsize=8, color="crimson",
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.9},
                    annotation_clip=False)
    top = max(ys)
    ax2.set_ylim(0, top * 1.25 + 1)
    ax2.set_ylabel(f"layers (convs + head, {data['family']})")
    ax2.yaxis.set_major_locator(MaxNLocator(integer=True))

    handles = [
        Line2D([], [], color="tab:blue", lw=1.4, label="train acc"),
        Line2D([], [], color="tab:orange", lw=1.0, label="val acc"),
        Line2D([], [], color="tab:red", lw=1.8, ls="--", label="max val acc"),
        Line2D([], [], color="0.25", lw=1.6, marker="^", ms=4, label="layers (▲ growth)"),
        Line2D([], [], ls="none", marker="X", ms=8, color="crimson", label="stage stopped"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8,
               frameon=False)
    fig.suptitle(_title(data, run_dir), fontsize=10)

    with writing(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        # without an extension matplotlib would append ".png" to the name; keep the path asked for
        fig.savefig(out, dpi=dpi, format=None if out.suffix else "png")
    return out
