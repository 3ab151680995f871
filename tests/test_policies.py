"""The growth policy (Algorithm 1): hand-worked tables and a stateful property test."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from autogrow.arch import format_arch
from autogrow.events import (
    BlockAdded,
    EpochCompleted,
    FinetuneStarted,
    GrowthFinished,
    PolicyChecked,
    RunFinished,
    RunStarted,
    StageStopped,
)
from autogrow.policies import (
    GrowthState,
    Phase,
    PolicyConfigError,
    PolicyError,
    PolicySettings,
    apply,
    base_state,
    decide,
    due,
    fold,
    init_seed,
)
from autogrow.policies.schedule import parse_milestones


def _epoch(state: GrowthState, val_acc: float) -> EpochCompleted:
    phase = "grow" if state.phase is Phase.GROWING else "finetune"
    return EpochCompleted(phase=phase, epoch=state.epoch + 1, arch=format_arch(state.arch), lr=0.1,
                          train_loss=1.0, train_acc=50.0, val_loss=1.0, val_acc=val_acc, seconds=0.0)


def _continue(state: GrowthState, accuracies: list[float]) -> tuple[GrowthState, list]:
    """From ``state`` (possibly owing decisions), the rest of a run fed ``accuracies``."""
    log = due(state)
    state = fold(log, state)
    for acc in accuracies:
        if state.phase not in (Phase.GROWING, Phase.FINETUNING):
            break
        events = decide(state, _epoch(state, acc))
        state = fold(events, state)
        log += events
    return state, log


def _run(config: dict, accuracies: list[float]) -> tuple[GrowthState, list]:
    """Feed per-epoch accuracies through decide/apply; return the final state and all events."""
    log = decide(GrowthState(), RunStarted(run_id="t", config=config, seed=config.get("seed", 0)))
    state, rest = _continue(fold(log), accuracies)
    return state, log + rest


def _story(log: list) -> list[tuple]:
    """The decisions of a log as compact tuples: (epoch of the check, what happened)."""
    out: list[tuple] = []
    epoch = 0
    for ev in log:
        if isinstance(ev, PolicyChecked):
            epoch = ev.epoch
        elif isinstance(ev, BlockAdded):
            out.append((epoch, "grow", ev.stage, ev.arch))
        elif isinstance(ev, StageStopped):
            out.append((epoch, "stop", ev.stage, ev.reason))
        elif isinstance(ev, GrowthFinished):
            out.append((epoch, "finish", ev.arch))
        elif isinstance(ev, FinetuneStarted):
            out.append((epoch, "finetune", ev.epochs))
    return out


def _each(values: list[float], times: int = 3) -> list[float]:
    return [v for v in values for _ in range(times)]


BASE = dict(interval=3, stop_window=6, tau=0.05, finetune_epochs=2, seed=7)


def test_periodic_three_stages_hand_worked():
    # Worked by hand: the metric is the running max; stop_delta = m[t] - m[t-6], no stop before t > 6.
    accs = [10, 20, 30, 40, 50, 60] + _each([60, 60, 61, 61, 61.03, 62, 62, 62.04]) + [62, 62]
    state, log = _run(dict(BASE, seed_arch="1-1-1", policy="periodic"), accs)
    assert _story(log) == [
        (3, "grow", 0, "2-1-1"),
        (6, "grow", 1, "2-2-1"),
        (9, "grow", 2, "2-2-2"),          # m9 - m3 = 30
        (12, "stop", 2, "no_improvement"),  # m12 - m6 = 0
        (12, "grow", 0, "3-2-2"),
        (15, "grow", 1, "3-3-2"),          # m15 - m9 = 1
        (18, "grow", 0, "4-3-2"),          # m18 - m12 = 1
        (21, "stop", 0, "no_improvement"),  # m21 - m15 = 0.03
        (21, "grow", 1, "4-4-2"),
        (24, "grow", 1, "4-5-2"),
        (27, "grow", 1, "4-6-2"),          # m27 - m21 = 0.97
        (30, "stop", 1, "no_improvement"),  # m30 - m24 = 0.04
        (30, "finish", "4-6-2"),
        (30, "finetune", 2),
    ]
    assert state.phase is Phase.EVALUATING
    assert state.arch == (4, 6, 2)
    checks = [ev for ev in log if isinstance(ev, PolicyChecked)]
    assert [c.epoch for c in checks] == list(range(3, 31, 3))
    assert checks[0].stop_delta is None and checks[1].stop_delta is None
    assert checks[3].stop_delta == 0.0 and checks[6].stop_delta == pytest.approx(0.03)
    grows = [ev for ev in log if isinstance(ev, BlockAdded)]
    assert [g.init_seed for g in grows] == [init_seed(7, i) for i in range(len(grows))]
    assert all(g.initializer == "gau" for g in grows)


def test_convergent_three_stages_hand_worked():
    # Convergent: grow only when m[t] - m[t-3] < tau; stop last_grown if it grew at the last check
    # and m[t] - m[t-3] < tau.
    accs = [10, 20, 30] + _each([30, 40, 40, 40.01, 40.01, 50, 50, 50]) + [50, 50]
    state, log = _run(dict(BASE, seed_arch="1-1-1", policy="convergent"), accs)
    assert _story(log) == [
        (6, "grow", 0, "2-1-1"),
        (12, "grow", 1, "2-2-1"),
        (15, "stop", 1, "no_improvement"),
        (15, "grow", 2, "2-2-2"),
        (18, "stop", 2, "no_improvement"),
        (18, "grow", 0, "3-2-2"),
        (24, "grow", 0, "4-2-2"),
        (27, "stop", 0, "no_improvement"),
        (27, "finish", "4-2-2"),
        (27, "finetune", 2),
    ]
    decisions = {ev.epoch: ev.decision for ev in log if isinstance(ev, PolicyChecked)}
    assert decisions[3] == "keep" and decisions[9] == "keep" and decisions[21] == "keep"
    assert state.phase is Phase.EVALUATING


def test_periodic_four_stages_with_max_depth_hand_worked():
    accs = [10, 20, 30, 40, 50, 60] + _each([70, 70, 70, 70.05, 70.05, 70.05]) + [70, 70]
    cfg = dict(BASE, seed_arch="1-1-1-1", policy="periodic", max_arch="4-3-9-9")
    state, log = _run(cfg, accs)
    assert _story(log) == [
        (3, "grow", 0, "2-1-1-1"),
        (6, "grow", 1, "2-2-1-1"),
        (9, "grow", 2, "2-2-2-1"),
        (12, "grow", 3, "2-2-2-2"),        # m12 - m6 = 10
        (15, "stop", 3, "no_improvement"),  # m15 - m9 = 0
        (15, "grow", 0, "3-2-2-2"),
        (18, "grow", 1, "3-3-2-2"),        # m18 - m12 = 0.05: not below tau
        (18, "stop", 1, "max_depth"),
        (21, "grow", 2, "3-3-3-2"),
        (24, "stop", 2, "no_improvement"),  # m24 - m18 = 0
        (24, "grow", 0, "4-3-3-2"),
        (24, "stop", 0, "max_depth"),
        (24, "finish", "4-3-3-2"),
        (24, "finetune", 2),
    ]
    assert state.arch == (4, 3, 3, 2)


def test_convergent_four_stages_any_seed_hand_worked():
    accs = [10, 20, 30] + _each([30.04, 30.04, 35, 35, 35, 35, 35]) + [35, 35]
    state, log = _run(dict(BASE, seed_arch="2-1-3-1", policy="convergent"), accs)
    assert _story(log) == [
        (6, "grow", 0, "3-1-3-1"),
        (9, "stop", 0, "no_improvement"),
        (9, "grow", 1, "3-2-3-1"),
        (15, "grow", 2, "3-2-4-1"),
        (18, "stop", 2, "no_improvement"),
        (18, "grow", 3, "3-2-4-2"),
        (21, "stop", 3, "no_improvement"),
        (21, "grow", 1, "3-3-4-2"),
        (24, "stop", 1, "no_improvement"),
        (24, "finish", "3-3-4-2"),
        (24, "finetune", 2),
    ]


def test_growth_epoch_cap_stops_every_stage():
    state, log = _run(dict(BASE, seed_arch="1-1-1", max_growth_epochs=6), _each([10, 20, 30, 40]))
    assert _story(log) == [
        (3, "grow", 0, "2-1-1"),
        (6, "stop", 0, "growth_cap"), (6, "stop", 1, "growth_cap"), (6, "stop", 2, "growth_cap"),
        (6, "finish", "2-1-1"),
        (6, "finetune", 2),
    ]


def test_fixed_arch_goes_straight_to_finetune_then_finishes():
    state, log = _run(dict(BASE, seed_arch="2-2-2", max_arch="2-2-2", finetune_epochs=3), [50, 60, 70])
    assert _story(log) == [(0, "finish", "2-2-2"), (0, "finetune", 3)]
    assert state.phase is Phase.EVALUATING and state.epoch == 3
    done = apply(state, RunFinished(arch="2-2-2", val_acc=70.0, test_acc=69.0, params=1, flops=1,
                                    weights_digest="0" * 64))
    assert done.phase is Phase.FINISHED


def test_moving_average_metric_option():
    settings_ = PolicySettings.from_config(dict(seed_arch="1-1-1", metric="ema"))
    state = GrowthState(settings=settings_, val_history=(10.0, 20.0))
    assert state.metric_series() == pytest.approx((0.5, 0.5 * 0.95 + 1.0))


@pytest.mark.parametrize("bad, message", [
    (dict(interval=0), "interval"),
    (dict(tau=-0.1), "tau"),
    (dict(interval=4, stop_window=3), "stop_window"),
    (dict(policy="sometimes"), "periodic"),
    (dict(max_arch="1-1"), "stage"),
    (dict(seed_arch="3-x-3"), "malformed"),
])
def test_bad_settings_are_refused(bad, message):
    with pytest.raises((PolicyConfigError, ValueError), match=message):
        PolicySettings.from_config(dict(dict(seed_arch="1-1-1"), **bad))


def test_out_of_order_events_are_refused():
    state = fold(decide(GrowthState(), RunStarted(run_id="t", config=dict(seed_arch="1-1-1"), seed=0)))
    with pytest.raises(PolicyError, match="epoch 2"):
        apply(state, EpochCompleted(phase="grow", epoch=2, arch="1-1-1", lr=0.1, train_loss=0,
                                    train_acc=0, val_loss=0, val_acc=0, seconds=0))
    with pytest.raises(PolicyError, match="finish"):
        apply(state, RunFinished(arch="1-1-1", val_acc=0, test_acc=0, params=0, flops=0,
                                 weights_digest=""))
    with pytest.raises(PolicyError):
        apply(state, BlockAdded(stage=0, depth=3, arch="3-1-1", initializer="gau", init_seed=0,
                                growth_index=0))


def _lrs(phase: str, n: int, **settings) -> list[float]:
    cfg = PolicySettings(seed_arch=(1, 1, 1), **settings)
    return [cfg.learning_rate(0.1, phase, i) for i in range(n)]


def test_learning_rate_schedules():
    assert _lrs("grow", 4, interval=3) == [0.1] * 4
    conv = _lrs("grow", 8, policy="convergent", interval=4, stop_window=4)
    assert conv == pytest.approx([0.1, 0.1, 0.01, 0.001] * 2)
    fine = _lrs("finetune", 8, finetune_epochs=8)
    assert fine == pytest.approx([0.1] * 4 + [0.01] * 2 + [0.001] * 2)


def test_growth_lr_constant_or_staircase_for_either_policy():
    """The paper's table 3 has c-AutoGrow with a constant LR (the original's --opt sgd) beside the
    staircase rows (--opt sgdc); the original's sgdc also works for periodic growth."""
    assert _lrs("grow", 8, policy="convergent", interval=4, growth_lr="constant") == [0.1] * 8
    assert _lrs("grow", 6, interval=3, growth_lr="staircase") == pytest.approx([0.1, 0.01, 0.001] * 2)
    # K = 3, the original's thresholds e < K//2 -> lr, e < 3K//4 -> 0.1 lr, else 0.01 lr
    assert _lrs("grow", 3, policy="convergent", interval=3, growth_lr="auto") == pytest.approx(
        [0.1, 0.01, 0.001])
    with pytest.raises(PolicyConfigError, match="growth_lr"):
        PolicySettings(seed_arch=(1, 1, 1), growth_lr="cosine")


