"""One run's event log folded into what the report says about it; which directories are runs."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from autogrow.arch import DEFAULT_FAMILY, format_arch, layer_count, parse_arch
from autogrow.errors import InputError
from autogrow.events import BlockAdded, CodecError, EpochCompleted, RunStarted, RunSuspended
from autogrow.policies import GrowthState, PolicyError
from autogrow.replay.projection import project
from autogrow.storage import EventLog, StorageError
from autogrow.storage.log import LOG_NAME


class ReportError(InputError):
    """A path given to ``report`` is neither a run nor a directory of runs, or the output
    directory cannot hold a report."""


@attrs.frozen
class RunSummary:
    """What the report says about one run, folded from its live events.

    ``status`` is "finished", "failed", "suspended" (stopped on request, resumable),
    "unfinished" (still running, or killed) or "unreadable" (``detail`` says why). ``arch`` is
    the found arch of a finished run, else the arch the run has reached. The accuracies,
    ``params`` and ``flops`` come from ``run_finished`` (None before it). Epoch counts and
    seconds are those of the live ``epoch_completed`` events per phase.
    """

    path: Path
    label: str
    status: str
    detail: str = ""
    kind: str = "?"
    config: Mapping[str, Any] = attrs.field(factory=dict)
    run_id: str = ""
    parent_run_id: str | None = None
    arch: str | None = None
    layers: int | None = None
    params: int | None = None
    flops: int | None = None
    val_acc: float | None = None
    test_acc: float | None = None
    grow_epochs: int = 0
    finetune_epochs: int = 0
    grow_seconds: float = 0.0
    finetune_seconds: float = 0.0

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    @property
    def readable(self) -> bool:
        return self.status != "unreadable"

    @property
    def family(self) -> str:
        return _family(self.config)

    @property
    def dataset(self) -> str:
        return str(self.config.get("dataset") or "?")

    @property
    def seed(self) -> Any:
        return self.config.get("seed")


def _family(config: Mapping[str, Any]) -> str:
    return str(config.get("family") or DEFAULT_FAMILY)


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _is_fixed_arch(config: Mapping[str, Any]) -> bool:
    """``autogrow train`` (and any run whose cap is its seed) cannot grow."""
    seed, cap = config.get("seed_arch"), config.get("max_arch")
    if not seed or not cap:
        return False
    try:
        return parse_arch(str(seed)) == parse_arch(str(cap))
    except ValueError:
        return False


def _status(events: Sequence[Any], finished: bool, failed: str | None) -> tuple[str, str]:
    """(status, detail) of a run whose live events are ``events``."""
    if finished:
        return "finished", ""
    if failed is not None:
        return "failed", failed
    if events and isinstance(events[-1], RunSuspended):
        return "suspended", f"{events[-1].describe()}; `autogrow resume` continues it"
    if not events:
        return "unfinished", "the log holds no event yet"
    return "unfinished", "running, or stopped without a final event"


def summarize_run(run_dir: Path, label: str | None = None) -> RunSummary:
    """Project one run's event log into a :class:`RunSummary` (a log that cannot be read or
    folded gives status "unreadable", not an exception, so one broken run does not sink a
    sweep's report)."""
    run_dir = Path(run_dir)
    label = run_dir.name if label is None else label
    try:
        with EventLog.open(run_dir, readonly=True) as event_log:
            records = event_log.records
        steps = list(project(records))
    except (StorageError, CodecError, PolicyError) as err:
        return RunSummary(path=run_dir, label=label, status="unreadable", detail=_one_line(err))

    events = [step.event for step in steps]
    state = steps[-1].state if steps else GrowthState()
    epochs = [ev for ev in events if isinstance(ev, EpochCompleted)]
    finished = state.result
    config = {str(k): v for k, v in state.run_config.items()}
    arch = format_arch(state.arch) if state.arch else None
    status, detail = _status(events, finished is not None, state.failure)
    try:
        layers = None if arch is None else layer_count(_family(config), arch)
    except ValueError:
        layers = None
    grew = any(isinstance(ev, BlockAdded) for ev in events)
    started = events[0] if events and isinstance(events[0], RunStarted) else None
    return RunSummary(
        path=run_dir, label=label, status=status, detail=detail,
        kind="train" if _is_fixed_arch(config) and not grew else "grow",
        config=config, run_id=state.run_id,
        parent_run_id=None if started is None else started.parent_run_id, arch=arch,
        layers=layers,
        params=None if finished is None else int(finished.params),
        flops=None if finished is None else int(finished.flops),
        val_acc=None if finished is None else float(finished.val_acc),
        test_acc=None if finished is None else float(finished.test_acc),
        grow_epochs=sum(ev.phase != "finetune" for ev in epochs),
        finetune_epochs=sum(ev.phase == "finetune" for ev in epochs),
        grow_seconds=sum((float(ev.seconds) for ev in epochs if ev.phase != "finetune"), 0.0),
        finetune_seconds=sum((float(ev.seconds) for ev in epochs if ev.phase == "finetune"), 0.0),
    )


def _runs_in(path: Path) -> list[Path]:
    """``path`` itself if it is a run, else its subdirectories that are, by name."""
    if (path / LOG_NAME).is_file():
        return [path]
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        raise ReportError(f"{path} {what}; expected a run directory or a directory of runs")
    dirs = sorted((c for c in path.iterdir() if c.is_dir() and (c / LOG_NAME).is_file()),
                  key=lambda c: c.name)
    if not dirs:
        raise ReportError(f"{path} is neither a run directory (no {LOG_NAME}) nor a "
                          f"directory of runs (no subdirectory holds one)")
    return dirs


def run_dirs(paths: Iterable[str | Path]) -> list[tuple[Path, str]]:
    """The run directories ``paths`` name, in order and each once, as ``(dir, input)``: a path
    is a run (it holds ``events.jsonl``) or a sweep (its subdirectories that hold one)."""
    found: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    for item in paths:
        for d in _runs_in(Path(item)):
            key = d.resolve()
            if key not in seen:
                seen.add(key)
                found.append((d, str(item)))
    if not found:
        raise ReportError("no run to report on; name run directories or directories of runs")
    return found


def _unique_labels(dirs: Sequence[Path]) -> list[str]:
    """Each run's directory name, lengthened by its parents where two names clash."""
    dirs = [Path(os.path.abspath(d)) for d in dirs]  # "." has a name too
    depth = [1] * len(dirs)
    while True:
        labels = ["/".join(d.parts[-k:]) for d, k in zip(dirs, depth)]
        counts = Counter(labels)
        clash = [i for i, name in enumerate(labels)
                 if counts[name] > 1 and depth[i] < len(dirs[i].parts)]
        if not clash:
            return labels
        for i in clash:
            depth[i] += 1


def collect_runs(paths: Iterable[str | Path]) -> list[RunSummary]:
    """One :class:`RunSummary` per run under ``paths`` (runs or sweeps), in report order.

    Raises :class:`ReportError` (a ValueError) for a path that is neither a run nor a directory
    of runs."""
    dirs = [d for d, _ in run_dirs(paths)]
    return [summarize_run(d, label) for d, label in zip(dirs, _unique_labels(dirs))]
