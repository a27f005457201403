"""The exceptions a user can meet. Each prints as one line that says what to fix.

`CrmbookError` is caught by the command line, which prints `str(error)` and exits with
`exit_code`; no traceback is shown (set CRMBOOK_DEBUG=1 to see one).
"""
from __future__ import annotations


class CrmbookError(Exception):
    """Base class: a problem the user can act on."""

    exit_code = 1


class ConfigError(CrmbookError):
    """The params file is invalid: names the file and the key path."""

    exit_code = 2

    def __init__(self, path: object, key: str, problem: str):
        self.path, self.key, self.problem = str(path), key, problem
        where = f"{self.path}: {key}: " if key else f"{self.path}: "
        super().__init__(where + problem)


class InputError(CrmbookError):
    """An input file cannot be used: names the file, and the column and row when known."""

    exit_code = 2

    def __init__(self, file: object, problem: str, column: str | None = None, row: int | None = None):
        self.file, self.problem, self.column, self.row = str(file), problem, column, row
        where = [self.file]
        if column is not None:
            where.append(f"column {column!r}")
        if row is not None:
            where.append(f"row {row}")
        super().__init__(", ".join(where) + ": " + problem)


class RunError(CrmbookError):
    """A stage of a run failed; the run folder is kept as <run_id>.failed."""

    exit_code = 1
