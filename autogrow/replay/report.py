"""``autogrow report``: one Markdown and one self-contained HTML report over runs and sweeps.

The report is a pure function of the runs' event logs: the same logs give the same bytes (no
timestamps, no output paths, stable order and number formats, SVG figures with fixed ids and no
date). It holds

- one row per run: the settings that differ between the runs, kind (``grow`` or the fixed-arch
  ``train`` baseline), found arch, layers, params, FLOPs, val and test accuracy, growth and
  fine-tune epochs, and the wall time split as the paper's table 10 (growing vs fine-tuning);
- groups of runs whose settings differ only by ``seed``: mean ± sample std over the finished runs;
- figures: test accuracy against depth (and parameters) with the ``train`` runs as the manual
  search curve and AutoGrow's found nets marked (paper figure 3), accuracy against FLOPs (figure
  4), and each run's figure 2 drawn by :func:`autogrow.replay.plot.plot_run`.

Unfinished, suspended, failed and unreadable runs are listed with their status; only finished
runs enter the means and the accuracy figures.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from autogrow import __version__
from autogrow.arch import format_arch, parse_arch
from autogrow.events import (
    BlockAdded,
    CodecError,
    EpochCompleted,
    FinetuneStarted,
    GrowthFinished,
    RunFailed,
    RunFinished,
    RunStarted,
    RunSuspended,
)
from autogrow.replay.fold import live_events
from autogrow.replay.plot import DEFAULT_FAMILY, layer_count, plot_run
from autogrow.storage import EventLog, StorageError
from autogrow.storage.log import LOG_NAME

#: Config keys that say where or how a run was executed, not what was run: never a column,
#: never a reason to split a group.
VOLATILE_KEYS = frozenset({"run_dir", "data_root", "threads", "download", "snapshot_keep",
                           "snapshot_every_steps"})

FIGURES_DIR = "figures"
MARKDOWN_NAME = "report.md"
HTML_NAME = "report.html"

_MISSING = "–"  # a value a run does not have (also a single seed's std)
_SVG_SALT = "autogrow-report"
# matplotlib's SVG metadata (date, creator): off, so the bytes depend on the drawing only
_SVG_METADATA = {"Date": None, "Creator": None, "Format": None, "Type": None}
_COLORS = ("tab:blue", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
           "tab:cyan", "tab:gray")
_AUTOGROW_COLORS = ("tab:red", "tab:orange", "crimson", "darkgoldenrod", "magenta", "sienna")


class ReportError(ValueError):
    """A path given to ``report`` is neither a run nor a directory of runs, or the output
    directory cannot hold a report."""


# -- runs ------------------------------------------------------------------------------------


@attrs.frozen
class RunSummary:
    """What the report says about one run, folded from its live events.

    ``status`` is "finished", "failed", "suspended" (stopped on request, resumable),
    "unfinished" (still running, or killed) or "unreadable" (``detail`` says why). ``arch`` is
    the found arch of a finished run, else the arch the run has reached. The accuracies,
    ``params`` and ``flops`` come from ``run_finished`` (None before it). Epoch counts and
    seconds are those of the live ``epoch_completed`` events per phase.
    """

    path: Path
    label: str
    status: str
    detail: str = ""
    kind: str = "?"
    config: Mapping[str, Any] = attrs.field(factory=dict)
    run_id: str = ""
    parent_run_id: str | None = None
    arch: str | None = None
    layers: int | None = None
    params: int | None = None
    flops: int | None = None
    val_acc: float | None = None
    test_acc: float | None = None
    grow_epochs: int = 0
    finetune_epochs: int = 0
    grow_seconds: float = 0.0
    finetune_seconds: float = 0.0

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    @property
    def family(self) -> str:
        return str(self.config.get("family") or DEFAULT_FAMILY)

    @property
    def dataset(self) -> str:
        return str(self.config.get("dataset") or "?")

    @property
    def seed(self) -> Any:
        return self.config.get("seed")


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _is_fixed_arch(config: Mapping[str, Any]) -> bool:
    """``autogrow train`` (and any run whose cap is its seed) cannot grow."""
    seed, cap = config.get("seed_arch"), config.get("max_arch")
    if not seed or not cap:
        return False
    try:
        return parse_arch(str(seed)) == parse_arch(str(cap))
    except ValueError:
        return False


def summarize_run(run_dir: Path, label: str | None = None) -> RunSummary:
    """Fold one run's event log into a :class:`RunSummary` (a bad log gives status
    "unreadable", not an exception)."""
    run_dir = Path(run_dir)
    label = run_dir.name if label is None else label
    try:
        with EventLog.open(run_dir, readonly=True) as event_log:
            records = event_log.records
        events = [ev for _, ev in live_events(records)]
    except (StorageError, CodecError) as err:
        return RunSummary(path=run_dir, label=label, status="unreadable", detail=_one_line(err))

    config: dict[str, Any] = {}
    run_id, parent = "", None
    arch: str | None = None
    finished: RunFinished | None = None
    failed: str | None = None
    counts = {"grow": 0, "finetune": 0}
    seconds = {"grow": 0.0, "finetune": 0.0}
    grew = False
    for ev in events:
        if isinstance(ev, RunStarted):
            config = {str(k): v for k, v in ev.config.items()}
            run_id, parent = ev.run_id, ev.parent_run_id
            if ev.base_state is not None and ev.base_state.get("arch"):
                arch = format_arch(tuple(ev.base_state["arch"]))
            elif config.get("seed_arch"):
                arch = str(config["seed_arch"])
        elif isinstance(ev, EpochCompleted):
            phase = "finetune" if ev.phase == "finetune" else "grow"
            counts[phase] += 1
            seconds[phase] += float(ev.seconds)
            arch = ev.arch
        elif isinstance(ev, BlockAdded):
            grew = True
            arch = ev.arch
        elif isinstance(ev, (GrowthFinished, FinetuneStarted)):
            arch = ev.arch
        elif isinstance(ev, RunFinished):
            finished = ev
            arch = ev.arch
        elif isinstance(ev, RunFailed):
            failed = ev.reason

    if finished is not None:
        status, detail = "finished", ""
    elif failed is not None:
        status, detail = "failed", failed
    elif events and isinstance(events[-1], RunSuspended):
        last = events[-1]
        why = "time budget" if last.signal == "time" else f"SIG{last.signal}"
        at = f"epoch {last.epoch + 1} step {last.step}" if last.step else f"after epoch {last.epoch}"
        status, detail = "suspended", f"{why}, {at}; `autogrow resume` continues it"
    elif not events:
        status, detail = "unfinished", "the log holds no event yet"
    else:
        status, detail = "unfinished", "running, or stopped without a final event"

    family = str(config.get("family") or DEFAULT_FAMILY)
    try:
        layers = None if arch is None else layer_count(family, arch)
    except ValueError:
        layers = None
    return RunSummary(
        path=run_dir, label=label, status=status, detail=detail,
        kind="train" if _is_fixed_arch(config) and not grew else "grow",
        config=config, run_id=run_id, parent_run_id=parent, arch=arch, layers=layers,
        params=None if finished is None else int(finished.params),
        flops=None if finished is None else int(finished.flops),
        val_acc=None if finished is None else float(finished.val_acc),
        test_acc=None if finished is None else float(finished.test_acc),
        grow_epochs=counts["grow"], finetune_epochs=counts["finetune"],
        grow_seconds=seconds["grow"], finetune_seconds=seconds["finetune"],
    )


def run_dirs(paths: Iterable[str | Path]) -> list[tuple[Path, str]]:
    """The run directories ``paths`` name, in order, each as ``(dir, input)``: a path is a run
    (it holds ``events.jsonl``) or a sweep (its subdirectories that hold one, by name)."""
    found: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    for item in paths:
        path = Path(item)
        if (path / LOG_NAME).is_file():
            dirs = [path]
        elif path.is_dir():
            dirs = sorted((c for c in path.iterdir() if c.is_dir() and (c / LOG_NAME).is_file()),
                          key=lambda c: c.name)
            if not dirs:
                raise ReportError(f"{path} is neither a run directory (no {LOG_NAME}) nor a "
                                  f"directory of runs (no subdirectory holds one)")
        elif path.exists():
            raise ReportError(f"{path} is not a directory; expected a run directory or a "
                              "directory of runs")
        else:
            raise ReportError(f"{path} does not exist; expected a run directory or a directory "
                              "of runs")
        for d in dirs:
            key = d.resolve()
            if key not in seen:
                seen.add(key)
                found.append((d, str(item)))
    if not found:
        raise ReportError("no run to report on; name run directories or directories of runs")
    return found


def _unique_labels(dirs: Sequence[Path]) -> list[str]:
    """Each run's directory name, lengthened by its parents where two names clash."""
    dirs = [Path(os.path.abspath(d)) for d in dirs]  # "." has a name too
    depth = [1] * len(dirs)
    while True:
        labels = ["/".join(d.parts[-k:]) for d, k in zip(dirs, depth)]
        counts = Counter(labels)
        clash = [i for i, name in enumerate(labels)
                 if counts[name] > 1 and depth[i] < len(dirs[i].parts)]
        if not clash:
            return labels
        for i in clash:
            depth[i] += 1


