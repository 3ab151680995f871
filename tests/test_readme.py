"""Every command the README shows parses: each ``autogrow …`` line of its shell code blocks
(also under ``torchrun … -m autogrow``) is accepted by the real parser, every subcommand's
``--help`` prints, the flags of the commands quoted in prose exist, the ``make`` targets exist,
and the scripts and example files the commands name are in the repository. The README is what a
new user copies from, so a renamed flag must fail here, not on their machine."""

from __future__ import annotations

import argparse
import ast
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import autogrow
from autogrow.cli import build_parser
from tests.conftest import REPO

README = (REPO / "README.md").read_text()
SEPARATORS = {"&&", "||", ";", "|"}


def code_blocks(language: str) -> list[str]:
    """The bodies of the README's fenced code blocks in ``language``."""
    return [body for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", README, re.M | re.S)
                if lang == language]


def shell_commands() -> list[list[str]]:
    """Every command of the bash blocks as tokens: continuation lines joined, comments dropped,
    ``a && b`` split in two."""
    commands = []
    for body in code_blocks("bash"):
        for line in body.replace("\\\n", " ").splitlines():
            current: list[str] = []
            for token in shlex.split(line, comments=True) + [";"]:
                if token in SEPARATORS:
                    if current:
                        commands.append(current)
                    current = []
                else:
                    current.append(token)
    return commands


def autogrow_args(tokens: list[str]) -> list[str] | None:
    """The arguments autogrow gets from a command line (``autogrow ARGS`` or ``… -m autogrow
    ARGS``), or None for another program."""
    if tokens[0] == "autogrow":
        return tokens[1:]
    if "-m" in tokens and tokens[tokens.index("-m") + 1:][:1] == ["autogrow"]:
        return tokens[tokens.index("-m") + 2:]
    return None


COMMANDS = [args for tokens in shell_commands() if (args := autogrow_args(tokens)) is not None]
TORCHRUN = [tokens for tokens in shell_commands() if tokens[0] == "torchrun"]


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """autogrow's subcommands by name."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_the_readme_shows_commands_of_every_kind_checked_here():
    """The extraction itself: if it found nothing, every test below would pass vacuously."""
    used = {args[0] for args in COMMANDS if args and not args[0].startswith("-")}
    assert {"grow", "train", "resume", "verify", "fork", "sweep"} <= used
    assert any(args == ["--help"] for args in COMMANDS)
    assert TORCHRUN and make_targets()


@pytest.mark.parametrize("args", COMMANDS, ids=lambda args: " ".join(args))
def test_each_readme_command_parses(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """autogrow's own parser accepts the command as written (paths need not exist: parsing
    does not touch them)."""
    parser = build_parser()
    try:
        parsed = parser.parse_args(args)
    except SystemExit as exit_:
        # --help exits 0 after printing; anything else is argparse refusing the command
        assert exit_.code == 0 and {"-h", "--help"} & set(args), capsys.readouterr().err
        return
    assert parsed.command == args[0]


@pytest.mark.parametrize("name", sorted(subparsers(build_parser())))
def test_every_subcommand_prints_its_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``autogrow NAME --help``: help text is formatted lazily, so a stray ``%`` in a flag's
    help would only fail here."""
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([name, "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: autogrow {name} ")


def test_autogrow_help_runs_as_a_program():
    """``autogrow --help`` in a fresh process (the entry point the install creates, else
    ``python -m autogrow``) lists every subcommand."""
    script = Path(sys.executable).with_name("autogrow")
    program = [str(script)] if script.exists() else [sys.executable, "-m", "autogrow"]
    proc = subprocess.run([*program, "--help"], capture_output=True, text=True, timeout=120,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    for name in subparsers(build_parser()):
        assert re.search(rf"^\s+{name}\b", proc.stdout, re.M), name


def test_commands_quoted_in_prose_use_real_subcommands_and_flags():
    """Inline ``autogrow SUB …`` spans (placeholders such as RUN allowed): the subcommand exists
    and each ``--flag`` is one of its options."""
    prose = re.sub(r"^```.*?^```", "", README, flags=re.M | re.S)
    spans = [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose)]
    quoted = [args for span in spans if (args := autogrow_args(span.split()))]
    assert quoted, "no inline autogrow command found"
    commands = subparsers(build_parser())
    for args in quoted:
        assert args[0] in commands, args
        options = commands[args[0]]._option_string_actions
        for token in args[1:]:
            if token.startswith("--"):
                assert token.split("=")[0] in options, (args, token)


def test_torchrun_lines_parse_with_torchruns_own_parser():
    """The torchrun options the README shows exist in this torch's launcher."""
    from torch.distributed.run import get_args_parser

    for tokens in TORCHRUN:
        parsed = get_args_parser().parse_args(tokens[1:])
        assert parsed.module and parsed.training_script == "autogrow", tokens


def make_targets() -> set[str]:
    """``make X`` in the README's code blocks and prose."""
    return set(re.findall(r"(?:^|`)make ([a-z][\w-]*)", README, re.M))


@pytest.mark.parametrize("target", sorted(make_targets()))
def test_make_targets_named_in_the_readme_exist(target: str) -> None:
    """A rule for the target in the Makefile, and make can plan it (-n: nothing runs)."""
    assert re.search(rf"^{re.escape(target)}:", (REPO / "Makefile").read_text(), re.M), target
    proc = subprocess.run(["make", "-n", target], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_files_the_commands_name_are_in_the_repository():
    """Scripts run by path (``.venv/bin/python benchmarks/X.py``, ``bash …``) and the example
    specs the commands read."""
    named = {token for tokens in shell_commands() for token in tokens
             if re.match(r"(benchmarks|examples|docs)/", token)}
    assert any(name.startswith("benchmarks/") for name in named)
    missing = sorted(name for name in named if not (REPO / name).exists())
    assert not missing


def test_the_python_example_compiles_and_uses_real_names():
    """The README's Python block: valid syntax, and every ``autogrow.NAME`` it calls exists."""
    [block] = code_blocks("python")
    tree = ast.parse(block)
    names = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
             and isinstance(node.value, ast.Name) and node.value.id == "autogrow"}
    assert {"grow", "resolve_config", "load_model"} <= names
    for name in names:
        assert callable(getattr(autogrow, name, None)), name
