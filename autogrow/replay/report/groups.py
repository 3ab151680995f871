"""Which settings differ between runs, and runs grouped by all settings but ``seed``."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from typing import Any

import attrs

from autogrow.replay.report.summary import RunSummary

#: Config keys that say where or how a run was executed, not what was run: never a column,
#: never a reason to split a group.
VOLATILE_KEYS = frozenset({"run_dir", "data_root", "threads", "download", "snapshot_keep",
                           "snapshot_every_steps"})

MISSING = "–"  # a value a run does not have (also a single seed's std)
_ABSENT = object()  # a setting a run's config lacks


def canon(value: Any) -> str:
    """A setting's value as text, the same for equal values whatever their Python type."""
    if value is _ABSENT:
        return MISSING
    if isinstance(value, str):
        return value if value else '""'
    return json.dumps(value, sort_keys=True)


def setting(run: RunSummary, key: str) -> str:
    """``run``'s value of setting ``key`` as :func:`canon` text (:data:`MISSING` if absent)."""
    return canon(run.config.get(key, _ABSENT))


def _readable(runs: Sequence[RunSummary]) -> list[RunSummary]:
    return [r for r in runs if r.readable]


def _setting_keys(runs: Sequence[RunSummary]) -> list[str]:
    keys: set[str] = set()
    for run in runs:
        keys.update(run.config)
    return sorted(keys - VOLATILE_KEYS)


def differing_keys(runs: Sequence[RunSummary]) -> list[str]:
    """The settings whose value is not the same in every (readable) run, alphabetical with
    ``seed`` last; a key some runs lack counts as differing."""
    readable = _readable(runs)
    out = [k for k in _setting_keys(readable) if len({setting(r, k) for r in readable}) > 1]
    return sorted(out, key=lambda k: (k == "seed", k))


def shared_settings(runs: Sequence[RunSummary]) -> list[tuple[str, str]]:
    """``(key, value)`` of the settings every readable run has with the same value."""
    readable = _readable(runs)
    differ = set(differing_keys(runs))
    return [(k, setting(readable[0], k)) for k in _setting_keys(readable) if k not in differ]


@attrs.frozen
class RunGroup:
    """Runs whose settings differ only by ``seed``. ``settings`` are the group's values of the
    report's differing keys (seed excluded)."""

    index: int
    kind: str
    settings: tuple[tuple[str, str], ...]
    runs: tuple[RunSummary, ...]

    @property
    def finished(self) -> tuple[RunSummary, ...]:
        return tuple(r for r in self.runs if r.finished)

    def stat(self, name: str) -> tuple[float, float | None] | None:
        """(mean, sample std) of ``name`` (test_acc, val_acc, layers, params, flops) over the
        finished runs; the std is None for a single run, the whole result None for none."""
        values = [float(getattr(r, name)) for r in self.finished if getattr(r, name) is not None]
        if not values:
            return None
        return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)

    @property
    def seeds(self) -> list[Any]:
        return sorted((r.seed for r in self.runs), key=canon)


def group_runs(runs: Sequence[RunSummary]) -> list[RunGroup]:
    """Readable runs grouped by every setting but ``seed`` (and the volatile ones), in order of
    first appearance."""
    keys = [k for k in _setting_keys(_readable(runs)) if k != "seed"]
    shown = [k for k in differing_keys(runs) if k != "seed"]
    groups: dict[tuple[str, ...], list[RunSummary]] = {}
    for run in _readable(runs):
        groups.setdefault((run.kind, *(setting(run, k) for k in keys)), []).append(run)
    return [RunGroup(index=i + 1, kind=members[0].kind,
                     settings=tuple((k, setting(members[0], k)) for k in shown),
                     runs=tuple(members))
            for i, members in enumerate(groups.values())]
