"""The growth state machine of Algorithm 1: ``apply`` folds events into state, ``decide`` makes them.

Pure Python. ``GrowthState`` is a frozen value; the phase changes go through one ``transitions``
table so an invalid change (a growth during fine-tuning, an epoch after the run finished) raises
instead of corrupting a run. Nothing here keeps live state: the engine and replay both rebuild the
state by folding the log with :func:`apply`, and :func:`decide` only returns new events.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
from transitions import Machine, MachineError

from autogrow.arch import Arch, format_arch
from autogrow.errors import UserError
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
    RunSuspended,
    SnapshotsPruned,
    SnapshotWritten,
    StageStopped,
)
from autogrow.policies.settings import PolicySettings


class Phase(enum.Enum):
    NEW = "new"
    GROWING = "growing"
    FINETUNING = "finetuning"
    EVALUATING = "evaluating"  # fine-tuning done; the final evaluation is pending
    FINISHED = "finished"
    FAILED = "failed"


# The one transition table: (trigger, source(s), destination).
TRANSITIONS = [
    {"trigger": "start", "source": Phase.NEW, "dest": Phase.GROWING},
    {"trigger": "finish_growth", "source": Phase.GROWING, "dest": Phase.FINETUNING},
    {"trigger": "finish_finetune", "source": Phase.FINETUNING, "dest": Phase.EVALUATING},
    {"trigger": "finish", "source": Phase.EVALUATING, "dest": Phase.FINISHED},
    {
        "trigger": "fail",
        "source": [Phase.NEW, Phase.GROWING, Phase.FINETUNING, Phase.EVALUATING],
        "dest": Phase.FAILED,
    },
]


class PolicyError(UserError, RuntimeError):
    """An event does not fit the state it is applied to (out of order, wrong phase)."""


class _PhaseHolder:
    """A plain model object for ``transitions`` (it attaches triggers with setattr)."""


def _transition(phase: Phase, trigger: str) -> Phase:
    holder = _PhaseHolder()
    machine = Machine(model=holder, states=Phase, transitions=TRANSITIONS, initial=phase,
                      auto_transitions=False)
    try:
        machine.events[trigger].trigger(holder)
    except MachineError as err:
        raise PolicyError(f"cannot {trigger.replace('_', ' ')} while the run is {phase.value}") from err
    return holder.state  # type: ignore[attr-defined]


@attrs.frozen
class GrowthState:
    """Everything Algorithm 1 knows at one point of a run."""

    phase: Phase = Phase.NEW
    settings: PolicySettings | None = None
    run_config: Mapping[str, Any] = attrs.field(factory=dict)  # the run's whole config, as logged
    run_id: str = ""
    arch: Arch = ()
    ring: tuple[int, ...] = ()          # stages still allowed to grow, in ring (index) order
    next_stage: int | None = None       # growingSubNet
    last_grown: int | None = None       # grownSubNet
    grew_at_last_check: bool = False
    growths: int = 0
    grow_epochs: int = 0                # epochs trained in the growth phase
    finetune_epochs: int = 0            # epochs trained in the fine-tune phase
    val_history: tuple[float, ...] = ()  # validation accuracy (%) of each growth-phase epoch
    last_check_epoch: int = 0
    last_snapshot: SnapshotWritten | None = None
    last_epoch: EpochCompleted | None = None
    result: RunFinished | None = None
    failure: str | None = None

    @property
    def epoch(self) -> int:
        """Epochs completed so far, both phases."""
        return self.grow_epochs + self.finetune_epochs

    @property
    def cfg(self) -> PolicySettings:
        if self.settings is None:
            raise PolicyError("the run has not started: no run_started event yet")
        return self.settings

    def learning_rate(self, phase: str) -> float:
        """The LR of the next epoch of ``phase`` ("grow" or "finetune"): the run's base LR on
        its schedule. The run loop trains with it and ``verify`` checks logged epochs against it."""
        index = self.grow_epochs if phase == "grow" else self.finetune_epochs
        return self.cfg.learning_rate(float(self.run_config["lr"]), phase, index)

    def metric_series(self) -> tuple[float, ...]:
        """The metric the policies compare: running max of val acc, or its moving average."""
        return metric_series(self.val_history, self.cfg.metric, self.cfg.ema_decay)

    def delta(self, span: int) -> float | None:
        """Improvement of the metric over the last ``span`` epochs; None without enough history."""
        series = self.metric_series()
        if len(series) <= span:
            return None
        # Rounded so that accuracies like 70.05 - 70.0 compare with tau as written, not as 0.0499…
        return round(series[-1] - series[-1 - span], 9)


def metric_series(values: Sequence[float], metric: str, decay: float = 0.95) -> tuple[float, ...]:
    """Running maximum ("best", the paper's maximum validation accuracy) or EMA of ``values``."""
    out: list[float] = []
    acc = 0.0
    for i, v in enumerate(values):
        if metric == "best":
            acc = v if i == 0 else max(acc, v)
        else:
            acc = decay * acc + (1.0 - decay) * v
        out.append(acc)
    return tuple(out)


def init_seed(seed: int, growth_index: int) -> int:
    """The seed of growth number ``growth_index``: a pure function of (run seed, growth index)."""
    digest = hashlib.sha256(f"autogrow-init:{seed}:{growth_index}".encode()).digest()
    return int.from_bytes(digest[:7], "big")


def _ring_after(ring: Sequence[int], stage: int) -> int | None:
    """The stage that follows ``stage`` round the ring (``stage`` itself may have left it)."""
    if not ring:
        return None
    later = [s for s in ring if s > stage]
    return later[0] if later else ring[0]


# --------------------------------------------------------------------------- apply (the fold)

def apply(state: GrowthState, event: Event) -> GrowthState:
    """The state after ``event``. Pure; raises :class:`PolicyError` for an event that does not fit."""
    handler = _APPLY.get(type(event))
    if handler is None:
        raise PolicyError(f"no fold rule for event {type(event).__name__}")
    return handler(state, event)


# The fields of GrowthState a fork carries over from its parent (see ``base_state``).
_BASE_FIELDS = ("arch", "ring", "next_stage", "last_grown", "grew_at_last_check", "growths",
                "grow_epochs", "finetune_epochs", "val_history", "last_check_epoch")


def base_state(state: GrowthState) -> dict[str, object]:
    """The part of ``state`` a fork starts from, as JSON data (phase is implied by the ring)."""
    if state.phase not in (Phase.GROWING, Phase.FINETUNING, Phase.EVALUATING):
        raise PolicyError(f"cannot fork from a run that is {state.phase.value}")
    data: dict[str, object] = {name: getattr(state, name) for name in _BASE_FIELDS}
    data["phase"] = state.phase.value
    return data


def _apply_run_started(state: GrowthState, ev: RunStarted) -> GrowthState:
    settings = PolicySettings.from_config(ev.config)
    caps = settings.max_arch
    phase = _transition(state.phase, "start")
    if ev.base_state is None:
        arch = settings.seed_arch
        ring = tuple(i for i in range(len(arch)) if caps is None or arch[i] < caps[i])
        return attrs.evolve(state, phase=phase, settings=settings, run_config=ev.config,
                            run_id=ev.run_id, arch=arch, ring=ring,
                            next_stage=ring[0] if ring else None)
    base = dict(ev.base_state)
    arch = tuple(int(d) for d in base["arch"])
    if len(arch) != settings.stages:
        raise PolicyError(f"fork base arch {format_arch(arch)} does not fit the config's stages")
    ring = tuple(int(s) for s in base["ring"] if caps is None or arch[int(s)] < caps[int(s)])
    next_stage = base["next_stage"]
    if next_stage not in ring:
        next_stage = _ring_after(ring, int(next_stage)) if next_stage is not None else (
            ring[0] if ring else None)
    state = attrs.evolve(
        state, phase=phase, settings=settings, run_config=ev.config, run_id=ev.run_id, arch=arch,
        ring=ring, next_stage=next_stage,
        last_grown=base["last_grown"], grew_at_last_check=bool(base["grew_at_last_check"]),
        growths=int(base["growths"]), grow_epochs=int(base["grow_epochs"]),
        finetune_epochs=int(base["finetune_epochs"]),
        val_history=tuple(float(v) for v in base["val_history"]),
        last_check_epoch=int(base["last_check_epoch"]))
    # A fork of a fine-tuning (or finished-training) parent continues in that phase.
    for target in (Phase.FINETUNING, Phase.EVALUATING):
        if Phase(base["phase"]) in (Phase.FINETUNING, Phase.EVALUATING) and state.phase is not target:
            if target is Phase.EVALUATING and state.finetune_epochs < settings.finetune_epochs:
                break
            state = attrs.evolve(state, phase=_transition(
                state.phase, "finish_growth" if target is Phase.FINETUNING else "finish_finetune"))
    return state


def _apply_epoch(state: GrowthState, ev: EpochCompleted) -> GrowthState:
    expected = state.epoch + 1
    if ev.epoch != expected:
        raise PolicyError(f"epoch {ev.epoch} arrived but epoch {expected} was next")
    if state.phase is Phase.GROWING and ev.phase == "grow":
        return attrs.evolve(state, grow_epochs=state.grow_epochs + 1, last_epoch=ev,
                            val_history=state.val_history + (float(ev.val_acc),))
    if state.phase is Phase.FINETUNING and ev.phase == "finetune":
        done = state.finetune_epochs + 1
        phase = state.phase
        if done >= state.cfg.finetune_epochs:
            phase = _transition(phase, "finish_finetune")
        return attrs.evolve(state, finetune_epochs=done, phase=phase, last_epoch=ev)
    raise PolicyError(f"a {ev.phase!r} epoch cannot be applied while the run is {state.phase.value}")


def _apply_check(state: GrowthState, ev: PolicyChecked) -> GrowthState:
    if state.phase is not Phase.GROWING:
        raise PolicyError(f"a policy check cannot happen while the run is {state.phase.value}")
    return attrs.evolve(state, last_check_epoch=ev.epoch, grew_at_last_check=False)


def _apply_block(state: GrowthState, ev: BlockAdded) -> GrowthState:
    if state.phase is not Phase.GROWING:
        raise PolicyError(f"cannot grow while the run is {state.phase.value}")
    if ev.stage not in state.ring:
        raise PolicyError(f"stage {ev.stage} is not in the growing ring {list(state.ring)}")
    if ev.depth != state.arch[ev.stage] + 1:
        raise PolicyError(f"stage {ev.stage} has {state.arch[ev.stage]} blocks; cannot grow to {ev.depth}")
    arch = state.arch[: ev.stage] + (ev.depth,) + state.arch[ev.stage + 1:]
    return attrs.evolve(
        state,
        arch=arch,
        last_grown=ev.stage,
        next_stage=_ring_after(state.ring, ev.stage),
        grew_at_last_check=True,
        growths=state.growths + 1,
    )


def _apply_stop(state: GrowthState, ev: StageStopped) -> GrowthState:
    if ev.stage not in state.ring:
        raise PolicyError(f"stage {ev.stage} is not in the growing ring {list(state.ring)}")
    ring = tuple(s for s in state.ring if s != ev.stage)
    next_stage = state.next_stage
    if next_stage == ev.stage or next_stage not in ring:
        next_stage = _ring_after(ring, ev.stage)
    return attrs.evolve(state, ring=ring, next_stage=next_stage)


def _apply_growth_finished(state: GrowthState, ev: GrowthFinished) -> GrowthState:
    if state.ring:
        raise PolicyError(f"growth cannot finish while stages {list(state.ring)} may still grow")
    return attrs.evolve(state, phase=_transition(state.phase, "finish_growth"), next_stage=None)


def _apply_finetune_started(state: GrowthState, ev: FinetuneStarted) -> GrowthState:
    if state.phase is not Phase.FINETUNING:
        raise PolicyError(f"fine-tuning cannot start while the run is {state.phase.value}")
    if ev.epochs == 0:
        return attrs.evolve(state, phase=_transition(state.phase, "finish_finetune"))
    return state


def _apply_snapshot(state: GrowthState, ev: SnapshotWritten) -> GrowthState:
    return attrs.evolve(state, last_snapshot=ev)


def _apply_bookkeeping(state: GrowthState, ev: Event) -> GrowthState:
    """Resume and suspend markers and prunes change no growth state (the fold drops events a
    resume superseded before they get here)."""
    return state


def _apply_finished(state: GrowthState, ev: RunFinished) -> GrowthState:
    return attrs.evolve(state, phase=_transition(state.phase, "finish"), result=ev)


def _apply_failed(state: GrowthState, ev: RunFailed) -> GrowthState:
    return attrs.evolve(state, phase=_transition(state.phase, "fail"), failure=ev.reason)


_APPLY = {
    RunStarted: _apply_run_started,
    EpochCompleted: _apply_epoch,
    PolicyChecked: _apply_check,
    BlockAdded: _apply_block,
    StageStopped: _apply_stop,
    GrowthFinished: _apply_growth_finished,
    FinetuneStarted: _apply_finetune_started,
    SnapshotWritten: _apply_snapshot,
    RunResumed: _apply_bookkeeping,
    RunSuspended: _apply_bookkeeping,
    SnapshotsPruned: _apply_bookkeeping,
    RunFinished: _apply_finished,
    RunFailed: _apply_failed,
}


def fold(events: Iterable[Event], state: GrowthState | None = None) -> GrowthState:
    """Apply ``events`` in order (the caller has already dropped events superseded by a resume)."""
    state = GrowthState() if state is None else state
    for event in events:
        state = apply(state, event)
    return state


# --------------------------------------------------------------------------- decide (the policy)

def decide(state: GrowthState, observation: Event) -> list[Event]:
    """The events to append for ``observation``: the observation itself, then any decisions.

    ``observation`` is ``run_started`` or ``epoch_completed``; the decisions are :func:`due` of the
    state after it.
    """
    if not isinstance(observation, (RunStarted, EpochCompleted)):
        raise PolicyError(f"decide() takes run_started or epoch_completed, not {type(observation).__name__}")
    return [observation, *due(apply(state, observation))]


def due(state: GrowthState) -> list[Event]:
    """The decisions this state owes, if any: pure, and idempotent once they are folded in.

    A growing run whose ring is empty finishes growth (a fixed-arch run does so at once); every
    K growth epochs a policy check runs (stop, then grow, then finish). The run loop calls this
    after every fold, so a run resumed from a snapshot taken just before a check re-makes the
    very same decisions.
    """
    if state.phase is not Phase.GROWING:
        return []
    if not state.ring:
        return _finish_growth(state)
    if (state.grow_epochs > 0 and state.grow_epochs % state.cfg.interval == 0
            and state.last_check_epoch < state.epoch):
        return _policy_check(state)
    return []


def _policy_check(state: GrowthState) -> list[Event]:
    """Algorithm 1's loop body after ``train(g, K)``: stopping policy, growing policy, finish."""
    cfg = state.cfg
    stop_delta = state.delta(cfg.stop_span)
    grow_delta = state.delta(cfg.interval)
    capped = cfg.max_growth_epochs is not None and state.grow_epochs >= cfg.max_growth_epochs

    stop = (
        not capped
        and state.grew_at_last_check
        and state.last_grown in state.ring
        and stop_delta is not None
        and stop_delta < cfg.tau
    )
    if cfg.policy == "periodic":
        wants_growth = True
    else:
        wants_growth = grow_delta is not None and grow_delta < cfg.tau

    decisions: list[Event] = []
    if capped:
        decisions += [StageStopped(stage=s, delta=stop_delta, reason="growth_cap") for s in state.ring]
    elif stop:
        decisions.append(StageStopped(stage=state.last_grown, delta=stop_delta))  # type: ignore[arg-type]

    after_stop = state
    # Fold the stops (not the check) so the growth decision sees the shrunken ring.
    for ev in decisions:
        after_stop = apply(after_stop, ev)
    grow = wants_growth and bool(after_stop.ring)
    if grow:
        stage = after_stop.next_stage
        assert stage is not None
        depth = after_stop.arch[stage] + 1
        arch = after_stop.arch[:stage] + (depth,) + after_stop.arch[stage + 1:]
        decisions.append(BlockAdded(
            stage=stage, depth=depth, arch=format_arch(arch), initializer=cfg.initializer,
            init_seed=init_seed(cfg.seed, state.growths), growth_index=state.growths,
        ))
        if cfg.max_arch is not None and depth >= cfg.max_arch[stage]:
            decisions.append(StageStopped(stage=stage, delta=None, reason="max_depth"))

    summary = _summary(decisions, capped)
    window = state.metric_series()[-(cfg.stop_span + 1):]
    check = PolicyChecked(epoch=state.epoch, window=window, stop_delta=stop_delta,
                          grow_delta=grow_delta, decision=summary, metric=cfg.metric)
    final = fold([check, *decisions], state)
    tail = _finish_growth(final) if not final.ring else []
    return [check, *decisions, *tail]


def _summary(decisions: Sequence[Event], capped: bool) -> str:
    """The ``decision`` a policy check logs. It is data, not a description: every log written so
    far holds it and the audit compares it, so its wording never changes (an event's wording for
    people is its ``describe()``, which includes this text for a policy check)."""
    parts = []
    for ev in decisions:
        if isinstance(ev, BlockAdded):
            parts.append(f"grow stage {ev.stage} -> {ev.arch}")
        elif isinstance(ev, StageStopped):
            parts.append(f"stop stage {ev.stage} ({ev.reason})")
    if capped:
        parts.insert(0, "growth epoch cap reached")
    return "; ".join(parts) if parts else "keep"


def _finish_growth(state: GrowthState) -> list[Event]:
    arch = format_arch(state.arch)
    return [
        GrowthFinished(arch=arch, epoch=state.epoch),
        FinetuneStarted(arch=arch, epochs=state.cfg.finetune_epochs),
    ]
