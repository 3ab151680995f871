"""The steps of ``benchmarks/gpu_check.sh``: each subcommand runs one step and prints one JSON
object (``{"ok": bool, ...figures..., "error": "..."}``) on stdout, progress on stderr. The steps
drive the engine as a user does, ``python -m autogrow`` in separate processes (output in log
files under the work directory), and read results from the runs' event logs.

Alone: ``python benchmarks/gpu_check_steps.py STEP --help``.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import math
import os
import re
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PAUSE_MARKER = b"autogrow-test: paused"  # what AUTOGROW_TEST_PAUSE_AT_STEP prints on stderr
SMOKE = ["--preset", "smoke"]
SMOKE_BATCH, SMOKE_SUBSET, VAL_SPLIT = 64, 0.02, 0.1  # the smoke preset's (autogrow.config)
PYTHON = (sys.executable,)
TORCHRUN = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1")
Left = Callable[[], float]  # the seconds a step has left


def say(*parts: object) -> None:  # progress on stderr: stdout carries the step's JSON only
    print("gpu_check:", *parts, file=sys.stderr, flush=True)


def tail(path: Path, lines: int = 6, chars: int = 900) -> str:  # a log's end, for an error
    try:
        return "\n".join(path.read_text(errors="replace").strip().splitlines()[-lines:])[-chars:]
    except OSError:
        return ""


def time_left(seconds: float) -> Left:
    """The step's seconds left, ending up to 15 s before the shell's timeout kills it: time to
    stop its own subprocesses and say which one hung."""
    end = time.monotonic() + seconds - min(15.0, seconds / 4)
    return lambda: max(0.0, end - time.monotonic())


class StepFailed(Exception):
    """A step's check failed: the message is the JSON's ``error``."""


def guarded(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """``fn(*args)``'s figures with ``ok`` true, or ``ok`` false and the error."""
    try:
        return {"ok": True, **fn(*args)}
    except StepFailed as err:
        return {"ok": False, "error": str(err)}


def with_errors(result: dict[str, Any], errors: Sequence[str]) -> dict[str, Any]:
    return {**result, "ok": not errors, "error": "; ".join(errors)} if errors else result


# -- the engine's command line ------------------------------------------------------------------
def autogrow(args: list[str], log: Path, left: Left, launcher: Sequence[str] = PYTHON,
             env: dict[str, str] | None = None, pause_at: int = 0) -> float:
    """``launcher -m autogrow ARGS`` (the checkout first on the path) logged to ``log``; its
    seconds. A non-zero exit fails the step with the end of the log; at the step's deadline the
    command is stopped. With ``pause_at``, the engine's test hook holds the run after that
    training step, and it is SIGKILLed there."""
    what = f"autogrow {args[0]}{' under torchrun' if launcher is TORCHRUN else ''}"
    if left() <= 0:
        raise StepFailed(f"no time left in the step for {what}")
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    if pause_at:
        env["AUTOGROW_TEST_PAUSE_AT_STEP"] = str(pause_at)
    cmd = [*launcher, "-m", "autogrow", *args]
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(log, "ab") as out:
        out.write(f"$ {' '.join(cmd)}{f'  # paused at {pause_at}' if pause_at else ''}\n".encode())
        offset = out.tell()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
    while (rc := proc.poll()) is None:
        if pause_at and PAUSE_MARKER in log.read_bytes()[offset:]:
            proc.kill()
            proc.wait()
            return round(time.perf_counter() - started, 2)
        if not left():  # SIGTERM: the engine suspends (torchrun passes it on to its workers)
            proc.terminate()
            try:
                proc.wait(timeout=8)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise StepFailed(f"{what} still running at the step's deadline; stopped (log {log})")
        time.sleep(0.1)
    if rc != 0 or pause_at:
        raise StepFailed(f"{what} exited {rc}{f' before step {pause_at}' if pause_at else ''}: "
                         f"{tail(log)}")
    return round(time.perf_counter() - started, 2)


