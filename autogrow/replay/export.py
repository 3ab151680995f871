"""``autogrow export``: the net of a run's latest snapshot as a standalone safetensors file."""

from __future__ import annotations

import json
from pathlib import Path

from autogrow.blocks import build_net, save_model, weights_digest
from autogrow.errors import InputError, writing
from autogrow.events import SnapshotWritten
from autogrow.replay.projection import live_events, state_of
from autogrow.storage.layout import MODEL_PREFIX, section
from autogrow.storage import EventLog, SnapshotStore


class ExportError(InputError):
    """The run has nothing to export, or its weights do not match its log."""


def net_from_snapshot(run_dir: Path, digest: str):
    """Rebuild the GrowableNet stored in snapshot ``digest`` (eval mode, CPU)."""
    snap = SnapshotStore(run_dir).get(digest)
    spec = json.loads(snap.metadata["net"])
    net = build_net(snap.metadata["family"], snap.metadata["arch"], **spec)
    state = section(snap.tensors, MODEL_PREFIX)
    net.load_state_dict(state)
    return net.eval()


def export_run(run_dir: Path, out: Path) -> tuple[Path, str]:
    """Write the run's current net to ``out``; a finished run's digest must match its log."""
    with EventLog.open(run_dir, readonly=True) as event_log:
        records = event_log.records
    snaps = [ev for _, ev in live_events(records) if isinstance(ev, SnapshotWritten)]
    if not snaps:
        raise ExportError(f"run {run_dir} has no snapshot to export yet")
    net = net_from_snapshot(run_dir, snaps[-1].digest)
    result = state_of(records).result
    if result is not None and weights_digest(net) != result.weights_digest:
        raise ExportError(f"the latest snapshot of {run_dir} does not hold the weights its "
                          "run_finished event names; run `autogrow verify` on it")
    with writing(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        save_model(net, out)
    return out, net.arch
