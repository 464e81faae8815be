"""Errors a user can cause, and how any error becomes one readable line."""

from __future__ import annotations

import errno
import os


class UserError(Exception):
    """A mistake in the command, the config or the data: reported as one line, exit code 1."""


class ConfigError(UserError):
    """A config value that is unknown, of the wrong type or out of range."""


class CheckpointError(UserError):
    """A checkpoint that is missing, unreadable, unsafe, or made for another model or data."""


class DataError(UserError):
    """A data file or data set that cannot be used as asked."""


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class DiskError(UserError):
    """A file could not be written or read where it lives: a full disk, a read-only folder, no permission.
    The user's situation to change, not a bug."""


class RunInterrupted(BaseException):
    """Ctrl-C or SIGTERM stopped a run after its checkpoint and partial results were written.

    A BaseException, as KeyboardInterrupt is: Hydra's launchers catch every Exception of a job as that job's
    failure and start the next one, while an interrupt stops the whole sweep or search.
    """

    def __init__(self, message: str, exit_code: int, then: str = "") -> None:
        super().__init__(message)
        self.exit_code, self.then = exit_code, then  # then: how a single run goes on (a sweep says its own)


class Reported(BaseException):
    """A user's mistake that the job has already reported in one line (to the terminal and the run's log): the
    command exits 1 without saying it again, or shows the traceback of its cause (HYDRA_FULL_ERROR=1). A
    BaseException, as SystemExit is, so that Hydra's job runner passes it on without a report of its own."""


class Terminated(BaseException):
    """SIGTERM outside Lightning's fit (which handles it itself): before training starts, or after it ends."""


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


# OSError numbers that describe the machine's state (space, permissions), not a fault in dltrain.
# (A missing file is not among them: dltrain names the missing files a user gives, and any other is a bug.)
_USER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.ENAMETOOLONG}


def is_disk_error(exc: BaseException) -> bool:
    """Whether `exc` is an OSError about space or permissions (the machine's state, not a dltrain fault)."""
    return isinstance(exc, OSError) and exc.errno in _USER_ERRNOS


def disk_error(exc: OSError, doing: str = "", path: object = None) -> DiskError:
    """The one line for an OSError about the machine's files: what was being done, the path and why."""
    path = f" {path or exc.filename}" if (path or exc.filename) else ""
    why = exc.strerror or os.strerror(exc.errno or 0)
    hint = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space (disk quota)",
            errno.EROFS: "choose a writable folder", errno.EACCES: "choose a folder you may write to",
            errno.EPERM: "choose a folder you may write to"}.get(exc.errno)
    return DiskError(f"{doing or 'cannot write'}{path}: {why}" + (f"; {hint}" if hint else ""))


def user_error_in(exc: BaseException) -> UserError | None:
    """The user's mistake behind `exc`, if there is one: `exc` itself, or one it wraps (Hydra and OmegaConf
    wrap what a resolver or a target raised), an OSError about space or permissions included. None for a bug.
    The type decides, never the library whose frame raised last."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, UserError):
            return exc
        if is_disk_error(exc):
            return disk_error(exc)
        exc = exc.__cause__ or exc.__context__
    return None