def test_convergent_original_finetune_starts_at_a_tenth_with_one_drop():
    """The original's c-AutoGrow fine-tune (cifar10/main_add.py:481-485): N = 100 epochs, 0.1 lr
    for the first 50, 0.01 lr for the rest."""
    lrs = _lrs("finetune", 100, policy="convergent", interval=100, stop_window=100,
               finetune_epochs=100, finetune_lr_scale=0.1,
               finetune_milestones=parse_milestones("1/2"))
    assert lrs == pytest.approx([0.01] * 50 + [0.001] * 50)
    with pytest.raises(PolicyConfigError, match="finetune_lr_scale"):
        PolicySettings(seed_arch=(1, 1, 1), finetune_lr_scale=0.0)
    with pytest.raises(PolicyConfigError, match="finetune_milestones"):
        PolicySettings.from_config({"seed_arch": "1-1-1", "finetune_milestones": "3/4,1/4"})


def test_lr_milestones_are_exact_fractions_of_the_phase():
    """ImageNet's schedule drops at epochs 30 and 60 of 90 (1/3 in floating point would give
    29); '' keeps the LR constant; bad lists are refused."""
    thirds = parse_milestones("1/3,2/3")
    lrs = _lrs("finetune", 90, finetune_epochs=90, lr_milestones=thirds)
    drops = [i for i in range(1, 90) if lrs[i] < lrs[i - 1]]
    assert drops == [30, 60]
    assert parse_milestones("0.5,0.75") == parse_milestones("1/2,3/4")
    assert _lrs("grow", 6, policy="convergent", interval=3, lr_milestones=()) == [0.1] * 6
    for bad in ("3/4,1/2", "0,1/2", "1", "half"):
        with pytest.raises(ValueError, match="lr_milestones"):
            parse_milestones(bad)


