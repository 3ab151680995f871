"""The ``autogrow`` command: grow, train, resume, history, export and friends.

Every failure a user can cause ends in one line on stderr (``autogrow: error: …``) and exit 2.
A run stopped by a stop signal or its time budget exits 75 (resumable); a second Ctrl-C, 130. A
full file system or disk quota (ENOSPC, EDQUOT) anywhere in a run exits 74 (``EX_IOERR``) with one
line naming the file system and ``autogrow resume RUN`` as the way on: a fault of the machine, not
a bug, so no traceback (the run logs ``run_failed`` if the record still fits).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import structlog
import tomli_w

from autogrow.config import (
    EXIT_DISK_FULL,
    EXIT_RESUMABLE,
    PRESETS,
    LaunchOptions,
    RunConfig,
    baseline_overrides,
    resolve_config,
    resolve_launch,
)
from autogrow.errors import InputError, cli_message

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
log = structlog.get_logger("autogrow")
BUG_NOTE = ("autogrow: internal error: this is a bug in autogrow, not in your input; the "
            "traceback follows (please report it with the command that ran)")

_TYPES: dict[str, Callable[[str], Any]] = {"int": int, "float": float, "str": str}


def _add_config_flags(parser: argparse.ArgumentParser, skip: Sequence[str] = ()) -> None:
    """One flag per RunConfig field: ``--stop-window`` sets ``stop_window``."""
    group = parser.add_argument_group("settings (override preset and --config)")
    for field in attrs.fields(RunConfig):
        if field.name in skip:
            continue
        flag = "--" + field.name.replace("_", "-")
        help_text, choices = field.metadata["help"], field.metadata["choices"]
        if field.type == "bool":
            group.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction,
                               default=None, help=f"{help_text} (default {field.default})")
        else:  # choices are checked with the rest of the config, in the config's words
            group.add_argument(flag, dest=field.name, type=_TYPES[field.type], default=None,
                               metavar="{" + ",".join(choices) + "}" if choices
                               else field.name.upper(),
                               help=f"{help_text} (default {field.default!r})")


def _add_launch_flags(parser: argparse.ArgumentParser, *, relaunch: bool) -> None:
    """One flag per LaunchOptions field (how this launch behaves; never stored in the run, also
    keys of a --config file); ``--resume-if-exists`` only where a run can start."""
    group = parser.add_argument_group(
        "preemption, progress and loading (this launch only; also keys of a --config file)")
    for field in attrs.fields(LaunchOptions):
        if field.metadata["relaunch_only"] and not relaunch:
            continue
        flag = "--" + field.name.replace("_", "-")
        if field.type == "bool":
            group.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction,
                               default=None, help=field.metadata["help"])
        else:  # values are parsed with the rest of the launch options, in their words
            group.add_argument(flag, dest=field.name, metavar=field.metadata["metavar"],
                               default=None, help=field.metadata["help"])


def _launch(args: argparse.Namespace) -> LaunchOptions:
    flags = {f.name: getattr(args, f.name, None) for f in attrs.fields(LaunchOptions)}
    return resolve_launch(getattr(args, "config_file", None), flags)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    names = {f.name for f in attrs.fields(RunConfig)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors, like the rest of the command."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"autogrow: error: {message} (see `{self.prog} --help`)\n")


_EXIT_CODES = f"""exit codes:
  0    done (a run finished; verify found the run intact)
  1    verify found a problem, or an unexpected error (a traceback; the run logs run_failed)
  {EXIT_USER_ERROR}    bad input or a broken run: one line says what and what to do
  {EXIT_DISK_FULL}   the file system (or disk quota) is full: free space, then `autogrow resume RUN`
  {EXIT_RESUMABLE}   suspended by a stop signal or the time budget: relaunch to continue
  {EXIT_INTERRUPTED}  aborted by a second Ctrl-C: relaunch continues from the latest snapshot"""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="autogrow",
        description="Grow the depth of a convolutional network while it trains (AutoGrow). "
                    "Every run is an event log plus snapshots: resumable, auditable, forkable.",
        epilog=_EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)

    p = sub.add_parser("grow", help="run AutoGrow: grow, stop, fine-tune, evaluate",
                       description="Run AutoGrow. Settings: preset < --config file < flags.")
    p.add_argument("--preset", choices=sorted(PRESETS), help="named settings to start from")
    p.add_argument("--config", dest="config_file", metavar="FILE.toml", help="TOML settings file")
    p.add_argument("--run-dir", required=True, type=Path,
                   help="new (empty) directory for the run (see --resume-if-exists)")
    _add_config_flags(p)
    _add_launch_flags(p, relaunch=True)
    p.set_defaults(func=cmd_grow)

    p = sub.add_parser("train", help="train a fixed arch from scratch (the baseline, for Δ)",
                       description="Train a fixed arch for --epochs with the baseline's staircase "
                                   "LR (from --lr, drops at --lr-milestones; a c-AutoGrow preset's "
                                   "fine-tune start and drops do not apply); same log format as grow.")
    p.add_argument("--preset", choices=sorted(PRESETS))
    p.add_argument("--config", dest="config_file", metavar="FILE.toml")
    p.add_argument("--run-dir", required=True, type=Path)
    p.add_argument("--arch", required=True, help="the fixed arch, e.g. 3-3-3")
    p.add_argument("--epochs", type=int, help="training epochs (default: --finetune-epochs)")
    _add_config_flags(p, skip=("seed_arch", "max_arch"))
    _add_launch_flags(p, relaunch=True)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sweep", help="many runs from one spec: a grid and cells, over seeds",
                       description="Run every cell of a sweep spec (TOML: command, preset, seeds, "
                                   "[settings], [grid], [[cells]]; see examples/sweep.toml) as an "
                                   "ordinary run directory OUT/<cell name>. Running it again "
                                   "resumes unfinished cells and skips finished ones.")
    p.add_argument("spec", type=Path, help="the sweep spec (TOML)")
    p.add_argument("--out", type=Path, help="directory of the sweep's run directories "
                                            "(required unless --list)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="cells run at once, as local processes (default 1)")
    p.add_argument("--threads", type=int, default=0, metavar="N",
                   help="CPU threads per cell for cells that start (default: the cores shared "
                        "by --jobs; with --cell: torch's default)")
    p.add_argument("--cell", type=int, metavar="I",
                   help="run cell I only, in this process (e.g. a SLURM array task: "
                        "--cell $SLURM_ARRAY_TASK_ID; see examples/sweep.sbatch)")
    p.add_argument("--list", action="store_true", help="print the cells (index, name) and exit")
    _add_launch_flags(p, relaunch=False)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("resume", help="continue a run from its latest snapshot")
    p.add_argument("run_dir", type=Path, metavar="RUN")
    p.add_argument("--data-root", default=None,
                   help="where the run's data is now, if it moved (the files must be the ones "
                        "the run's manifest lists)")
    _add_launch_flags(p, relaunch=False)
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("verify", help="check the hash chain, every snapshot and every decision",
                       description="Exit 0 only if the log's chain holds, every needed snapshot "
                                   "is present and matches its digest, and every grow/stop/finish "
                                   "decision is exactly what the policy decides from the logged "
                                   "metrics; with --reexecute, also that the logged metrics and "
                                   "weights are what this code computes from the run's snapshots "
                                   "and data (README: Audit).")
    p.add_argument("run_dir", type=Path, metavar="RUN")
    p.add_argument("--reexecute", type=_reexecute_count, metavar="N|all", default=None,
                   help="also re-execute N logged epochs (or all) from their start snapshots and "
                        "the final evaluation, and require the logged metrics and the kept "
                        "snapshots' digests bit for bit (a reproducible choice that includes "
                        "the last growth; each costs about one epoch of the run)")
    p.add_argument("--standard", choices=("auto", "exact", "tolerant"), default="auto",
                   help="exact equality, or the stated tolerances for a run made on another "
                        "machine class; auto: exact when the run's recorded torch, device and "
                        "CPU/GPU are this machine's (default: %(default)s)")
    p.add_argument("--data-root", default=None,
                   help="with --reexecute: where the run's data is now, if it moved (the files "
                        "must be the ones the run recorded)")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("fork", help="start a new run from a growth point or snapshot of a run",
                       description="The parent is untouched; the fork's first event names it.")
    p.add_argument("run_dir", type=Path, metavar="RUN", help="the parent run")
    p.add_argument("--at", required=True, help="growth:N (after the N-th growth) or a "
                                               "snapshot_written seq")
    p.add_argument("--set", dest="changes", action="append", default=[], metavar="KEY=VALUE",
                   help="change a setting (config key), e.g. --set interval=2; repeatable")
    p.add_argument("--run-dir", dest="new_run_dir", required=True, type=Path,
                   help="new (empty) directory for the fork")
    _add_launch_flags(p, relaunch=False)
    p.set_defaults(func=cmd_fork)

    p = sub.add_parser("plot", help="the paper's figure 2 for a run: accuracy and layers by epoch")
    p.add_argument("run_dir", type=Path, metavar="RUN")
    p.add_argument("--out", required=True, type=Path, help="image file (.png, .svg, .pdf)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("prune", help="delete snapshots not needed for resume, fork or verify")
    p.add_argument("run_dir", type=Path, metavar="RUN")
    p.add_argument("--keep", type=int, default=None,
                   help="latest snapshots to keep (default: the run's snapshot_keep)")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("history", help="the epochs, checks, growths and stops of a run")
    p.add_argument("run_dir", type=Path, metavar="RUN")
    p.add_argument("--json", action="store_true", help="print the events as JSON lines")
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("export", help="write the found net as a safetensors file")
    p.add_argument("run_dir", type=Path, metavar="RUN")
    p.add_argument("--out", required=True, type=Path, help="output .safetensors file")
    p.set_defaults(func=cmd_export)

    from autogrow.replay.report import add_parser as add_report_parser
    from autogrow.replay.tensorboard import add_parser as add_tensorboard_parser
    add_report_parser(sub)
    add_tensorboard_parser(sub)
    return parser


def _print_config(config: RunConfig) -> None:
    if config.val_source == "test":
        print("# NOTE: growth and stop decisions use the TEST set (val_source = \"test\", the "
              "paper's protocol, which the paper-* presets follow), so the reported test accuracy "
              "is not a held-out estimate; --val-source train decides on a held-out split "
              "instead", flush=True)
    print("# resolved config")
    print(tomli_w.dumps({"run": config.to_dict()}), end="", flush=True)


def _summary(result: Any) -> None:
    print(f"found arch {result.arch}  val acc {result.val_acc:.2f}%  test acc {result.test_acc:.2f}%"
          f"  params {result.params:,}  FLOPs {result.flops:,}")
    print(f"run directory {result.run_dir}  (autogrow history {result.run_dir})")


def _process_group(device: str) -> contextlib.AbstractContextManager[Any]:
    """This process's place among those torchrun started (just itself without torchrun)."""
    from autogrow.engine.distributed import process_group
    return process_group(device)