def collect_runs(paths: Iterable[str | Path]) -> list[RunSummary]:
    """One :class:`RunSummary` per run under ``paths`` (runs or sweeps), in report order.

    Raises :class:`ReportError` (a ValueError) for a path that is neither a run nor a directory
    of runs."""
    dirs = [d for d, _ in run_dirs(paths)]
    return [summarize_run(d, label) for d, label in zip(dirs, _unique_labels(dirs))]


# -- settings and groups -----------------------------------------------------------------------


_ABSENT = object()  # a setting a run's config lacks


def _canon(value: Any) -> str:
    """A setting's value as text, the same for equal values whatever their Python type."""
    if value is _ABSENT:
        return _MISSING
    if isinstance(value, str):
        return value if value else '""'
    return json.dumps(value, sort_keys=True)


def _setting_keys(runs: Sequence[RunSummary]) -> list[str]:
    keys: set[str] = set()
    for run in runs:
        keys.update(run.config)
    return sorted(keys - VOLATILE_KEYS)


def differing_keys(runs: Sequence[RunSummary]) -> list[str]:
    """The settings whose value is not the same in every (readable) run, alphabetical with
    ``seed`` last; a key some runs lack counts as differing."""
    readable = [r for r in runs if r.status != "unreadable"]
    out = [k for k in _setting_keys(readable)
           if len({_canon(r.config.get(k, _ABSENT)) for r in readable}) > 1]
    return sorted(out, key=lambda k: (k == "seed", k))


