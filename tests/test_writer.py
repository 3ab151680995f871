"""The one write path of a running run (issue 23 item 1): every event a run writes is folded into
its state and reaches its subscribers, ``run_failed`` and ``snapshots_pruned`` included; the
test hooks are installed from outside the loop.

In-process and fast: a :class:`~autogrow.engine.run.Run` around a stand-in trainer (no data, no
training) writes snapshots, prunes and fails into a real log.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from autogrow.blocks import weights_digest
from autogrow.config import resolve_config
from autogrow.engine.distributed import SINGLE, Dist
from autogrow.engine.hooks import (
    PERTURB_RANK_ENV,
    RANK_DIGESTS_ENV,
    RankDigests,
    hooks_from_env,
)
from autogrow.engine.run import Controls, Run
from autogrow.engine.writer import Writer
from autogrow.events import (
    BlockAdded,
    EpochCompleted,
    RunFailed,
    RunFinished,
    RunStarted,
    SnapshotsPruned,
    SnapshotWritten,
)
from autogrow.policies import GrowthState, Phase, PolicyError
from autogrow.replay import decode_record, state_of
from autogrow.storage import EventLog, SnapshotStore

CONFIG = resolve_config("smoke")


def _started() -> RunStarted:
    return RunStarted(run_id="r" * 32, config=CONFIG.to_dict(), seed=CONFIG.seed, versions={})


class Recorder:
    """A subscriber that keeps what it is told."""

    def __init__(self) -> None:
        self.seen: list[tuple] = []
        self.closed = 0

    def on_event(self, record, event, state) -> None:
        self.seen.append((record, event, state))

    def close(self) -> None:
        self.closed += 1


def _trainer(group: Dist = SINGLE) -> SimpleNamespace:
    """Enough of a trainer for snapshots: each snapshot's tensors differ (a new digest)."""
    count = iter(range(1, 1000))
    net = SimpleNamespace(family="plain", config={"stand-in": True}, head=torch.nn.Linear(2, 2))
    return SimpleNamespace(group=group, net=net,
                           state_tensors=lambda: {"w": torch.full((4,), float(next(count)))})


def _run(tmp_path, event_log, recorder: Recorder, **config) -> Run:
    cfg = CONFIG if not config else CONFIG.__class__.from_mapping({**CONFIG.to_dict(), **config})
    controls = Controls(hooks=(lambda run: run.writer.subscribe(recorder),))
    return Run(tmp_path, event_log, cfg, None, None, _trainer(), GrowthState(),
               controls=controls)


def test_every_event_a_run_writes_is_folded_and_reaches_its_subscribers(tmp_path):
    """Start, snapshots, a prune (written by rank 0 alone, after a snapshot) and the failure:
    each record of the log was told to the subscriber with the state the log folds to."""
    recorder = Recorder()
    with EventLog.open(tmp_path, create=True, fsync=False) as event_log:
        run = _run(tmp_path, event_log, recorder, snapshot_keep=1)
        run.append(_started())
        for label in ("start", "epoch", "epoch", "epoch"):
            run.snapshot(label)

        def broken() -> None:
            raise RuntimeError("simulated fault\nsecond line")

        run._loop = broken  # type: ignore[method-assign]
        with pytest.raises(RuntimeError, match="simulated fault"):
            run.loop()
        records = event_log.records
    events = [decode_record(r) for r in records]
    assert [type(e) for e in events] == [RunStarted, SnapshotWritten, SnapshotWritten,
                                         SnapshotWritten, SnapshotsPruned, SnapshotWritten,
                                         SnapshotsPruned, RunFailed]
    assert [(r, e) for r, e, _ in recorder.seen] == list(zip(records, events))
    assert [s for _, _, s in recorder.seen] == [state_of(records, r.seq) for r in records]
    assert run.state == state_of(records) and run.state.phase is Phase.FAILED
    assert events[-1].reason == "RuntimeError: simulated fault"
    assert recorder.closed == 1
    # the pruned snapshots are gone, after the events that name them
    store = SnapshotStore(tmp_path)
    pruned = {d for e in events if isinstance(e, SnapshotsPruned) for d in e.digests}
    assert len(pruned) == 2 and not any(store.exists(d) for d in pruned)
    kept = {e.digest for e in events if isinstance(e, SnapshotWritten)} - pruned
    assert sorted(kept) == sorted(store.digests())


