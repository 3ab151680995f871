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


def autogrow_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600,
                 check: bool = False) -> subprocess.CompletedProcess:
    """Run ``python -m autogrow ARGS`` in a fresh process, as a user would."""
    full_env = dict(os.environ, **(env or {}))
    full_env.setdefault("AUTOGROW_CACHE_DIR", str(REPO / ".pytest_cache" / "autogrow-data"))
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
