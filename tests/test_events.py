"""The event codec: round trips, immutability, loud failures and upcasting."""

from __future__ import annotations

import json

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from autogrow import events as ev
from autogrow.events import CodecError, RunFinished, decode, encode, event_types, register_upcaster


def _examples() -> list[ev.Event]:
    return [
        ev.RunStarted(run_id="r1", config={"seed_arch": "1-1-1", "tau": 0.05}, seed=3,
                      versions={"torch": "2.14.1"}, parent_run_id="p", parent_seq=9,
                      parent_snapshot="a" * 64),
        ev.EpochCompleted(phase="grow", epoch=1, arch="1-1-1", lr=0.1, train_loss=2.3,
                          train_acc=11.5, val_loss=2.2, val_acc=12.25, seconds=1.5),
        ev.PolicyChecked(epoch=3, window=(1.0, 2.0), stop_delta=None, grow_delta=0.5, decision="keep"),
        ev.BlockAdded(stage=1, depth=2, arch="1-2-1", initializer="gau", init_seed=5, growth_index=0),
        ev.StageStopped(stage=2, delta=0.01),
        ev.GrowthFinished(arch="2-2-2", epoch=12),
        ev.FinetuneStarted(arch="2-2-2", epochs=4),
        ev.SnapshotWritten(digest="b" * 64, epoch=3, step=0),
        ev.RunResumed(from_seq=7, snapshot="b" * 64),
        ev.RunSuspended(signal="TERM", epoch=4, step=17),
        ev.SnapshotsPruned(digests=("d" * 64, "e" * 64)),
        ev.RunFinished(arch="2-2-2", val_acc=90.0, test_acc=89.5, params=10, flops=20,
                       weights_digest="c" * 64),
        ev.RunFailed(reason="out of memory"),
    ]


def test_every_event_type_round_trips_through_json():
    examples = _examples()
    assert {type(e).TYPE for e in examples} == set(event_types())
    for event in examples:
        type_name, schema, payload = encode(event)
        back = decode(type_name, schema, json.loads(json.dumps(payload)))
        assert back == event and type(back) is type(event)


def test_events_are_immutable():
    started = _examples()[0]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        started.seed = 4  # type: ignore[misc]
    with pytest.raises(TypeError, match="^event payloads are immutable$"):
        started.config["tau"] = 1.0  # type: ignore[index]
    # a plain dict given to an event is frozen by the field, nested lists become tuples
    plain = {"tau": 0.05, "arches": ["1-1-1", {"k": [1, 2]}]}
    made = ev.RunStarted(run_id="r", config=plain, seed=0, versions={})
    assert isinstance(made.config, ev.FrozenDict) and made.config["arches"][1]["k"] == (1, 2)
    plain["tau"] = 9.0  # the caller's dict stays the caller's
    assert made.config["tau"] == 0.05
    for mutate in (lambda d: d.pop("tau"), lambda d: d.update(tau=1), lambda d: d.clear(),
                   lambda d: d.setdefault("x", 1), lambda d: d.popitem(),
                   lambda d: d.__delitem__("tau")):
        with pytest.raises(TypeError, match="immutable"):
            mutate(made.config)
    assert hash(made.config) == hash(ev.FrozenDict(made.config))


@given(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**53), 2**53))
def test_numbers_survive_the_codec_exactly(value, number):
    event = ev.EpochCompleted(phase="grow", epoch=number, arch="1", lr=value, train_loss=value,
                              train_acc=value, val_loss=value, val_acc=value, seconds=value)
    type_name, schema, payload = encode(event)
    assert decode(type_name, schema, json.loads(json.dumps(payload))) == event


def test_unknown_type_future_schema_and_bad_payload_fail_loudly():
    with pytest.raises(CodecError, match="unknown event type 'mystery'.*run_started"):
        decode("mystery", 1, {})
    with pytest.raises(CodecError, match="schema 2.*upgrade"):
        decode("run_failed", 2, {"reason": "x"})
    with pytest.raises(CodecError, match="unknown fields"):
        decode("run_failed", 1, {"reason": "x", "extra": 1})
    with pytest.raises(CodecError, match="does not fit"):
        decode("run_failed", 1, {})