def test_an_event_that_does_not_fit_is_neither_written_nor_told(tmp_path):
    recorder = Recorder()
    with EventLog.open(tmp_path, create=True, fsync=False) as event_log:
        writer = Writer(event_log, GrowthState())
        writer.subscribe(recorder)
        writer.append(_started())
        before = writer.state
        bad = BlockAdded(stage=0, depth=9, arch="9-1-1", initializer="zero", init_seed=0,
                         growth_index=0)
        with pytest.raises(PolicyError):
            writer.append(bad)
        with pytest.raises(PolicyError):
            writer.append_local(bad)
        assert len(event_log) == 1 and len(recorder.seen) == 1 and writer.state is before


def test_an_event_rank_0_makes_is_made_once_and_only_rank_0_writes(tmp_path):
    made = []

    def make() -> RunStarted:
        made.append(1)
        return _started()

    with EventLog.open(tmp_path, create=True, fsync=False) as event_log:
        writer = Writer(event_log, GrowthState())
        assert writer.append(make) == _started() and made == [1]
        assert writer.state == state_of(event_log.records)
    other_rank = Writer(None, GrowthState(), SimpleNamespace(is_main=False, enabled=False))
    with pytest.raises(RuntimeError, match="only rank 0"):
        other_rank.append_local(RunFailed(reason="x"))


def test_no_test_hooks_unless_the_environment_of_the_launcher_asks():
    assert hooks_from_env({}) == ()
    assert Controls().hooks == hooks_from_env()  # read when the controls are built
    assert len(hooks_from_env({RANK_DIGESTS_ENV: "/tmp/d", PERTURB_RANK_ENV: "1"})) == 2


@pytest.mark.parametrize("rank", [0, 1])
def test_the_perturb_hook_nudges_only_its_rank_after_a_growth(tmp_path, rank):
    (hook,) = hooks_from_env({PERTURB_RANK_ENV: "1"})
    run = SimpleNamespace(group=SimpleNamespace(rank=rank), growth_hooks=[],
                          trainer=_trainer())
    hook(run)
    assert len(run.growth_hooks) == rank
    bias = run.trainer.net.head.bias.detach().clone()
    for growth_hook in run.growth_hooks:
        growth_hook(run, None)
    assert torch.equal(run.trainer.net.head.bias, bias + 1e-3 * rank)


def test_rank_digests_name_each_growth_and_evaluation(tmp_path):
    trainer = SimpleNamespace(net=torch.nn.Linear(3, 2))
    run = SimpleNamespace(trainer=trainer, group=SimpleNamespace(rank=1), writer=Recorder())
    (install,) = hooks_from_env({RANK_DIGESTS_ENV: str(tmp_path / "d")})
    run.writer.subscribe = run.writer.seen.append
    install(run)
    (digests,) = run.writer.seen
    assert isinstance(digests, RankDigests)
    epoch = EpochCompleted(phase="grow", epoch=2, arch="1-1-1", lr=0.1, train_loss=1.0,
                           train_acc=1.0, val_loss=1.0, val_acc=1.0, seconds=1.0)
    grown = BlockAdded(stage=0, depth=2, arch="2-1-1", initializer="zero", init_seed=0,
                       growth_index=3)
    for event in (epoch, SnapshotWritten(digest="a" * 64, epoch=2, step=0, label="epoch"),
                  grown, SnapshotWritten(digest="b" * 64, epoch=2, step=0, label="growth"),
                  RunFinished(arch="2-1-1", val_acc=1.0, test_acc=1.0, params=1, flops=1,
                              weights_digest="c" * 64)):
        digests.on_event(None, event, GrowthState())
    lines = [json.loads(x) for x in (tmp_path / "d" / "rank1.jsonl").read_text().splitlines()]
    assert [x["point"] for x in lines] == ["val 2", "growth 3", "test"]
    assert {x["digest"] for x in lines} == {weights_digest(trainer.net)}