def test_policy_core_imports_no_torch():
    code = "import autogrow.policies, autogrow.events, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


class GrowthMachine(RuleBasedStateMachine):
    """Random runs of the policy; invariants of Algorithm 1 hold after every step."""

    @initialize(
        policy=st.sampled_from(["periodic", "convergent"]),
        interval=st.integers(1, 4),
        extra_window=st.integers(0, 5),
        tau=st.sampled_from([0.0, 0.05, 1.0]),
        seed_arch=st.lists(st.integers(1, 3), min_size=3, max_size=4),
        headroom=st.none() | st.lists(st.integers(0, 4), min_size=4, max_size=4),
        cap=st.none() | st.integers(1, 40),
        finetune=st.integers(0, 3),
    )
    def start(self, policy, interval, extra_window, tau, seed_arch, headroom, cap, finetune):
        config = dict(seed_arch=format_arch(tuple(seed_arch)), policy=policy, interval=interval,
                      stop_window=interval + extra_window, tau=tau, finetune_epochs=finetune, seed=3)
        if headroom is not None:
            config["max_arch"] = format_arch(tuple(d + h for d, h in zip(seed_arch, headroom)))
        if cap is not None:
            config["max_growth_epochs"] = cap
        note(f"config {config}")
        self.log = decide(GrowthState(), RunStarted(run_id="p", config=config, seed=3))
        self.state = fold(self.log)
        self.stopped: set[int] = set()
        self.grown_order: list[int] = []
        self._absorb(self.log, GrowthState())

    def _absorb(self, events, before: GrowthState) -> None:
        ring = list(before.ring)
        for ev in events:
            if isinstance(ev, StageStopped):
                assert ev.stage not in self.stopped
                self.stopped.add(ev.stage)
            if isinstance(ev, BlockAdded):
                assert ev.stage not in self.stopped, "a stopped stage grew again"
                # ring order: the grown stage is the ring's next stage after the last one grown
                live = [s for s in ring if s not in self.stopped]
                if self.grown_order:
                    prev = self.grown_order[-1]
                    later = [s for s in live if s > prev]
                    expected = later[0] if later else live[0]
                else:
                    expected = live[0]
                assert ev.stage == expected, f"grew {ev.stage}, ring order wanted {expected}"
                self.grown_order.append(ev.stage)
        checks = [ev for ev in events if isinstance(ev, PolicyChecked)]
        if checks and self.state.settings.policy == "periodic":
            ring_after_stops = [s for s in before.ring if s not in self.stopped
                                or any(isinstance(e, StageStopped) and e.stage == s
                                       and e.reason == "max_depth" for e in events)]
            capped = any(isinstance(e, StageStopped) and e.reason == "growth_cap" for e in events)
            grew = any(isinstance(e, BlockAdded) for e in events)
            assert grew == (bool(ring_after_stops) and not capped)

    @precondition(lambda self: self.state.phase in (Phase.GROWING, Phase.FINETUNING))
    @rule(val_acc=st.sampled_from([0.0, 10.0, 50.0, 50.02, 50.1, 80.0, 99.0]))
    def epoch(self, val_acc):
        before = self.state
        events = decide(before, _epoch(before, val_acc))
        note(f"epoch {before.epoch + 1} acc {val_acc}: {[type(e).__name__ for e in events]}")
        self.state = fold(events, before)
        self.log += events
        self._absorb(events, before)
        assert all(a >= b for a, b in zip(self.state.arch, before.arch)), "depth decreased"
        assert set(self.state.ring) <= set(before.ring), "the ring grew"

    @precondition(lambda self: self.state.phase is Phase.EVALUATING)
    @rule()
    def finish(self):
        ev = RunFinished(arch=format_arch(self.state.arch), val_acc=1.0, test_acc=1.0, params=1,
                         flops=1, weights_digest="0" * 64)
        self.state = apply(self.state, ev)
        self.log.append(ev)

    @rule()
    def nothing_follows_the_end(self):
        if self.state.phase is Phase.FINISHED:
            with pytest.raises(PolicyError):
                decide(self.state, _epoch(self.state, 1.0))

    @invariant()
    def replay_gives_live_state(self):
        assert fold(self.log) == self.state

    @invariant()
    def phase_follows_ring(self):
        s = self.state
        if s.phase is Phase.GROWING:
            assert s.ring and s.next_stage in s.ring
        if s.phase in (Phase.FINETUNING, Phase.EVALUATING, Phase.FINISHED):
            assert not s.ring
        if s.phase is Phase.EVALUATING:
            assert s.finetune_epochs == s.cfg.finetune_epochs
        cap = s.cfg.max_arch
        if cap is not None:
            assert all(d <= c for d, c in zip(s.arch, cap))


GrowthMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=60, deadline=None)
TestGrowthMachine = GrowthMachine.TestCase


# -- forks: a fork's first event carries the parent's state (base_state) ---------------------------

FORKED = dict(BASE, seed_arch="1-1-1")


def _fork(parent: GrowthState, config: dict) -> GrowthState:
    return fold([RunStarted(run_id="fork", config=config, seed=config.get("seed", 0),
                            base_state=base_state(parent))])


@settings(max_examples=100, deadline=None)
@given(accs=st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=30),
       policy=st.sampled_from(["periodic", "convergent"]), interval=st.integers(1, 3),
       caps=st.booleans())
def test_a_fork_with_the_parent_settings_continues_as_the_parent(accs, policy, interval, caps):
    """Forked at every snapshot of any run with the same settings (growing, fine-tuning or
    evaluating), the fork decides exactly what the parent decides from there (the fold of
    base_state restores everything the policy reads)."""
    config = dict(FORKED, policy=policy, interval=interval, stop_window=2 * interval,
                  **({"max_arch": "3-2-4"} if caps else {}))
    _, log = _run(config, accs)
    for cut in range(1, len(log) + 1):
        parent = fold(log[:cut])
        if parent.phase not in (Phase.GROWING, Phase.FINETUNING, Phase.EVALUATING):
            continue
        # a fork point is a snapshot: right after an epoch, or after all of a check's decisions
        if not (isinstance(log[cut - 1], EpochCompleted) or cut == len(log)
                or isinstance(log[cut], EpochCompleted)):
            continue
        _assert_fork_continues(parent, config, accs[parent.epoch:])


