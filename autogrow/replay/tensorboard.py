"""TensorBoard output of a run, from its event log: ``autogrow tensorboard`` and ``--tensorboard``.

One mapping from events to TensorBoard records, :class:`TensorBoardSink`, serves both the export of
any past run (:func:`export_runs`) and the live writer of a running one (:class:`LiveTensorBoard`).
What a run's subdirectory ``LOGDIR/<run dir name>`` holds:

- scalars, step = epoch: ``accuracy/train``, ``accuracy/val``, ``loss/train``, ``loss/val``,
  ``lr``, ``net/layers`` (weighted layers, as ResNet names count them), ``net/params`` and
  ``net/flops`` (of the arch trained that epoch; left out when no snapshot of the run is on disk
  to say the net's input shape and classes), ``time/epoch_seconds``;
- text: ``decisions/policy`` (each policy check), ``decisions/growth`` (blocks added, stages
  stopped, growth finished, fine-tuning started) and ``run/status`` (started, resumed, finished,
  failed), at the epoch they happened after; several lines at one epoch are one entry;
- hparams: the run's config (as logged) as the session's hyperparameters, with the metrics
  ``final/test_acc``, ``final/val_acc``, ``final/params``, ``final/layers`` written when the run
  finished (at its last epoch).

The run is read through :func:`autogrow.replay.projection.project`: only the live events count
(events a resume superseded are left out, so a resumed run has each epoch once), each with the
run's state after it; each text line is the event's own ``describe()``. Writing a run's
subdirectory first deletes the TensorBoard event files there, so exporting again, or a resumed
run's live writer (which rewrites what the log holds so far, then appends), never duplicates a
step. Wall times are the log's.

The ``tensorboard`` package is an optional extra (``pip install 'autogrow[tensorboard]'``).
Importing this module loads neither torch nor tensorboard (the CLI registers :func:`add_parser`
at start-up).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import structlog

from autogrow.arch import DEFAULT_FAMILY, layer_count
from autogrow.errors import InputError
from autogrow.events import (
    BlockAdded,
    EpochCompleted,
    Event,
    FinetuneStarted,
    GrowthFinished,
    PolicyChecked,
    RunFailed,
    RunFinished,
    RunResumed,
    RunStarted,
    SnapshotWritten,
    StageStopped,
)
from autogrow.policies import GrowthState
from autogrow.replay.projection import Step, project
from autogrow.storage import EventLog, LogRecord

log = structlog.get_logger("autogrow")

INSTALL_HINT = "pip install 'autogrow[tensorboard]'"

#: Per-epoch scalar tags (``net/params`` and ``net/flops`` only when the net's shape is known).
EPOCH_TAGS = ("accuracy/train", "accuracy/val", "loss/train", "loss/val", "lr", "net/layers",
              "net/params", "net/flops", "time/epoch_seconds")
#: Text tags.
POLICY_TAG = "decisions/policy"
GROWTH_TAG = "decisions/growth"
STATUS_TAG = "run/status"
#: The hparams session's metrics, written when the run finishes.
FINAL_METRICS = ("final/test_acc", "final/val_acc", "final/params", "final/layers")
#: The text tag of each event type that is written as text (its ``describe()``).
TEXT_TAGS = {PolicyChecked: POLICY_TAG, BlockAdded: GROWTH_TAG, StageStopped: GROWTH_TAG,
             GrowthFinished: GROWTH_TAG, FinetuneStarted: GROWTH_TAG, RunStarted: STATUS_TAG,
             RunResumed: STATUS_TAG, RunFinished: STATUS_TAG, RunFailed: STATUS_TAG}

_EVENT_FILE_PREFIX = "events.out.tfevents."


class TensorBoardError(InputError):
    """TensorBoard output cannot be written (bad run, clashing names, package missing)."""


class TensorBoardMissing(TensorBoardError):
    """The optional ``tensorboard`` package is not installed."""


def require_tensorboard() -> type:
    """torch's ``SummaryWriter``, or :class:`TensorBoardMissing` with the line that fixes it."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch's own message names no install command
        raise TensorBoardMissing(f"TensorBoard output needs the tensorboard package: "
                                 f"{INSTALL_HINT}") from None
    return SummaryWriter


