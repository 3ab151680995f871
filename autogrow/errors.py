"""The one line between the user's fault and ours.

Every error that means "what you gave is wrong" (a setting, a name, a path, a file, a run
directory, the machine) derives from :class:`UserError`: the CLI prints its message in one line
and exits 2, and a Python caller can catch them all at once. Any other exception is a bug in
autogrow: the CLI shows its traceback and says so. Pure Python (no torch), like ``arch`` and the
policies that raise them.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input or a broken run; the message is one line that says what and what to do."""


class InputError(UserError, ValueError):
    """A value given to autogrow is not valid: an arch string, a name, a count, a model file."""
