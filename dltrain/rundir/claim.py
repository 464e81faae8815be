"""Claiming a run directory before training in it: one live process at a time, no second run mixed into a
first one, and no stale results.json that says `completed` while newer epochs are being written."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from dltrain.errors import (ConfigError, DiskError, RunInterrupted, Terminated, disk_error, is_disk_error, one_line,
                            user_error_in)
from dltrain.rundir.files import read_results, write_json
from dltrain.rundir.layout import RunDir


class RunDirInUse(ConfigError):
    """Another live dltrain process holds the run folder (its files are its own: nothing here touches them)."""


def holds_run(run_dir: Path) -> bool:
    """Whether a run already trained (or began to) in `run_dir`."""
    return any(path.exists() for path in RunDir(run_dir).run_files())


def refuse_if_holds_run(run_dir: Path) -> None:
    """A run started in a folder that already holds one would mix the two runs' files: refused."""
    if not holds_run(run_dir):
        return
    try:
        status = read_results(run_dir).get("status", "unfinished")
    except (OSError, ValueError):
        status = "unfinished"
    raise ConfigError(f"{run_dir} already holds a run ({status}); continue it with resume={run_dir}, or train in "
                      "a new folder (leave hydra.run.dir to dltrain, or name another)")


@contextlib.contextmanager
def claimed(run_dir: Path, resume: bool) -> Iterator[None]:
    """Hold `run_dir` for this process while the block trains in it.

    Refused: a folder another live dltrain process holds (an advisory flock on the folder itself, which the
    system releases when a process dies, kill -9 included), and a folder that already holds a run unless this
    is a resume of it. The run calls mark_running once its checks pass, before it changes a file; if it then
    fails, its `running` record becomes `failed` (or `interrupted`) with the error.
    """
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        folder = os.open(run_dir, os.O_RDONLY)
    except OSError as exc:
        raise (disk_error(exc, "cannot create the run folder") if is_disk_error(exc) else exc) from None
    try:
        _lock(folder, run_dir)
        if not resume:
            refuse_if_holds_run(run_dir)
        yield
    except BaseException as exc:
        _mark_ended(run_dir, exc)
        raise
    finally:
        os.close(folder)  # closing the descriptor releases the lock


def in_use(run_dir: Path) -> bool:
    """Whether a live process holds `run_dir` (claimed): a results.json saying `running` may be left by a
    process that was killed."""
    try:
        folder = os.open(run_dir, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(folder, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError as exc:
        return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
    finally:
        os.close(folder)


def _lock(folder: int, run_dir: Path) -> None:
    try:
        fcntl.flock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise RunDirInUse(f"{run_dir} is in use: another dltrain process is training in it; wait for it to "
                              "end, or train in another folder") from None
        if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):  # a file system without locks
            raise


def mark_running(run_dir: Path) -> None:
    """results.json replaced by a `running` record, so that nothing there looks complete while training (a full
    disk or read-only folder is a DiskError from write_json)."""
    write_json(RunDir(run_dir).results, {"status": "running", "pid": os.getpid(),
                                                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def _mark_ended(run_dir: Path, exc: BaseException) -> None:
    """A run that fails while its results.json says it is running (this process's record) says how it ended;
    where even that cannot be written (a full disk), the record stays `running`."""
    try:
        record = read_results(run_dir)
    except (OSError, ValueError):
        return
    if record.get("status") != "running" or record.get("pid") != os.getpid():
        return
    interrupted = isinstance(exc, (KeyboardInterrupt, RunInterrupted, Terminated))
    # write_json's DiskError too: the error the user reads stays the one that ended the run (the plot that could
    # not be written on a full disk), not this record's
    with contextlib.suppress(OSError, DiskError):
        write_json(RunDir(run_dir).results, record | {
            "status": "interrupted" if interrupted else "failed",
            "error": one_line(user_error_in(exc) or exc)})