def run_result(run_dir: Path) -> dict[str, Any]:
    """A finished run's result (``run_finished``), settings (``run_started``'s versions) and,
    if it was resumed, where the last resume started."""
    from autogrow.storage import EventLog

    with EventLog.open(run_dir, readonly=True) as log:
        records = list(log.records)
    done = [r.payload for r in records if r.type == "run_finished"]
    if not done:
        raise StepFailed(f"{run_dir}: no run_finished event")
    versions = next(r.payload for r in records if r.type == "run_started")["versions"]
    out = {k: done[-1][k] for k in ("arch", "test_acc", "val_acc", "params", "weights_digest")}
    out["blocks"] = sum(int(n) for n in out["arch"].split("-"))
    out.update((k, versions.get(k)) for k in ("device", "precision", "deterministic",
                                              "processes"))
    resumes = [r.payload for r in records if r.type == "run_resumed"]
    if resumes:  # steps into the next epoch > 0: the resume started from a step snapshot
        snap = next(r.payload for r in records if r.seq == resumes[-1]["from_seq"])
        out["resumed_from"] = {"completed_epochs": snap["epoch"],
                               "step_in_next_epoch": snap["step"]}
    return out


def grow_and_verify(run_dir: Path, flags: list[str], log: Path, left: Left,
                    *launch: Any) -> dict[str, Any]:
    """One smoke run (``launch``: :func:`autogrow`'s launcher and env) and its verify."""
    seconds = autogrow(["grow", *SMOKE, "--run-dir", str(run_dir), *flags], log, left, *launch)
    verify_seconds = autogrow(["verify", str(run_dir)], log, left)
    return {**run_result(run_dir), "seconds": seconds, "verify": True,
            "verify_seconds": verify_seconds}


def flags(args: argparse.Namespace, precision: str = "fp32") -> list[str]:
    return ["--device", args.device, "--precision", precision, "--data-root", args.data_root]


# -- data ---------------------------------------------------------------------------------------
def synthetic_images(n: int, seed: int) -> tuple[bytes, bytes]:
    """``n`` learnable 28×28 uint8 images and labels in 10 classes: each class is a fixed
    pattern of Gaussian blobs, drawn at a random shift of up to ±3 px and a random contrast,
    with pixel noise; hard enough that accuracy and growth move over a few epochs."""
    import torch

    gen = torch.Generator().manual_seed(1234)  # the classes: the same for train and test
    grid = torch.stack(torch.meshgrid(torch.arange(34.0), torch.arange(34.0), indexing="ij"))
    templates = torch.zeros(10, 34, 34)
    for c in range(10):
        for _ in range(4):
            centre = 9 + 16 * torch.rand(2, 1, 1, generator=gen)
            sigma = 1.5 + 3 * torch.rand((), generator=gen)
            sign = 1.0 if torch.rand((), generator=gen) < 0.75 else -0.6
            templates[c] += sign * torch.exp(-((grid - centre) ** 2).sum(0) / (2 * sigma ** 2))
    templates = templates.clamp(0, 1)
    gen.manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=gen)
    dy, dx = torch.randint(0, 7, (2, n), generator=gen)
    rows = (dy[:, None] + torch.arange(28))[:, :, None]
    cols = (dx[:, None] + torch.arange(28))[:, None, :]
    images = templates[labels[:, None, None], rows, cols]
    images = images * (0.4 + 0.6 * torch.rand(n, 1, 1, generator=gen))
    images = images + 0.3 * torch.randn(n, 28, 28, generator=gen)
    pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    return pixels.numpy().tobytes(), labels.to(torch.uint8).numpy().tobytes()


def cmd_data(args: argparse.Namespace) -> dict[str, Any]:
    """Fashion-MNIST-format gzipped idx files (the loader's flat ``--data-root`` layout)."""
    out, started = Path(args.dir), time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", args.train, 1), ("t10k", args.test, 2)):
        images, labels = synthetic_images(n, seed)
        for name, header, body in (
                (f"{prefix}-images-idx3-ubyte", struct.pack(">IIII", 0x803, n, 28, 28), images),
                (f"{prefix}-labels-idx1-ubyte", struct.pack(">II", 0x801, n), labels)):
            with gzip.open(out / f"{name}.gz", "wb", compresslevel=1) as f:
                f.write(header + body)
    return {"ok": True, "dir": str(out), "train": args.train, "test": args.test,
            "seconds": round(time.perf_counter() - started, 2)}