def _assert_fork_continues(parent: GrowthState, config: dict, rest: list[float]) -> None:
    fork = _fork(parent, config)
    for name in ("arch", "ring", "next_stage", "last_grown", "grew_at_last_check", "growths",
                 "grow_epochs", "finetune_epochs", "val_history", "last_check_epoch", "phase",
                 "epoch", "run_config"):
        assert getattr(fork, name) == getattr(parent, name), name
    ended, story = _continue(parent, rest)
    fork_ended, fork_story = _continue(fork, rest)
    assert _story(fork_story) == _story(story)
    assert (fork_ended.arch, fork_ended.phase) == (ended.arch, ended.phase)


@pytest.mark.parametrize("finetune_done", [0, 1, 2])
def test_a_fork_of_a_fine_tuning_or_evaluating_parent_stays_there(finetune_done):
    """Fine-tuning for 2 epochs: forked after 0 or 1 of them it fine-tunes the rest; after both
    it evaluates (and finishes with the parent's epoch count)."""
    config = dict(FORKED, seed_arch="2-2-2", max_arch="2-2-2", finetune_epochs=2)
    parent, _ = _run(config, [50.0] * finetune_done)
    assert parent.phase is (Phase.FINETUNING if finetune_done < 2 else Phase.EVALUATING)
    _assert_fork_continues(parent, config, [60.0, 70.0])