_STARTED = time.time()  # when this process started: the time budget counts from here


def _drive(launch: LaunchOptions, device: str, body: Callable[[Any, Any], Any]) -> int:
    """Run ``body(group, controls)`` in this process (or every process torchrun started) with
    the stop signals installed; a suspension exits resumable (and requeues if asked)."""
    from autogrow.engine.preemption import StopControl, Suspended, requeue
    from autogrow.engine.run import Controls
    stop = StopControl.for_launch(launch.stop_signals, launch.time_limit, _STARTED)
    with _process_group(device) as group:
        if group.is_main and stop.budget:
            ends = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stop.deadline))
                    if stop.deadline is not None else "never")
            log.info("time budget", ends=ends, source=stop.budget)
        try:
            body(group, Controls(stop=stop, launch=launch))
        except Suspended as suspended:
            if group.is_main:
                print(f"autogrow: {suspended}; the run is saved — relaunch the same command "
                      f"(with --resume-if-exists) or `autogrow resume RUN` to continue",
                      file=sys.stderr)
                if launch.requeue:
                    done, message = requeue(suspended.reason)
                    print(f"autogrow: {message}", file=sys.stderr)
            return EXIT_RESUMABLE
    return 0


def _start(config: RunConfig, run_dir: Path, launch: LaunchOptions) -> int:
    """Run a new run (or continue it, with --resume-if-exists) in this process or in every
    process torchrun started."""
    from autogrow.engine import lifecycle as engine
    if not launch.resume_if_exists:
        engine.check_new_run_dir(run_dir)

    def body(group: Any, controls: Any) -> None:
        action = "start"
        if launch.resume_if_exists:
            action = engine.relaunch_action(config, run_dir, group)
        if action == "finished":
            if group.is_main:
                print(f"# {run_dir} has already finished with these settings; nothing to do")
                _summary(engine.finished_result(run_dir))
            return
        if group.is_main:
            if action == "resume":
                print(f"# {run_dir} holds this run unfinished: resuming it")
            _print_config(config)
        if action == "resume":
            result = engine.resume_run(run_dir, group, controls,
                                       data_root=config.data_root or None)
        else:
            result = engine.start_run(config, run_dir, group, controls)
        if group.is_main:
            _summary(result)

    return _drive(launch, config.device, body)


