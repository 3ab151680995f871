"""Engine vs plain PyTorch: the same net, data, seed and precision trained for a few epochs by
``start_run`` (events, snapshots and policy checks on) and by a hand-written loop.

Reports per-epoch seconds of both (median of the epochs after the first), their ratio, and whether
the final weights are bit-identical (``weights_digest``) under ``torch.use_deterministic_algorithms``.
Engine epochs are timed two ways: the ``seconds`` field of ``epoch_completed`` (train + val only)
and the wall time between consecutive epoch snapshots in the log (everything the loop does for
an epoch: policy checks, events with fsync, the snapshot). Whole-run wall times are reported too.

Run: ``.venv/bin/python benchmarks/parity.py [--precisions fp32,auto] [--epochs 4] [--repeats 1]``
prints one JSON object on stdout (engine logs go to stderr).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (puts the repo root on sys.path)
import torch
import torch.nn.functional as F
from _common import emit, load, machine, median, wait_for_quiet

from autogrow.blocks import build_net, weights_digest
from autogrow.config import resolve_config
from autogrow.engine.data import eval_batches, load_dataset, train_batches
from autogrow.engine.device import resolve_execution
from autogrow.engine.run import start_run
from autogrow.policies import learning_rate
from autogrow.storage import EventLog


def make_config(args: argparse.Namespace, precision: str):
    """A fixed-arch run: seed_arch = max_arch, so the engine goes straight to E fine-tune epochs."""
    return resolve_config(None, None, dict(
        family=args.family, seed_arch=args.arch, max_arch=args.arch, finetune_epochs=args.epochs,
        width=args.width, subset=args.subset, max_val=args.max_val, max_test=args.max_test,
        batch_size=args.batch_size, lr=args.lr, seed=args.seed, device="cpu", precision=precision,
        channels_last=args.channels_last, threads=args.threads))


# -- (b) the plain loop -----------------------------------------------------------------------


def plain_run(cfg) -> dict:
    """What a user would write by hand, replicating the engine's choices exactly."""
    started = time.perf_counter()
    ex = resolve_execution(cfg.device, cfg.precision, cfg.channels_last, cfg.threads)
    torch.use_deterministic_algorithms(True)  # the engine's CPU setting (DESIGN §5)
    dev, cl, amp = ex.device, ex.channels_last, ex.amp_dtype
    data = load_dataset(cfg.dataset, data_root=cfg.data_root or None, device=dev, pad_to=32,
                        val_split=cfg.val_split, val_source=cfg.val_source, seed=cfg.seed,
                        subset=cfg.subset, max_val=cfg.max_val or None, max_test=cfg.max_test or None)
    net = build_net(cfg.family, cfg.seed_arch, in_channels=data.in_channels,
                    num_classes=data.num_classes, image_size=data.image_size, width=cfg.width,
                    generator=torch.Generator().manual_seed(cfg.seed)).to(dev)
    if cl:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)

    def autocast():
        return torch.autocast(dev.type, dtype=amp) if amp else contextlib.nullcontext()

    @torch.no_grad()
    def evaluate(split) -> float:
        net.eval()
        correct = torch.zeros((), dtype=torch.int64)
        for x, y in eval_batches(split, cfg.batch_size * 2, channels_last=cl):
            with autocast():
                logits = net(x)
            correct += (logits.argmax(1) == y).sum()
        return 100.0 * correct.item() / len(split)

    epochs, metrics = [], []
    for epoch in range(1, cfg.finetune_epochs + 1):  # the engine numbers epochs from 1
        lr = learning_rate(cfg.lr, cfg.policy, "finetune", epoch - 1, cfg.interval,
                           cfg.finetune_epochs)
        for group in opt.param_groups:
            group["lr"] = lr
        t0 = time.perf_counter()
        net.train()
        loss_sum = torch.zeros((), dtype=torch.float64)
        correct = torch.zeros((), dtype=torch.int64)
        for x, y in train_batches(data.train, seed=cfg.seed, epoch=epoch,
                                  batch_size=cfg.batch_size, channels_last=cl):
            with autocast():
                logits = net(x)
                loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach().double() * y.shape[0]
            correct += (logits.detach().argmax(1) == y).sum()
        train_loss = loss_sum.item() / len(data.train)
        val_acc = evaluate(data.val)
        epochs.append(time.perf_counter() - t0)
        metrics.append((train_loss, val_acc))
    test_acc = evaluate(data.test)
    wall = time.perf_counter() - started
    return {"epoch_s": epochs, "run_wall_s": wall, "metrics": metrics, "test_acc": test_acc,
            "digest": weights_digest(net), "precision": ex.precision, "threads": ex.threads}


# -- (a) the engine -----------------------------------------------------------------------------


def _ts(record) -> float:
    return dt.datetime.strptime(record.ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=dt.timezone.utc).timestamp()


def engine_run(cfg, run_dir: Path) -> dict:
    started_wall = time.time()
    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # structlog prints to stdout; keep the JSON clean
        result = start_run(cfg, run_dir)
    wall = time.perf_counter() - started
    records = EventLog.open(run_dir, readonly=True).records
    snaps = [r for r in records if r.type == "snapshot_written"
             and r.payload["label"] in ("start", "epoch")]
    done = [r for r in records if r.type == "epoch_completed"]
    boundaries = [_ts(r) for r in snaps]
    started_rec = next(r for r in records if r.type == "run_started")
    snapshot_bytes = (run_dir / "snapshots" / f"{snaps[-1].payload['digest']}.safetensors").stat().st_size
    return {
        "epoch_wall_s": [b - a for a, b in zip(boundaries, boundaries[1:])],
        "epoch_self_s": [r.payload["seconds"] for r in done],
        "run_wall_s": wall,
        "setup_s": _ts(started_rec) - started_wall,  # config, data load, net, log open
        "finish_s": started_wall + wall - _ts(done[-1]),  # last snapshot, test eval, run_finished
        "metrics": [(r.payload["train_loss"], r.payload["val_acc"]) for r in done],
        "test_acc": result.test_acc,
        "digest": result.weights_digest,
        "snapshot_bytes": snapshot_bytes,
        "events": len(records),
    }


