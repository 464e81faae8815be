"""Errors a user can cause, and how any error becomes one readable line."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the command, the config or the data: reported as one line, exit code 1."""


class ConfigError(UserError):
    """A config value that is unknown, of the wrong type or out of range."""


class DataError(UserError):
    """A data file or data set that cannot be used as asked."""


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class RunInterrupted(Exception):
    """Ctrl-C or SIGTERM stopped a run after its checkpoint and partial results were written."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class RunStopped(Exception):
    """A callback ended the run on purpose before its epochs were done (a pruned search trial)."""

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.status = status


def one_line(exc: BaseException) -> str:
    """Fold an exception's message (and its direct cause's first line) into one line."""
    lines = [line.strip() for line in str(exc).split("Config search path:")[0].splitlines() if line.strip()]
    text = " ".join(lines) or type(exc).__name__
    cause = exc.__cause__
    if cause is not None and not isinstance(exc, UserError):
        first = next((line.strip() for line in str(cause).splitlines() if line.strip()), "")
        if first and first not in text:
            text = f"{text} ({first})"
    return text