def cmd_grow(args: argparse.Namespace) -> int:
    config = resolve_config(args.preset, args.config_file, _overrides(args))
    return _start(config, args.run_dir, _launch(args))


def cmd_train(args: argparse.Namespace) -> int:
    overrides = baseline_overrides(_overrides(args), args.arch, args.epochs)
    config = resolve_config(args.preset, args.config_file, overrides)
    return _start(config, args.run_dir, _launch(args))


def cmd_sweep(args: argparse.Namespace) -> int:
    from autogrow import sweep as sw

    spec = sw.load_sweep(args.spec)
    if args.list:
        for cell in spec.cells:
            print(f"{cell.index}\t{cell.name}")
        return 0
    if args.out is None:
        raise InputError("sweep needs --out DIR (the directory of its runs) unless --list")
    if args.jobs < 1 or args.threads < 0:
        raise InputError("--jobs must be >= 1 and --threads >= 0")
    launch = _launch(args)
    if args.cell is not None:
        if not 0 <= args.cell < len(spec.cells):
            raise InputError(f"--cell {args.cell}: the spec has cells 0..{len(spec.cells) - 1} "
                             "(see --list)")
        cell = spec.cells[args.cell]
        status = sw.cell_status(spec, cell, args.out)  # refuses a run with other settings
        config = spec.config(cell, args.threads if status == "new" else 0)
        return _start(config, args.out / cell.name, attrs.evolve(launch, resume_if_exists=True))
    outcome = sw.run_local(spec, args.out, jobs=args.jobs,
                           threads=args.threads or sw.default_threads(args.jobs),
                           launch=launch)
    rows = sw.summary_rows(spec, args.out, outcome)
    print(f"# sweep {args.spec} -> {args.out}")
    for row in rows:
        print("  ".join(row))
    counts = collections.Counter(o.kind for o in outcome.values())
    print("# " + ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())))
    return sw.exit_code(outcome.values())