def warm_up(cfg) -> None:
    """Load the data once (imports torchvision, warms the file cache) and run a few steps of the
    same net and precision, so neither contender pays the process's start-up costs."""
    ex = resolve_execution(cfg.device, cfg.precision, cfg.channels_last, cfg.threads)
    load_dataset(cfg.dataset, data_root=cfg.data_root or None, subset=cfg.subset, seed=cfg.seed)
    net = build_net(cfg.family, cfg.seed_arch, in_channels=1, num_classes=10, image_size=32,
                    width=cfg.width, generator=torch.Generator().manual_seed(0))
    if ex.channels_last:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(cfg.batch_size, 1, 32, 32)
    if ex.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (cfg.batch_size,))
    for _ in range(3):
        with ex.autocast():
            loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def compare(args: argparse.Namespace, precision: str, tmp: Path) -> dict:
    cfg = make_config(args, precision)
    warm_up(cfg)
    plain_epochs, eng_wall, eng_self, runs = [], [], [], []
    for rep in range(args.repeats):
        order = ("plain", "engine") if rep % 2 == 0 else ("engine", "plain")
        out = {}
        for who in order:
            out[who] = (plain_run(cfg) if who == "plain"
                        else engine_run(cfg, tmp / f"{precision}-{rep}"))
        e, p = out["engine"], out["plain"]
        skip = min(args.warmup_epochs, args.epochs - 1)
        plain_epochs += p["epoch_s"][skip:]
        eng_wall += e["epoch_wall_s"][skip:]
        eng_self += e["epoch_self_s"][skip:]
        runs.append({
            "order": list(order),
            "plain_epoch_s": p["epoch_s"], "engine_epoch_wall_s": e["epoch_wall_s"],
            "engine_epoch_self_s": e["epoch_self_s"],
            "plain_run_wall_s": p["run_wall_s"], "engine_run_wall_s": e["run_wall_s"],
            "engine_setup_s": e["setup_s"], "engine_finish_s": e["finish_s"],
            "bitwise_equal": e["digest"] == p["digest"],
            "metrics_equal_per_epoch": [a == b for a, b in zip(e["metrics"], p["metrics"])],
            "test_acc": {"engine": e["test_acc"], "plain": p["test_acc"]},
            "digest": {"engine": e["digest"][:16], "plain": p["digest"][:16]},
        })
    pm, ew, es = median(plain_epochs), median(eng_wall), median(eng_self)
    return {
        "precision": precision, "resolved_precision": p["precision"], "threads": p["threads"],
        "channels_last": cfg.channels_last,
        "plain_epoch_s_median": pm,
        "engine_epoch_wall_s_median": ew,
        "engine_epoch_self_s_median": es,
        "ratio_wall": ew / pm, "ratio_self": es / pm,
        "ratio_run_wall": median([r["engine_run_wall_s"] for r in runs])
        / median([r["plain_run_wall_s"] for r in runs]),
        "engine_overhead_s_per_epoch": median([w - s for w, s in zip(eng_wall, eng_self)]),
        "snapshot_bytes": e["snapshot_bytes"], "events": e["events"],
        "bitwise_equal": all(r["bitwise_equal"] for r in runs),
        "target_met": ew / pm <= 1.03 and all(r["bitwise_equal"] for r in runs),
        "runs": runs,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--family", default="basic3resnet")
    ap.add_argument("--arch", default="1-1-1", help="fixed arch (seed_arch = max_arch)")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--epochs", type=int, default=4, help="fine-tune epochs per run")
    ap.add_argument("--warmup-epochs", type=int, default=1, help="leading epochs left out of medians")
    ap.add_argument("--subset", type=float, default=0.05, help="fraction of the training split")
    ap.add_argument("--max-val", type=int, default=1000)
    ap.add_argument("--max-test", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="0 = torch's default")
    ap.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    ap.add_argument("--precisions", default="fp32,auto", help="comma-separated: fp32, bf16, auto")
    ap.add_argument("--repeats", type=int, default=1, help="engine+plain pairs per precision")
    ap.add_argument("--max-load", type=float, default=None,
                    help="wait (up to 10 min) until the 1-min load average is below this")
    args = ap.parse_args()
    waited = wait_for_quiet(args.max_load)
    info = machine()
    info["waited_for_load_s"] = waited
    results = []
    with tempfile.TemporaryDirectory(prefix="autogrow-parity-") as tmp:
        for precision in args.precisions.split(","):
            results.append(compare(args, precision.strip(), Path(tmp)))
            results[-1]["load_1min_after"] = load()
    emit({
        "benchmark": "parity",
        "command": "python benchmarks/parity.py " + " ".join(sys.argv[1:]),
        "setup": {k: v for k, v in vars(args).items() if k != "max_load"},
        "machine": info,
        "results": results,
        "target": "engine/plain <= 1.03 per epoch (wall incl. snapshots) with bitwise-equal weights",
        "all_targets_met": all(r["target_met"] for r in results),
    })


if __name__ == "__main__":
    main()
