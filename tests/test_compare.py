"""The verdicts of ``verify --reexecute`` (``engine/compare.py``) on numbers and tensors: which
standard applies, what each standard accepts at its bounds, what a mismatch row says, and that
all ranks take rank 0's verdict.

Fast unit tests (nothing is re-executed), so that ``make mutate`` can run them against every
mutant; that re-execution catches forged logs end to end is in ``test_reexecute.py``.
"""

from __future__ import annotations

import math
import types
from pathlib import Path

import pytest
import torch

from autogrow.engine import compare as compare_module
from autogrow.engine import steps
from autogrow.engine.compare import (
    TABLE_HEADER,
    TOLERANCES,
    Comparer,
    Mismatch,
    Row,
    _describe_difference,
    _largest_difference,
    choose_standard,
    format_row,
    legacy_evaluations,
    machine_class,
)
from autogrow.engine.distributed import Dist
from autogrow.engine.reexecute import Snap
from autogrow.engine.trainer import EVAL_BUFFERS
from autogrow.events import SnapshotWritten
from autogrow.storage import SnapshotStore

RUN = {"torch": "2.14.1", "device": "cpu", "cpu": "AMD EPYC", "cpu_capability": "AVX512",
       "gpu": "", "python": "3.11.2", "processes": 1}


# -- the standard -------------------------------------------------------------------------------

def test_the_machine_class_is_what_decides_the_arithmetic():
    """Only the recorded values that change rounding count, as text; a CUDA device by kind."""
    versions = dict(RUN, device="cuda:1", torch=(2, 14), platform="Linux")
    assert machine_class(versions) == {"torch": "(2, 14)", "device": "cuda", "cpu": "AMD EPYC",
                                       "cpu_capability": "AVX512", "gpu": ""}
    assert machine_class({"cpu": "x"}) == {"cpu": "x"}


def test_auto_is_exact_on_the_runs_machine_class():
    standard, why = choose_standard("auto", RUN, dict(RUN, python="3.12", device="cpu"))
    assert standard == "exact"
    assert why == ("same machine class as the run (torch 2.14.1, device cpu, cpu AMD EPYC, "
                   "cpu_capability AVX512, gpu )")


def test_auto_is_tolerant_elsewhere_and_names_every_difference():
    here = dict(RUN, cpu_capability="AVX2", device="cuda:0")
    del here["gpu"]
    standard, why = choose_standard("auto", RUN, here)
    assert standard == "tolerant"
    assert why == ("another machine class: device cpu (run) vs cuda (here); cpu_capability "
                   "AVX512 (run) vs AVX2 (here); gpu  (run) vs - (here)")
    assert choose_standard("auto", dict(RUN, device="cuda:0"), dict(RUN, device="cuda:3"))[0] \
        == "exact"  # another GPU index is the same kind of device
    older = {k: v for k, v in RUN.items() if k != "cpu_capability"}  # recorded before it was
    assert choose_standard("auto", older, RUN) == (
        "tolerant", "another machine class: cpu_capability - (run) vs AVX512 (here)")


def test_a_run_that_does_not_record_its_hardware_is_assumed_to_be_this_machine():
    standard, why = choose_standard("auto", {"torch": "1.0", "device": "cuda"}, RUN)
    assert standard == "exact"
    assert why == "the run does not record its hardware (an older run): assumed this one"


@pytest.mark.parametrize("requested", ["exact", "tolerant"])
def test_an_asked_for_standard_applies_and_the_reason_still_says_the_class(requested):
    same = choose_standard(requested, RUN, RUN)
    assert same == (requested, "asked for; " + choose_standard("auto", RUN, RUN)[1])
    other = choose_standard(requested, RUN, dict(RUN, cpu="Intel Xeon"))
    assert other == (requested, "asked for; another machine class: cpu AMD EPYC (run) vs "
                                "Intel Xeon (here)")


def test_an_unknown_standard_is_refused_with_the_choices():
    with pytest.raises(ValueError) as err:
        choose_standard("loose", RUN, RUN)
    assert str(err.value) == "--standard 'loose': expected one of auto, exact, tolerant"


@pytest.mark.parametrize("versions, reproducible", [
    ({}, True),
    ({"processes": 1}, True),
    ({"processes": "1"}, True),
    ({"processes": 2, "eval_buffers": EVAL_BUFFERS}, True),
    ({"processes": 2}, False),
    ({"processes": "4", "eval_buffers": "own"}, False),
])
def test_only_multi_process_runs_from_before_rank0_buffers_evaluate_irreproducibly(
        versions, reproducible):
    why = legacy_evaluations(versions)
    if reproducible:
        assert why == ""
    else:
        n = int(versions["processes"])
        assert why == (f"the run was made by {n} processes before every evaluation used rank 0's "
                       "BatchNorm statistics on every rank, so each rank evaluated its share "
                       "with its own statistics, which no snapshot holds")


