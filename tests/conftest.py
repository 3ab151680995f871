"""Shared fixtures: real smoke runs on Fashion-MNIST, made once per test session."""

from __future__ import annotations

import os
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
    """A finished smoke run made through the command line (a separate process)."""
    run_dir = tmp_path_factory.mktemp("smoke") / "run"
    autogrow_cli("grow", "--preset", "smoke", "--run-dir", str(run_dir), check=True)
    return run_dir