# -- step 1: smoke at each precision ------------------------------------------------------------
def cmd_smoke(args: argparse.Namespace) -> dict[str, Any]:
    """The smoke preset at each precision with the engine's default kernels, and verify; each
    run's ``deterministic`` is the setting its run_started event recorded."""
    work, left, runs = Path(args.work), time_left(args.timeout), {}
    for p in args.precisions.split(","):
        if args.device == "cpu" and p == "fp16":
            runs[p] = {"ok": True, "skipped": "fp16 autocast training is not supported on CPU "
                                              "(autogrow.engine.device refuses it)"}
            continue
        runs[p] = guarded(grow_and_verify, work / "runs" / f"smoke-{p}", flags(args, p),
                          work / "logs" / f"smoke-{p}.log", left)
        say(f"smoke {p}:", json.dumps(runs[p]))
    return with_errors({"ok": True, "runs": runs},
                       [f"{p}: {r['error']}" for p, r in runs.items() if not r["ok"]])


# -- step 2: SIGKILL mid-epoch, resume, compare with an uninterrupted run -----------------------
def kill_and_resume(work: Path, name: str, grow: list[str], pause_at: int,
                    left: Left) -> dict[str, Any]:
    """Uninterrupted run vs the same command paused after step ``pause_at`` (the engine's test
    hook), SIGKILLed and relaunched with ``--resume-if-exists``: their final weights digests."""
    log = work / "logs" / f"kill_resume-{name}.log"
    whole, killed = work / "runs" / f"whole-{name}", work / "runs" / f"killed-{name}"
    whole_s = autogrow([*grow, "--run-dir", str(whole)], log, left)
    relaunch = [*grow, "--run-dir", str(killed), "--resume-if-exists"]
    autogrow(relaunch, log, left, pause_at=pause_at)
    resume_s = autogrow(relaunch, log, left)
    autogrow(["verify", str(killed)], log, left)
    a, b = run_result(whole), run_result(killed)
    if "resumed_from" not in b:
        raise StepFailed(f"{killed}: the relaunch logged no run_resumed")
    return {"equal": a["weights_digest"] == b["weights_digest"],
            "digest_uninterrupted": a["weights_digest"], "digest_resumed": b["weights_digest"],
            "deterministic": b["deterministic"], "killed_after_step": pause_at,
            "resumed_from": b["resumed_from"], "verify": True, "uninterrupted_s": whole_s,
            "resume_s": resume_s}