# -- rows ---------------------------------------------------------------------------------------

def test_rows_are_collected_reported_and_the_first_mismatch_stops():
    seen: list[Row] = []
    compare = Comparer("exact", seen.append, stop_at_first=True)
    compare.row("1", 5, "train loss, acc", True, "equal")
    compare.row("1", 6, "epoch snapshot", True, "not kept", compared=False)
    with pytest.raises(Mismatch) as err:
        compare.row("2", 9, "val loss, acc", False, "differs")
    bad = Row("2", 9, "val loss, acc", False, "differs")
    assert compare.rows == seen == [Row("1", 5, "train loss, acc", True, "equal"),
                                    Row("1", 6, "epoch snapshot", True, "not kept", False), bad]
    assert err.value.args == (bad,)


def test_without_stop_at_first_every_row_is_kept():
    compare = Comparer("exact", None, stop_at_first=False)
    compare.row("1", 5, "a", False, "x")
    compare.row("1", 6, "b", True, "y")
    assert [(r.seq, r.ok) for r in compare.rows] == [(5, False), (6, True)]


def test_every_rank_records_rank_0s_verdict(monkeypatch):
    """Rank 1 computed a match, rank 0 a mismatch: rank 1 records rank 0's row and stops with
    it (the snapshots hold rank 0's tensors; all ranks must stop at the same row)."""
    sent: list[tuple[Dist, object]] = []

    def broadcast_json(group: Dist, value: object) -> object:
        sent.append((group, value))
        return value if group.is_main else [False, "rank 0's detail"]

    monkeypatch.setattr(compare_module, "broadcast_json", broadcast_json)
    rank1 = Dist(rank=1, world_size=2)
    with pytest.raises(Mismatch):
        Comparer("exact", None, True, rank1).row("1", 5, "val loss, acc", True, "equal")
    assert sent == [(rank1, None)]
    rank0 = Dist(rank=0, world_size=2)
    compare = Comparer("exact", None, True, rank0)
    compare.row("1", 5, "val loss, acc", True, "equal")
    assert sent[-1] == (rank0, [True, "equal"]) and compare.rows[-1].ok
    sent.clear()
    Comparer("exact", None, True).row("1", 5, "x", True, "equal")
    assert sent == []  # one process: nothing to agree on


def test_a_row_prints_under_the_header():
    assert TABLE_HEADER == " epoch    seq  compared                            result"
    assert format_row(Row("3", 12, "val loss, acc", True, "equal")) == (
        "     3     12  val loss, acc                       ok: equal")
    assert format_row(Row("final", 40, "weights digest", False, "ab… re-executed")) == (
        " final     40  weights digest                      MISMATCH: ab… re-executed")
    assert format_row(Row("2", 7, "epoch snapshot", True, "not kept", compared=False)) == (
        "     2      7  epoch snapshot                      not compared: not kept")


# -- metrics ------------------------------------------------------------------------------------

def _verdicts(compare: Comparer) -> list[bool]:
    return [row.ok for row in compare.rows]


def test_the_exact_standard_accepts_only_equal_numbers():
    """One unit in the last place of the loss, or of the accuracy, is a mismatch."""
    compare = Comparer("exact", None, stop_at_first=False)
    compare.metrics("1", 3, "train loss, acc", (0.5, 60.0), (0.5, 60.0), "from snapshot seq 2")
    compare.metrics("1", 3, "train loss, acc", (math.nextafter(0.5, 1), 60.0), (0.5, 60.0), "o")
    compare.metrics("1", 3, "train loss, acc", (0.5, 60.0), (0.5, math.nextafter(60.0, 0)), "o")
    assert _verdicts(compare) == [True, False, False]
    assert [r.what for r in compare.rows] == ["train loss, acc"] * 3
    assert compare.rows[0].detail == "equal"
    assert compare.rows[1].detail == ("re-executed o: loss 0.5000000000000001 acc 60.0; "
                                      "logged loss 0.5 acc 60.0")
    assert (compare.rows[1].epoch, compare.rows[1].seq) == ("1", 3)


