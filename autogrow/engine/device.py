"""Where and how the math runs: device, precision (autocast), determinism and CPU threads.

``auto`` picks the fastest safe choice measured for the device (DESIGN §6, benchmarks/RESULTS.md):
on CPU, bf16 autocast with channels_last when the CPU has native bf16 support, else fp32; on
CUDA, bf16 where supported, else fp16 with a grad scaler.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys

import attrs
import torch

from autogrow.errors import UserError


class DeviceError(UserError, RuntimeError):
    """The requested device or precision is not available here."""


@attrs.frozen
class Execution:
    """The resolved execution settings of a run (recorded in its log)."""

    device: torch.device
    precision: str  # fp32 | bf16 | fp16
    channels_last: bool
    threads: int
    deterministic: bool = True

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast for forward passes at the run's precision (a no-op in fp32)."""
        dtype = self.amp_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def describe(self) -> dict[str, object]:
        return {"device": str(self.device), "precision": self.precision,
                "channels_last": self.channels_last, "threads": self.threads,
                "deterministic": self.deterministic}


def hardware(execution: Execution) -> dict[str, str]:
    """What the arithmetic ran on, as recorded in ``run_started``: the CPU model and the kernel
    set torch dispatches to on it (AVX2, AVX512, ...), and the GPU when there is one. Same
    values (and torch version) = same machine class, where the audit's re-execution must be
    exact."""
    described = {"cpu": cpu_model(), "cpu_capability": str(torch.backends.cpu.get_cpu_capability())}
    if execution.device.type == "cuda":
        described["gpu"] = torch.cuda.get_device_name(execution.device)
    return described


def cpu_model() -> str:
    """The CPU's model name plus family/model numbers (the name alone is generic on some VMs,
    e.g. "Intel(R) Xeon(R) Processor")."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as lines:
            for line in lines:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "cpu family", "model") and key not in info:
                    info[key] = value.strip()
                if len(info) == 3:
                    break
    except OSError:
        return platform.processor() or platform.machine() or "unknown"
    name, family, model = (info.get(k, "?") for k in ("model name", "cpu family", "model"))
    return f"{name} (family {family} model {model})"


def _cpu_has_fast_bf16() -> bool:
    """Native bf16 (AVX512-BF16 or AMX). AVX512 alone only emulates bf16, slower than fp32."""
    checks = (getattr(torch.cpu, "_is_avx512_bf16_supported", None),
              getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(bool(check()) for check in checks if check is not None)


def resolve_execution(device: str, precision: str, channels_last: bool, threads: int,
                      deterministic: bool = True) -> Execution:
    """Turn the config's ``device``/``precision``/``threads`` into concrete settings."""
    if device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif device == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError("device='cuda' was asked for but no CUDA device is available; "
                              "use device='cpu' or 'auto'",
                              cli="--device cuda was asked for but no CUDA device is available; "
                                  "use --device cpu or auto")
        dev = torch.device("cuda")
    else:
        dev = torch.device(device)
    if precision == "auto":
        if dev.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "bf16" if _cpu_has_fast_bf16() else "fp32"
    if precision == "fp16" and dev.type == "cpu":
        raise DeviceError("fp16 autocast is not supported for training on CPU; use bf16 or fp32")
    if threads > 0:
        torch.set_num_threads(threads)
    return Execution(device=dev, precision=precision, channels_last=channels_last,
                     threads=torch.get_num_threads(), deterministic=deterministic)


def _set_deterministic_algorithms(mode: bool) -> None:
    """``torch.use_deterministic_algorithms(mode)`` without its import of TorchInductor.

    The public call imports ``torch._inductor`` (and with it Dynamo, SymPy, FSDP) only to set
    ``torch._inductor.config.deterministic``, which matters to ``torch.compile`` alone, which the
    engine never uses (about 1 s here, part of it Dynamo, which PyTorch's optimizers import
    later anyway: benchmarks/RESULTS.md §11). Where Inductor is already loaded (a user's program
    that compiles) its setting is kept in step as the public call would."""
    torch._C._set_deterministic_algorithms(mode)
    inductor = sys.modules.get("torch._inductor.config")
    if inductor is not None:
        inductor.deterministic = mode


def make_deterministic(execution: Execution) -> None:
    """Bit-reproducible kernels, which exact resume and the audit rely on (DESIGN §5): on CPU
    they cost nothing measurable; on CUDA they turn cuDNN autotuning off and pick deterministic
    (sometimes slower) kernels, and cuBLAS gets a fixed workspace. ``deterministic=False``
    (CUDA speed first) autotunes instead: a resumed run is then close to, not equal to, an
    uninterrupted one."""
    _set_deterministic_algorithms(execution.deterministic)
    # Deterministic mode also NaN-fills every new tensor, a debugging aid that cost 7–9 % of
    # CPU throughput with identical results (benchmarks/RESULTS.md).
    torch.utils.deterministic.fill_uninitialized_memory = False
    if execution.device.type == "cuda":
        if execution.deterministic:
            # read when cuBLAS starts: before the first matmul on the device
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = execution.deterministic
        torch.backends.cudnn.benchmark = not execution.deterministic
        # fp32 means IEEE fp32: PyTorch lets cuDNN run fp32 convolutions in TF32 on Ampere and
        # later, which the AutoGrow authors' GPUs never did; the mixed precisions may use it.
        torch.backends.cudnn.allow_tf32 = execution.precision != "fp32"