# -- the one mapping from events to TensorBoard records ---------------------------------------

def _wall_time(ts: str | None) -> float | None:
    """A log record's ``ts`` (``2026-01-02T03:04:05.123456Z``) as seconds since the epoch."""
    if not ts:
        return None
    try:
        stamp = _dt.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:
        return None
    return stamp.replace(tzinfo=_dt.timezone.utc).timestamp()


def _hparams_summaries(config: dict[str, Any]) -> tuple[Any, Any]:
    """The hparams plugin's experiment and session-start summaries for ``config`` (bools stay
    bools, unlike torch's ``add_hparams``); metrics: :data:`FINAL_METRICS`."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams import metadata
    from tensorboard.plugins.hparams.api_pb2 import (
        DataType,
        Experiment,
        HParamInfo,
        MetricInfo,
        MetricName,
    )
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData, SessionStartInfo

    ssi = SessionStartInfo()
    infos = []
    for key in sorted(config):
        value = config[key]
        if isinstance(value, bool):
            ssi.hparams[key].bool_value = value
            kind = "DATA_TYPE_BOOL"
        elif isinstance(value, (int, float)):
            ssi.hparams[key].number_value = float(value)
            kind = "DATA_TYPE_FLOAT64"
        elif value is not None:
            ssi.hparams[key].string_value = str(value)
            kind = "DATA_TYPE_STRING"
        else:
            continue
        infos.append(HParamInfo(name=key, type=DataType.Value(kind)))
    metrics = [MetricInfo(name=MetricName(tag=tag)) for tag in FINAL_METRICS]
    experiment = Experiment(hparam_infos=infos, metric_infos=metrics)

    def summary(tag: str, data: HParamsPluginData) -> Summary:
        meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(
            plugin_name=metadata.PLUGIN_NAME, content=data.SerializeToString()))
        return Summary(value=[Summary.Value(tag=tag, metadata=meta)])

    version = metadata.PLUGIN_DATA_VERSION
    return (summary(metadata.EXPERIMENT_TAG,
                    HParamsPluginData(experiment=experiment, version=version)),
            summary(metadata.SESSION_START_INFO_TAG,
                    HParamsPluginData(session_start_info=ssi, version=version)))


def _session_end_summary(success: bool) -> Any:
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams import metadata
    from tensorboard.plugins.hparams.api_pb2 import Status
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData, SessionEndInfo

    status = Status.Value("STATUS_SUCCESS" if success else "STATUS_FAILURE")
    data = HParamsPluginData(session_end_info=SessionEndInfo(status=status),
                             version=metadata.PLUGIN_DATA_VERSION)
    meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(
        plugin_name=metadata.PLUGIN_NAME, content=data.SerializeToString()))
    return Summary(value=[Summary.Value(tag=metadata.SESSION_END_INFO_TAG, metadata=meta)])


class TensorBoardSink:
    """Writes one run's live events as TensorBoard records into ``log_dir`` (see the module doc).

    Feed it the steps of :func:`~autogrow.replay.projection.project` in log order (``write``),
    or log records (``write_record``); a seq it has seen is ignored. ``net_spec``
    (``in_channels``, ``num_classes``, ``image_size``, ``width``, as a snapshot's ``net``
    metadata holds it) gives ``net/params`` and ``net/flops``; without it the sink reads it from
    the first snapshot of ``run_dir`` a ``snapshot_written`` event names, if given. Its state is
    the projection's, so TensorBoard's steps are the run's epochs.
    """

    def __init__(self, log_dir: str | Path, *, run_dir: str | Path | None = None,
                 net_spec: dict[str, Any] | None = None, flush_each: bool = False) -> None:
        writer_class = require_tensorboard()
        self.log_dir = Path(log_dir)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.net_spec = net_spec
        self.flush_each = flush_each
        self.state = GrowthState()
        self.last_seq = 0
        self._costs: dict[str, dict[str, int]] = {}
        self._pending: dict[str, tuple[int, list[str], float | None]] = {}
        self._writer = writer_class(log_dir=str(self.log_dir), max_queue=1000, flush_secs=3600)

    # public API

    def write(self, step: Step, wall_time: float | None = None) -> None:
        """Map one live event and the state after it to TensorBoard records."""
        if step.seq <= self.last_seq:
            return
        self.last_seq = step.seq
        self.state = step.state
        self._map(step.event, wall_time)
        if self.flush_each:
            self.flush()

    def write_record(self, record: LogRecord) -> None:
        """``write`` for the record that follows the ones written (its timestamp becomes the
        wall time)."""
        if record.seq > self.last_seq:
            for step in project([record], state=self.state):
                self.write(step, _wall_time(record.ts))

    def flush(self) -> None:
        """Flush the event file (text entries of the latest epoch stay buffered until the next
        epoch's events or ``close``)."""
        self._writer.flush()

    def close(self) -> None:
        """Write everything buffered and close the event file."""
        self._flush_text()
        self._writer.close()

    # the mapping

    @property
    def _step(self) -> int:
        return self.state.epoch

    def _family(self) -> str:
        return str(self.state.run_config.get("family", DEFAULT_FAMILY))

    def _map(self, ev: Event, wt: float | None) -> None:
        w = self._writer
        if isinstance(ev, EpochCompleted):
            self._flush_text(before=ev.epoch)
            values = {
                "accuracy/train": ev.train_acc, "accuracy/val": ev.val_acc,
                "loss/train": ev.train_loss, "loss/val": ev.val_loss, "lr": ev.lr,
                "net/layers": layer_count(self._family(), ev.arch),
                "time/epoch_seconds": ev.seconds,
            }
            cost = self._cost(ev.arch)
            if cost is not None:
                values["net/params"] = cost["params"]
                values["net/flops"] = cost["flops"]
            for tag in EPOCH_TAGS:
                if tag in values:
                    w.add_scalar(tag, float(values[tag]), ev.epoch, walltime=wt)
        elif isinstance(ev, RunStarted):
            exp, ssi = _hparams_summaries(dict(ev.config))
            w.file_writer.add_summary(exp, None, wt)
            w.file_writer.add_summary(ssi, None, wt)
        elif isinstance(ev, SnapshotWritten):
            if self.net_spec is None and self.run_dir is not None:
                self.net_spec = _net_spec(self.run_dir, [ev.digest])
        elif isinstance(ev, RunFinished):
            layers = layer_count(self._family(), ev.arch)
            for tag, value in zip(FINAL_METRICS, (ev.test_acc, ev.val_acc, ev.params, layers)):
                w.add_scalar(tag, float(value), self._step, walltime=wt)
            w.file_writer.add_summary(_session_end_summary(True), None, wt)
        elif isinstance(ev, RunFailed):
            w.file_writer.add_summary(_session_end_summary(False), None, wt)
        tag = TEXT_TAGS.get(type(ev))
        if tag is not None:
            self._text(tag, ev.describe(), wt)

    def _cost(self, arch: str) -> dict[str, int] | None:
        """Params and FLOPs of ``arch`` (cached; meta device, no weights allocated)."""
        if self.net_spec is None:
            return None
        if arch not in self._costs:
            from autogrow.blocks import arch_cost
            spec = self.net_spec
            self._costs[arch] = arch_cost(
                spec.get("family") or self._family(), arch, in_channels=int(spec["in_channels"]),
                num_classes=int(spec["num_classes"]), image_size=int(spec["image_size"]),
                width=float(spec.get("width", self.state.run_config.get("width", 1.0))))
        return self._costs[arch]

    def _text(self, tag: str, line: str, wt: float | None) -> None:
        """Buffer a text line: the lines of one tag at one epoch become one entry."""
        step = self._step
        pending = self._pending.get(tag)
        if pending is not None and pending[0] != step:
            self._flush_text(tags=(tag,))
            pending = None
        if pending is None:
            self._pending[tag] = (step, [line], wt)
        else:
            pending[1].append(line)

    def _flush_text(self, *, before: int | None = None, tags: Iterable[str] | None = None) -> None:
        """Write the buffered text entries (of ``tags``; with a step below ``before``)."""
        for tag in list(tags if tags is not None else self._pending):
            step, lines, wt = self._pending[tag]
            if before is not None and step >= before:
                continue
            del self._pending[tag]
            text = lines[0] if len(lines) == 1 else "\n".join(f"- {line}" for line in lines)
            self._writer.add_text(tag, text, step, walltime=wt)


# -- a run's subdirectory ---------------------------------------------------------------------

def _snapshot_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file, reading its header only."""
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    return dict(header.get("__metadata__") or {})


def _net_spec(run_dir: Path, digests: Iterable[str]) -> dict[str, Any] | None:
    """The net's constructor settings from the first of these snapshots that is on disk."""
    from autogrow.storage import SnapshotStore  # torch: not when the CLI only builds its parser
    store = SnapshotStore(run_dir)
    for digest in digests:
        try:
            meta = _snapshot_metadata(store.path(digest))
            spec = dict(json.loads(meta["net"]))
            spec["family"] = meta.get("family")
            return spec
        except (OSError, ValueError, KeyError, struct.error):
            continue
    return None


def run_log_dir(logdir: str | Path, run_dir: str | Path) -> Path:
    """``LOGDIR/<the run directory's name>``."""
    name = Path(run_dir).resolve().name
    return Path(logdir) / name


def _check_target(target: Path, run_dir: Path) -> None:
    if target.resolve() == Path(run_dir).resolve() or (target / "events.jsonl").exists():
        raise TensorBoardError(f"{target} is a run directory; pick a --tensorboard/--out LOGDIR "
                               "outside it (runs go to LOGDIR/<run name>)")
    if target.exists() and not target.is_dir():
        raise TensorBoardError(f"{target} exists and is not a directory")


def _clear(target: Path) -> None:
    """Delete the TensorBoard event files in ``target`` (nothing else, nothing below it)."""
    if target.is_dir():
        for path in target.iterdir():
            if path.name.startswith(_EVENT_FILE_PREFIX) and path.is_file():
                path.unlink()


def open_sink(logdir: str | Path, run_dir: str | Path, records: Sequence[LogRecord], *,
              flush_each: bool = False) -> TensorBoardSink:
    """A sink for ``LOGDIR/<run name>`` holding exactly the live events of ``records`` (the
    subdirectory's earlier event files are deleted first), ready for more ``write`` calls."""
    run_dir = Path(run_dir)
    target = run_log_dir(logdir, run_dir)
    _check_target(target, run_dir)
    steps = list(project(records))
    snaps = [s.event.digest for s in reversed(steps) if isinstance(s.event, SnapshotWritten)]
    spec = _net_spec(run_dir, snaps)
    _clear(target)
    sink = TensorBoardSink(target, run_dir=run_dir, net_spec=spec, flush_each=flush_each)
    stamps = {record.seq: record.ts for record in records}
    for step in steps:
        sink.write(step, _wall_time(stamps[step.seq]))
    return sink


def export_runs(runs: Sequence[str | Path], logdir: str | Path) -> list[tuple[Path, int]]:
    """Write each run's TensorBoard records to ``LOGDIR/<run name>``; ``(path, epochs)`` each.

    Everything is checked (package, logs, names) before the first file is touched."""
    require_tensorboard()
    loaded: list[tuple[Path, tuple[LogRecord, ...]]] = []
    names: dict[str, Path] = {}
    for run in runs:
        run_dir = Path(run)
        with EventLog.open(run_dir, readonly=True) as event_log:
            records = event_log.records
        if not records:
            raise TensorBoardError(f"run {run_dir} has no events yet")
        target = run_log_dir(logdir, run_dir)
        _check_target(target, run_dir)
        other = names.get(target.name)
        if other is not None and other.resolve() != run_dir.resolve():
            raise TensorBoardError(f"runs {other} and {run_dir} have the same name "
                                   f"{target.name!r}; export them to different --out folders")
        if other is None:
            names[target.name] = run_dir
            loaded.append((run_dir, records))
    written = []
    for run_dir, records in loaded:
        sink = open_sink(logdir, run_dir, records)
        sink.close()
        written.append((sink.log_dir, sink.state.epoch))
    return written


class LiveTensorBoard:
    """The ``--tensorboard LOGDIR`` writer of a running run (rank 0 only): a subscriber of the
    run's writer (:class:`~autogrow.engine.writer.Subscriber`), attached where the run is built.

    On the first event this process appends it rewrites ``LOGDIR/<run name>`` from the live
    events of ``event_log`` so far (that event included: after a resume, the ``run_resumed``
    marker drops what the resume superseded), then writes each appended event with the run's
    state after it and flushes. A failure to write never stops the run: it is logged once and
    the writer turns itself off.
    """

    def __init__(self, logdir: str | Path, run_dir: str | Path, event_log: EventLog) -> None:
        require_tensorboard()
        self.logdir = Path(logdir)
        self.run_dir = Path(run_dir)
        self.event_log = event_log
        _check_target(run_log_dir(self.logdir, self.run_dir), self.run_dir)
        self.sink: TensorBoardSink | None = None
        self.failed = False

    def on_event(self, record: LogRecord | None, event: Event, state: GrowthState) -> None:
        """``event`` was just appended as ``record``; ``state`` is the run's after it."""
        if self.failed or record is None:
            return
        try:
            if self.sink is None:
                self.sink = open_sink(self.logdir, self.run_dir, self.event_log.records,
                                      flush_each=True)
            else:
                self.sink.write(Step(record.seq, event, state), _wall_time(record.ts))
        except Exception as err:  # noqa: BLE001 - TensorBoard output must not stop training
            self.failed = True
            log.warning("tensorboard output failed; no more is written for this launch",
                        logdir=str(self.logdir), error=f"{type(err).__name__}: {err}")

    def close(self) -> None:
        if self.sink is not None and not self.failed:
            try:
                self.sink.close()
            except Exception as err:  # noqa: BLE001
                log.warning("tensorboard output failed on close", error=str(err))
        self.sink = None


# -- the command ------------------------------------------------------------------------------

def cmd_tensorboard(args: argparse.Namespace) -> int:
    """``autogrow tensorboard RUN... --out LOGDIR``."""
    for path, epochs in export_runs(args.runs, args.out):
        print(f"wrote {path} ({epochs} epochs)")
    print(f"view with: tensorboard --logdir {args.out}")
    return 0


def add_parser(sub: Any) -> None:
    """Register ``autogrow tensorboard`` on the CLI's subparsers."""
    p = sub.add_parser(
        "tensorboard", help="write runs' curves, decisions and settings as TensorBoard files",
        description="From each run's event log, write TensorBoard event files to "
                    "LOGDIR/<run directory name>: per-epoch scalars (accuracy, loss, LR, layers, "
                    "params, FLOPs), growth and stop decisions as text, and the run's config as "
                    "hparams with its final accuracies. Works on any run, finished or not; a "
                    "resumed run has each epoch once, and exporting again replaces a run's "
                    f"files. Needs the tensorboard package ({INSTALL_HINT}).")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run directories")
    p.add_argument("--out", required=True, type=Path, metavar="LOGDIR",
                   help="TensorBoard log directory (one subdirectory per run)")
    p.set_defaults(func=cmd_tensorboard)