def shared_settings(runs: Sequence[RunSummary]) -> list[tuple[str, str]]:
    """``(key, value)`` of the settings every readable run has with the same value."""
    readable = [r for r in runs if r.status != "unreadable"]
    differ = set(differing_keys(runs))
    return [(k, _canon(readable[0].config[k])) for k in _setting_keys(readable)
            if k not in differ]


def _stat(values: Sequence[float]) -> tuple[float, float | None] | None:
    """(mean, sample std) of ``values``; std None for one value; None for none."""
    if not values:
        return None
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


@attrs.frozen
class RunGroup:
    """Runs whose settings differ only by ``seed``. ``settings`` are the group's values of the
    report's differing keys (seed excluded)."""

    index: int
    kind: str
    settings: tuple[tuple[str, str], ...]
    runs: tuple[RunSummary, ...]

    @property
    def finished(self) -> tuple[RunSummary, ...]:
        return tuple(r for r in self.runs if r.finished)

    def stat(self, name: str) -> tuple[float, float | None] | None:
        """(mean, sample std) of ``name`` (test_acc, val_acc, layers, params, flops) over the
        finished runs; the std is None for a single run, the whole result None for none."""
        return _stat([float(getattr(r, name)) for r in self.finished
                      if getattr(r, name) is not None])

    @property
    def seeds(self) -> list[Any]:
        return sorted((r.seed for r in self.runs), key=_canon)

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.settings) or "all runs"