@pytest.fixture
def registry(monkeypatch):
    """Event classes and upcasters a test defines stay out of the rest of the suite."""
    monkeypatch.setattr(ev, "_REGISTRY", dict(ev._REGISTRY))
    monkeypatch.setattr(ev, "_UPCASTERS", dict(ev._UPCASTERS))


def test_upcaster_migrates_old_records(registry):
    @attrs.frozen
    class Renamed(ev.Event):
        TYPE = "test_renamed"
        SCHEMA = 2
        label: str

    @register_upcaster("test_renamed", 1)
    def _v1_to_v2(payload):
        return {"label": payload["name"]}

    assert decode("test_renamed", 1, {"name": "old"}) == Renamed(label="old")
    assert decode("test_renamed", 2, {"label": "new"}) == Renamed(label="new")


def test_upcasters_chain_one_schema_at_a_time(registry):
    """A record two schemas old goes through both upcasters in order; a missing step is named."""

    @attrs.frozen
    class Twice(ev.Event):
        TYPE = "test_twice"
        SCHEMA = 3
        steps: tuple

    register_upcaster("test_twice", 1)(lambda p: {"steps": (*p["steps"], "1->2")})
    register_upcaster("test_twice", 2)(lambda p: {"steps": (*p["steps"], "2->3")})
    assert decode("test_twice", 1, {"steps": ()}) == Twice(steps=("1->2", "2->3"))
    del ev._UPCASTERS[("test_twice", 2)]
    with pytest.raises(CodecError) as err:
        decode("test_twice", 1, {"steps": ()})
    assert str(err.value) == "no upcaster for event 'test_twice' from schema 2"


@pytest.mark.parametrize("schema", [0, -1, "1", 1.0, None])
def test_an_invalid_schema_version_is_a_codec_error(schema):
    with pytest.raises(CodecError) as err:
        decode("run_failed", schema, {"reason": "x"})
    assert str(err.value) == f"event 'run_failed' has an invalid schema version {schema!r}"


def test_only_the_registered_class_of_a_type_encodes(registry):
    """A class redefined under the same name (a module reload) replaces the registered one; an
    instance of the stale class is refused, as is an event of the unregistered base."""

    def define():
        @attrs.frozen
        class Reloaded(ev.Event):
            TYPE = "test_reloaded"
            value: int
        return Reloaded

    stale, current = define(), define()
    assert encode(current(value=1)) == ("test_reloaded", 1, {"value": 1})
    with pytest.raises(CodecError) as err:
        encode(stale(value=1))
    assert str(err.value) == "Reloaded is not a registered event class"
    with pytest.raises(CodecError, match="^Event is not a registered event class$"):
        encode(ev.Event())


def test_a_second_class_for_a_known_type_is_refused(registry):
    with pytest.raises(TypeError) as err:
        @attrs.frozen
        class Impostor(ev.Event):
            TYPE = "run_failed"
            reason: str
    assert str(err.value) == "event type 'run_failed' registered twice"


def test_unknown_type_lists_the_known_ones():
    with pytest.raises(CodecError) as err:
        decode("mystery", 1, {})
    assert str(err.value) == f"unknown event type 'mystery'; known types: {', '.join(event_types())}"
    with pytest.raises(CodecError) as err:
        decode("run_failed", 2, {"reason": "x"})
    assert str(err.value) == ("event 'run_failed' has schema 2 but this autogrow knows up to 1; "
                              "upgrade autogrow to read this run")


def test_run_finished_of_schema_1_is_upcast_without_a_test_loss():
    """Runs logged before run_finished carried the test loss still read (issue 21)."""
    old = {"arch": "2-2-2", "val_acc": 70.0, "test_acc": 69.0, "params": 1, "flops": 1,
           "weights_digest": "ab" * 32}
    event = decode("run_finished", 1, old)
    assert isinstance(event, RunFinished) and event.test_loss is None and event.test_acc == 69.0
    assert encode(RunFinished(**old, test_loss=0.5)) == ("run_finished", 2, {**old, "test_loss": 0.5})


# -- describe(): the one wording of each event ------------------------------------------------

CONFIG = {"family": "basic3resnet", "dataset": "fashionmnist", "policy": "periodic",
          "interval": 3, "stop_window": 6, "tau": 0.05, "seed_arch": "1-1-1"}

