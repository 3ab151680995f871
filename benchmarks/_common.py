"""Helpers shared by the benchmark scripts: machine facts, load checks, medians, JSON output."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from autogrow.engine.device import cpu_model  # noqa: E402


def load() -> float:
    """1-minute load average."""
    return round(os.getloadavg()[0], 2)


def busy_cores(window_s: float = 3.0) -> float:
    """Cores kept busy by all processes over ``window_s`` (from /proc/stat). Called while this
    process sleeps, it measures the others, unlike the load average, which remembers our own
    last minute of work."""
    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields[:8]) - idle, sum(fields[:8])
    try:
        busy0, total0 = sample()
        time.sleep(window_s)
        busy1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return 0.0
    return round((busy1 - busy0) / max(1, total1 - total0) * (os.cpu_count() or 1), 2)


def wait_for_quiet(max_busy: float | None, max_wait_s: float = 600.0) -> dict[str, float] | None:
    """Sleep until other processes use fewer than ``max_busy`` cores (or ``max_wait_s`` passed).
    Returns what was seen: seconds waited, busy cores of the last sample and the load average."""
    if max_busy is None:
        return None
    start = time.monotonic()
    while True:
        busy = busy_cores()
        waited = time.monotonic() - start
        if busy < max_busy or waited >= max_wait_s:
            return {"waited_s": round(waited, 1), "other_busy_cores": busy, "load_1min": load()}


def machine() -> dict[str, Any]:
    """What a reader needs to compare figures: CPU, cores, threads, torch, GPU, date, load."""
    out: dict[str, Any] = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_1min_start": load(),
    }
    return out


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def rounded(value: Any, digits: int = 4) -> Any:
    """Floats inside nested dicts/lists to ``digits`` significant digits, for readable JSON."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    return value


def emit(result: dict[str, Any]) -> None:
    """Print the result as one JSON object on stdout (load at the end added)."""
    result["machine"]["load_1min_end"] = load()
    print(json.dumps(rounded(result), indent=1))
