"""``autogrow sweep``: many runs from one spec — a grid and a list of cells, over seeds.

Every cell is an ordinary run directory ``OUT/<name>``, named by the settings that make it a cell,
so each one is resumable, verifiable and forkable on its own. Running the same sweep again
starts the cells that never started, resumes the unfinished ones and leaves finished ones
untouched; a cell whose directory holds a run with other settings stops the sweep before anything
runs. ``--jobs N`` runs cells as N local processes; ``--cell I`` runs one cell in this process
(a SLURM array task), ``--list`` prints the cells.

The spec is TOML (pure Python here: specs are checked before anything is written)::

    command = "grow"            # or "train" (the fixed-arch baseline); a cell may override it
    preset = "smoke"            # optional, as `grow --preset`
    seeds = [0, 1]              # every cell runs once per seed (default [0])
    [settings]                  # the same for every cell: any run setting
    subset = 0.05
    [grid]                      # every combination of these values
    interval = [1, 2]
    [[cells]]                   # explicit cells, added to the grid's
    command = "train"
    arch = "2-2-2"              # train cells: arch (and optionally epochs)
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from autogrow.config import (
    EXIT_RESUMABLE,
    FIELD_NAMES,
    ConfigError,
    LaunchOptions,
    RunConfig,
    baseline_overrides,
    load_toml,
    resolve_config,
)
from autogrow.errors import InputError
from autogrow.storage import LOG_NAME

COMMANDS = ("grow", "train")
SPEC_KEYS = ("command", "preset", "seeds", "settings", "grid", "cells")
# keys a cell may set besides run settings: what `autogrow train` takes as flags
CELL_KEYS = ("command", "arch", "epochs")
#: Test hook: ``CELL:STEP`` makes cell CELL of a ``--jobs`` sweep pause after training step STEP
#: (``AUTOGROW_TEST_PAUSE_AT_STEP`` in that cell's process only), so a test can kill the sweep
#: at a known point of its progress.
PAUSE_CELL_ENV = "AUTOGROW_TEST_SWEEP_PAUSE"


class SweepError(InputError):
    """A sweep spec or output directory is wrong; one line that says what to change."""


@attrs.frozen
class Cell:
    """One run of the sweep: its position, directory name and what it sets."""

    index: int
    name: str
    command: str
    settings: Mapping[str, Any]   # run settings (the preset and [settings] below them)
    seed: int
    arch: str = ""                # train cells
    epochs: int | None = None     # train cells

    def overrides(self, threads: int = 0) -> dict[str, Any]:
        """The settings to resolve the cell's config with, as `grow`/`train` would."""
        out = dict(self.settings, seed=self.seed)
        if threads:
            out["threads"] = threads
        if self.command == "train":
            out = baseline_overrides(out, self.arch, self.epochs)
        return out