def cmd_resume(args: argparse.Namespace) -> int:
    from autogrow.engine.lifecycle import resume_run

    def body(group: Any, controls: Any) -> None:
        result = resume_run(args.run_dir, group, controls, data_root=args.data_root)
        if group.is_main:
            _summary(result)

    return _drive(_launch(args), "auto", body)


def _reexecute_count(text: str) -> int | str:
    """``--reexecute``: a positive number of epochs, or ``all``."""
    if text == "all":
        return text
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of epochs or 'all', got {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1 epoch, got {count}")
    return count


def cmd_verify(args: argparse.Namespace) -> int:
    from autogrow.config import launched_by_torchrun
    from autogrow.replay.verify import verify_run
    reexecute = args.reexecute is not None
    if launched_by_torchrun() and not reexecute:
        raise InputError("verify runs in one process; torchrun is only for --reexecute of a run "
                         "made by several processes")
    if not reexecute:
        return 0 if _print_verify(verify_run(args.run_dir)) else 1
    from autogrow.engine.distributed import broadcast_json
    from autogrow.engine.reexecute import plan
    try:
        the_plan = plan(args.run_dir)  # the run's device decides the process group's backend
    except user_errors() as err:  # nothing to re-execute: say why, after what verify finds
        _print_verify(verify_run(args.run_dir))
        print(f"FAIL: not re-executed: {cli_message(err)}")
        return 1
    with _process_group(the_plan.config.device) as group:
        # rank 0 audits the log and the snapshot files (the other ranks would redo the same)
        ok = broadcast_json(group, _print_verify(verify_run(args.run_dir))
                            if group.is_main else None)
        return 0 if _print_reexecution(args, group, the_plan) and ok else 1


def _print_verify(report: Any) -> bool:
    for note in report.notes:
        print(f"note: {note}")
    for problem in report.problems:
        print(f"FAIL: {problem}")
    verdict = "OK" if report.ok else "FAILED"
    if report.damaged:
        print(f"{verdict}: the log is damaged after {_count(report.records, 'intact record')}; "
              "nothing after the damage was read", flush=True)
    else:
        print(f"{verdict}: {report.records} records, {report.snapshots_checked} snapshots "
              f"checked, {report.decisions_checked} decisions audited", flush=True)
    return report.ok


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}" + ("" if n == 1 else "s")


