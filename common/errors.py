"""Errors a user can fix.

Every problem caused by the user's input (a file, a schema, a flag, a spent budget) is an
``InputError``: the command line prints its message as one paragraph and exits with code 2,
with no traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class InputError(Exception):
    """A problem in the user's input; the message names the file, rows/columns and the fix."""

    exit_code = 2


class SchemaError(InputError):
    """The schema file itself is malformed or inconsistent."""


class DataError(InputError):
    """A data file does not match its schema."""


class BudgetExceededError(InputError):
    """Training would spend more privacy budget than the site configured."""