def test_a_fork_with_lower_caps_drops_full_stages_and_moves_the_pointer():
    """A fork whose max_arch caps a stage at (or below) its depth takes it out of the ring; the
    next stage to grow moves on to the one after it in the ring."""
    _, log = _run(dict(FORKED, interval=1, stop_window=2), _each([10.0, 20.0, 30.0, 40.0], 1))
    parent = fold(log)
    assert parent.phase is Phase.GROWING and len(parent.ring) == 3
    target = parent.next_stage
    depths = list(parent.arch)
    caps = [d + 5 for d in depths]
    caps[target] = depths[target]
    fork = _fork(parent, dict(FORKED, interval=1, stop_window=2, max_arch=format_arch(caps)))
    assert fork.ring == tuple(s for s in parent.ring if s != target)
    assert fork.next_stage == parent.ring[(parent.ring.index(target) + 1) % len(parent.ring)]
    everything = [d for d in depths]
    full = _fork(parent, dict(FORKED, interval=1, stop_window=2, max_arch=format_arch(everything)))
    assert full.ring == () and full.next_stage is None and due(full)[0].TYPE == "growth_finished"


def test_a_fork_base_of_another_stage_count_is_refused():
    _, log = _run(dict(FORKED), [10.0])
    parent = fold(log)
    base = dict(base_state(parent), arch=(1, 1, 1, 1))
    with pytest.raises(PolicyError) as err:
        fold([RunStarted(run_id="f", config=dict(FORKED), seed=0, base_state=base)])
    assert str(err.value) == "fork base arch 1-1-1-1 does not fit the config's stages"


def test_a_fork_keeps_the_parent_run_id_out_and_its_own_in():
    _, log = _run(dict(FORKED), [10.0])
    fork = _fork(fold(log), dict(FORKED))
    assert fork.run_id == "fork" and fold(log).run_id == "t"


# -- what the mutation run found unasserted (docs/testing.md) ----------------------------------

def test_decisions_are_owed_once():
    """After a check's decisions are folded in, nothing more is owed until the next epoch (the
    run loop calls due() after every fold, and a resume re-asks it)."""
    config = dict(BASE, seed_arch="1-1-1", interval=1, stop_window=2)
    _, log = _run(config, [10.0, 10.0, 10.0, 20.0, 20.0, 20.0, 20.0, 20.0])
    state = GrowthState()
    for ev in log:
        state = apply(state, ev)
        if isinstance(ev, EpochCompleted) and state.phase is Phase.GROWING:
            owed = due(state)
            assert owed and due(fold(owed, state)) == []


def test_a_growth_cap_stop_carries_the_delta_and_the_check_says_so():
    _, log = _run(dict(BASE, seed_arch="1-1-1", stop_window=3, max_growth_epochs=9),
                  _each([10, 20, 30, 40]))
    check = [ev for ev in log if isinstance(ev, PolicyChecked) and ev.epoch == 9][0]
    stops = [ev for ev in log if isinstance(ev, StageStopped)]
    assert check.decision == ("growth epoch cap reached; stop stage 0 (growth_cap); "
                              "stop stage 1 (growth_cap); stop stage 2 (growth_cap)")
    assert check.stop_delta == 10.0 and [s.delta for s in stops] == [10.0] * 3


def test_convergent_growth_needs_delta_strictly_below_tau():
    """c-AutoGrow grows a stage only while its recent gain is below tau (strict <)."""
    config = dict(BASE, seed_arch="1-1-1", policy="convergent", interval=1, stop_window=1,
                  tau=0.5)
    _, equal = _run(config, [60.0, 60.5, 61.0])
    _, below = _run(config, [60.0, 60.25, 60.5])
    grows = lambda log: [ev for ev in log if isinstance(ev, BlockAdded)]  # noqa: E731
    assert grows(equal) == [] and len(grows(below)) >= 1


def test_the_check_records_the_metric_and_the_ema_uses_its_decay():
    settings_ = PolicySettings.from_config(dict(seed_arch="1-1-1", metric="ema", ema_decay=0.5))
    state = GrowthState(settings=settings_, val_history=(10.0, 20.0))
    assert state.metric_series() == (5.0, 12.5)
    _, log = _run(dict(BASE, seed_arch="1-1-1", metric="ema", interval=1), [10.0])
    assert [ev.metric for ev in log if isinstance(ev, PolicyChecked)] == ["ema"]


def test_the_running_best_starts_at_the_first_value_even_below_zero():
    from autogrow.policies import metric_series
    assert metric_series((-5.0, -7.0, -3.0), "best") == (-5.0, -5.0, -3.0)


def test_the_finished_state_holds_the_result():
    state, _ = _run(dict(BASE, seed_arch="2-2-2", max_arch="2-2-2", finetune_epochs=1), [50.0])
    result = RunFinished(arch="2-2-2", val_acc=50.0, test_acc=49.0, params=1, flops=1,
                         weights_digest="0" * 64)
    assert apply(state, result).result == result


