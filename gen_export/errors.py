"""The one exception type users see.

Every user-facing failure names the problem and the fix on one line; the CLI prints it and exits
non-zero. Anything else escaping is a bug in genexport, not bad input.
"""

from __future__ import annotations


class GenExportError(Exception):
    """A problem with the user's input or environment, with the fix to apply."""

    def __init__(self, problem: str, fix: str) -> None:
        self.problem = problem.rstrip(". ")
        self.fix = fix.rstrip(". ")
        super().__init__(f"{self.problem}. Fix: {self.fix}.")


class ParityError(GenExportError):
    """The exported graph does not reproduce the source model: nothing is written."""
