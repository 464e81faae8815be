"""Writing a run directory's files so that a reader never sees one half-written."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from dltrain.errors import disk_error, is_disk_error
from dltrain.rundir.layout import RunDir

_UMASK = os.umask(0)
os.umask(_UMASK)
_UNFINISHED = ".tmp"  # the suffix of write_with's temporary files


def write_with(path: Path, write: Callable[[BinaryIO], Any], sync: bool = True) -> None:
    """Call `write` on a temporary file beside `path`, sync it to disk (unless sync=False), then rename it into place.

    The rename alone already keeps a killed process from leaving half a file; the sync adds safety against a
    power cut, at a cost (milliseconds to tens of them) that files written every epoch need not pay.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_UNFINISHED)
    except OSError as exc:
        raise (disk_error(exc, "cannot write", path) if is_disk_error(exc) else exc) from None
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the mode open() would
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            if sync:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if is_disk_error(exc):  # a full disk or read-only folder: the user's to change; `path` is as it was
            raise disk_error(exc, "cannot write", path) from None
        raise


def remove_unfinished_writes(folder: Path) -> list[Path]:
    """Delete the temporary files of writes a killed process left unfinished in `folder` (hidden, never under a
    file's real name); returns them."""
    unfinished = sorted(Path(folder).glob(f".*{_UNFINISHED}"))
    for path in unfinished:
        path.unlink(missing_ok=True)
    return unfinished


def write_atomic(path: Path, text: str) -> None:
    """Write text so that a reader sees the old file or the whole new one, never half of it."""
    write_with(path, lambda handle: handle.write(text.encode()))


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_results(run_dir: Path) -> dict[str, Any]:
    """A run directory's results.json, or {} when the run has none (it did not finish)."""
    path = RunDir(run_dir).results
    return json.loads(path.read_text()) if path.exists() else {}


def read_record(path: Path) -> Any:
    """A run folder's JSON or YAML file read as data (yaml.safe_load: no tags that build objects), or None
    where it is missing or unreadable: for readers that show what they find (dltrain-runs, the plots)."""
    import yaml

    try:
        text = Path(path).read_text()
        return json.loads(text) if Path(path).suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError):
        return None


def record_failure(run_dir: Path, error: str) -> dict[str, Any]:
    """Mark a sweep job failed in its results.json (keeping what a diverged run wrote there), and return it."""
    path = RunDir(run_dir).results
    written = read_results(run_dir)
    status = written.get("status") if written.get("status") not in (None, "completed") else "failed"
    record = written | {"status": status, "error": error}
    write_json(path, record)
    return record