def test_each_refused_event_says_why():
    started = fold(decide(GrowthState(), RunStarted(run_id="t", config=dict(seed_arch="1-1-1"),
                                                    seed=0)))
    finished_growth, _ = _run(dict(BASE, seed_arch="2-2-2", max_arch="2-2-2"), [])
    assert finished_growth.phase is Phase.FINETUNING
    cases = [
        (started, EpochCompleted(phase="grow", epoch=2, arch="1-1-1", lr=0.1, train_loss=0,
                                 train_acc=0, val_loss=0, val_acc=0, seconds=0),
         "epoch 2 arrived but epoch 1 was next"),
        (started, RunFinished(arch="1-1-1", val_acc=0, test_acc=0, params=0, flops=0,
                              weights_digest=""), "cannot finish while the run is growing"),
        (started, BlockAdded(stage=0, depth=3, arch="3-1-1", initializer="gau", init_seed=0,
                             growth_index=0), "stage 0 has 1 blocks; cannot grow to 3"),
        (started, BlockAdded(stage=5, depth=2, arch="1-1-1", initializer="gau", init_seed=0,
                             growth_index=0), "stage 5 is not in the growing ring [0, 1, 2]"),
        (started, StageStopped(stage=4, delta=None), "stage 4 is not in the growing ring [0, 1, 2]"),
        (started, GrowthFinished(arch="1-1-1", epoch=0),
         "growth cannot finish while stages [0, 1, 2] may still grow"),
        (started, FinetuneStarted(arch="1-1-1", epochs=1),
         "fine-tuning cannot start while the run is growing"),
        (finished_growth, BlockAdded(stage=0, depth=3, arch="3-2-2", initializer="gau",
                                     init_seed=0, growth_index=0),
         "cannot grow while the run is finetuning"),
        (finished_growth, PolicyChecked(epoch=0, window=(), stop_delta=None, grow_delta=None,
                                        decision="keep", metric="best"),
         "a policy check cannot happen while the run is finetuning"),
        (started, object(), "no fold rule for event object"),
    ]
    for state, event, message in cases:
        with pytest.raises(PolicyError) as err:
            apply(state, event)  # type: ignore[arg-type]
        assert str(err.value) == message, type(event).__name__
    with pytest.raises(PolicyError) as err:
        decide(started, PolicyChecked(epoch=0, window=(), stop_delta=None, grow_delta=None,
                                      decision="keep", metric="best"))
    assert str(err.value) == "decide() takes run_started or epoch_completed, not PolicyChecked"


def test_the_lr_of_each_phase_counts_that_phase_s_epochs():
    """GrowthState.learning_rate indexes the schedule by the epochs done in the asked phase."""
    config = dict(seed_arch="1-1-1", lr=0.1, growth_lr="staircase", max_growth_epochs=10,
                  finetune_epochs=10, lr_milestones="0.5")
    state = GrowthState(settings=PolicySettings.from_config(config), run_config=config,
                        grow_epochs=6, finetune_epochs=5)
    # growth restarts its staircase every K = 3 epochs: epoch index 6 is an interval's first
    assert state.learning_rate("grow") == state.cfg.learning_rate(0.1, "grow", 6) == 0.1
    assert state.cfg.learning_rate(0.1, "grow", 5) < 0.1  # what the fine-tuning count would give
    assert state.learning_rate("finetune") == state.cfg.learning_rate(0.1, "finetune", 5) < 0.1
    with pytest.raises(ValueError) as err:
        state.cfg.learning_rate(0.1, "warmup", 0)
    assert str(err.value) == "unknown phase 'warmup'; expected 'grow' or 'finetune'"


def test_delta_is_rounded_to_nine_decimals():
    """Accuracies like 70.05 - 70.0 compare with tau as written (README: the rounding of Δ)."""
    state = GrowthState(settings=PolicySettings.from_config(dict(seed_arch="1-1-1")),
                        val_history=(70.0, 70.12345678951))
    assert state.delta(1) == 0.12345679 and state.delta(2) is None


def test_no_finetune_epochs_goes_straight_to_evaluation_and_a_finished_run_cannot_fork():
    state, _ = _run(dict(BASE, seed_arch="2-2-2", max_arch="2-2-2", finetune_epochs=0), [])
    assert state.phase is Phase.EVALUATING
    done = apply(state, RunFinished(arch="2-2-2", val_acc=0.0, test_acc=0.0, params=1, flops=1,
                                    weights_digest="0" * 64))
    with pytest.raises(PolicyError) as err:
        base_state(done)
    assert str(err.value) == "cannot fork from a run that is finished"


