"""The relaunch plan (``engine/relaunch.py``): what the same command, relaunched with
``--resume-if-exists``, does with its run directory — start, resume, report the finished run, or
refuse and touch nothing.

In-process tests on copies of the session's smoke run, fast enough for ``make mutate`` to run
them against every mutant; the command-line behaviour is in ``test_preemption.py``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import attrs
import pytest

from autogrow.config import RunConfig
from autogrow.engine.relaunch import CONFIG_NAME, fresh, relaunch_plan
from autogrow.engine.lifecycle import check_new_run_dir, finished_result, relaunch_action
from autogrow.engine.run import RunError
from autogrow.errors import cli_message
from autogrow.storage import EventLog, LogCorrupted
from tests.forgery import Record, forge, index_of


def _config(log: list[Record]) -> RunConfig:
    """The settings the smoke run was started with (as a relaunch passes them: resolved)."""
    return RunConfig.from_mapping(dict(log[0][2]["config"]))


def _copy(smoke_run: Path, target: Path) -> Path:
    shutil.copytree(smoke_run, target, ignore=shutil.ignore_patterns(".lock"))
    return target


def _contents(run_dir: Path) -> dict[str, bytes]:
    """Every file of ``run_dir`` (not below it) by name: deciding must change none of them."""
    return {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}


# -- a directory a new run may use --------------------------------------------------------------

def test_a_missing_or_empty_directory_is_fresh(tmp_path):
    assert fresh(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    assert fresh(tmp_path / "empty")
    (tmp_path / "file").write_text("not a directory")
    assert not fresh(tmp_path / "file")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("someone's files")
    assert not fresh(tmp_path / "other")


@pytest.mark.parametrize("files, is_fresh", [
    ({"events.jsonl": b""}, True),
    ({"events.jsonl": b"", ".lock": b"123\n", CONFIG_NAME: b"[run]\n",
      "events.jsonl.torn-1": b"{\"seq\""}, True),
    ({"events.jsonl": b"{\"seq\": 1, \"type\""}, True),           # a torn first record only
    ({"events.jsonl": b"", "notes.txt": b"x"}, False),            # something else of value
    ({CONFIG_NAME: b"[run]\n", ".lock": b""}, False),             # no log at all
    ({"events.jsonl": b"junk\n"}, False),                         # a damaged log: not ours to reuse
], ids=["empty-log", "with-lock-config-and-torn-tail", "torn-first-record", "other-files",
        "no-log", "damaged-log"])
def test_a_launch_killed_before_its_first_event_leaves_a_fresh_directory(tmp_path, files, is_fresh):
    """Deciding only reads: no lock file is made, a torn tail is not set aside."""
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    assert fresh(tmp_path) is is_fresh
    assert _contents(tmp_path) == files


def test_a_directory_with_a_run_is_not_fresh(smoke_run, tmp_path):
    run = _copy(smoke_run, tmp_path / "run")
    assert not fresh(run)
    with pytest.raises(RunError) as err:
        check_new_run_dir(run)
    assert "is not empty; pass a new run_dir" in str(err.value)  # the Python API's words
    assert "is not empty; pick a new --run-dir" in cli_message(err.value)  # the command line's
    check_new_run_dir(tmp_path / "new")  # a fresh one passes


# -- the plan -----------------------------------------------------------------------------------

def test_a_fresh_directory_starts(smoke_log, tmp_path):
    assert relaunch_plan(tmp_path / "new", _config(smoke_log)) == {"action": "start"}
    assert relaunch_action(_config(smoke_log), tmp_path / "new") == "start"


def test_a_finished_run_with_the_same_settings_is_reported(smoke_run, smoke_log, tmp_path):
    run = _copy(smoke_run, tmp_path / "run")
    config = _config(smoke_log)
    assert relaunch_plan(run, config) == {"action": "finished"}
    assert relaunch_action(config, str(run)) == "finished"
    result = finished_result(run)
    finished = smoke_log[index_of(smoke_log, "run_finished")][2]
    assert (result.run_dir, result.arch, result.test_acc, result.weights_digest) == (
        run, finished["arch"], finished["test_acc"], finished["weights_digest"])


def test_threads_left_to_torch_match_the_number_the_run_recorded(smoke_run, smoke_log, tmp_path):
    """``threads = 0`` ("torch's default") was resolved when the run started; relaunching with
    0 is the same command, another number is another setting."""
    run = _copy(smoke_run, tmp_path / "run")
    config = _config(smoke_log)
    assert relaunch_plan(run, attrs.evolve(config, threads=0)) == {"action": "finished"}
    plan = relaunch_plan(run, attrs.evolve(config, threads=config.threads + 1))
    assert plan == {"error": f"{run} holds a run started with other settings: threads (run: "
                             f"{config.threads}, now: {config.threads + 1}); nothing was changed"
                             " — relaunch with the run's settings, `autogrow fork` it, or pick "
                             "a new --run-dir"}


def test_other_settings_are_refused_naming_each_and_nothing_is_touched(
        smoke_run, smoke_log, tmp_path):
    run = _copy(smoke_run, tmp_path / "run")
    log_before = (run / "events.jsonl").read_bytes()
    config = _config(smoke_log)
    changed = attrs.evolve(config, tau=config.tau * 2, seed=config.seed + 1)
    plan = relaunch_plan(run, changed)
    assert list(plan) == ["error"]
    assert plan["error"].startswith(
        f"{run} holds a run started with other settings: tau (run: {config.tau!r}, now: "
        f"{config.tau * 2!r}), seed (run: {config.seed!r}, now: {config.seed + 1!r}); "
        "nothing was changed")  # in the settings' order
    with pytest.raises(RunError) as err:
        relaunch_action(changed, run)
    assert str(err.value) == plan["error"]
    assert (run / "events.jsonl").read_bytes() == log_before


def test_an_unfinished_run_with_the_same_settings_resumes(smoke_run, smoke_log, log, tmp_path):
    run = forge(smoke_run, log[:index_of(log, "run_finished")], tmp_path / "unfinished")
    assert relaunch_plan(run, _config(smoke_log)) == {"action": "resume"}
    with pytest.raises(RunError, match="has not finished"):
        finished_result(run)


def test_the_plan_reads_a_run_without_touching_it(smoke_run, smoke_log, log, tmp_path):
    """A run killed mid-append has a torn tail: the plan leaves it (and the lock) to the
    resume that follows, which sets it aside under the lock."""
    run = forge(smoke_run, log[:index_of(log, "run_finished")], tmp_path / "killed")
    with (run / "events.jsonl").open("ab") as out:
        out.write(b'{"seq": 99, "type": "epo')
    before = _contents(run)
    assert relaunch_plan(run, _config(smoke_log)) == {"action": "resume"}
    assert _contents(run) == before


def test_a_directory_that_holds_no_run_is_refused(smoke_log, tmp_path):
    (tmp_path / "notes.txt").write_text("someone's files")
    assert relaunch_plan(tmp_path, _config(smoke_log)) == {
        "error": f"run directory {tmp_path} is not empty and holds no run; pick a new --run-dir"}


def test_a_log_that_does_not_begin_with_run_started_is_refused(smoke_run, smoke_log, log,
                                                               tmp_path):
    run = forge(smoke_run, log[1:], tmp_path / "headless")
    assert relaunch_plan(run, _config(smoke_log)) == {
        "error": f"{run}: the log does not begin with run_started"}


def test_a_damaged_log_is_refused_in_one_line_for_every_rank(smoke_run, smoke_log, tmp_path):
    """Rank 0 reads the log and tells the others: the error is part of the plan, not raised."""
    run = _copy(smoke_run, tmp_path / "run")
    with (run / "events.jsonl").open("ab") as out:
        out.write(b"{\"not\": \"a record\"}\n")
    with pytest.raises(LogCorrupted) as err:
        EventLog.open(run, readonly=True)
    plan = relaunch_plan(run, _config(smoke_log))
    assert plan == {"error": f"{run}: {str(err.value).splitlines()[0]}"}