def test_the_tolerant_standard_holds_its_bounds_inclusive():
    """2 % of the logged loss and 1 point of accuracy are accepted, a little more is not."""
    assert TOLERANCES == {"acc_points": 1.0, "loss_rel": 0.02, "weight_rel": 0.05}
    compare = Comparer("tolerant", None, stop_at_first=False)
    compare.metrics("1", 3, "val loss, acc", (51.0, 61.0), (50.0, 60.0), "here")    # at both
    compare.metrics("1", 3, "val loss, acc", (49.0, 59.0), (50.0, 60.0), "here")    # below
    compare.metrics("1", 3, "val loss, acc", (51.5, 60.0), (50.0, 60.0), "here")    # loss 3 %
    compare.metrics("1", 3, "val loss, acc", (50.0, 61.5), (50.0, 60.0), "here")    # acc 1.5
    compare.metrics("1", 3, "val loss, acc", (-51.0, 60.0), (-50.0, 60.0), "here")  # by |logged|
    assert _verdicts(compare) == [True, True, False, False, True]
    assert compare.rows[0].detail == "loss differs by 2.00%, acc by 1.00 points (here)"
    assert compare.rows[0].what == "val loss, acc"
    assert compare.rows[3].detail == "loss differs by 0.00%, acc by 1.50 points (here)"


def test_the_tolerant_standard_needs_a_loss_logged_as_zero_to_stay_near_zero():
    """A loss logged as 0 is compared relative to 1e-12, not waved through."""
    compare = Comparer("tolerant", None, stop_at_first=False)
    compare.metrics("1", 3, "train loss, acc", (0.0, 50.0), (0.0, 50.0), "o")
    compare.metrics("1", 3, "train loss, acc", (1e-14, 50.0), (0.0, 50.0), "o")
    compare.metrics("1", 3, "train loss, acc", (1e-13, 50.0), (0.0, 50.0), "o")
    assert _verdicts(compare) == [True, True, False]


def test_evaluations_follow_their_own_standard_and_training_does_not():
    """What ``reexecute`` sets for an old multi-process run: evaluations tolerant, training
    (and weights) still exact."""
    compare = Comparer("exact", None, stop_at_first=False, eval_standard="tolerant")
    near = ((50.1, 60.5), (50.0, 60.0))
    compare.metrics("1", 3, "val loss, acc", *near, "o", evaluation=True)
    compare.metrics("1", 3, "train loss, acc", *near, "o")
    compare.accuracy("final", 9, "test acc", 60.5, 60.0)
    assert _verdicts(compare) == [True, False, True]
    tolerant = Comparer("tolerant", None, stop_at_first=False, eval_standard="exact")
    tolerant.metrics("1", 3, "val loss, acc", *near, "o", evaluation=True)
    tolerant.metrics("1", 3, "train loss, acc", *near, "o")
    assert _verdicts(tolerant) == [False, True]


def test_a_test_accuracy_alone_is_compared_under_the_evaluation_standard():
    exact = Comparer("exact", None, stop_at_first=False)
    exact.accuracy("final", 9, "test acc", 60.0, 60.0)
    exact.accuracy("final", 9, "test acc", 60.1, 60.0)
    assert _verdicts(exact) == [True, False]
    assert [r.detail for r in exact.rows] == ["equal", "re-executed 60.1, logged 60.0"]
    tolerant = Comparer("tolerant", None, stop_at_first=False)
    for redone in (61.0, 59.0, 61.25, 58.75):
        tolerant.accuracy("final", 9, "test acc", redone, 60.0)
    assert _verdicts(tolerant) == [True, True, False, False]
    assert tolerant.rows[0].detail == "differs by 1.00 points"
    assert {r.what for r in exact.rows + tolerant.rows} == {"test acc"}
    assert (tolerant.rows[2].epoch, tolerant.rows[2].seq) == ("final", 9)


# -- tensors ------------------------------------------------------------------------------------

