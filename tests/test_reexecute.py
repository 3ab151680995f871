"""``autogrow verify --reexecute``: the logged metrics and weights are what this code computes
from the logged snapshots and data (issue 15).

Each forgery keeps the hash chain valid (``tests.forgery``) and, except where the test says so,
passes the decision audit; re-execution must catch it and name the first bad seq.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import attrs
import pytest

from autogrow.config import RunConfig
from autogrow.engine.compare import Row, choose_standard
from autogrow.engine.reexecute import plan, reexecute
from autogrow.engine.factories import load_data, prepare_execution, trainer_for
from autogrow.engine import steps
from autogrow.replay.verify import verify_run
from autogrow.storage import SnapshotStore
from tests.conftest import autogrow_cli
from tests.forgery import Record, forge, index_of


def _epoch_index(records: list[Record], epoch: int) -> int:
    return index_of(records, "epoch_completed", where=lambda p: p["epoch"] == epoch)


def _first_failure(run: Path, count: int | None = None, standard: str = "exact") -> Row:
    outcome = reexecute(run, count, standard=standard)
    assert not outcome.ok, "re-execution accepted the forgery"
    failure = outcome.first_failure
    assert failure is not None and failure is outcome.rows[-1], "it did not stop at the mismatch"
    return failure


def test_smoke_run_reexecuted_in_full_passes(smoke_run, smoke_log):
    """Every epoch (each starts from a kept snapshot in a smoke run) and the final evaluation
    compare equal: metrics, every kept epoch and growth snapshot, test accuracy, final digest."""
    outcome = reexecute(smoke_run, None)
    assert outcome.ok, [r for r in outcome.rows if not r.ok]
    assert outcome.standard == "exact" and outcome.why.startswith("same machine class")
    epochs = sorted({p["epoch"] for t, _, p in smoke_log if t == "epoch_completed"})
    assert outcome.epochs == len(epochs) and not outcome.skipped
    for epoch in epochs:
        seq = _epoch_index(smoke_log, epoch) + 1
        assert {r.what for r in outcome.rows if r.seq == seq} == {"train loss, acc", "val loss, acc"}
    growth_seqs = [i + 1 for i, (t, _, p) in enumerate(smoke_log)
                   if t == "snapshot_written" and p["label"] == "growth"]
    compared = {r.seq for r in outcome.rows if r.compared}
    assert set(growth_seqs) <= compared  # every growth redone and its snapshot matched by digest
    final = [r for r in outcome.rows if r.epoch == "final"]
    assert [r.what for r in final] == ["test loss, acc", "weights digest"]


def test_the_run_records_its_machine_class(smoke_log):
    versions = smoke_log[0][2]["versions"]
    assert versions["cpu"] and versions["cpu_capability"] and versions["torch"]


def test_cli_prints_the_table_and_the_cost(smoke_run):
    proc = autogrow_cli("verify", str(smoke_run), "--reexecute", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "OK:" in out.splitlines()[1] and "re-executing 2 epoch(s)" in out
    assert "epoch    seq  compared" in out and "final" in out
    assert "standard: exact (same machine class" in out
    assert "re-executed 2 epoch(s) in" in out and "the run trained them in" in out


def test_the_choice_of_epochs_is_reproducible_and_holds_the_last_growth(smoke_run):
    the_plan = plan(smoke_run)
    grew = [t.epoch for t in the_plan.epochs if t.growths]
    for count in (1, 2, 3):
        chosen = [t.epoch for t in the_plan.choose(count)]
        assert len(chosen) == count and grew[-1] in chosen
        assert chosen == [t.epoch for t in plan(smoke_run).choose(count)]
    assert the_plan.choose(None) == [t for t in the_plan.epochs if t.runnable] == list(the_plan.epochs)


@pytest.mark.parametrize("field", ["val_acc", "train_loss"])
def test_an_edited_metric_is_caught_at_its_epoch(smoke_run, log, tmp_path, field):
    """The logged metric of the last epoch (fine-tuning: no decision reads it, so the decision
    audit passes) is nudged by one unit in the last place."""
    i = _epoch_index(log, max(p["epoch"] for t, _, p in log if t == "epoch_completed"))
    log[i][2][field] = math.nextafter(log[i][2][field], math.inf)
    run = forge(smoke_run, log, tmp_path / "run")
    assert verify_run(run).ok, "the decision audit alone cannot see this forgery"
    failure = _first_failure(run)
    assert failure.seq == i + 1
    assert failure.what == ("val loss, acc" if field == "val_acc" else "train loss, acc")


def test_a_snapshot_replaced_by_one_from_another_seed_is_caught(smoke_run, log, tmp_path):
    """The start snapshot swapped for the seed net of seed 1 (same arch, label, epoch; the log
    re-pointed at it): chain, snapshot metadata and decisions all pass; epoch 1 re-executed from
    it does not give the logged metrics."""
    config = attrs.evolve(RunConfig.from_mapping(dict(log[0][2]["config"])), seed=1)
    execution = prepare_execution(config)
    trainer = trainer_for(config, execution, load_data(config, execution), config.seed_arch)
    run = forge(smoke_run, log, tmp_path / "run")
    i = index_of(log, "snapshot_written", where=lambda p: p["label"] == "start")
    meta = steps.snapshot_metadata(trainer, config.seed_arch, 0, 0, "start")
    log[i][2]["digest"] = SnapshotStore(run).put(trainer.state_tensors(), meta)
    forge(smoke_run, log, run)
    assert verify_run(run).ok, "the decision audit alone cannot see this forgery"
    failure = _first_failure(run)
    assert failure.seq == _epoch_index(log, 1) + 1 and failure.what == "train loss, acc"
    assert f"from snapshot seq {i + 1}" in failure.detail


def test_a_changed_growth_seed_is_caught_at_the_growth_snapshot(smoke_run, log, tmp_path):
    """The first block_added's init seed changed: re-executing epoch 1's growth with the logged
    seed does not give the logged growth snapshot. (The decision audit sees it too: the policy
    derives the seed; re-execution shows the weights do not come from it.)"""
    i = index_of(log, "block_added")
    log[i][2]["init_seed"] += 1
    run = forge(smoke_run, log, tmp_path / "run")
    failure = _first_failure(run, count=None)
    growth_snapshot = index_of(log, "snapshot_written", i, where=lambda p: p["label"] == "growth")
    assert failure.seq == growth_snapshot + 1 and f"seq {i + 1}" in failure.what
    assert "digest differs" in failure.detail


def test_a_pruned_run_reexecutes_what_it_can_and_names_the_rest(smoke_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    assert autogrow_cli("prune", str(run), "--keep", "1").returncode == 0
    outcome = reexecute(run, None)
    assert outcome.ok
    kept = {d for d in SnapshotStore(run).digests()}
    runnable = [t.epoch for t in plan(run).epochs if t.start.event.digest in kept]
    skipped = [t.epoch for t in plan(run).epochs if t.start.event.digest not in kept]
    assert skipped and runnable  # keep 1 leaves growth points, not the epoch before the last
    assert outcome.epochs == len(runnable)
    assert outcome.skipped == tuple(f"epoch {e}: its start snapshot is not kept (pruned)"
                                    for e in skipped)
    assert any(not r.compared and "pruned" in r.detail for r in outcome.rows)
    proc = autogrow_cli("verify", str(run), "--reexecute", "all")
    assert proc.returncode == 0, proc.stdout
    assert f"not re-executed: epoch {skipped[0]}: its start snapshot is not kept" in proc.stdout


def test_a_fork_reexecutes(smoke_run, tmp_path):
    fork = tmp_path / "fork"
    proc = autogrow_cli("fork", str(smoke_run), "--at", "growth:2", "--set", "finetune_epochs=2",
                        "--run-dir", str(fork))
    assert proc.returncode == 0, proc.stderr
    outcome = reexecute(fork, None)
    assert outcome.ok and outcome.epochs == len(plan(fork).epochs) > 0
    assert plan(fork).epochs[0].start.event.label == "fork"


def test_cli_fails_naming_the_seq_and_stops(smoke_run, log, tmp_path):
    i = _epoch_index(log, 2)
    log[i][2]["train_acc"] += 0.5
    run = forge(smoke_run, log, tmp_path / "run")
    proc = autogrow_cli("verify", str(run), "--reexecute", "all")
    assert proc.returncode == 1
    assert (f"FAIL: seq {i + 1}: re-executing epoch 2 does not give the logged train loss, acc"
            in proc.stdout)
    table = proc.stdout.split("result\n", 1)[1].split("standard:", 1)[0].splitlines()
    assert "MISMATCH" in table[-1] and table[-1].split()[:2] == ["2", str(i + 1)]
    assert len(table) > 3 and {row.split()[0] for row in table[:-1]} == {"1"}, \
        "it went on after the mismatch (or did not re-execute epoch 1 first)"


def test_tolerant_standard_reports_differences_and_holds_its_bounds(smoke_run, log, tmp_path):
    """On another machine class exact equality is not expected: within the stated tolerances a
    re-execution passes (and says by how much it differs), beyond them it fails."""
    i = _epoch_index(log, 1)  # the first epoch: a mismatch there ends the re-execution at once
    log[i][2]["val_acc"] += 0.5  # within 1 point
    run = forge(smoke_run, log, tmp_path / "near")
    assert not reexecute(run, None, standard="exact").ok
    outcome = reexecute(run, None, standard="tolerant")
    assert outcome.ok and outcome.standard == "tolerant"
    assert any("acc by 0.50 points" in r.detail for r in outcome.rows if r.seq == i + 1)
    assert any("largest difference 0.00e+00" in r.detail for r in outcome.rows)
    log[i][2]["val_acc"] += 1.0  # 1.5 points off
    failure = _first_failure(forge(smoke_run, log, tmp_path / "far"), standard="tolerant")
    assert failure.seq == i + 1


def test_the_standard_follows_the_machine_class():
    run = {"torch": "2.14.1", "device": "cpu", "cpu": "Xeon A", "cpu_capability": "AVX512"}
    assert choose_standard("auto", run, dict(run))[0] == "exact"
    standard, why = choose_standard("auto", run, dict(run, cpu_capability="AVX2"))
    assert standard == "tolerant" and "cpu_capability AVX512 (run) vs AVX2 (here)" in why
    assert choose_standard("auto", dict(run, device="cuda:0", gpu="H100"),
                           dict(run, device="cuda", gpu="H100"))[0] == "exact"
    assert choose_standard("auto", {"torch": "2.14.1"}, run)[0] == "exact"  # unrecorded: assumed
    assert choose_standard("tolerant", run, run)[0] == "tolerant"
    with pytest.raises(ValueError, match="--standard"):
        choose_standard("loose", run, run)


def test_bad_count_is_a_usage_error(smoke_run):
    proc = autogrow_cli("verify", str(smoke_run), "--reexecute", "0")
    assert proc.returncode == 2 and "at least 1 epoch" in proc.stderr


def test_a_log_that_cannot_be_read_is_reported_not_re_executed(smoke_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    path = run / "events.jsonl"
    path.write_bytes(path.read_bytes().replace(b'"epoch_completed"', b'"epoch_complete_"', 1))
    proc = autogrow_cli("verify", str(run), "--reexecute", "all")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    fails = [ln for ln in lines if ln.startswith("FAIL: ")]
    assert "line" in fails[0] and "corrupted" in fails[0]
    assert lines[-2].startswith("FAILED: the log is damaged after ")
    assert lines[-1].startswith("FAIL: not re-executed: ") and "corrupted" in lines[-1]


def test_a_test_accuracy_forged_by_less_than_a_point_fails_the_exact_standard(
        smoke_run, log, tmp_path):
    """The final test accuracy and loss are recomputed from the final snapshot and compared
    exactly: a forgery within the tolerant standard's point still fails (fails if the exact
    standard compared the final accuracy with any slack)."""
    finish = index_of(log, "run_finished")
    log[finish][2]["test_acc"] += 0.1
    run = forge(smoke_run, log, tmp_path / "acc")
    failure = _first_failure(run, 1)
    assert (failure.seq, failure.what) == (finish + 1, "test loss, acc")
    assert "logged loss" in failure.detail
    assert reexecute(run, 1, standard="tolerant").ok  # what a tolerant final check would accept

    log[finish][2]["test_acc"] -= 0.1
    log[finish][2]["test_loss"] = math.nextafter(log[finish][2]["test_loss"], math.inf)
    failure = _first_failure(forge(smoke_run, log, tmp_path / "loss"), 1)
    assert (failure.seq, failure.what) == (finish + 1, "test loss, acc")


def test_a_run_finished_logged_before_the_test_loss_is_compared_by_accuracy(
        smoke_run, log, tmp_path):
    """run_finished of schema 1 (no test_loss) is upcast; its accuracy is still compared exactly."""
    finish = index_of(log, "run_finished")
    type_, _, payload = log[finish]
    log[finish] = (type_, 1, {k: v for k, v in payload.items() if k != "test_loss"})
    outcome = reexecute(forge(smoke_run, log, tmp_path / "old"), 1)
    assert outcome.ok, [r for r in outcome.rows if not r.ok]
    assert [r.what for r in outcome.rows if r.epoch == "final"] == ["test acc", "weights digest"]
    log[finish][2]["test_acc"] += 0.1
    failure = _first_failure(forge(smoke_run, log, tmp_path / "old-forged"), 1)
    assert (failure.seq, failure.what) == (finish + 1, "test acc")

