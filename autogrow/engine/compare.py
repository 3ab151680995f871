"""How ``verify --reexecute`` compares what it re-executed with what the run logged.

Runs are deterministic on one machine class (bit-exact resume), so there the standard is
equality. On another machine class (the run's recorded torch version, CPU or GPU differ) the
arithmetic differs in its last bits and grows over an epoch, so the tolerant standard applies
(:data:`TOLERANCES`) and the differences are reported. Kept apart from the re-execution itself
(:mod:`autogrow.engine.reexecute`) so that its verdicts can be tested, and mutation-tested,
with numbers and tensors, without training.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import torch

from autogrow.engine import steps
from autogrow.engine.distributed import SINGLE, Dist, broadcast_json
from autogrow.engine.trainer import EVAL_BUFFERS, Trainer
from autogrow.errors import InputError
from autogrow.storage import SnapshotStore
from autogrow.storage.snapshots import snapshot_bytes

if TYPE_CHECKING:
    from autogrow.engine.reexecute import Snap

STANDARDS = ("auto", "exact", "tolerant")

# The tolerant standard (another machine class): what one re-executed epoch may differ by.
TOLERANCES = {
    "acc_points": 1.0,    # train/val/test accuracy, percentage points
    "loss_rel": 0.02,     # train/val loss, relative to the logged value
    "weight_rel": 0.05,   # each tensor: max |re-executed − stored| ≤ this × max |stored|
}

# Recorded in run_started.versions: equal values = the same arithmetic.
MACHINE_CLASS = ("torch", "device", "cpu", "cpu_capability", "gpu")


@attrs.frozen
class Row:
    """One comparison: ``what`` was compared for ``epoch`` (the record at ``seq``)."""

    epoch: str
    seq: int
    what: str
    ok: bool
    detail: str
    compared: bool = True  # False: listed only (the snapshot is pruned)


def machine_class(versions: Mapping[str, Any]) -> dict[str, str]:
    """The recorded values that decide the arithmetic (device by kind: "cuda", "cpu")."""
    out = {key: str(versions[key]) for key in MACHINE_CLASS if key in versions}
    if "device" in out:
        out["device"] = out["device"].split(":")[0]
    return out


def choose_standard(requested: str, run_versions: Mapping[str, Any],
                    here: Mapping[str, Any]) -> tuple[str, str]:
    """(standard, why): ``auto`` is exact on the run's machine class, tolerant elsewhere."""
    if requested not in STANDARDS:
        raise InputError(f"--standard {requested!r}: expected one of {', '.join(STANDARDS)}")
    theirs, ours = machine_class(run_versions), machine_class(here)
    if "cpu" not in theirs:
        same, why = True, "the run does not record its hardware (an older run): assumed this one"
    else:
        differ = [k for k in MACHINE_CLASS if theirs.get(k) != ours.get(k)]
        same = not differ
        why = ("same machine class as the run (" + ", ".join(f"{k} {ours[k]}" for k in ours) + ")"
               if same else "another machine class: " + "; ".join(
                   f"{k} {theirs.get(k, '-')} (run) vs {ours.get(k, '-')} (here)" for k in differ))
    if requested == "auto":
        return ("exact" if same else "tolerant"), why
    return requested, f"asked for; {why}"


def legacy_evaluations(versions: Mapping[str, Any]) -> str:
    """Why a run's logged evaluations cannot be reproduced exactly ("" when they can): a run of
    several processes made before every evaluation used rank 0's buffers evaluated each rank's
    shard with that rank's own BatchNorm statistics, which no snapshot holds."""
    processes = int(versions.get("processes", 1))
    if processes == 1 or versions.get("eval_buffers") == EVAL_BUFFERS:
        return ""
    return (f"the run was made by {processes} processes before every evaluation used rank 0's "
            "BatchNorm statistics on every rank, so each rank evaluated its share with its own "
            "statistics, which no snapshot holds")


class Mismatch(Exception):
    """Raised by :class:`Comparer` at the first mismatch when asked to stop there."""