def _t(*values: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


def test_the_largest_difference_is_relative_to_each_tensors_scale():
    stored = {"a": _t(1.0, -4.0), "b": _t(10.0, 20.0), "c": _t(0.0, 0.0), "e": _t()}
    assert _largest_difference(dict(stored), stored) == (0.0, "none")
    redone = dict(stored, a=_t(1.0, -3.0), b=_t(10.0, 18.0))       # 1/4 and 2/20
    assert _largest_difference(redone, stored) == (0.25, "a")
    redone = dict(stored, a=_t(1.5, -4.0), b=_t(10.0, 10.0))       # 0.5/4 and 10/20
    assert _largest_difference(redone, stored) == (0.5, "b")
    assert _largest_difference(dict(stored, c=_t(0.0, 1e-30)), stored) == (math.inf, "c")
    small = {"s": _t(0.5, 0.25)}  # a scale below 1 divides too
    assert _largest_difference({"s": _t(0.5, 0.375)}, small) == (0.25, "s")


def test_the_comparison_is_in_double_precision():
    """A difference below float32's resolution at the tensor's scale still counts."""
    stored = {"w": _t(1.0, dtype=torch.float64)}
    assert _largest_difference({"w": _t(1.0 + 1e-12, dtype=torch.float64)}, stored)[0] > 0


@pytest.mark.parametrize("redone, detail", [
    ({"a": _t(1.0), "x": _t(1.0), "y": _t(1.0), "z": _t(1.0), "zz": _t(1.0)},
     "tensors differ: x, y, z"),
    ({"a": _t(1.0, 2.0)}, "a: (2,) torch.float32 vs (1,) torch.float32"),
    ({"a": _t(1.0, dtype=torch.float64)}, "a: (1,) torch.float64 vs (1,) torch.float32"),
], ids=["names", "shape", "dtype"])
def test_tensors_that_cannot_be_compared_differ_infinitely(redone, detail):
    assert _largest_difference(redone, {"a": _t(1.0)}) == (math.inf, detail)


def test_a_digest_mismatch_is_described_by_its_tensors():
    stored = {"a": _t(2.0, 4.0)}
    assert _describe_difference(dict(stored), stored) == (
        "the tensors are equal, the metadata is not")
    assert _describe_difference({"a": _t(2.0, 3.0)}, stored) == (
        "largest difference 2.50e-01 of the tensor's scale, in a")


# -- snapshots ----------------------------------------------------------------------------------

NET = types.SimpleNamespace(family="basic", config={"stages": [1, 1, 1], "width": 0.5})
TENSORS = {"model.w": _t(1.0, -2.0, 4.0), "model.b": _t(20.0)}


def _trainer(tensors: dict[str, torch.Tensor]) -> types.SimpleNamespace:
    """What ``Comparer.snapshot`` reads of a trainer: its net's config and its state tensors."""
    return types.SimpleNamespace(net=NET, state_tensors=lambda: dict(tensors))


def _stored(tmp_path: Path, arch: str = "1-1-1", seq: int = 8) -> tuple[Snap, SnapshotStore]:
    """TENSORS stored as the epoch-3 snapshot of a net of ``arch``, logged at ``seq``."""
    store = SnapshotStore(tmp_path)
    meta = steps.snapshot_metadata(_trainer(TENSORS), arch, 3, 0, "epoch")
    digest = store.put(TENSORS, meta)
    return Snap(seq, SnapshotWritten(digest=digest, epoch=3, step=0, label="epoch"), True), store


def test_the_exact_standard_compares_a_snapshot_by_digest(tmp_path):
    snap, store = _stored(tmp_path)
    compare = Comparer("exact", None, stop_at_first=False)
    compare.snapshot("3", snap, _trainer(TENSORS), store, "1-1-1")
    off = dict(TENSORS, **{"model.w": _t(1.0, -2.0, 4.0 + 2 ** -20)})
    compare.snapshot("3", snap, _trainer(off), store, "1-1-1", what="growth (seq 9) snapshot")
    compare.snapshot("3", snap, _trainer(TENSORS), store, "2-1-1")
    assert compare.rows == [
        Row("3", 8, "epoch snapshot", True, "digest equal"),
        Row("3", 8, "growth (seq 9) snapshot", False,
            "digest differs (largest difference 2.38e-07 of the tensor's scale, in model.w)"),
        Row("3", 8, "epoch snapshot", False,
            "digest differs (the tensors are equal, the metadata is not)"),
    ]


def test_the_tolerant_standard_compares_a_snapshot_tensor_by_tensor(tmp_path):
    snap, store = _stored(tmp_path)
    compare = Comparer("tolerant", None, stop_at_first=False)
    compare.snapshot("3", snap, _trainer(TENSORS), store, "2-1-1")  # metadata is not compared
    compare.snapshot("3", snap, _trainer(dict(TENSORS, **{"model.w": _t(1.0, -2.0, 4.2)})),
                     store, "1-1-1")
    compare.snapshot("3", snap, _trainer(dict(TENSORS, **{"model.b": _t(21.0)})), store, "1-1-1")
    compare.snapshot("3", snap, _trainer(dict(TENSORS, **{"model.b": _t(21.25)})), store, "1-1-1")
    assert _verdicts(compare) == [True, True, True, False]  # 5 % of the scale is the bound
    assert compare.rows[0].detail == "largest difference 0.00e+00 of the tensor's scale (none)"
    assert compare.rows[3].detail == "largest difference 6.25e-02 of the tensor's scale (model.b)"


def test_a_pruned_snapshot_is_listed_not_compared_and_a_missing_one_not_listed(tmp_path):
    snap, store = _stored(tmp_path)
    pruned = Snap(snap.seq, snap.event, kept=False)
    compare = Comparer("exact", None, stop_at_first=True)
    compare.snapshot("3", pruned, _trainer({}), store, "1-1-1")
    compare.snapshot("3", None, _trainer({}), store, "1-1-1")
    assert compare.rows == [Row("3", 8, "epoch snapshot", True, "not kept (pruned by retention)",
                                compared=False)]
