"""``autogrow report``: rows, differing settings and seed groups match the logs; the report's
bytes are a function of the logs only; figures parse; the HTML is self-contained; unfinished
runs are listed; bad paths fail with one clear error."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from autogrow.arch import layer_count
from autogrow.events import EpochCompleted, RunFinished, RunStarted
from autogrow.replay import live_events
from autogrow.replay.report import (
    VOLATILE_KEYS,
    ReportError,
    add_parser,
    cmd_report,
    collect_runs,
    differing_keys,
    group_runs,
    write_report,
)
from autogrow.storage import EventLog
from tests.conftest import REPO, autogrow_cli

EXIT_RESUMABLE = 75


# the smoke preset made cheaper still: a growth cap of 2 epochs, small evaluation sets and one
# thread, so two runs share the two cores
SMALL = ("--preset", "smoke", "--max-growth-epochs", "2", "--max-val", "200", "--max-test", "200",
         "--threads", "1")


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory) -> Path:
    """A directory of runs as a sweep leaves it (a grow seed, two fixed-arch `autogrow train`
    baselines, a grow run suspended by its time budget before its first epoch) and, beside it,
    one more grow seed as a lone run directory. Made through the command line, two at a time."""
    root = tmp_path_factory.mktemp("report")
    sweep = root / "sweep"
    commands = [
        ("grow", *SMALL, "--seed", "1", "--run-dir", str(sweep / "grow-s1")),
        ("grow", *SMALL, "--seed", "0", "--run-dir", str(root / "lone" / "grow-s0")),
        *(("train", *SMALL, "--arch", arch, "--epochs", "1", "--run-dir",
           str(sweep / f"train-{arch}")) for arch in ("1-1-1", "2-2-2")),
        ("grow", *SMALL, "--seed", "2", "--time-limit", "1s", "--run-dir", str(sweep / "grow-s2")),
    ]
    with ThreadPoolExecutor(max_workers=2) as pool:
        procs = list(pool.map(lambda args: autogrow_cli(*args), commands))
    for args, proc in zip(commands, procs):
        expected = EXIT_RESUMABLE if "--time-limit" in args else 0
        assert proc.returncode == expected, f"autogrow {' '.join(args)}:\n{proc.stderr}"
    return root


@pytest.fixture(scope="module")
def sweep(runs_root) -> Path:
    return runs_root / "sweep"


@pytest.fixture(scope="module")
def lone_run(runs_root) -> Path:
    return runs_root / "lone" / "grow-s0"


@pytest.fixture(scope="module")
def inputs(sweep, lone_run) -> list[Path]:
    return [sweep, lone_run]


@pytest.fixture(scope="module")
def report(inputs, tmp_path_factory):
    return write_report(inputs, tmp_path_factory.mktemp("out") / "report")


def events_of(run_dir: Path) -> list:
    with EventLog.open(run_dir, readonly=True) as log:
        return [ev for _, ev in live_events(log.records)]


def test_one_row_per_run_with_the_values_of_its_log(inputs, sweep, lone_run):
    runs = collect_runs(inputs)
    assert [r.label for r in runs] == ["grow-s1", "grow-s2", "train-1-1-1", "train-2-2-2",
                                     "grow-s0"]
    assert [r.path for r in runs] == [sweep / "grow-s1", sweep / "grow-s2",
                                      sweep / "train-1-1-1", sweep / "train-2-2-2", lone_run]
    assert [r.kind for r in runs] == ["grow", "grow", "train", "train", "grow"]
    assert [r.status for r in runs] == ["finished", "suspended", "finished", "finished",
                                        "finished"]
    for run in runs:
        events = events_of(run.path)
        epochs = [ev for ev in events if isinstance(ev, EpochCompleted)]
        assert run.grow_epochs == sum(ev.phase == "grow" for ev in epochs)
        assert run.finetune_epochs == sum(ev.phase == "finetune" for ev in epochs)
        assert run.grow_seconds == pytest.approx(sum(ev.seconds for ev in epochs
                                                     if ev.phase == "grow"))
        assert run.finetune_seconds == pytest.approx(sum(ev.seconds for ev in epochs
                                                         if ev.phase == "finetune"))
        done = [ev for ev in events if isinstance(ev, RunFinished)]
        if not run.finished:
            assert not done and run.test_acc is None and run.params is None
            continue
        (fin,) = done
        assert (run.arch, run.test_acc, run.val_acc, run.params, run.flops) == (
            fin.arch, fin.test_acc, fin.val_acc, fin.params, fin.flops)
        assert run.layers == layer_count("basic3resnet", fin.arch)
    train = [r for r in runs if r.kind == "train"]
    assert [r.arch for r in train] == ["1-1-1", "2-2-2"]
    assert all(r.grow_epochs == 0 and r.finetune_epochs == 1 for r in train)
    grow_s2 = runs[1]
    assert grow_s2.grow_epochs == grow_s2.finetune_epochs == 0
    assert "time budget" in grow_s2.detail


def test_setting_columns_are_exactly_the_keys_that_differ(inputs, report):
    runs = collect_runs(inputs)
    configs = [dict(next(ev for ev in events_of(r.path) if isinstance(ev, RunStarted)).config)
               for r in runs]
    keys = set().union(*configs) - VOLATILE_KEYS
    expected = {k for k in keys if len({repr(c.get(k)) for c in configs}) > 1}
    assert set(differing_keys(runs)) == expected == {"max_arch", "seed", "seed_arch"}
    assert differing_keys(runs)[-1] == "seed"
    header = next(line for line in report.markdown.read_text().splitlines()
                  if line.startswith("| run |"))
    assert header.split(" | ")[3:6] == ["max_arch", "seed_arch", "seed"]


def test_groups_are_runs_that_differ_by_seed_only_with_mean_and_std(inputs, report):
    runs = collect_runs(inputs)
    groups = group_runs(runs)
    assert [[r.label for r in g.runs] for g in groups] == [
        ["grow-s1", "grow-s2", "grow-s0"], ["train-1-1-1"], ["train-2-2-2"]]
    grow = groups[0]
    assert grow.seeds == [0, 1, 2] and len(grow.finished) == 2
    accs = [r.test_acc for r in grow.finished]
    mean, std = grow.stat("test_acc")
    assert mean == pytest.approx(statistics.mean(accs))
    assert std == pytest.approx(statistics.stdev(accs))
    layers = [r.layers for r in grow.finished]
    assert grow.stat("layers")[0] == pytest.approx(statistics.mean(layers))
    assert grow.stat("params")[1] == pytest.approx(statistics.stdev(r.params for r in grow.finished))
    single = groups[1].stat("test_acc")
    assert single == (runs[2].test_acc, None)

    md = report.markdown.read_text()
    grow_row = next(line for line in md.splitlines() if line.startswith("| 1 |"))
    assert f"{mean:.2f} ± {std:.2f}" in grow_row
    assert "2 of 3" in grow_row
    train_row = next(line for line in md.splitlines() if line.startswith("| 2 |"))
    assert f"{runs[2].test_acc:.2f} ± –" in train_row


def test_report_bytes_depend_on_the_logs_only(inputs, report, tmp_path):
    again = write_report(inputs, tmp_path / "elsewhere")
    first_dir, second_dir = report.markdown.parent, again.markdown.parent

    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
                if p.is_file()}

    first, second = files(first_dir), files(second_dir)
    assert sorted(first) == sorted(second)
    assert {"report.md", "report.html"} <= set(first)
    for name in first:
        assert first[name] == second[name], name
    assert str(first_dir) not in first["report.md"].decode()


def test_report_bytes_do_not_depend_on_the_process(inputs, report, tmp_path):
    """Another interpreter, with another hash seed (set and dict orders), writes the same."""
    out = tmp_path / "other-process"
    code = ("import sys; from pathlib import Path; from autogrow.replay.report import "
            "write_report; write_report(sys.argv[2:], Path(sys.argv[1]))")
    subprocess.run([sys.executable, "-c", code, str(out), *map(str, inputs)], check=True,
                   env=dict(os.environ, PYTHONHASHSEED="12345"), cwd=REPO, timeout=300)
    first_dir = report.markdown.parent
    for path in sorted(first_dir.rglob("*")):
        if path.is_file():
            assert (out / path.relative_to(first_dir)).read_bytes() == path.read_bytes(), path


def test_markdown_tables_are_well_formed(report):
    lines = report.markdown.read_text().splitlines()
    tables: list[list[str]] = []
    for prev, line in zip([""] + lines, lines):
        if line.startswith("|"):
            if not prev.startswith("|"):
                tables.append([])
            tables[-1].append(line)
    assert len(tables) == 3  # runs, groups, shared settings
    for table in tables:
        widths = {len(re.findall(r"(?<!\\)\|", row)) for row in table}
        assert len(widths) == 1, table[:2]


def test_figures_exist_parse_and_are_inlined(report):
    names = sorted(p.name for p in report.figures)
    assert names == sorted(["fig3-depth-basic3resnet-fashionmnist.svg",
                            "fig4-flops-basic3resnet-fashionmnist.svg",
                            "fig2-grow-s1.svg", "fig2-train-1-1-1.svg", "fig2-train-2-2-2.svg",
                            "fig2-grow-s0.svg"])
    md = report.markdown.read_text()
    for path in report.figures:
        root = ET.parse(path).getroot()
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        assert b"<dc:date>" not in path.read_bytes()
        assert f"](figures/{path.name})" in md
    assert "No figure 2 for `grow-s2`" in md

    page = report.html.read_text()
    assert page.count("<svg") == len(report.figures)
    lowered = page.lower()
    for external in ("http://", "https://", "src=", "<link", "<script", "@import"):
        assert external not in lowered, external
    assert not re.search(r"url\((?!#)", page)  # only references inside the page
    assert not re.search(r'href="(?!#)', page)


def test_unfinished_run_is_listed_with_its_status(report):
    md = report.markdown.read_text()
    row = next(line for line in md.splitlines() if line.startswith("| grow-s2 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "suspended" and "–" in cells
    assert "`grow-s2` is suspended: time budget" in md
    assert "grow-s2" in report.html.read_text()


def test_bad_paths_give_one_clear_error(tmp_path, lone_run):
    missing = tmp_path / "no-such-run"
    with pytest.raises(ReportError, match="no-such-run does not exist") as err:
        collect_runs([lone_run, missing])
    assert isinstance(err.value, ValueError) and "\n" not in str(err.value)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ReportError, match="neither a run directory"):
        collect_runs([empty])
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(ReportError, match="not a directory"):
        collect_runs([a_file])
    with pytest.raises(ReportError, match="is a run directory"):
        write_report([lone_run], lone_run)
    assert not (lone_run / "report.md").exists()


def test_the_report_subcommand(lone_run, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="autogrow")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", str(lone_run), "--out", str(tmp_path / "r")])
    assert args.func is cmd_report and args.paths == [lone_run]
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "r" / "report.md") in out and "1 runs" in out
    assert (tmp_path / "r" / "report.html").is_file()
    bad = parser.parse_args(["report", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    with pytest.raises(ValueError, match="nope does not exist"):
        bad.func(bad)
    assert not (tmp_path / "o").exists()


def test_an_unreadable_run_is_listed_not_dropped(lone_run, tmp_path):
    sweep = tmp_path / "sweep"
    (sweep / "good").mkdir(parents=True)
    shutil.copy(lone_run / "events.jsonl", sweep / "good" / "events.jsonl")
    (sweep / "bad").mkdir()
    (sweep / "bad" / "events.jsonl").write_text("this is not a record\n")
    runs = collect_runs([sweep])
    assert [(r.label, r.status) for r in runs] == [("bad", "unreadable"), ("good", "finished")]
    assert runs[0].detail and "\n" not in runs[0].detail
    files = write_report([sweep], tmp_path / "out")
    md = files.markdown.read_text()
    assert "| bad | unreadable |" in md and "`bad` is unreadable: " in md
    assert [[r.label for r in g.runs] for g in files.groups] == [["good"]]


def test_the_report_command_through_the_cli(runs_root, tmp_path):
    proc = autogrow_cli("report", str(runs_root / "sweep"), str(runs_root / "lone" / "grow-s0"),
                        "--out", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "r" / "report.md").is_file() and (tmp_path / "r" / "report.html").is_file()
    bad = autogrow_cli("report", str(tmp_path / "nothing-here"), "--out", str(tmp_path / "r2"))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "nothing-here" in bad.stderr and not (tmp_path / "r2").exists()
