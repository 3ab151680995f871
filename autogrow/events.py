"""Immutable events and the one JSON codec that turns them into log records and back.

Every observation (an epoch's metrics) and every decision (a policy check, a growth, a stop) is an
event. Events are frozen attrs values; the log stores ``(type, schema, payload)``. This module imports
only the standard library and attrs, so the policy core and replay tools stay torch-free.

Schema evolution: each event class has a ``SCHEMA`` version. Reading a record with an older version
runs the registered upcasters in order (``register_upcaster``); a record whose type is unknown or
whose version is newer than this code knows fails loudly with :class:`CodecError`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import attrs

from autogrow.errors import UserError


class CodecError(UserError, ValueError):
    """A record cannot be turned into an event (unknown type, future schema, bad payload)."""


def _freeze(value: Any) -> Any:
    """Turn JSON-like containers into immutable ones so an event can never change after creation."""
    if isinstance(value, Mapping):
        return FrozenDict((str(k), _freeze(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    """The JSON form of a frozen value (dicts and lists again)."""
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


class FrozenDict(dict):
    """A hashable, read-only dict used for mapping-valued event fields (config, metrics)."""

    def _readonly(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("event payloads are immutable")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _readonly  # type: ignore[assignment]

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items(), key=lambda kv: kv[0])))


def _frozen_field(**kwargs: Any) -> Any:
    return attrs.field(converter=_freeze, **kwargs)


_REGISTRY: dict[str, type[Event]] = {}
_UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {}


@attrs.frozen
class Event:
    """Base of all events. Subclasses set ``TYPE`` (the log's type string) and ``SCHEMA``."""

    TYPE: ClassVar[str] = ""
    SCHEMA: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.TYPE:
            if cls.TYPE in _REGISTRY and _REGISTRY[cls.TYPE].__qualname__ != cls.__qualname__:
                raise TypeError(f"event type {cls.TYPE!r} registered twice")
            _REGISTRY[cls.TYPE] = cls

    def describe(self) -> str:
        """The event in one line: the one wording of its type, which ``history``, ``verify``, the
        report and TensorBoard print (each beside what it shows anyway: a seq, a type, a step).
        A type that words nothing of its own is named."""
        return self.TYPE.replace("_", " ")


def _delta(value: float | None) -> str:
    """A policy delta as the descriptions print it: signed, 3 decimals; "-" when none."""
    return "-" if value is None else f"{value:+.3f}"


@attrs.frozen
class RunStarted(Event):
    """First event of a run: everything needed to rebuild it.

    A fork also names its parent (run id, seq, snapshot) and carries ``base_state``: the growth
    state of the parent at that seq, so the fork's own log folds to the right state on its own.

    Schema 2 adds ``data``, which data the run trains on: for an image folder the digest of its
    manifest (``RUN/data/manifest``), its classes and image counts; for a tensor set the sha256
    of each source file (``{"files": {name: digest}}``). None in runs logged before it.
    """

    TYPE: ClassVar[str] = "run_started"
    SCHEMA: ClassVar[int] = 2

    run_id: str
    config: Mapping[str, Any] = _frozen_field()
    seed: int
    versions: Mapping[str, Any] = _frozen_field(factory=dict)
    parent_run_id: str | None = None
    parent_seq: int | None = None
    parent_snapshot: str | None = None
    base_state: Mapping[str, Any] | None = _frozen_field(default=None)
    data: Mapping[str, Any] | None = _frozen_field(default=None)

    def describe(self) -> str:
        c = self.config
        lineage = "new run"
        if self.parent_run_id:
            lineage = (f"fork of run {self.parent_run_id} at seq {self.parent_seq} "
                       f"(snapshot {str(self.parent_snapshot)[:12]})")
        return (f"{c.get('family')} on {c.get('dataset')}, {c.get('policy')} K={c.get('interval')} "
                f"J={c.get('stop_window')} tau={c.get('tau')}; {lineage}")


@attrs.frozen
class EpochCompleted(Event):
    """One epoch of training and evaluation. ``phase`` is "grow" or "finetune"."""

    TYPE: ClassVar[str] = "epoch_completed"

    phase: str
    epoch: int
    arch: str
    lr: float
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    seconds: float

    def describe(self) -> str:
        return (f"lr {self.lr:g}  train {self.train_acc:6.2f}%  val {self.val_acc:6.2f}%  "
                f"({self.seconds:.1f} s)")


@attrs.frozen
class PolicyChecked(Event):
    """A policy check: the metric window it saw, the deltas and what it decided."""

    TYPE: ClassVar[str] = "policy_checked"

    epoch: int
    window: tuple[float, ...] = _frozen_field()
    stop_delta: float | None
    grow_delta: float | None
    decision: str
    metric: str = "best"

    def describe(self) -> str:
        return (f"epoch {self.epoch} (stop Δ {_delta(self.stop_delta)}, "
                f"grow Δ {_delta(self.grow_delta)}): {self.decision}")


@attrs.frozen
class BlockAdded(Event):
    """One block appended at the end of ``stage``; the init seed makes it reproducible."""

    TYPE: ClassVar[str] = "block_added"

    stage: int
    depth: int
    arch: str
    initializer: str
    init_seed: int
    growth_index: int

    def describe(self) -> str:
        return (f"block added to stage {self.stage} -> {self.depth} blocks, arch -> {self.arch} "
                f"(init {self.initializer}, seed {self.init_seed})")


@attrs.frozen
class StageStopped(Event):
    """A stage left the growing ring: ``reason`` is "no_improvement", "max_depth" or "growth_cap"."""

    TYPE: ClassVar[str] = "stage_stopped"

    stage: int
    delta: float | None
    reason: str = "no_improvement"

    def describe(self) -> str:
        return f"stage {self.stage} stopped growing ({self.reason}, Δ {_delta(self.delta)})"


@attrs.frozen
class GrowthFinished(Event):
    """The ring is empty: the found arch."""

    TYPE: ClassVar[str] = "growth_finished"

    arch: str
    epoch: int

    def describe(self) -> str:
        return f"growth finished after epoch {self.epoch}: found {self.arch}"


@attrs.frozen
class FinetuneStarted(Event):
    """Fine-tuning of the found net begins: N epochs with a staircase LR."""

    TYPE: ClassVar[str] = "finetune_started"

    arch: str
    epochs: int

    def describe(self) -> str:
        return f"fine-tuning {self.arch} for {self.epochs} epoch(s)"


@attrs.frozen
class SnapshotWritten(Event):
    """A durable snapshot (model, optimizer, RNG, position) exists under this digest."""

    TYPE: ClassVar[str] = "snapshot_written"

    digest: str
    epoch: int
    step: int
    label: str = "epoch"

    def describe(self) -> str:
        return f"{self.label} snapshot of epoch {self.epoch} step {self.step}: {self.digest[:12]}…"


@attrs.frozen
class RunResumed(Event):
    """The run continues from the snapshot written at ``from_seq``; later events are superseded."""

    TYPE: ClassVar[str] = "run_resumed"

    from_seq: int
    snapshot: str

    def describe(self) -> str:
        return f"resumed from the snapshot at seq {self.from_seq}"


@attrs.frozen
class RunSuspended(Event):
    """The run stopped on request (a stop signal or its time budget) at a step boundary, after a
    durable snapshot of that point; the same command, or ``resume``, continues it.

    ``signal`` is the signal's name (``TERM``, ``USR1``, ...) or ``time`` for the time budget;
    ``step`` > 0 is a position inside epoch ``epoch + 1``.
    """

    TYPE: ClassVar[str] = "run_suspended"

    signal: str
    epoch: int
    step: int

    def describe(self) -> str:
        why = "time budget" if self.signal == "time" else f"SIG{self.signal}"
        at = f"epoch {self.epoch + 1} step {self.step}" if self.step else f"after epoch {self.epoch}"
        return f"{why}, {at}"


@attrs.frozen
class SnapshotsPruned(Event):
    """These snapshot files are deleted on purpose (retention); appended before the deletion, so
    every missing snapshot file of a run is explained by an event or is a loss ``verify`` reports."""

    TYPE: ClassVar[str] = "snapshots_pruned"

    digests: tuple[str, ...] = _frozen_field()

    def describe(self) -> str:
        return (f"{len(self.digests)} snapshot(s) deleted by retention: "
                f"{', '.join(d[:12] for d in self.digests)}")


@attrs.frozen
class RunFinished(Event):
    """The run is done: the found net, its accuracies and a digest of its weights.

    Schema 2 adds ``test_loss``, so that re-execution compares a float, not only a count of
    correct answers (None in runs logged before it)."""

    TYPE: ClassVar[str] = "run_finished"
    SCHEMA: ClassVar[int] = 2

    arch: str
    val_acc: float
    test_acc: float
    params: int
    flops: int
    weights_digest: str
    test_loss: float | None = None

    def describe(self) -> str:
        return (f"finished: {self.arch}, val {self.val_acc:.2f}%, test {self.test_acc:.2f}%, "
                f"params {self.params:,}, FLOPs {self.flops:,}")


@attrs.frozen
class RunFailed(Event):
    """The run stopped with an error it could name."""

    TYPE: ClassVar[str] = "run_failed"

    reason: str

    def describe(self) -> str:
        return f"failed: {self.reason}"


def event_types() -> tuple[str, ...]:
    """All known event type strings."""
    return tuple(sorted(_REGISTRY))


def register_upcaster(type_name: str, from_schema: int) -> Callable:
    """Decorator: ``fn(payload) -> payload`` migrates ``type_name`` from ``from_schema`` to +1."""

    def wrap(fn: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable:
        _UPCASTERS[(type_name, from_schema)] = fn
        return fn

    return wrap


@register_upcaster("run_finished", 1)
def _run_finished_without_test_loss(payload: dict[str, Any]) -> dict[str, Any]:
    """Runs logged before schema 2 did not record the test loss."""
    return {**payload, "test_loss": None}


@register_upcaster("run_started", 1)
def _run_started_without_data(payload: dict[str, Any]) -> dict[str, Any]:
    """Runs logged before schema 2 did not record their data."""
    return {**payload, "data": None}


def encode(event: Event) -> tuple[str, int, dict[str, Any]]:
    """An event as ``(type, schema, payload)``; the payload is plain JSON data."""
    cls = type(event)
    if not cls.TYPE or _REGISTRY.get(cls.TYPE) is not cls:
        raise CodecError(f"{cls.__name__} is not a registered event class")
    payload = {f.name: _thaw(getattr(event, f.name)) for f in attrs.fields(cls)}
    return cls.TYPE, cls.SCHEMA, payload


def decode(type_name: str, schema: int, payload: Mapping[str, Any]) -> Event:
    """The event of a stored record, upcasting old schema versions; fails loudly otherwise."""
    cls = _REGISTRY.get(type_name)
    if cls is None:
        raise CodecError(
            f"unknown event type {type_name!r}; known types: {', '.join(event_types())}"
        )
    if not isinstance(schema, int) or schema < 1:
        raise CodecError(f"event {type_name!r} has an invalid schema version {schema!r}")
    if schema > cls.SCHEMA:
        raise CodecError(
            f"event {type_name!r} has schema {schema} but this autogrow knows up to {cls.SCHEMA}; "
            "upgrade autogrow to read this run"
        )
    data = dict(payload)
    version = schema
    while version < cls.SCHEMA:
        upcaster = _UPCASTERS.get((type_name, version))
        if upcaster is None:
            raise CodecError(f"no upcaster for event {type_name!r} from schema {version}")
        data = upcaster(data)
        version += 1
    names = {f.name for f in attrs.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise CodecError(f"event {type_name!r} has unknown fields {sorted(unknown)}")
    try:
        return cls(**data)
    except TypeError as err:
        raise CodecError(f"event {type_name!r} payload does not fit: {err}") from None
