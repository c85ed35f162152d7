"""Errors that users see: each names where the problem is and how to fix it."""

from __future__ import annotations


class DataError(ValueError):
  """Bad input data. The message names the file, the line (when there is one) and the fix.

  Attributes:
    path: the file or directory at fault (str), or None.
    line: 1-based line number in `path`, or None when the problem is not on one line.
    problem: what is wrong.
    fix: what the user should do.
  """

  def __init__(self, problem: str, *, path: str | None = None, line: int | None = None,
               fix: str | None = None):
    self.path = None if path is None else str(path)
    self.line = line
    self.problem = problem
    self.fix = fix
    where = ""
    if self.path is not None:
      where = self.path + (f":{line}" if line is not None else "") + ": "
    message = where + problem
    if fix:
      message += f" Fix: {fix}"
    super().__init__(message)


class ConfigError(ValueError):
  """A bad configuration value; the message names the field and the fix."""


class ExportError(RuntimeError):
  """An export that cannot be published (it was not written, or it failed its check)."""


class TrainingError(RuntimeError):
  """A run that cannot go on (a non-finite loss, unreadable checkpoints); the message names the
  step or the file and the fix."""