def test_a_snapshot_is_the_state_s_last_snapshot():
    from autogrow.events import SnapshotWritten
    state, _ = _run(dict(BASE, seed_arch="1-1-1"), [10.0])
    snap = SnapshotWritten(digest="a" * 64, epoch=1, step=0, label="epoch")
    assert apply(state, snap).last_snapshot == snap


def test_settings_defaults_and_every_key_read_from_a_run_config():
    """What a run config without policy keys means (the documented defaults), and that each key
    is read under its own name."""
    from fractions import Fraction
    bare = PolicySettings.from_config({"seed_arch": "1-1-1"})
    assert (bare.interval, bare.stop_window, bare.tau, bare.finetune_epochs, bare.initializer,
            bare.lr_milestones, bare.finetune_lr_scale, bare.finetune_milestones) == (
        3, 6, 0.05, 0, "gau", (Fraction(1, 2), Fraction(3, 4)), 1.0, None)
    given = PolicySettings.from_config({
        "seed_arch": "1-1-1", "initializer": "zero", "lr_milestones": "1/3", "interval": 2,
        "stop_window": 4, "tau": 0.5, "finetune_epochs": 7, "finetune_lr_scale": 0.1,
        "finetune_milestones": "1/2"})
    assert (given.initializer, given.lr_milestones, given.finetune_lr_scale,
            given.finetune_milestones) == ("zero", (Fraction(1, 3),), 0.1, (Fraction(1, 2),))
    with pytest.raises(PolicyConfigError) as err:
        PolicySettings.from_config({"seed_arch": "1-1-1", "finetune_milestones": "2/3,1/3"})
    assert str(err.value).startswith("finetune_milestones '2/3,1/3': fractions must increase")
    with pytest.raises(PolicyConfigError) as err:
        PolicySettings.from_config({"seed_arch": "1-1-1", "lr_milestones": "half"})
    assert str(err.value) == ("lr_milestones 'half': expected fractions of the phase like "
                              "1/2,3/4 or 0.5,0.75")


@pytest.mark.parametrize("changes, message", [
    (dict(policy="sometimes"), "unknown policy 'sometimes'; choose one of periodic, convergent"),
    (dict(metric="median"), "unknown metric 'median'; choose one of best, ema"),
    (dict(growth_lr="cosine"), "unknown growth_lr 'cosine'; choose one of auto, constant, staircase"),
    (dict(finetune_epochs=-1), "finetune_epochs must be >= 0, got -1"),
    (dict(max_growth_epochs=0), "max_growth_epochs must be positive, got 0"),
    (dict(ema_decay=0.0), "ema_decay must be in (0, 1), got 0.0"),
    (dict(ema_decay=1.0), "ema_decay must be in (0, 1), got 1.0"),
    (dict(max_arch=(2, 2)), "max_arch 2-2 and seed_arch 1-1-1 have different stage counts"),
    (dict(max_arch=(2, 0, 2)), "max_arch 2-0-2 is shallower than seed_arch 1-1-1 in some stage"),
])
def test_each_bad_setting_says_what_is_wrong(changes, message):
    with pytest.raises(PolicyConfigError) as err:
        PolicySettings(seed_arch=(1, 1, 1), **changes)
    assert str(err.value) == message


def test_a_max_arch_of_another_stage_count_is_refused_while_parsing():
    with pytest.raises(ValueError) as err:
        PolicySettings.from_config({"seed_arch": "1-1-1", "max_arch": "2-2"})
    assert str(err.value) == "arch string '2-2' has 2 stages but this family has 3"


def test_an_epoch_of_the_other_phase_is_refused_and_each_phase_keeps_its_last_epoch():
    growing, _ = _run(dict(BASE, seed_arch="1-1-1"), [10.0])
    finetuning, _ = _run(dict(BASE, seed_arch="2-2-2", max_arch="2-2-2", finetune_epochs=3), [50.0])
    assert growing.last_epoch.val_acc == 10.0 and finetuning.last_epoch.val_acc == 50.0
    wrong = [(growing, "finetune", "a 'finetune' epoch cannot be applied while the run is growing"),
             (finetuning, "grow", "a 'grow' epoch cannot be applied while the run is finetuning")]
    for state, phase, message in wrong:
        ev = EpochCompleted(phase=phase, epoch=state.epoch + 1, arch=format_arch(state.arch),
                            lr=0.1, train_loss=1.0, train_acc=1.0, val_loss=1.0, val_acc=1.0,
                            seconds=0.0)
        with pytest.raises(PolicyError) as err:
            apply(state, ev)
        assert str(err.value) == message