class Comparer:
    """Compares re-executed values with logged ones under one standard and collects rows."""

    def __init__(self, standard: str, on_row: Callable[[Row], None] | None,
                 stop_at_first: bool, group: Dist = SINGLE, *,
                 eval_standard: str | None = None) -> None:
        self.group = group
        self.standard = standard
        # for evaluations (validation, test): tolerant for runs whose evaluations no snapshot
        # can reproduce (see legacy_evaluations), else the standard
        self.eval_standard = eval_standard or standard
        self.on_row = on_row
        self.stop_at_first = stop_at_first
        self.rows: list[Row] = []

    def row(self, epoch: str, seq: int, what: str, ok: bool, detail: str,
            compared: bool = True) -> None:
        """Record rank 0's verdict on every rank: the run's snapshots hold rank 0's tensors (the
        others' BatchNorm running statistics are of their own shares), and all ranks must stop
        together."""
        if self.group.enabled:
            ok, detail = broadcast_json(self.group, [ok, detail] if self.group.is_main else None)
        row = Row(epoch, seq, what, ok, detail, compared)
        self.rows.append(row)
        if self.on_row is not None:
            self.on_row(row)
        if not ok and self.stop_at_first:
            raise Mismatch(row)

    def metrics(self, epoch: str, seq: int, what: str, redone: tuple[float, float],
                logged: tuple[float, float], origin: str, evaluation: bool = False) -> None:
        """(loss, accuracy) pairs, re-executed from the snapshot ``origin`` names; an
        ``evaluation``'s under the evaluations' standard."""
        (loss, acc), (logged_loss, logged_acc) = redone, logged
        if (self.eval_standard if evaluation else self.standard) == "exact":
            ok = loss == logged_loss and acc == logged_acc
            detail = "equal" if ok else (f"re-executed {origin}: loss {loss!r} acc {acc!r}; "
                                         f"logged loss {logged_loss!r} acc {logged_acc!r}")
        else:
            d_loss = abs(loss - logged_loss) / max(abs(logged_loss), 1e-12)
            d_acc = abs(acc - logged_acc)
            ok = d_loss <= TOLERANCES["loss_rel"] and d_acc <= TOLERANCES["acc_points"]
            detail = f"loss differs by {d_loss:.2%}, acc by {d_acc:.2f} points ({origin})"
        self.row(epoch, seq, what, ok, detail)

    def accuracy(self, epoch: str, seq: int, what: str, redone: float, logged: float) -> None:
        """A final test accuracy (an evaluation) of a run that logged no test loss."""
        if self.eval_standard == "exact":
            ok = redone == logged
            detail = "equal" if ok else f"re-executed {redone!r}, logged {logged!r}"
        else:
            ok = abs(redone - logged) <= TOLERANCES["acc_points"]
            detail = f"differs by {abs(redone - logged):.2f} points"
        self.row(epoch, seq, what, ok, detail)

    def snapshot(self, epoch: str, snap: Snap | None, trainer: Trainer, store: SnapshotStore,
                 arch: str, what: str = "epoch snapshot") -> None:
        """The re-executed tensors of a net of ``arch`` (as logged) against the snapshot ``snap``
        names: its digest (exact) or the largest relative difference per tensor (tolerant). A
        pruned one is listed, not compared (the metrics were)."""
        if snap is None or not snap.kept:
            if snap is not None:
                self.row(epoch, snap.seq, what, True, "not kept (pruned by retention)",
                         compared=False)
            return
        ev = snap.event
        tensors = trainer.state_tensors()
        if self.standard == "exact":
            meta = steps.snapshot_metadata(trainer, arch, ev.epoch, ev.step, ev.label)
            ok = _sha256(snapshot_bytes(tensors, meta)) == ev.digest
            detail = "digest equal" if ok else "digest differs (" + _describe_difference(
                tensors, store.get(ev.digest).tensors) + ")"
        else:
            worst, name = _largest_difference(tensors, store.get(ev.digest).tensors)
            ok = worst <= TOLERANCES["weight_rel"]
            detail = f"largest difference {worst:.2e} of the tensor's scale ({name})"
        self.row(epoch, snap.seq, what, ok, detail)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _largest_difference(redone: Mapping[str, torch.Tensor],
                        stored: Mapping[str, torch.Tensor]) -> tuple[float, str]:
    """(max |a − b| / max |b| over tensors, its name); inf when names, shapes or dtypes differ."""
    if set(redone) != set(stored):
        extra = sorted(set(redone) ^ set(stored))
        return float("inf"), f"tensors differ: {', '.join(extra[:3])}"
    worst, name = 0.0, "none"
    for key, a in redone.items():
        b = stored[key]
        if a.shape != b.shape or a.dtype != b.dtype:
            return float("inf"), f"{key}: {tuple(a.shape)} {a.dtype} vs {tuple(b.shape)} {b.dtype}"
        a64, b64 = a.detach().cpu().double(), b.double()
        scale = b64.abs().max().item() if b64.numel() else 0.0
        diff = (a64 - b64).abs().max().item() if b64.numel() else 0.0
        rel = diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))
        if rel > worst:
            worst, name = rel, key
    return worst, name


def _describe_difference(redone: Mapping[str, torch.Tensor],
                         stored: Mapping[str, torch.Tensor]) -> str:
    worst, name = _largest_difference(redone, stored)
    if worst == 0.0:
        return "the tensors are equal, the metadata is not"
    return f"largest difference {worst:.2e} of the tensor's scale, in {name}"


TABLE_HEADER = f"{'epoch':>6}  {'seq':>5}  {'compared':<34}  result"


def format_row(row: Row) -> str:
    """One row of the table under :data:`TABLE_HEADER`."""
    verdict = "not compared" if not row.compared else "ok" if row.ok else "MISMATCH"
    return f"{row.epoch:>6}  {row.seq:>5}  {row.what:<34}  {verdict}: {row.detail}"
