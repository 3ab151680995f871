"""Shared fixtures: real smoke runs on Fashion-MNIST, made once per test session."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Decompressed files and the tensor cache of every load in the suite (in this process or a
#: launched one) go here, not to the user's ~/.cache/autogrow.
os.environ.setdefault("AUTOGROW_CACHE_DIR", str(REPO / ".pytest_cache" / "autogrow-data"))
#: Under pytest-xdist (`make test`: one worker per core) every process a test starts trains with
#: one CPU thread, unless the test says otherwise (--threads). A thread per core in each of
#: several processes oversubscribes the cores, and OpenMP's spin-waiting then slowed the smoke
#: run's epochs up to 5x here (docs/testing.md). Set before anything imports torch.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# -- tiers (docs/testing.md): `make test-fast` runs the fast tier, `make test` every tier ---------
#: Modules whose tests all run in this process: no training run, no autogrow process (a helper
#: process of a second or two, e.g. a second lock holder, is fine). Marked `fast`; every other
#: test is marked `process` (it trains, or starts autogrow or torchrun), torchrun ones `torchrun`.
FAST_MODULES = frozenset({
    "test_blocks", "test_channels_last_guard", "test_cli_errors", "test_compare", "test_config",
    "test_data", "test_device", "test_events", "test_export", "test_layouts", "test_log", "test_plot",
    "test_policies", "test_policy_oracle", "test_preemption_unit", "test_projection",
    "test_readme", "test_snapshots", "test_storage_messages", "test_tensor_cache", "test_trainer",
    "test_writer",
})
TORCHRUN_MODULES = frozenset({"test_distributed", "test_image_folder", "test_initializers"})
#: Fixtures that train a run (or read one trained for the session): not for the fast tier.
TRAINING_FIXTURES = frozenset({"smoke_run", "smoke_log", "log", "ddp_run"})
_refuse_processes = False  # set while a fast-tier test runs: autogrow_cli refuses


def pytest_configure(config: pytest.Config) -> None:
    for line in ("fast: runs in this process, no training run (make test-fast)",
                 "process: trains a run or starts autogrow/torchrun processes",
                 "torchrun: starts several processes with torchrun"):
        config.addinivalue_line("markers", line)


#: The modules that take longest (`--durations` of `make test`), longest first. `make test`
#: hands whole modules to its workers in collection order (`--dist loadfile
#: --no-loadscope-reorder`), so these start first and the many short modules fill in at the end;
#: xdist's own order (most tests first) left one worker alone with test_crash for minutes.
LONGEST_FIRST = ("test_image_folder", "test_distributed", "test_benchmarks", "test_crash",
                 "test_sweep", "test_recovery", "test_preemption", "test_reexecute", "test_engine",
                 "test_disk_full", "test_report", "test_slurm", "test_manifest")


def _module(item: pytest.Item) -> str:
    return item.module.__name__.rpartition(".")[2]


def _schedule_key(item: pytest.Item) -> tuple[int, int]:
    module = _module(item)
    if module in LONGEST_FIRST:
        return 0, LONGEST_FIRST.index(module)
    return (2 if module in FAST_MODULES else 1), 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_schedule_key)  # stable: each module's tests keep their order
    for item in items:
        module = _module(item)
        if module not in FAST_MODULES:
            item.add_marker(pytest.mark.process)
            if module in TORCHRUN_MODULES:
                item.add_marker(pytest.mark.torchrun)
            continue
        trains = TRAINING_FIXTURES & set(getattr(item, "fixturenames", ()))
        if trains:
            raise pytest.UsageError(f"{item.nodeid} is in the fast tier (FAST_MODULES) but uses "
                                    f"{', '.join(sorted(trains))}: move it to a process-level "
                                    "module")
        item.add_marker(pytest.mark.fast)


@pytest.fixture(autouse=True)
def _tier_guard(request: pytest.FixtureRequest):
    """A fast-tier test that starts autogrow in a process fails: the tier stays what it says."""
    global _refuse_processes
    _refuse_processes = request.node.get_closest_marker("fast") is not None
    yield
    _refuse_processes = False


def autogrow_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600,
                 check: bool = False) -> subprocess.CompletedProcess:
    """Run ``python -m autogrow ARGS`` in a fresh process, as a user would."""
    if _refuse_processes:
        raise AssertionError("a fast-tier test started autogrow in a process: move it to a "
                             "process-level module (tests/conftest.py FAST_MODULES)")
    full_env = dict(os.environ, **(env or {}))
    proc = subprocess.run([sys.executable, "-m", "autogrow", *args], capture_output=True,
                          text=True, env=full_env, timeout=timeout, cwd=REPO)
    if check and proc.returncode != 0:
        raise AssertionError(f"autogrow {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """A finished smoke run made through the command line (a separate process).

    ``AUTOGROW_TEST_SMOKE_RUN=DIR`` copies a smoke run made beforehand instead: ``make mutate``
    sets it so that each mutant's test session does not train one again (the smoke run is
    the audit's input there, not what is under test)."""
    run_dir = tmp_path_factory.mktemp("smoke") / "run"
    made = os.environ.get("AUTOGROW_TEST_SMOKE_RUN")
    if made:
        shutil.copytree(made, run_dir, ignore=shutil.ignore_patterns(".lock"))
    else:
        autogrow_cli("grow", "--preset", "smoke", "--run-dir", str(run_dir), check=True)
    return run_dir


@pytest.fixture(scope="session")
def smoke_log(smoke_run: Path) -> list:
    """The smoke run's records as (type, schema, payload), read once (tests edit deep copies)."""
    from tests.forgery import read_records
    return read_records(smoke_run)


@pytest.fixture
def log(smoke_log: list) -> list:
    """A fresh, editable copy of the smoke run's records; index i is seq i + 1 (for forgeries,
    see tests/forgery.py)."""
    return copy.deepcopy(smoke_log)


def write_image_folder(root: Path, *, classes: int = 3, train: int = 16, val: int = 6,
                       seed: int = 0) -> Path:
    """An ImageNet-layout folder ``root/{train,val}/<class>/<image>`` of small JPEGs of varied
    sizes (class-dependent colour and stripes plus noise, so a net can learn something); one
    grayscale PNG per class folder exercises the other decode paths."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for part, count in (("train", train), ("val", val)):
        for c in range(classes):
            folder = root / part / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                h, w = (int(v) for v in rng.integers(40, 160, 2))
                yy, xx = np.mgrid[0:h, 0:w]
                stripes = np.sin((xx if c % 2 else yy) / (3.0 + c)) * 60
                base = np.array([(60 + 80 * c) % 256, 128, (200 - 70 * c) % 256])
                pixels = base + stripes[..., None] + rng.normal(0, 20, (h, w, 3))
                image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
                if i == 0:
                    image.convert("L").save(folder / f"{i}.png")
                else:
                    image.save(folder / f"{i}.jpg", quality=90)
    return root