DESCRIBED = [
    (ev.RunStarted(run_id="r", config=CONFIG, seed=0),
     "basic3resnet on fashionmnist, periodic K=3 J=6 tau=0.05; new run"),
    (ev.RunStarted(run_id="f", config=CONFIG, seed=0, parent_run_id="p1", parent_seq=12,
                   parent_snapshot="0123456789abcdef" * 4),
     "basic3resnet on fashionmnist, periodic K=3 J=6 tau=0.05; "
     "fork of run p1 at seq 12 (snapshot 0123456789ab)"),
    (ev.EpochCompleted(phase="grow", epoch=4, arch="2-1-1", lr=0.1, train_loss=1.0,
                       train_acc=61.234, val_loss=1.1, val_acc=5.5, seconds=12.345),
     "lr 0.1  train  61.23%  val   5.50%  (12.3 s)"),
    (ev.PolicyChecked(epoch=6, window=(60.0, 60.01), stop_delta=0.0104, grow_delta=None,
                      decision="stop stage 1 (no_improvement); grow stage 2 -> 2-2-2"),
     "epoch 6 (stop Δ +0.010, grow Δ -): stop stage 1 (no_improvement); grow stage 2 -> 2-2-2"),
    (ev.PolicyChecked(epoch=3, window=(1.0,), stop_delta=None, grow_delta=-0.5, decision="keep"),
     "epoch 3 (stop Δ -, grow Δ -0.500): keep"),
    (ev.BlockAdded(stage=2, depth=3, arch="1-1-3", initializer="zero", init_seed=77,
                   growth_index=4),
     "block added to stage 2 -> 3 blocks, arch -> 1-1-3 (init zero, seed 77)"),
    (ev.StageStopped(stage=1, delta=-0.25),
     "stage 1 stopped growing (no_improvement, Δ -0.250)"),
    (ev.StageStopped(stage=0, delta=None, reason="max_depth"),
     "stage 0 stopped growing (max_depth, Δ -)"),
    (ev.GrowthFinished(arch="3-2-2", epoch=15), "growth finished after epoch 15: found 3-2-2"),
    (ev.FinetuneStarted(arch="3-2-2", epochs=40), "fine-tuning 3-2-2 for 40 epoch(s)"),
    (ev.SnapshotWritten(digest="fedcba9876543210" * 4, epoch=5, step=30, label="step"),
     "step snapshot of epoch 5 step 30: fedcba987654…"),
    (ev.RunResumed(from_seq=17, snapshot="b" * 64), "resumed from the snapshot at seq 17"),
    (ev.RunSuspended(signal="TERM", epoch=2, step=6), "SIGTERM, epoch 3 step 6"),
    (ev.RunSuspended(signal="time", epoch=2, step=0), "time budget, after epoch 2"),
    (ev.SnapshotsPruned(digests=("a1" * 32, "b2" * 32)),
     "2 snapshot(s) deleted by retention: a1a1a1a1a1a1, b2b2b2b2b2b2"),
    (ev.RunFinished(arch="3-2-2", val_acc=91.256, test_acc=90.5, params=1234567, flops=9876543,
                    weights_digest="c" * 64),
     "finished: 3-2-2, val 91.26%, test 90.50%, params 1,234,567, FLOPs 9,876,543"),
    (ev.RunFailed(reason="disk full"), "failed: disk full"),
]


@pytest.mark.parametrize("event, text", DESCRIBED, ids=lambda x: getattr(x, "TYPE", "text"))
def test_each_event_describes_itself_in_one_line(event, text):
    """``describe()`` is the one wording of an event: ``history``, ``verify``, the report and
    TensorBoard all print it, so it is pinned here, word for word."""
    assert event.describe() == text


def test_every_event_type_has_its_own_description():
    assert {type(event) for event, _ in DESCRIBED} == {type(e) for e in _examples()}
    assert all("describe" in vars(type(e)) for e in _examples())


def test_an_event_type_without_a_description_is_named_by_its_type(registry):
    @attrs.frozen
    class Plain(ev.Event):
        TYPE = "test_plain_thing"

    assert Plain().describe() == "test plain thing"