def group_runs(runs: Sequence[RunSummary]) -> list[RunGroup]:
    """Readable runs grouped by every setting but ``seed`` (and the volatile ones), in order of
    first appearance."""
    readable = [r for r in runs if r.status != "unreadable"]
    keys = [k for k in _setting_keys(readable) if k != "seed"]
    shown = [k for k in differing_keys(runs) if k != "seed"]
    groups: dict[tuple[str, ...], list[RunSummary]] = {}
    for run in readable:
        key = (run.kind,) + tuple(_canon(run.config.get(k, _ABSENT)) for k in keys)
        groups.setdefault(key, []).append(run)
    return [RunGroup(index=i + 1, kind=members[0].kind,
                     settings=tuple((k, _canon(members[0].config.get(k, _ABSENT))) for k in shown),
                     runs=tuple(members))
            for i, members in enumerate(groups.values())]


# -- number formats ----------------------------------------------------------------------------


def _fmt(value: float | None, spec: str) -> str:
    return _MISSING if value is None else format(value, spec)


def _pm(stat: tuple[float, float | None] | None, spec: str) -> str:
    """"mean ± std" with a fixed format; "mean ± –" for one run, "–" for none."""
    if stat is None:
        return _MISSING
    mean, std = stat
    return f"{format(mean, spec)} ± {_MISSING if std is None else format(std, spec)}"


def _mflops(value: float | None) -> float | None:
    return None if value is None else value / 1e6


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


# -- document model (rendered to Markdown and to HTML) -----------------------------------------


@attrs.frozen
class _Heading:
    level: int
    text: str


@attrs.frozen
class _Para:
    text: str


@attrs.frozen
class _Bullets:
    items: tuple[str, ...]


@attrs.frozen
class _Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    numeric: tuple[bool, ...]  # right-aligned columns

    def __attrs_post_init__(self) -> None:
        widths = {len(self.headers), len(self.numeric), *(len(row) for row in self.rows)}
        if len(widths) != 1:
            raise AssertionError(f"table columns disagree: {sorted(widths)}")


@attrs.frozen
class _Figure:
    file: str  # relative to the report
    caption: str


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: Sequence[Any]) -> str:
    out: list[str] = []
    for block in blocks:
        if isinstance(block, _Heading):
            out.append("#" * block.level + " " + block.text)
        elif isinstance(block, _Para):
            out.append(block.text)
        elif isinstance(block, _Bullets):
            out.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, _Table):
            lines = ["| " + " | ".join(_md_cell(h) for h in block.headers) + " |",
                     "|" + "|".join("---:" if n else "---" for n in block.numeric) + "|"]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            out.append("\n".join(lines))
        elif isinstance(block, _Figure):
            out.append(f"![{block.caption}]({block.file})\n\n*{block.caption}*")
    return "\n\n".join(out) + "\n"


