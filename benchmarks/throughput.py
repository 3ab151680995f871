"""Training throughput of Basic3ResNet (32×32, batch 128) through the engine's Trainer, fp32 NCHW
vs the fast path, plus the cost of one growth and one snapshot as a fraction of an epoch.

For each arch (default 1-1-1, 9-9-9, 42-42-42) and device (CPU; CUDA when present) it times
``Trainer.train_epoch`` over a synthetic batch (a few steps after warm-up) in two modes:
``fp32_nchw`` (precision fp32, contiguous) and ``fast`` (``precision=auto`` + channels_last: bf16
autocast where ``autogrow.engine.device`` finds fast bf16, else fp32), one step of each in turn
so that drifts of a shared machine hit both alike. CPU runs use the engine's deterministic mode.
Then it times ``Trainer.grow`` (net.grow + optimizer rebuilt with momentum carried by name), the
first step after it, and one snapshot (``Trainer.state_tensors`` + ``SnapshotStore.put`` with
fsync into a temp dir). Fractions are of an estimated epoch of the full
Fashion-MNIST train split (``--epoch-images`` 54,000 ≈ 422 steps) at the measured images/s.

Run: ``.venv/bin/python benchmarks/throughput.py [--archs 1-1-1,9-9-9] [--steps 20,6]``
prints one JSON object.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (puts the repo root on sys.path)
import torch
from _common import emit, load, machine, median, wait_for_quiet

from autogrow.blocks import count_params
from autogrow.engine.device import resolve_execution
from autogrow.engine.trainer import Trainer
from autogrow.storage import SnapshotStore

# mode: (precision, channels_last, fill_uninitialized_memory: None = per --no-fill-uninitialized)
MODES = {
    "fp32_nchw": ("fp32", False, None),
    "fast": ("auto", True, None),
    # the engine's deterministic mode without NaN-filling new tensors (a proposed engine change)
    "fp32_nchw_nofill": ("fp32", False, False),
    "fast_nofill": ("auto", True, False),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(trainer: Trainer, x, y, steps: int, warmup: int) -> tuple[list[float], float]:
    """Per-step seconds of the Trainer's own loop (a step is the time between two batch
    requests) and the CPU seconds the process used meanwhile.

    On CUDA the device is synchronised at each step boundary, so steps are not overlapped with
    the next batch's launch (a small underestimate of throughput for tiny nets).
    """
    dev = x.device
    times: list[float] = []
    span: list[float] = []

    def batches():
        for _ in range(warmup):
            yield x, y
        sync(dev)
        t = time.perf_counter()
        span.append(time.process_time())
        for _ in range(steps):
            yield x, y
            sync(dev)
            now = time.perf_counter()
            times.append(now - t)
            t = now
        span.append(time.process_time())

    trainer.train_epoch(batches())
    return times, span[1] - span[0]


def snapshot_cost(trainer: Trainer, store: SnapshotStore, repeats: int) -> tuple[float, int]:
    """Median seconds of state_tensors + a durable put; the RNG is advanced between repeats so
    every put writes new bytes (equal content would only be read back and compared)."""
    times, size = [], 0
    for _ in range(repeats):
        torch.rand(1)
        t = time.perf_counter()
        digest = store.put(trainer.state_tensors(), {"arch": trainer.net.arch, "label": "bench"})
        times.append(time.perf_counter() - t)
        size = store.path(digest).stat().st_size
    return median(times), size


def setup(args, device: str, arch: str, mode: str):
    precision, channels_last, _ = MODES[mode]
    ex = resolve_execution(device, precision, channels_last, args.threads)
    trainer = Trainer.seeded(ex, family="basic3resnet", arch=arch, in_channels=args.in_channels,
                             num_classes=10, image_size=32, width=args.width, seed=0,
                             momentum=0.9, weight_decay=5e-4)
    trainer.set_lr(0.01)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, args.in_channels, 32, 32, generator=gen).to(ex.device)
    y = torch.randint(0, 10, (args.batch_size,), generator=gen).to(ex.device)
    if ex.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return ex, trainer, x, y


def measure_arch(args, device: str, arch: str, modes: list[str], steps: int, warmup: int,
                 tmp: Path) -> list[dict]:
    """All modes of one arch, their steps interleaved (mode A step, mode B step, ...) so that
    slow drifts of this shared machine hit every mode alike; then growth and snapshot costs."""
    if device == "cpu":
        torch.use_deterministic_algorithms(args.deterministic)  # the engine's CPU setting
    else:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = True  # the engine's CUDA setting
    runs = {m: setup(args, device, arch, m) for m in modes}
    times: dict[str, list[float]] = {m: [] for m in modes}
    cpu: dict[str, float] = dict.fromkeys(modes, 0.0)

    def fill(mode: str) -> None:
        flag = MODES[mode][2]
        torch.utils.deterministic.fill_uninitialized_memory = (
            args.fill_uninitialized if flag is None else flag)

    for m, (_, trainer, x, y) in runs.items():
        fill(m)
        time_steps(trainer, x, y, 0, warmup)
    for _ in range(steps):
        for m, (_, trainer, x, y) in runs.items():
            fill(m)
            t, c = time_steps(trainer, x, y, 1, 0)
            times[m] += t
            cpu[m] += c
    rows = []
    for m, (ex, trainer, x, y) in runs.items():
        step_s = median(times[m])
        images_per_s = args.batch_size / step_s
        epoch_s = args.epoch_images / images_per_s
        fill(m)
        grow_times = []
        for i in range(args.grow_repeats):
            sync(ex.device)
            t = time.perf_counter()
            trainer.grow(i % 3, "gau", init_seed=1000 + i)
            sync(ex.device)
            grow_times.append(time.perf_counter() - t)
        after = time_steps(trainer, x, y, 1, 0)[0][0]  # the grown net's first step
        snap_s, snap_bytes = snapshot_cost(trainer, SnapshotStore(tmp / f"{device}-{arch}-{m}"),
                                           args.snapshot_repeats)
        grow_s = median(grow_times)
        rows.append({
            "device": str(ex.device), "arch": arch, "mode": m, "precision": ex.precision,
            "channels_last": ex.channels_last, "params": count_params(trainer.net),
            # CPU seconds per wall second over the timed steps: about the thread count when the
            # machine is quiet, less when other processes take cores
            "cpu_seconds_per_wall_second": cpu[m] / sum(times[m]),
            "steps": steps, "warmup": warmup, "step_s": times[m], "step_s_median": step_s,
            "images_per_s": images_per_s, "epoch_s_est": epoch_s,
            "growth_s": grow_s, "growth_frac_epoch": grow_s / epoch_s,
            "first_step_after_growth_s": after,
            "snapshot_s": snap_s, "snapshot_frac_epoch": snap_s / epoch_s,
            "snapshot_bytes": snap_bytes,
        })
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--archs", default="1-1-1,9-9-9,42-42-42", help="comma-separated")
    ap.add_argument("--steps", default="20,6,3", help="timed steps per arch (CPU)")
    ap.add_argument("--warmup", default="3,2,1", help="untimed steps per arch (CPU)")
    ap.add_argument("--cuda-steps", type=int, default=30, help="timed steps per arch on CUDA")
    ap.add_argument("--cuda-warmup", type=int, default=10, help="untimed steps on CUDA")
    ap.add_argument("--devices", default="cpu,cuda", help="cuda is skipped when absent")
    ap.add_argument("--modes", default="fp32_nchw,fast", help=f"from {', '.join(MODES)}")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--in-channels", type=int, default=1, help="1 = Fashion-MNIST's shape")
    ap.add_argument("--threads", type=int, default=0, help="0 = torch's default")
    ap.add_argument("--no-deterministic", dest="deterministic", action="store_false",
                    help="CPU: leave torch.use_deterministic_algorithms off (the engine sets it)")
    ap.add_argument("--no-fill-uninitialized", dest="fill_uninitialized", action="store_false",
                    help="CPU: torch.utils.deterministic.fill_uninitialized_memory = False (keeps "
                    "deterministic kernels, skips NaN-filling every new tensor)")
    ap.add_argument("--epoch-images", type=int, default=54_000,
                    help="images per epoch for the fractions (Fashion-MNIST train minus 10%% val)")
    ap.add_argument("--grow-repeats", type=int, default=3, help="growths timed per mode")
    ap.add_argument("--snapshot-repeats", type=int, default=3, help="snapshots timed per mode")
    ap.add_argument("--retries", type=int, default=2,
                    help="re-measure an arch disturbed by other processes up to this many times")
    ap.add_argument("--min-cpu", type=float, default=0.9,
                    help="an arch is disturbed when a mode used less CPU per thread than this")
    ap.add_argument("--tmp-dir", default=None,
                    help="where snapshots are written (its filesystem decides the fsync cost)")
    ap.add_argument("--wait-idle", type=float, default=None, metavar="CORES",
                    help="before each measurement, wait (up to 10 min) until other processes "
                    "use fewer than CORES cores (sampled over 3 s)")
    args = ap.parse_args()
    archs = args.archs.split(",")
    steps = [int(s) for s in args.steps.split(",")]
    warmups = [int(s) for s in args.warmup.split(",")]
    if not len(archs) == len(steps) == len(warmups):
        ap.error("--archs, --steps and --warmup need the same number of entries")
    info = machine()
    notes = []
    devices = []
    for d in args.devices.split(","):
        if d == "cuda" and not torch.cuda.is_available():
            notes.append("cuda: skipped, no CUDA device available")
        else:
            devices.append(d)
    results = []
    with tempfile.TemporaryDirectory(prefix="autogrow-throughput-", dir=args.tmp_dir) as tmp:
        for device in devices:
            for arch, n, w in zip(archs, steps, warmups):
                if device == "cuda":
                    n, w = args.cuda_steps, args.cuda_warmup
                for attempt in range(1 + args.retries):
                    before = wait_for_quiet(args.wait_idle) or {"load_1min": load()}
                    rows = measure_arch(args, device, arch, args.modes.split(","), n, w,
                                        Path(tmp) / str(attempt))
                    # other processes took cores (2 threads on 2 cores: steps 10-20x slower)
                    disturbed = device == "cpu" and min(
                        r["cpu_seconds_per_wall_second"] for r in rows
                    ) < args.min_cpu * torch.get_num_threads()
                    if not disturbed:
                        break
                for r in rows:
                    r.update(before=before, attempt=attempt, disturbed=disturbed)
                    print(f"{device} {arch} {r['mode']}: {r['images_per_s']:.0f} img/s",
                          file=sys.stderr)
                results += rows
    def ratios(mode: str, base: str) -> dict:
        """images/s of ``mode`` over ``base``, by device and arch."""
        out: dict = {}
        rate = {(r["device"], r["arch"], r["mode"]): r["images_per_s"] for r in results}
        for (dev, arch, m), v in rate.items():
            if m == mode and (dev, arch, base) in rate:
                out.setdefault(dev, {})[arch] = v / rate[dev, arch, base]
        return out

    speedup = ratios("fast", "fp32_nchw")
    nofill = {f"{m}_nofill/{m}": ratios(f"{m}_nofill", m) for m in ("fp32_nchw", "fast")}
    cpu_speedups = list(speedup.get("cpu", {}).values())
    emit({
        "benchmark": "throughput",
        "command": "python benchmarks/throughput.py " + " ".join(sys.argv[1:]),
        "setup": vars(args),
        "machine": info,
        "results": results,
        "speedup_fast_vs_fp32_nchw": speedup,
        **({"speedup_nofill": nofill} if any(nofill.values()) else {}),
        "target": "CPU fast path >= 2x fp32 NCHW",
        # None: a CPU row was disturbed by other processes on every attempt
        "target_met": (None if any(r["disturbed"] for r in results) or not cpu_speedups
                       else min(cpu_speedups) >= 2.0),
        "notes": notes,
    })


if __name__ == "__main__":
    main()
