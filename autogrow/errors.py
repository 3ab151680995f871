"""The one line between the user's fault and ours.

Every error that means "what you gave is wrong" (a setting, a name, a path, a file, a run
directory, the machine) derives from :class:`UserError`: the CLI prints its message in one line
and exits 2, and a Python caller can catch them all at once. Any other exception is a bug in
autogrow: the CLI shows its traceback and says so. Pure Python (no torch), like ``arch`` and the
policies that raise them.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator


class UserError(Exception):
    """Bad input or a broken run; the message is one line that says what and what to do.

    The message speaks the Python API (``fork_run(at=…)``, ``run_dir``); where the command line
    names the same thing otherwise (``--at``, ``--run-dir``, ``autogrow fork``), ``cli`` holds
    the message in its words, and the CLI prints that (:func:`cli_message`)."""

    def __init__(self, message: str = "", *, cli: str | None = None) -> None:
        super().__init__(message)
        self.cli = cli


def cli_message(err: BaseException) -> str:
    """The first line of ``err`` in the command line's words."""
    text = getattr(err, "cli", None) or str(err)
    return text.splitlines()[0] if text else type(err).__name__


class InputError(UserError, ValueError):
    """A value given to autogrow is not valid: an arch string, a name, a count, a model file."""


@contextlib.contextmanager
def writing(path: str | os.PathLike[str], flag: str = "--out") -> Iterator[None]:
    """Writing a file at a path the user chose: one that cannot be written (no such directory,
    no permission) is bad input, named with the flag that chose it. A full file system stays an
    OSError, for the CLI's disk-full line."""
    try:
        yield
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise InputError(f"cannot write {path}: {err.strerror or err}; pick another "
                         f"{flag}") from err
