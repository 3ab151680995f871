"""The cost of ``autogrow verify --reexecute``: time per re-executed epoch against the run's own.

Run: ``.venv/bin/python benchmarks/reexecute_bench.py [--preset demo] [--run RUN] [--epochs N]``
prints one JSON object. Without ``--run`` it first makes a run of the preset that keeps every
snapshot (so every epoch can be re-executed) in a temp directory. The run's epoch time is what its log says
(training and validation); a re-executed epoch also loads its start snapshot, builds the net and
compares the snapshots it ended in, so the ratio is the whole cost of the audit per epoch.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

from _common import emit, machine, wait_for_quiet

from autogrow.config import resolve_config
from autogrow.engine.reexecute import reexecute
from autogrow.engine.lifecycle import start_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo", help="preset of the run to make (default demo)")
    parser.add_argument("--run", type=Path, help="re-execute this run instead of making one")
    parser.add_argument("--epochs", type=int, default=None,
                        help="re-execute N epochs, as `verify --reexecute N` (default: all kept)")
    parser.add_argument("--max-busy", type=float, default=0.5,
                        help="wait until other processes use fewer cores than this")
    parser.add_argument("--no-wait", dest="max_busy", action="store_const", const=None,
                        help="start at once, busy or not (the test suite's tiny run)")
    args = parser.parse_args()
    quiet = wait_for_quiet(args.max_busy)
    # structlog prints to stdout, which carries only the JSON result
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):
        run = args.run
        made_s = None
        if run is None:
            run = Path(tmp) / "run"
            config = resolve_config(args.preset, None, {"snapshot_keep": 100_000})
            began = time.perf_counter()
            start_run(config.resolved(), run)
            made_s = time.perf_counter() - began
        began = time.perf_counter()
        outcome = reexecute(run, args.epochs)
        total_s = time.perf_counter() - began
    emit({
        "benchmark": "reexecute",
        "preset": args.preset if args.run is None else None,
        "ok": outcome.ok,
        "standard": outcome.standard,
        "epochs_reexecuted": outcome.epochs,
        "skipped": list(outcome.skipped),
        "run_epochs_s": round(outcome.run_seconds, 2),
        "reexecuted_epochs_s": round(outcome.seconds, 2),
        "per_epoch_ratio": (round(outcome.seconds / outcome.run_seconds, 3)
                            if outcome.run_seconds else None),
        "total_with_data_and_final_s": round(total_s, 2),
        "run_made_in_s": None if made_s is None else round(made_s, 1),
        "quiet": quiet,
        "machine": machine(),
    })


if __name__ == "__main__":
    main()
