"""The CLI's line between the user's fault and a bug (issue 23 item 4): every
:class:`autogrow.errors.UserError` is one line and exit 2; any other exception keeps its
traceback, after a line that says it is a bug. In process (``cli.main``), so these are fast."""

from __future__ import annotations

import pytest

from autogrow import cli
from autogrow.config import ConfigError
from autogrow.engine import lifecycle as engine
from autogrow.engine.data import DataError
from autogrow.engine.device import DeviceError
from autogrow.engine.run import RunError
from autogrow.errors import InputError, UserError, cli_message
from autogrow.events import CodecError
from autogrow.policies import PolicyError
from autogrow.replay.export import ExportError
from autogrow.replay.report.summary import ReportError
from autogrow.replay.tensorboard import TensorBoardError, TensorBoardMissing
from autogrow.storage import LogCorrupted, StorageError
from autogrow.sweep import SweepError


def _resume_raises(monkeypatch, error: BaseException) -> None:
    def resume(*args, **kwargs):
        raise error
    monkeypatch.setattr(engine, "resume_run", resume)


@pytest.mark.parametrize("error", [
    RunError("the run is finished; fork it to train on"),
    DataError("no such directory /data/x: pass --data-root"),
    DeviceError("CUDA was asked for but is not available"),
    LogCorrupted("line 2 is corrupted"),
    ConfigError("unknown setting 'x'"),
    SweepError("the spec has no cells"),
    InputError("malformed arch string '1-x'"),
    CodecError("unknown event type 'x'"),
    PolicyError("growth_finished does not fit phase finetuning"),
    ExportError("the run has no final snapshot"),
    ReportError("not a run and not a directory of runs"),
    TensorBoardMissing("pip install tensorboard"),
], ids=lambda e: type(e).__name__)
def test_bad_input_or_a_broken_run_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path, error):
    _resume_raises(monkeypatch, error)
    assert cli.main(["resume", str(tmp_path)]) == cli.EXIT_USER_ERROR
    assert capsys.readouterr().err == f"autogrow: error: {error}\n"


@pytest.mark.parametrize("error", [ValueError("an int where a str was due"),
                                   KeyError("stage"), RuntimeError("shape mismatch"),
                                   TypeError("unsupported operand")],
                         ids=lambda e: type(e).__name__)
def test_any_other_exception_is_a_bug_and_keeps_its_traceback(monkeypatch, capsys, tmp_path,
                                                               error):
    """A bare ValueError is no longer taken for bad input: inside autogrow it is a bug."""
    _resume_raises(monkeypatch, error)
    with pytest.raises(type(error)) as raised:
        cli.main(["resume", str(tmp_path)])
    assert raised.value is error  # re-raised as it was: Python prints its traceback
    assert capsys.readouterr().err == cli.BUG_NOTE + "\n"
    assert "bug in autogrow" in cli.BUG_NOTE


def test_every_typed_error_is_a_user_error_and_keeps_its_old_base():
    """Callers that caught ValueError or RuntimeError still do; `except UserError` catches all."""
    for kind in (ConfigError, SweepError, InputError, CodecError, ExportError, ReportError,
                 TensorBoardError):
        assert issubclass(kind, UserError) and issubclass(kind, ValueError)
    for kind in (RunError, DataError, DeviceError, PolicyError):
        assert issubclass(kind, UserError) and issubclass(kind, RuntimeError)
    assert issubclass(StorageError, UserError)
    assert cli.user_errors() == (UserError, FileNotFoundError)  # no module's own list to keep


def test_an_unknown_family_s_layer_count_is_bad_input():
    """The family name comes from the user's config (plot and report count its layers)."""
    from autogrow.arch import convs_per_block
    with pytest.raises(InputError, match="unknown network family"):
        convs_per_block("transformer")


def test_a_malformed_value_from_the_command_line_is_bad_input(capsys, tmp_path):
    """Values that only the engine can judge (an arch string for a family) are typed too."""
    code = cli.main(["grow", "--preset", "smoke", "--seed-arch", "1-x-1",
                     "--run-dir", str(tmp_path / "r")])
    assert code == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith("autogrow: error: ") and err.count("\n") == 1 and "1-x-1" in err


def test_engine_errors_speak_the_python_api_and_the_cli_prints_its_own_words(monkeypatch,
                                                                             capsys, tmp_path):
    """``fork_run(at=…)`` in the message a Python caller sees, ``--at`` in the CLI's line; an
    error with one wording prints it as it is (issue 23 item 4)."""
    from autogrow.engine.lifecycle import fork_point
    with pytest.raises(RunError) as caught:
        fork_point([], "growth:x")
    assert str(caught.value) == "fork_run(at='growth:x'): expected growth:N with N a number"
    assert "--at" not in str(caught.value)
    _resume_raises(monkeypatch, caught.value)
    assert cli.main(["resume", str(tmp_path)]) == cli.EXIT_USER_ERROR
    assert capsys.readouterr().err == ("autogrow: error: --at 'growth:x': expected growth:N "
                                       "with N a number\n")
    assert cli_message(RunError("one wording")) == "one wording"
    assert cli_message(RunError("first line\nsecond")) == "first line"


def test_writing_a_chosen_path_that_cannot_be_written_is_bad_input_but_a_full_disk_is_not(
        tmp_path):
    """``errors.writing``: export's and plot's ``--out`` (a traceback before); ENOSPC passes
    through as it is, for the CLI's disk-full line (exit 74)."""
    import errno

    from autogrow.errors import writing
    target = tmp_path / "missing" / "model.safetensors"
    with pytest.raises(InputError) as caught, writing(target):
        target.write_bytes(b"x")
    assert str(caught.value) == (f"cannot write {target}: No such file or directory; "
                                 "pick another --out")
    with pytest.raises(OSError) as full, writing(target, "--tensorboard"):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert not isinstance(full.value, UserError) and full.value.errno == errno.ENOSPC


def test_a_missing_sweep_spec_and_a_setting_of_the_wrong_type_read_right(tmp_path, capsys):
    """The file is called what it is (a sweep spec, not a config file); "an int"."""
    assert cli.main(["sweep", str(tmp_path / "nope.toml"), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == (f"autogrow: error: sweep spec {tmp_path / 'nope.toml'} "
                                       "does not exist\n")
    with pytest.raises(ConfigError, match="^setting interval expects an int, got 'x'$"):
        from autogrow.config import coerce
        coerce("interval", "x")
