"""The report's figures as byte-stable SVG: accuracy against depth and parameters (paper figure
3), against FLOPs (figure 4), and each run's figure 2. matplotlib is imported only when drawing,
so ``import autogrow.replay.report`` stays light."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from autogrow.replay.plot import plot_run
from autogrow.replay.report.groups import RunGroup
from autogrow.replay.report.summary import RunSummary

_SVG_SALT = "autogrow-report"
# matplotlib's SVG metadata (date, creator): off, so the bytes depend on the drawing only
_SVG_METADATA = {"Date": None, "Creator": None, "Format": None, "Type": None}
_COLORS = ("tab:blue", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
           "tab:cyan", "tab:gray")
_AUTOGROW_COLORS = ("tab:red", "tab:orange", "crimson", "darkgoldenrod", "magenta", "sienna")


@contextmanager
def _fixed_ids(path: Path) -> Iterator[None]:
    """SVG ids hashed with a salt fixed per file name (set for the save, then restored)."""
    import matplotlib

    # text as <text> (not glyph paths): a tenth of the bytes, and searchable
    with matplotlib.rc_context({"svg.hashsalt": f"{_SVG_SALT}:{path.name}", "svg.fonttype": "none"}):
        yield


def _save_svg(fig: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with _fixed_ids(path):
        fig.savefig(path, format="svg", metadata=dict(_SVG_METADATA))


def figure2(run: RunSummary, path: Path) -> None:
    """The run's figure 2, drawn by plot.py; its SVG metadata (a date) is removed after."""
    with _fixed_ids(path):
        plot_run(Path(os.path.abspath(run.path)), path)
    text = path.read_text(encoding="utf-8")
    path.write_text(re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S),
                    encoding="utf-8", newline="\n")


def _new_figure(panels: int) -> tuple[Any, list[Any]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.2 * panels, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, panels, i + 1) for i in range(panels)]
    return fig, axes


def _label_of(settings: Sequence[tuple[str, str]], keys: Sequence[str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings if k in keys)


def _varying(groups: Sequence[RunGroup], skip: Sequence[str] = ()) -> list[str]:
    """The group settings that differ among ``groups``, but those in ``skip``."""
    keys = [k for k, _ in groups[0].settings] if groups else []
    return [k for k in keys if k not in skip and len({dict(g.settings)[k] for g in groups}) > 1]


def _curves(groups: Sequence[RunGroup]) -> list[tuple[str, list[RunGroup]]]:
    """Baseline groups in curves: groups that differ only by arch share a curve."""
    varying = _varying(groups, skip=("seed_arch", "max_arch"))
    curves: dict[str, list[RunGroup]] = {}
    for g in groups:
        curves.setdefault(_label_of(g.settings, varying), []).append(g)
    return list(curves.items())


def _short(label: str, fallback: str) -> str:
    """A legend label: the settings when they are short, else the group numbers."""
    return label if label and len(label) <= 40 else fallback


def _draw_accuracy(fig: Any, axes: Sequence[Any], panel: Sequence[RunGroup],
                   xs: Sequence[tuple[str, float, str]]) -> None:
    """Baseline curves and AutoGrow points on each axes, one legend below; ``xs`` gives per
    axes the group statistic on x, its divisor and the axis label."""
    train = [g for g in panel if g.kind == "train" and g.finished]
    grow = [g for g in panel if g.kind == "grow" and g.finished]
    grow_varying = _varying(grow)
    for ax, (name, scale, xlabel) in zip(axes, xs):
        for c, (label, members) in enumerate(_curves(train)):
            pts = []
            for g in members:
                x, y = g.stat(name), g.stat("test_acc")
                if x is not None and y is not None:
                    pts.append((x[0] / scale, y[0], y[1] or 0.0, g.finished[0].arch or ""))
            pts.sort()
            color = _COLORS[c % len(_COLORS)]
            groups = ", ".join(str(g.index) for g in members)
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts],
                        color=color, marker="o", ms=4, lw=1.4, capsize=3,
                        label="train from scratch: "
                              + _short(label, f"group{'s' if len(members) > 1 else ''} {groups}"))
            for x, y, _, arch in pts:
                ax.annotate(arch, (x, y), xytext=(3, -10), textcoords="offset points",
                            fontsize=7, color=color)
        for c, g in enumerate(grow):
            x, y = g.stat(name), g.stat("test_acc")
            if x is None or y is None:
                continue
            color = _AUTOGROW_COLORS[c % len(_AUTOGROW_COLORS)]
            if len(g.finished) > 1:  # each seed's net, faint, behind the mean
                seeds = [r for r in g.finished if getattr(r, name) is not None]
                ax.plot([float(getattr(r, name)) / scale for r in seeds],
                        [r.test_acc for r in seeds], ls="none", marker="*", ms=7,
                        color=color, alpha=0.35)
            label = _short(_label_of(g.settings, grow_varying), f"group {g.index}")
            ax.errorbar([x[0] / scale], [y[0]],
                        xerr=None if x[1] is None else [x[1] / scale],
                        yerr=None if y[1] is None else [y[1]],
                        color=color, marker="*", ms=13, ls="none", capsize=3, zorder=5,
                        label=f"AutoGrow: {label} (n={len(g.finished)})")
            archs = sorted({r.arch or "" for r in g.finished})
            ax.annotate(archs[0] if len(archs) == 1 else f"{len(archs)} archs",
                        (x[0] / scale, y[0]), xytext=(6, 4), textcoords="offset points",
                        fontsize=8, color=color)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(True, alpha=0.25)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=8,
                   frameon=False)


def _axis(panel: Sequence[RunGroup], name: str, what: str) -> tuple[str, float, str]:
    """``name`` on an axis: the statistic, a divisor that keeps the axis numbers short, and the
    axis label naming it."""
    values = [float(getattr(r, name)) for g in panel for r in g.finished
              if getattr(r, name) is not None]
    top = max(values, default=0.0)
    for scale, word in ((1e9, "billions"), (1e6, "millions"), (1e3, "thousands")):
        if top >= scale:
            return name, scale, f"{what} ({word})"
    return name, 1.0, what


def _accuracy_figure(panel: Sequence[RunGroup], title: str, path: Path,
                     xs: Sequence[tuple[str, float, str]], log_x: bool = False) -> None:
    fig, axes = _new_figure(len(xs))
    _draw_accuracy(fig, axes, panel, xs)
    if log_x:
        axes[0].set_xscale("log")
    fig.suptitle(title, fontsize=10)
    _save_svg(fig, path)


def figure_depth(panel: Sequence[RunGroup], title: str, path: Path) -> None:
    """Figure 3: test accuracy against layers and against parameters."""
    _accuracy_figure(panel, title, path, [("layers", 1.0, "layers (convs + head)"),
                                          _axis(panel, "params", "parameters")])


def figure_flops(panel: Sequence[RunGroup], title: str, path: Path) -> None:
    """Figure 4: test accuracy against FLOPs, on a log axis when they span a wide range."""
    values = [s[0] for g in panel for s in [g.stat("flops")] if s is not None]
    _accuracy_figure(panel, title, path, [_axis(panel, "flops", "FLOPs per image")],
                     log_x=bool(values) and min(values) > 0 and max(values) / min(values) > 30)
