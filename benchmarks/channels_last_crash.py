"""Probe PyTorch's CPU failures in 1x1 stride-2 convs in channels_last, and the guard.

For each (input channels, input size) it trains a 1x1 stride-2 conv (out = 2 x in, batch 8,
300 steps of forward + backward) in a fresh process, ``--repeats`` times, once as a plain
``nn.Conv2d`` and once as the project's ``StridedPointwiseConv``, and counts the runs that died
(SIGSEGV/SIGABRT: the corruption is not certain to strike in every run) or hung (no end within
``--hang-after`` seconds: seen with two threads on an AMD EPYC). Prints JSON.

    .venv/bin/python benchmarks/channels_last_crash.py --repeats 2

``--shapes 2x40 --steps 5 --repeats 1`` is the test suite's tiny run (tests/test_benchmarks.py).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from autogrow.engine.device import cpu_model

REPO = Path(__file__).resolve().parents[1]
SHAPES = [(2, 8), (4, 28), (6, 14), (2, 56), (4, 32), (4, 44), (4, 56), (8, 48), (8, 112),
          (12, 56), (12, 112), (15, 112), (16, 112), (24, 56)]

PROBE = """
import sys, torch
from torch import nn
from autogrow.blocks.layers import conv1x1
c, size, kind, steps = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
torch.manual_seed(0)
conv = (conv1x1(c, 2 * c, 2) if kind == "guarded"
        else nn.Conv2d(c, 2 * c, 1, stride=2, bias=False)).to(memory_format=torch.channels_last)
for _ in range(steps):
    conv(torch.randn(8, c, size, size).contiguous(memory_format=torch.channels_last)).sum().backward()
"""


def failures(channels: int, size: int, kind: str, repeats: int, steps: int,
             hang_after: float) -> tuple[int, int]:
    """(runs of the probe that died, runs that hung); each in a fresh process, as the
    corruption kills it."""
    died = hung = 0
    for _ in range(repeats):
        try:
            proc = subprocess.run([sys.executable, "-c", PROBE, str(channels), str(size), kind,
                                   str(steps)], capture_output=True, cwd=REPO, timeout=hang_after)
            died += proc.returncode != 0
        except subprocess.TimeoutExpired:  # subprocess.run has killed it
            hung += 1
    return died, hung


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """``4x32,8x48`` -> [(4, 32), (8, 48)]: input channels x input side."""
    try:
        return [(int(c), int(s)) for c, s in (part.split("x") for part in text.split(","))]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CHANNELSxSIZE,..., got {text!r}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--shapes", type=parse_shapes, default=SHAPES,
                        help="CHANNELSxSIZE,... (default: the 14 shapes of RESULTS.md §6)")
    parser.add_argument("--steps", type=int, default=300, help="forward + backward per run")
    parser.add_argument("--hang-after", type=float, default=120.0,
                        help="seconds after which a run counts as hung and is killed")
    args = parser.parse_args()
    rows = []
    for channels, size in args.shapes:
        row = {"in_channels": channels, "size": size, "runs": args.repeats}
        for kind in ("plain", "guarded"):
            row[f"{kind}_crashed"], row[f"{kind}_hung"] = failures(
                channels, size, kind, args.repeats, args.steps, args.hang_after)
        rows.append(row)
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"benchmark": "channels_last_crash", "steps": args.steps,
                      "date": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()),
                      "torch": torch.__version__, "cpu": cpu_model(),
                      "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                      "threads": torch.get_num_threads(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