def cmd_kill_resume(args: argparse.Namespace) -> dict[str, Any]:
    """Two variants: ``deterministic`` (the engine's default: the digests must be equal, which
    is what ``ok`` says) and ``autotuned`` (``--no-deterministic``: cuDNN autotuning on CUDA,
    where they may differ; reported as ``autotuned_equal``, not judged)."""
    work, left = Path(args.work), time_left(args.timeout)
    images = args.train_images  # the smoke preset's steps per epoch, as its splits round them
    per_epoch = math.ceil(round((images - round(VAL_SPLIT * images)) * SMOKE_SUBSET) / SMOKE_BATCH)
    # Killed in the middle of epoch 2, one step after a step snapshot: the resume starts mid-epoch.
    every = max(1, per_epoch // 2)
    grow = ["grow", *SMOKE, *flags(args), "--snapshot-every-steps", str(every)]
    variants = {name: guarded(kill_and_resume, work, name, [*grow, *extra],
                              per_epoch + every + 1, left)
                for name, extra in (("deterministic", []), ("autotuned", ["--no-deterministic"]))}
    say("kill_resume:", json.dumps(variants))
    det = variants["deterministic"]
    errors = [f"{n}: {v['error']}" for n, v in variants.items() if not v["ok"]]
    if det["ok"] and not det["equal"]:
        errors.append("deterministic: the resumed run's weights differ from the uninterrupted's")
    return with_errors({
        "ok": True, "equal": det.get("equal", False),
        "digest_uninterrupted": det.get("digest_uninterrupted"),
        "digest_resumed": det.get("digest_resumed"),
        "autotuned_equal": variants["autotuned"].get("equal"), "steps_per_epoch": per_epoch,
        "snapshot_every_steps": every, "variants": variants}, errors)


# -- step 3: the engine's Trainer against a plain PyTorch loop ----------------------------------
def cmd_engine_vs_plain(args: argparse.Namespace) -> dict[str, Any]:
    """images/s of ``Trainer.train_epoch`` and of a hand-written loop over a copy of its net
    (same precision, memory format, SGD settings; CIFAR-shaped random batches on the device),
    rounds interleaved, with deterministic kernels (the engine's default) and autotuned."""
    import copy

    import torch
    import torch.nn.functional as F

    from autogrow.engine.device import make_deterministic, resolve_execution
    from autogrow.engine.trainer import Trainer

    rows = []
    for deterministic in (True, False):  # first True: cuBLAS reads its workspace setting once
        ex = resolve_execution(args.device, "auto", True, 0, deterministic)
        make_deterministic(ex)  # the engine's kernel settings, for both loops
        dev = ex.device
        sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
        gen = torch.Generator().manual_seed(0)
        pool = [(torch.randn(args.batch_size, 3, 32, 32, generator=gen).to(dev)
                 .contiguous(memory_format=torch.channels_last),
                 torch.randint(0, 10, (args.batch_size,), generator=gen).to(dev))
                for _ in range(8)]
        for arch in args.archs.split(","):
            trainer = Trainer.seeded(ex, family="basic3resnet", arch=arch, in_channels=3,
                                     num_classes=10, image_size=32, width=1.0, seed=0,
                                     momentum=0.9, weight_decay=5e-4)
            trainer.set_lr(0.01)
            net = copy.deepcopy(trainer.net).train()  # on the device, channels_last
            opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
            scaler = torch.amp.GradScaler(dev.type, enabled=ex.precision == "fp16")

            def plain(n: int) -> None:
                loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
                correct = torch.zeros((), dtype=torch.int64, device=dev)
                for i in range(n):
                    x, y = pool[i % len(pool)]
                    with ex.autocast():
                        logits = net(x)
                        loss = F.cross_entropy(logits, y)
                    opt.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                    loss_sum += loss.detach().double() * y.shape[0]
                    correct += (logits.detach().argmax(1) == y).sum()
                (loss_sum + correct).item()  # the engine's one host sync per epoch

            def engine(n: int) -> None:
                trainer.train_epoch(pool[i % len(pool)] for i in range(n))

            engine(args.warmup)
            plain(args.warmup)
            rates: dict[str, list[float]] = {"engine": [], "plain": []}
            for _ in range(args.rounds):
                for name, fn in (("plain", plain), ("engine", engine)):
                    sync()
                    t = time.perf_counter()
                    fn(args.steps)
                    sync()
                    rates[name].append(args.steps * args.batch_size / (time.perf_counter() - t))
            e, p = statistics.median(rates["engine"]), statistics.median(rates["plain"])
            rows.append({"arch": arch, "deterministic": deterministic,
                         "engine_images_per_s": round(e, 1), "plain_images_per_s": round(p, 1),
                         "ratio_engine_over_plain": round(e / p, 4),
                         "rounds": {k: [round(v, 1) for v in vs] for k, vs in rates.items()}})
            say("engine_vs_plain:", json.dumps(rows[-1]))
    ok = all(r["engine_images_per_s"] > 0 and r["plain_images_per_s"] > 0 for r in rows)
    return {"ok": ok, "device": str(dev), "precision": ex.precision, "channels_last": True,
            "batch_size": args.batch_size, "steps_per_round": args.steps,
            "warmup_steps": args.warmup, "results": rows}


# -- step 4: the input pipeline benchmark -------------------------------------------------------
def cmd_input_pipeline(args: argparse.Namespace) -> dict[str, Any]:
    """``benchmarks/input_pipeline.py`` (other flags are passed on to it); its JSON embedded.
    First, whether TorchCodec imports and decodes a JPEG here: without it the engine decodes
    with PIL (the same pixels, slower: :mod:`autogrow.engine.data.decode`), so the step runs
    either way and says which decoder the engine used (``decoder``) and why not TorchCodec."""
    try:
        import torch
        from PIL import Image
        from torchcodec import __version__
        from torchcodec.decoders import ImageReadMode, decode_image

        jpeg = io.BytesIO()
        Image.new("RGB", (24, 16), (200, 30, 90)).save(jpeg, "JPEG")
        data = torch.frombuffer(bytearray(jpeg.getvalue()), dtype=torch.uint8)
        shape = tuple(decode_image(data, mode=ImageReadMode.RGB).shape)
        if shape[-3:] != (3, 16, 24):
            raise RuntimeError(f"a 3x16x24 JPEG decoded to shape {shape}")
        codec: dict[str, Any] = {"ok": True, "version": __version__}
    except Exception as err:  # noqa: BLE001 - ImportError, or a native library that won't load
        codec = {"ok": False, "error": f"{type(err).__name__}: {str(err).strip()[:300]}",
                 "effect": "the engine decodes with PIL: the same pixels, about 40 % slower; "
                           "carry a torchcodec wheel built for this torch in .whl/ "
                           "(gpu_check.sh --help) to time TorchCodec"}
    script = ROOT / "benchmarks" / "input_pipeline.py"
    cmd = [sys.executable, str(script), "--device", args.device, *args.extra]
    say("input_pipeline:", " ".join(cmd[1:]))
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                              timeout=time_left(args.timeout)())
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": "input_pipeline.py still running at the step's deadline"}
    sys.stderr.write(proc.stderr[-4000:])
    if proc.returncode != 0:
        return {"ok": False, "error": f"exit {proc.returncode}: {proc.stderr.strip()[-900:]}"}
    try:
        result, _ = json.JSONDecoder().raw_decode(proc.stdout[max(proc.stdout.find("{"), 0):])
    except ValueError:
        return {"ok": False, "error": f"no JSON object on stdout: {proc.stdout[-300:]!r}"}
    return {"ok": True, "torchcodec": codec, "decoder": result.get("engine_decoder"),
            "result": result,
            "command": " ".join(["python", str(script.relative_to(ROOT)), *cmd[2:]])}


