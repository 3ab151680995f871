"""Event-log speed: append 10,000 realistic records with and without fsync, and open+verify them.

Run: ``.venv/bin/python benchmarks/log_bench.py [--events N]``; prints one JSON object. Uses a
temp directory (on the same filesystem as $TMPDIR, which decides what fsync costs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autogrow.storage import EventLog  # noqa: E402


def epoch_payload(i: int) -> dict:
    """Shaped like an ``epoch_completed`` record, with a few extra realistic fields."""
    return {
        "phase": "grow" if i % 3 else "finetune",
        "epoch": i,
        "arch": "3-4-2",
        "lr": 0.1 / (1 + i // 100),
        "train_loss": 1.0 / (i + 1) + 0.123456789,
        "train_acc": 0.5 + (i % 100) / 250.0,
        "val_loss": 1.1 / (i + 1) + 0.0987654321,
        "val_acc": 0.45 + (i % 100) / 260.0,
        "seconds": 30.9 + (i % 7) * 0.01,
        "step": i * 469,
        "samples": 60000,
        "best_val_acc": 0.91234,
    }


def time_appends(run_dir: Path, n: int, fsync: bool) -> float:
    payloads = [epoch_payload(i) for i in range(n)]
    with EventLog.open(run_dir, create=True, fsync=fsync) as log:
        start = time.perf_counter()
        for p in payloads:
            log.append("epoch_completed", 1, p)
        return time.perf_counter() - start


def time_open(run_dir: Path, readonly: bool) -> tuple[float, int]:
    start = time.perf_counter()
    log = EventLog.open(run_dir, readonly=readonly)
    elapsed = time.perf_counter() - start
    count = len(log)
    log.close()
    return elapsed, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3, help="open+verify repeats (best is kept)")
    args = parser.parse_args()
    n = args.events
    with tempfile.TemporaryDirectory(prefix="autogrow-log-bench-") as tmp:
        tmp_path = Path(tmp)
        no_fsync = time_appends(tmp_path / "nofsync", n, fsync=False)
        with_fsync = time_appends(tmp_path / "fsync", n, fsync=True)
        size = (tmp_path / "nofsync" / "events.jsonl").stat().st_size
        opens = [time_open(tmp_path / "nofsync", readonly=False) for _ in range(args.repeats)]
        ro_opens = [time_open(tmp_path / "nofsync", readonly=True) for _ in range(args.repeats)]
        assert all(c == n for _, c in opens + ro_opens)
    result = {
        "benchmark": "event_log",
        "command": " ".join(["python benchmarks/log_bench.py", *sys.argv[1:]]),
        "events": n,
        "log_bytes": size,
        "bytes_per_record": round(size / n, 1),
        "append_fsync_s": round(with_fsync, 4),
        "append_fsync_us_per_event": round(with_fsync / n * 1e6, 1),
        "append_no_fsync_s": round(no_fsync, 4),
        "append_no_fsync_us_per_event": round(no_fsync / n * 1e6, 1),
        "open_verify_s": round(min(t for t, _ in opens), 4),
        "open_verify_readonly_s": round(min(t for t, _ in ro_opens), 4),
        "open_verify_target_s": 1.0,
        "machine": {
            "platform": platform.platform(),
            "machine": platform.machine(),
            "processor": platform.processor() or None,
            "cpu_count": os.cpu_count(),
            "tmpdir": tempfile.gettempdir(),
        },
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
