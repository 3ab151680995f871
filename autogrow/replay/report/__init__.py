"""``autogrow report``: one Markdown and one self-contained HTML report over runs and sweeps.

The report is a pure function of the runs' event logs: the same logs give the same bytes (no
timestamps, no output paths, stable order and number formats, SVG figures with fixed ids and no
date), so reports can be diffed and committed. ``summary`` folds each run's log, ``groups``
finds the differing settings and the seed groups, ``document`` says what the report holds,
``render`` writes it as Markdown and HTML, and ``figures`` draws the paper's figures 2-4.
Only finished runs enter the means and the accuracy figures; the others are listed with their
status. Importing this package loads neither torch nor matplotlib.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from autogrow.replay.report.document import FIGURES_DIR, build
from autogrow.replay.report.groups import (
    VOLATILE_KEYS,
    RunGroup,
    differing_keys,
    group_runs,
    shared_settings,
)
from autogrow.replay.report.render import render_html, render_markdown
from autogrow.replay.report.summary import (
    ReportError,
    RunSummary,
    collect_runs,
    run_dirs,
    summarize_run,
)
from autogrow.storage.log import LOG_NAME

__all__ = [
    "FIGURES_DIR", "HTML_NAME", "MARKDOWN_NAME", "VOLATILE_KEYS", "ReportError", "ReportFiles",
    "RunGroup", "RunSummary", "add_parser", "cmd_report", "collect_runs", "differing_keys",
    "group_runs", "render_html", "render_markdown", "run_dirs", "shared_settings",
    "summarize_run", "write_report",
]

MARKDOWN_NAME = "report.md"
HTML_NAME = "report.html"


@attrs.frozen
class ReportFiles:
    """What :func:`write_report` wrote (paths under the output directory) and counted."""

    markdown: Path
    html: Path
    figures: tuple[Path, ...]
    runs: tuple[RunSummary, ...]
    groups: tuple[RunGroup, ...]


def write_report(paths: Sequence[str | Path], out: Path) -> ReportFiles:
    """Write ``out/report.md``, ``out/report.html`` and ``out/figures/*.svg`` for the runs under
    ``paths``. Figures an earlier report left in ``out/figures`` and this one does not draw are
    removed, so the directory shows this report only. Raises :class:`ReportError` for a bad
    input path or output directory."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out {out} exists and is not a directory")
    if (out / LOG_NAME).exists():
        raise ReportError(f"--out {out} is a run directory; write the report somewhere else")
    paths = list(paths)
    runs = collect_runs(paths)
    out.mkdir(parents=True, exist_ok=True)
    blocks, figures, groups = build(paths, out, runs)

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