@attrs.frozen
class Sweep:
    """A parsed spec and its cells, every cell's config already validated."""

    path: Path
    preset: str | None
    cells: tuple[Cell, ...]

    def config(self, cell: Cell, threads: int = 0) -> RunConfig:
        return resolve_config(self.preset, None, cell.overrides(threads))


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a spec: unknown keys, empty grids, clashing or invalid settings raise
    :class:`SweepError` before anything is written."""
    path = Path(path)
    try:
        spec = load_toml(path, "sweep spec")
    except ConfigError as err:
        raise SweepError(str(err)) from None
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise SweepError(f"{path}: unknown key(s) {', '.join(unknown)}; a sweep spec has "
                         f"{', '.join(SPEC_KEYS)}")
    command = spec.get("command", "grow")
    preset = spec.get("preset")
    seeds = spec.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise SweepError(f"{path}: seeds must be a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise SweepError(f"{path}: seeds {seeds} repeat a value")
    fixed = _table(spec, "settings", path)
    grid = _table(spec, "grid", path)
    cells = spec.get("cells", [])
    if not isinstance(cells, list) or not all(isinstance(c, dict) for c in cells):
        raise SweepError(f"{path}: cells must be an array of tables ([[cells]])")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"{path}: grid key {key!r} needs a non-empty list of values, "
                             f"got {values!r}")
        if len(set(map(repr, values))) != len(values):
            raise SweepError(f"{path}: grid key {key!r} repeats a value: {values!r}")
    for where, table in [("settings", fixed), ("grid", grid)] + [
            (f"cells[{i}]", c) for i, c in enumerate(cells)]:
        _check_keys(table, where, path)
        if "seed" in table:
            raise SweepError(f"{path}: {where} sets seed; list the seeds in `seeds` instead")
    for i, cell in enumerate(cells):
        clash = sorted(set(cell) & set(fixed))
        if clash:
            raise SweepError(f"{path}: cells[{i}] sets {', '.join(clash)}, which [settings] fixes "
                             "for every cell; move it to [grid] or into each cell")
        if not cell:
            raise SweepError(f"{path}: cells[{i}] is empty; give it the settings that make it a cell")
    clash = sorted(set(grid) & set(fixed))
    if clash:
        raise SweepError(f"{path}: {', '.join(clash)} is both in [settings] and in [grid]")
    if preset is not None and not isinstance(preset, str):
        raise SweepError(f"{path}: preset must be a name, got {preset!r}")

    variants = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())] if grid else []
    if not variants and not cells:
        variants = [{}]
    built: list[Cell] = []
    names: dict[str, int] = {}
    for variant in variants + [dict(c) for c in cells]:
        for seed in seeds:
            cell = _make_cell(len(built), command, fixed, variant, seed, path)
            if cell.name in names:
                raise SweepError(f"{path}: cells {names[cell.name]} and {cell.index} are the same "
                                 f"run ({cell.name})")
            names[cell.name] = cell.index
            built.append(cell)
    sweep = Sweep(path=path, preset=preset, cells=tuple(built))
    for cell in sweep.cells:  # every config valid before anything runs
        try:
            sweep.config(cell)
        except ConfigError as err:
            raise SweepError(f"{path}: cell {cell.index} ({cell.name}): {err}") from None
    return sweep


def _table(spec: Mapping[str, Any], key: str, path: Path) -> dict[str, Any]:
    table = spec.get(key, {})
    if not isinstance(table, dict):
        raise SweepError(f"{path}: [{key}] must be a table of settings")
    return dict(table)


def _check_keys(table: Mapping[str, Any], where: str, path: Path) -> None:
    unknown = sorted(set(table) - FIELD_NAMES - set(CELL_KEYS))
    if unknown:
        raise SweepError(f"{path}: {where}: unknown setting(s) {', '.join(unknown)}; valid: the "
                         f"run settings of `autogrow grow --help` and {', '.join(CELL_KEYS)}")


def _make_cell(index: int, command: str, fixed: Mapping[str, Any], variant: Mapping[str, Any],
               seed: int, path: Path) -> Cell:
    merged = {**fixed, **variant}
    cmd = merged.pop("command", command)
    if cmd not in COMMANDS:
        raise SweepError(f"{path}: command {cmd!r} is not one of {', '.join(COMMANDS)}")
    arch = merged.pop("arch", "")
    epochs = merged.pop("epochs", None)
    if cmd == "train" and not arch:
        raise SweepError(f"{path}: a train cell needs an arch (e.g. arch = \"3-3-3\")")
    if cmd == "grow" and (arch or epochs is not None):
        raise SweepError(f"{path}: arch and epochs are for train cells; a grow cell takes "
                         "seed_arch / max_arch / finetune_epochs")
    label = {"arch": arch, **({"epochs": epochs} if epochs is not None else {})} if arch else {}
    label.update({k: v for k, v in variant.items() if k not in ("command", "arch", "epochs")})
    parts = [cmd] + [f"{k}={_text(v)}" for k, v in label.items()] + [f"seed={seed}"]
    return Cell(index=index, name=",".join(parts), command=cmd, settings=merged, seed=seed,
                arch=str(arch), epochs=int(epochs) if epochs is not None else None)


def _text(value: Any) -> str:
    """A setting's value as part of a directory name."""
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return "".join(c if c.isalnum() or c in "-._" else "_" for c in text) or "_"


# -- the state of the cells ------------------------------------------------------------------------

def cell_status(sweep: Sweep, cell: Cell, out: Path) -> str:
    """``new``, ``resume`` (unfinished) or ``finished``; a directory holding a run with other
    settings raises :class:`SweepError` naming them."""
    from autogrow.engine.lifecycle import relaunch_action
    from autogrow.engine.run import RunError

    try:
        action = relaunch_action(sweep.config(cell), out / cell.name)
    except RunError as err:
        raise SweepError(f"cell {cell.index}: {err}") from None
    return {"start": "new"}.get(action, action)