def _html_inline(text: str) -> str:
    """Escape, then `code` spans and *emphasis* as the Markdown shows them."""
    escaped = html.escape(text, quote=False)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*([^*\s][^*]*)\*", r"<em>\1</em>", escaped)


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.45; }
h1, h2, h3, h4 { line-height: 1.2; }
code { background: #f3f3f3; padding: 0 0.2em; border-radius: 3px; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.88em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1.5em 0; }
figure svg { max-width: 100%; height: auto; }
figcaption { font-size: 0.9em; color: #555; }
""".strip()


def _inline_svg(svg: str, prefix: str) -> str:
    """An SVG file's text made fit to inline in HTML: no XML prolog, doctype or metadata, no
    namespace URIs (HTML's parser gives inline SVG its namespaces), and its ids prefixed so the
    figures of one page do not share ids."""
    start = svg.find("<svg")
    svg = svg[start:] if start >= 0 else svg
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.S)
    svg = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", svg)
    svg = re.sub(r'(\sid="|href="#|url\(#)', lambda m: m.group(1) + prefix, svg)
    return svg.strip()


def render_html(blocks: Sequence[Any], figures: Mapping[str, str], title: str) -> str:
    """The report as one HTML page; ``figures`` maps a figure's file to its SVG text."""
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f"<title>{html.escape(title)}</title>", f"<style>\n{_CSS}\n</style>", "</head>",
           "<body>"]
    n_figures = 0
    for block in blocks:
        if isinstance(block, _Heading):
            out.append(f"<h{block.level}>{_html_inline(block.text)}</h{block.level}>")
        elif isinstance(block, _Para):
            out.append(f"<p>{_html_inline(block.text)}</p>")
        elif isinstance(block, _Bullets):
            out.append("<ul>\n" + "\n".join(f"<li>{_html_inline(i)}</li>" for i in block.items)
                       + "\n</ul>")
        elif isinstance(block, _Table):
            head = "".join(f"<th>{_html_inline(h)}</th>" for h in block.headers)
            rows = ["<tr>" + "".join(
                f'<td class="num">{_html_inline(c)}</td>' if n else f"<td>{_html_inline(c)}</td>"
                for c, n in zip(row, block.numeric)) + "</tr>" for row in block.rows]
            out.append("<table>\n<thead><tr>" + head + "</tr></thead>\n<tbody>\n"
                       + "\n".join(rows) + "\n</tbody>\n</table>")
        elif isinstance(block, _Figure):
            n_figures += 1
            out.append("<figure>\n" + _inline_svg(figures[block.file], f"f{n_figures}-")
                       + "\n<figcaption>"
                       + _html_inline(block.caption) + "</figcaption>\n</figure>")
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


# -- figures -----------------------------------------------------------------------------------


def _save_svg(fig: Any, path: Path, salt: str) -> None:
    """An SVG whose bytes depend on the drawing only: ids hashed with a fixed salt (set for the
    save and restored), no date or creator metadata."""
    import matplotlib

    path.parent.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context({"svg.hashsalt": f"{_SVG_SALT}:{salt}"}):
        fig.savefig(path, format="svg", metadata=dict(_SVG_METADATA))


def _figure2(run: RunSummary, path: Path) -> None:
    """The run's figure 2, drawn by plot.py; its SVG metadata (a date) is removed after."""
    import matplotlib

    with matplotlib.rc_context({"svg.hashsalt": f"{_SVG_SALT}:{path.name}"}):
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


def _unit(panel: Sequence[RunGroup], name: str, what: str) -> tuple[float, str]:
    """A divisor that keeps the axis numbers short, and the axis label naming it."""
    values = [float(getattr(r, name)) for g in panel for r in g.finished
              if getattr(r, name) is not None]
    top = max(values, default=0.0)
    for scale, word in ((1e9, "billions"), (1e6, "millions"), (1e3, "thousands")):
        if top >= scale:
            return scale, f"{what} ({word})"
    return 1.0, what


def _figure_depth(panel: Sequence[RunGroup], title: str, path: Path) -> None:
    fig, axes = _new_figure(2)
    params_scale, params_label = _unit(panel, "params", "parameters")
    _draw_accuracy(fig, axes, panel, [("layers", 1.0, "layers (convs + head)"),
                                      ("params", params_scale, params_label)])
    fig.suptitle(title, fontsize=10)
    _save_svg(fig, path, path.name)


def _figure_flops(panel: Sequence[RunGroup], title: str, path: Path) -> None:
    fig, axes = _new_figure(1)
    scale, label = _unit(panel, "flops", "FLOPs per image")
    _draw_accuracy(fig, axes, panel, [("flops", scale, label)])
    values = [s[0] for g in panel for s in [g.stat("flops")] if s is not None]
    if values and min(values) > 0 and max(values) / min(values) > 30:
        axes[0].set_xscale("log")
    fig.suptitle(title, fontsize=10)
    _save_svg(fig, path, path.name)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "run"


# -- the report --------------------------------------------------------------------------------


@attrs.frozen
class ReportFiles:
    """What :func:`write_report` wrote (paths under the output directory) and counted."""

    markdown: Path
    html: Path
    figures: tuple[Path, ...]
    runs: tuple[RunSummary, ...]
    groups: tuple[RunGroup, ...]


def _run_cells(run: RunSummary, keys: Sequence[str]) -> tuple[str, ...]:
    arch = _MISSING if run.arch is None else run.arch + ("" if run.finished else " (so far)")
    return (
        run.label, run.status, run.kind,
        *(_canon(run.config.get(k, _ABSENT)) for k in keys),
        arch, _fmt(run.layers, "d"), _fmt(run.params, ","), _fmt(_mflops(run.flops), ",.2f"),
        _fmt(run.val_acc, ".2f"), _fmt(run.test_acc, ".2f"),
        str(run.grow_epochs), str(run.finetune_epochs),
        _duration(run.grow_seconds), _duration(run.finetune_seconds),
    )


def _group_cells(group: RunGroup) -> tuple[str, ...]:
    archs = Counter(r.arch for r in group.finished if r.arch)
    found = ", ".join(f"{a} ×{n}" if n > 1 else a for a, n in sorted(archs.items()))
    mflops = group.stat("flops")
    return (
        str(group.index), *(v for _, v in group.settings), group.kind,
        f"{len(group.finished)} of {len(group.runs)}",
        ", ".join(_canon(s) for s in group.seeds), found or _MISSING,
        _pm(group.stat("layers"), ".1f"), _pm(group.stat("params"), ",.0f"),
        _pm(None if mflops is None else (mflops[0] / 1e6, None if mflops[1] is None
                                         else mflops[1] / 1e6), ",.2f"),
        _pm(group.stat("val_acc"), ".2f"), _pm(group.stat("test_acc"), ".2f"),
    )


def _input_items(paths: Sequence[str | Path]) -> list[str]:
    """Each input as given, and what it is."""
    items = []
    pairs = run_dirs(paths)
    for item in dict.fromkeys(str(p) for p in paths):
        n = sum(1 for _, source in pairs if source == item)
        kind = "a run" if (Path(item) / LOG_NAME).is_file() else f"a directory of {n} run(s)"
        items.append(f"`{item}` ({kind})")
    return items


def _build(paths: Sequence[str | Path], out: Path,
           runs: Sequence[RunSummary]) -> tuple[list[Any], list[Path], list[RunGroup]]:
    """The report's blocks; draws the figures into ``out / figures``."""
    keys = differing_keys(runs)
    groups = group_runs(runs)
    statuses = Counter(r.status for r in runs)
    blocks: list[Any] = [
        _Heading(1, "AutoGrow report"),
        _Para(f"Generated by `autogrow report` (autogrow {__version__}) from the event logs of "
              "these inputs; the report is a pure function of the logs, so the same logs give "
              "the same bytes."),
        _Bullets(tuple(_input_items(paths))),
        _Para(f"{len(runs)} run(s): " + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
              + f"; {len(groups)} group(s) of runs that differ only by `seed`."),
    ]

    # runs
    blocks.append(_Heading(2, "Runs"))
    blocks.append(_Para(
        ("Setting columns (" + ", ".join(f"`{k}`" for k in keys) + ") are the settings that "
         "differ between the runs of this report" if keys else
         "All runs have the same settings")
        + "; the settings they share are listed at the end. *kind* `train` is a fixed-arch "
          "baseline (`autogrow train`), `grow` an AutoGrow run. *arch* is the found arch of a "
          "finished run, else the arch reached so far. Accuracies (%), params and FLOPs (of "
          "one forward pass on one image, a multiply-add counting 2) are those the run's "
          "`run_finished` event records."))
    measures = ("layers", "params", "MFLOPs", "val acc", "test acc", "growth epochs",
                "fine-tune epochs", "growth time", "fine-tune time")
    headers = ("run", "status", "kind", *keys, "arch", *measures)
    numeric = (False,) * (len(headers) - len(measures)) + (True,) * len(measures)
    blocks.append(_Table(headers, tuple(_run_cells(r, keys) for r in runs), numeric))
    blocks.append(_Para(
        "Time is split as the paper's table 10 (growing vs fine-tuning): the sum of the "
        "`seconds` of each phase's epochs in the log, i.e. the training and validation time of "
        "the epochs. It leaves out the work between epochs (AdamInit and other growth steps, "
        "snapshot writes), the final test evaluation, data loading at start-up and epochs a "
        "resume superseded."))
    notes = []
    for run in runs:
        if run.status != "finished":
            notes.append(f"`{run.label}` is {run.status}" + (f": {run.detail}" if run.detail else ""))
        if run.parent_run_id:
            notes.append(f"`{run.label}` is a fork of run `{run.parent_run_id}`: its epochs and "
                         "times count its own log only")
    if notes:
        blocks.append(_Bullets(tuple(notes)))

    # groups
    blocks.append(_Heading(2, "Groups: mean ± std over seeds"))
    blocks.append(_Para(
        "Runs whose settings differ only by `seed` form a group. Mean ± sample standard "
        f"deviation over the group's finished runs ({_MISSING} for a single run); *runs* counts "
        "the finished ones."))
    g_measures = ("layers", "params", "MFLOPs", "val acc", "test acc")
    g_headers = ("group", *(k for k in keys if k != "seed"), "kind", "runs", "seeds",
                 "found archs", *g_measures)
    g_numeric = (True,) + (False,) * (len(g_headers) - len(g_measures) - 1) \
        + (True,) * len(g_measures)
    blocks.append(_Table(g_headers, tuple(_group_cells(g) for g in groups), g_numeric))

    # figures
    written: list[Path] = []
    blocks.append(_Heading(2, "Figures"))
    panels: dict[tuple[str, str], list[RunGroup]] = {}
    for g in groups:
        panels.setdefault((g.runs[0].family, g.runs[0].dataset), []).append(g)

    blocks.append(_Heading(3, "Test accuracy against depth (paper figure 3)"))
    blocks.append(_Para(
        "Per network family and data set: the `train` baselines (trained from scratch at a "
        "fixed arch) as the manual-search curve, mean over seeds with ± std bars, and "
        "AutoGrow's found nets as stars (mean ± std of depth and accuracy over seeds), "
        "against layers and, as the paper's figure 3, against parameters."))
    for (family, dataset), panel in panels.items():
        has_train = any(g.kind == "train" and g.finished for g in panel)
        has_grow = any(g.kind == "grow" and g.finished for g in panel)
        if not has_train:
            blocks.append(_Para(f"No figure for {family} on {dataset}: no finished `train` "
                                "baseline (fixed-arch runs make the manual-search curve)."))
            continue
        name = f"{FIGURES_DIR}/fig3-depth-{_safe(family)}-{_safe(dataset)}.svg"
        title = f"{family} on {dataset}: test accuracy against depth"
        _figure_depth(panel, title, out / name)
        written.append(out / name)
        caption = title + ("" if has_grow else " (no finished AutoGrow run to mark)")
        blocks.append(_Figure(name, caption))

    blocks.append(_Heading(3, "Test accuracy against FLOPs (paper figure 4)"))
    drawn = False
    for (family, dataset), panel in panels.items():
        if not any(g.finished for g in panel):
            continue
        name = f"{FIGURES_DIR}/fig4-flops-{_safe(family)}-{_safe(dataset)}.svg"
        title = f"{family} on {dataset}: test accuracy against FLOPs"
        _figure_flops(panel, title, out / name)
        written.append(out / name)
        blocks.append(_Figure(name, title))
        drawn = True
    if not drawn:
        blocks.append(_Para("No figure: no run has finished."))

    blocks.append(_Heading(3, "Each run's growth (paper figure 2)"))
    no_epochs = []
    used: set[str] = set()
    for run in runs:
        if run.grow_epochs + run.finetune_epochs == 0:
            no_epochs.append(f"`{run.label}`")
            continue
        stem, n = f"fig2-{_safe(run.label)}", 1
        while stem + ("" if n == 1 else f"-{n}") in used:
            n += 1
        stem += "" if n == 1 else f"-{n}"
        used.add(stem)
        name = f"{FIGURES_DIR}/{stem}.svg"
        _figure2(run, out / name)
        written.append(out / name)
        blocks.append(_Figure(name, f"{run.label} ({run.kind}, {run.status}): accuracy and "
                                    "layers by epoch"))
    if no_epochs:
        blocks.append(_Para("No figure 2 for " + ", ".join(no_epochs)
                            + ": no completed epoch in the log."))

    # shared settings
    shared = shared_settings(runs) if any(r.status != "unreadable" for r in runs) else []
    if shared:
        blocks.append(_Heading(2, "Settings shared by all runs"))
        blocks.append(_Table(("setting", "value"), tuple(shared), (False, False)))
    return blocks, written, groups


def write_report(paths: Sequence[str | Path], out: Path) -> ReportFiles:
    """Write ``out/report.md``, ``out/report.html`` and ``out/figures/*.svg`` for the runs under
    ``paths``. Figures an earlier report left in ``out/figures`` and this one does not draw are
    removed. Raises :class:`ReportError` for a bad input path or output directory."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out {out} exists and is not a directory")
    if (out / LOG_NAME).exists():
        raise ReportError(f"--out {out} is a run directory; write the report somewhere else")
    paths = list(paths)
    runs = collect_runs(paths)
    out.mkdir(parents=True, exist_ok=True)
    blocks, figures, groups = _build(paths, out, runs)

    figs_dir = out / FIGURES_DIR
    if figs_dir.is_dir():
        keep = {p.name for p in figures}
        for stale in sorted(figs_dir.glob("fig*.svg")):
            if stale.name not in keep:
                stale.unlink()

    md_path, html_path = out / MARKDOWN_NAME, out / HTML_NAME
    md_path.write_text(render_markdown(blocks), encoding="utf-8", newline="\n")
    svgs = {f"{FIGURES_DIR}/{p.name}": p.read_text(encoding="utf-8") for p in figures}
    html_path.write_text(render_html(blocks, svgs, "AutoGrow report"), encoding="utf-8",
                         newline="\n")
    return ReportFiles(markdown=md_path, html=html_path, figures=tuple(figures), runs=tuple(runs),
                       groups=tuple(groups))


# -- command line ------------------------------------------------------------------------------


def add_parser(sub: Any) -> None:
    """Register ``autogrow report`` on an argparse subparsers object."""
    p = sub.add_parser(
        "report", help="a Markdown and HTML report comparing runs and sweeps",
        description="One row per run (settings that differ, found arch, layers, params, FLOPs, "
                    "accuracies, epochs and time per phase), mean ± std over seeds, and the "
                    "paper's figures 2-4, from the runs' event logs alone: the same logs give "
                    "the same report bytes.")
    p.add_argument("paths", nargs="+", type=Path, metavar="RUN_OR_SWEEP",
                   help="a run directory, or a directory whose subdirectories are runs")
    p.add_argument("--out", required=True, type=Path,
                   help="directory for report.md, report.html and figures/")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    files = write_report(args.paths, args.out)
    unfinished = sum(1 for r in files.runs if not r.finished)
    print(f"wrote {files.markdown} and {files.html} ({len(files.figures)} figures in "
          f"{files.markdown.parent / FIGURES_DIR})")
    print(f"{len(files.runs)} runs ({unfinished} not finished), {len(files.groups)} groups")
    return 0