# -- step 5: torchrun -------------------------------------------------------------------------
def cmd_torchrun(args: argparse.Namespace) -> dict[str, Any]:
    """The smoke preset (fp32) under a 1-process torchrun, and verify: the engine starts a process
    group even so (NCCL on CUDA, gloo on CPU) and trains through DDP, whose backend and world
    size its log shows; final weights compared with the smoke step's single-process fp32 run."""
    work, log = Path(args.work), Path(args.work) / "logs" / "torchrun.log"
    env = {"TORCH_DISTRIBUTED_DEBUG": "INFO", "TORCH_CPP_LOG_LEVEL": "INFO"}
    run = guarded(grow_and_verify, work / "runs" / "torchrun", flags(args), log,
                  time_left(args.timeout), TORCHRUN, env)
    text = log.read_text(errors="replace") if log.exists() else ""
    backends = re.findall(r"^(?:\[rank\d+\]:)?backend_name: (\w+)", text, re.M)
    worlds = re.findall(r"^(?:\[rank\d+\]:)?world_size: (\d+)", text, re.M)
    ddp = {"backend": ",".join(sorted(set(backends))), "constructions": len(backends),
           "world_size": int(worlds[0]) if worlds else None} if backends else None
    try:
        same = run_result(work / "runs" / "smoke-fp32")["weights_digest"] == run["weights_digest"]
    except Exception:  # noqa: BLE001 - this run or the smoke run to compare with failed
        same = None
    ddp = ddp or "no DDP line in the log: no process group, or this torch logs it otherwise"
    return {"ok": run["ok"], "grow": run, "ddp": ddp, "equals_single_process_digest": same,
            **({} if run["ok"] else {"error": run["error"]})}


# -- environment and summary --------------------------------------------------------------------
def cmd_missing_deps(_: argparse.Namespace) -> None:
    """The project's requirements (pyproject.toml) this interpreter lacks, one per line, and
    its ``torchcodec`` extra (the faster decoder, timed by input_pipeline) (read with a pattern:
    ``tomllib`` needs Python 3.11, the project supports 3.10)."""
    from importlib import metadata

    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M)
    extra = re.search(r"^torchcodec = \[(.*?)\]", text, re.S | re.M)
    listed = "".join(m.group(1) + "\n" for m in (block, extra) if m)
    for req in re.findall(r'^\s*"([^"]+)"', listed, re.M):
        name = re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0]
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            print(name)