def _print_reexecution(args: argparse.Namespace, group: Any, the_plan: Any) -> bool:
    """Re-execute (every rank), print the table as it goes (rank 0); True if all compared equal
    (or within the tolerant standard)."""
    from autogrow.engine.compare import TABLE_HEADER, format_row
    from autogrow.engine.reexecute import reexecute
    show = group.is_main
    count = None if args.reexecute == "all" else args.reexecute

    def on_row(row: Any) -> None:
        if show:
            print(format_row(row), flush=True)

    if show:
        print(f"re-executing {'every epoch' if count is None else f'{count} epoch(s)'} "
              "from the kept snapshots, and the final evaluation")
        print(TABLE_HEADER, flush=True)
    outcome = reexecute(args.run_dir, count, standard=args.standard, group=group,
                        on_row=on_row, the_plan=the_plan, data_root=args.data_root)
    if show:
        for skipped in outcome.skipped:
            print(f"not re-executed: {skipped}")
        print(f"standard: {outcome.standard} ({outcome.why})")
        if outcome.epochs:
            ratio = outcome.seconds / outcome.run_seconds if outcome.run_seconds else float("nan")
            print(f"re-executed {outcome.epochs} epoch(s) in {outcome.seconds:.1f} s; the run "
                  f"trained them in {outcome.run_seconds:.1f} s ({ratio:.2f}x)")
        failure = outcome.first_failure
        if failure is not None:
            print(f"FAIL: seq {failure.seq}: re-executing epoch {failure.epoch} does not give the "
                  f"logged {failure.what}: {failure.detail}")
        else:
            compared = sum(row.compared for row in outcome.rows)
            print(f"OK: {compared} comparisons "
                  f"{'equal' if outcome.standard == 'exact' else 'within tolerance'}")
    return outcome.ok


def _snapshot_keep(run_dir: Path) -> int:
    """The run's own snapshot_keep setting (3 when it cannot be read)."""
    from autogrow.config import load_toml
    try:
        return int(load_toml(run_dir / "config.toml").get("snapshot_keep", 3))
    except (ValueError, TypeError):
        return 3


