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


def cpu_model() -> str:
    """The CPU's model name plus family/model numbers (the name alone is generic on some VMs)."""
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "cpu family", "model") and key not in info:
                info[key] = value.strip()
            if len(info) == 3:
                break
    except OSError:
        return platform.processor() or "unknown"
    return f"{info.get('model name', '?')} (family {info.get('cpu family', '?')} model {info.get('model', '?')})"


def load() -> float:
    """1-minute load average."""
    return round(os.getloadavg()[0], 2)


def wait_for_quiet(max_load: float | None, max_wait_s: float = 600.0) -> float:
    """Sleep until the 1-minute load is below ``max_load`` (or ``max_wait_s`` passed); seconds waited."""
    if max_load is None:
        return 0.0
    start = time.monotonic()
    while load() >= max_load and time.monotonic() - start < max_wait_s:
        time.sleep(5)
    return round(time.monotonic() - start, 1)


def machine() -> dict[str, Any]:
    """What a reader needs to compare a figure: CPU, cores, threads, torch, accelerators, date, load."""
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
    """Round floats inside nested dicts/lists for readable JSON."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    return value


def emit(result: dict[str, Any]) -> None:
    """Print the result as one JSON object on stdout (load at the end added)."""
    result["machine"]["load_1min_end"] = load()
    print(json.dumps(rounded(result), indent=1))