def step_result(work: Path, name: str) -> dict[str, Any]:
    """A step's JSON, completed with the shell's view of it (exit code, seconds, timeout)."""
    meta = json.loads((work / "steps" / f"{name}.meta").read_text())
    try:
        result = dict(json.loads((work / "steps" / f"{name}.json").read_text()))
    except (OSError, ValueError, TypeError):
        result = {"ok": False}
    log = work / "logs" / f"{name}.log"
    if meta.get("skipped"):
        result = {"ok": False, "error": meta["skipped"]}
    elif meta["rc"] in (124, 137):
        result.update(ok=False, error=f"timed out after {meta['timeout']} s; {tail(log, 3)}")
    elif meta["rc"] != 0 and "error" not in result:
        result.update(ok=False, error=f"exit {meta['rc']}: {tail(log)}")
    elif not result.get("ok") and "error" not in result:
        result["error"] = "a check failed: see the step's figures"
    result["seconds"] = meta["seconds"]
    return {"ok": bool(result.pop("ok", False)), **result}


def cmd_summary(args: argparse.Namespace) -> int:
    """All steps' results, and what a reader needs to compare figures: card, torch, cores."""
    info: dict[str, Any] = {"date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            "cores": os.cpu_count(), "python": sys.executable,
                            "cublas_workspace_config_preset":
                                os.environ.get("CUBLAS_WORKSPACE_CONFIG")}
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                        cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    except Exception as err:  # noqa: BLE001 - the summary must still be printed
        info["torch_error"] = f"{type(err).__name__}: {err}"
    work = Path(args.work)
    steps = {name: step_result(work, name) for name in args.steps.split(",")}
    summary = {"check": "gpu_check", "ok": all(s["ok"] for s in steps.values()),
               "device": args.device, "budget_s": args.budget,
               "total_seconds": round(time.time() - args.started, 1),
               "failed": [n for n, s in steps.items() if not s["ok"]],
               "machine": info, "installed_into_work_dir": [
                   n for n in args.installed.split() if n not in args.missing.split()],
               "requirements_not_installed": args.missing.split(),
               "work_dir": str(work), "steps": steps}
    text = json.dumps(summary, indent=1)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0 if summary["ok"] else 1


# -- command line -------------------------------------------------------------------------------

WORK, DATA = {"work": str}, {"work": str, "data_root": str}  # required options (no default)
STEPS: dict[str, tuple[Callable[[argparse.Namespace], Any], dict[str, Any]]] = {
    "data": (cmd_data, {"dir": str, "train": 60000, "test": 10000}),
    "smoke": (cmd_smoke, {**DATA, "precisions": "fp32,bf16,fp16"}),
    "kill_resume": (cmd_kill_resume, {**DATA, "train_images": int}),
    "engine_vs_plain": (cmd_engine_vs_plain, {"archs": "3-3-3,18-18-18", "batch_size": 128,
                                              "steps": 30, "warmup": 10, "rounds": 3}),
    "input_pipeline": (cmd_input_pipeline, {}),  # its other flags go to input_pipeline.py
    "torchrun_nccl": (cmd_torchrun, DATA),
    "missing-deps": (cmd_missing_deps, {}),
    "summary": (cmd_summary, {**WORK, "steps": str, "budget": float, "started": float,
                              "installed": "", "missing": "", "out": ""}),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="step", required=True)
    for name, (fn, options) in STEPS.items():
        p = sub.add_parser(name, help=(fn.__doc__ or "").split("\n\n")[0])
        p.set_defaults(fn=fn)
        p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
        p.add_argument("--timeout", type=float, default=600.0,
                       help="seconds the step has (the shell kills it then)")
        for key, default in options.items():  # a type: required; a value: its default
            flag, required = "--" + key.replace("_", "-"), isinstance(default, type)
            p.add_argument(flag, required=required, type=default if required else type(default),
                           default=None if required else default)
    args, args.extra = ap.parse_known_args(sys.argv[1:] if argv is None else argv)
    if args.extra and args.step != "input_pipeline":
        ap.error(f"unrecognized arguments: {' '.join(args.extra)}")
    result = args.fn(args)
    if isinstance(result, dict):  # a step's figures
        print(json.dumps(result))
        return 0
    return result or 0  # summary: 1 when a step failed


if __name__ == "__main__":
    sys.exit(main())