def cmd_fork(args: argparse.Namespace) -> int:
    from autogrow.config import launched_by_torchrun
    if launched_by_torchrun():
        raise InputError("fork runs in one process; fork first, then `torchrun … -m autogrow "
                         "resume NEW_RUN` to continue it on several")
    changes: dict[str, str] = {}
    for item in args.changes:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set {item!r}: expected KEY=VALUE, e.g. --set interval=2")
        changes[key.strip()] = value.strip()
    from autogrow.engine.lifecycle import fork_run

    def body(group: Any, controls: Any) -> None:
        _summary(fork_run(args.run_dir, args.at, changes, args.new_run_dir, controls))

    return _drive(_launch(args), "auto", body)


def cmd_plot(args: argparse.Namespace) -> int:
    from autogrow.replay.plot import plot_run
    print(f"wrote {plot_run(args.run_dir, args.out)}")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from autogrow.replay.retention import prune
    keep = args.keep if args.keep is not None else _snapshot_keep(args.run_dir)
    removed, freed = prune(args.run_dir, keep)
    print(f"removed {len(removed)} snapshot(s), {freed / 1e6:.1f} MB freed")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from autogrow.replay.history import history_rows, print_history
    if args.json:
        from autogrow.storage import EventLog
        with EventLog.open(args.run_dir, readonly=True) as event_log:
            for record in event_log.records:
                print(json.dumps({"seq": record.seq, "type": record.type, "schema": record.schema,
                                  "ts": record.ts, "payload": record.payload}))
        return 0
    print_history(history_rows(args.run_dir))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from autogrow.replay.export import export_run
    path, arch = export_run(args.run_dir, args.out)
    print(f"wrote {path} ({arch})")
    return 0


def _configure_logging() -> None:
    """Human-readable logs on stderr; ranks other than 0 (torchrun) only report problems."""
    import logging
    import os
    level = logging.INFO if os.environ.get("RANK", "0") == "0" else logging.WARNING
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(level),
        processors=[structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="%H:%M:%S"),
                    structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())],
        # one write per line: the ranks of a torchrun job share a stream, and a line written in
        # two parts (print: text, then newline) could be split by another rank's line
        logger_factory=structlog.WriteLoggerFactory(_Stderr()),
    )


class _Stderr:
    """Whatever ``sys.stderr`` is when a line is logged, not when logging was configured: a
    caller (pytest's capture, an embedding program) may replace and close the stream between."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input or a broken run, reported in one line; anything else is a
    bug and keeps its traceback."""
    from autogrow.errors import UserError
    return (UserError, FileNotFoundError)


def _disk_full(err: BaseException, args: argparse.Namespace) -> str | None:
    """The one-line message when ``err`` (or what caused it) is a full file system or disk
    quota, else None. The storage layer's DiskFull carries its own; any other ENOSPC/EDQUOT
    (a config file, TensorBoard, a cache) is named by its file and this command's run."""
    from autogrow.storage import DiskFull, disk_full_message, is_disk_full
    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, DiskFull):
            return str(cause).splitlines()[0]
        if is_disk_full(cause):
            run_dir = getattr(args, "new_run_dir", None) or getattr(args, "run_dir", None)
            return disk_full_message(cause, cause.filename, run_dir)[0]
        cause = cause.__cause__ or cause.__context__
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging()
    try:
        return args.func(args)
    except Exception as err:  # noqa: BLE001 - sorted below; anything else is re-raised
        full = _disk_full(err, args)
        if full is not None:  # a fault of the machine, not of the input
            print(f"autogrow: error: {full}", file=sys.stderr)
            return EXIT_DISK_FULL
        if not isinstance(err, user_errors()):
            print(BUG_NOTE, file=sys.stderr)
            raise
        print(f"autogrow: error: {cli_message(err)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("autogrow: interrupted; `autogrow resume RUN` continues from the last snapshot",
              file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