def statuses(sweep: Sweep, out: Path, cells: Sequence[Cell]) -> dict[int, str]:
    """Every cell's status, checked before anything runs (all clashes in one error)."""
    found: dict[int, str] = {}
    problems: list[str] = []
    for cell in cells:
        try:
            found[cell.index] = cell_status(sweep, cell, out)
        except SweepError as err:
            problems.append(str(err))
    if problems:
        raise SweepError(f"{len(problems)} cell(s) of {out} hold runs with other settings "
                         f"(nothing was run): {problems[0]}"
                         + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    return found


# -- running cells as local processes ----------------------------------------------------------------

def _die_with_parent() -> None:
    """In a cell's process: SIGTERM (a clean suspend) when the sweep process dies (Linux)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def default_threads(jobs: int) -> int:
    """CPU threads per cell: the cores this process may use, shared by ``jobs`` cells."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // max(1, jobs))


OUTCOMES = ("finished", "already finished", "suspended", "failed", "not run")


@attrs.frozen
class Outcome:
    """How one cell of a local sweep ended: ``kind`` is one of :data:`OUTCOMES`; ``code`` the
    exit code of a failed cell's process."""

    kind: str = attrs.field(validator=attrs.validators.in_(OUTCOMES))
    code: int | None = None

    @classmethod
    def of_exit(cls, code: int) -> Outcome:
        """The outcome of a cell's process that exited with ``code``."""
        if code == 0:
            return cls("finished")
        return cls("suspended") if code == EXIT_RESUMABLE else cls("failed", code)

    def __str__(self) -> str:
        return f"failed (exit {self.code})" if self.kind == "failed" else self.kind


def exit_code(outcomes: Iterable[Outcome]) -> int:
    """The sweep's exit code: 1 if a cell failed, else :data:`EXIT_RESUMABLE` if one is left to
    run (suspended or not started), else 0."""
    kinds = {o.kind for o in outcomes}
    if "failed" in kinds:
        return 1
    return EXIT_RESUMABLE if kinds & {"suspended", "not run"} else 0


def run_local(sweep: Sweep, out: Path, *, jobs: int, threads: int,
              launch: LaunchOptions = LaunchOptions()) -> dict[int, Outcome]:
    """Run every cell that is not finished, ``jobs`` at a time, each as
    ``autogrow sweep SPEC --out OUT --cell I`` with this launch's options (a cell resumes its
    run if it exists; requeueing is the sweep's job, not a cell's); returns the
    :class:`Outcome` per cell index.

    SIGTERM/SIGINT to the sweep are passed on to the running cells (they suspend cleanly);
    no new cell starts after one."""
    todo = statuses(sweep, out, sweep.cells)
    outcome = {i: Outcome("already finished") for i, s in todo.items() if s == "finished"}
    pending = [c for c in sweep.cells if todo[c.index] != "finished"]
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    running: dict[int, subprocess.Popen] = {}
    stopping: list[int] = []
    total, done = len(sweep.cells), len(outcome)

    def forward(signum: int, _frame: Any) -> None:
        stopping.append(signum)
        for proc in running.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)

    pause = os.environ.get(PAUSE_CELL_ENV, "")
    with _handlers(forward):
        while pending or running:
            while pending and len(running) < jobs and not stopping:
                cell = pending.pop(0)
                env = dict(os.environ)
                env.pop(PAUSE_CELL_ENV, None)
                if pause.partition(":")[0] == str(cell.index):
                    env["AUTOGROW_TEST_PAUSE_AT_STEP"] = pause.partition(":")[2]
                argv = [sys.executable, "-m", "autogrow", "sweep", str(sweep.path), "--out",
                        str(out), "--cell", str(cell.index), "--threads", str(threads),
                        *launch.as_flags(skip=("resume_if_exists", "requeue"))]
                with open(logs / f"{cell.name}.log", "ab") as log_file:
                    running[cell.index] = subprocess.Popen(
                        argv, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                        preexec_fn=_die_with_parent if sys.platform == "linux" else None)
                print(f"[{done}/{total}] {todo[cell.index]:>6}  {cell.name}", flush=True)
            if stopping and not running:
                break
            for index, proc in list(running.items()):
                code = proc.poll()
                if code is None:
                    continue
                del running[index]
                done += 1
                outcome[index] = Outcome.of_exit(code)
                print(f"[{done}/{total}] {outcome[index]}  {sweep.cells[index].name}"
                      + (f"  (see {logs / (sweep.cells[index].name + '.log')})"
                         if outcome[index].kind == "failed" else ""), flush=True)
            time.sleep(0.1)
    for cell in pending:
        outcome.setdefault(cell.index, Outcome("not run"))
    return outcome


@contextlib.contextmanager
def _handlers(handler: Any) -> Iterator[None]:
    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def summary_rows(sweep: Sweep, out: Path,
                 outcome: Mapping[int, Outcome]) -> list[tuple[str, ...]]:
    """(cell, outcome, found arch, test acc) per cell, from the runs' logs."""
    from autogrow.replay import state_of
    from autogrow.storage import EventLog

    rows = []
    for cell in sweep.cells:
        arch = acc = "-"
        run_dir = out / cell.name
        if (run_dir / LOG_NAME).is_file():
            with contextlib.suppress(Exception):
                with EventLog.open(run_dir, readonly=True) as log:
                    result = state_of(log.records).result
                if result is not None:
                    arch, acc = result.arch, f"{result.test_acc:.2f}%"
        rows.append((str(cell.index), cell.name, str(outcome.get(cell.index, "-")), arch, acc))
    return rows
