"""What can be told of a checkpoint before torch is imported: that the file is there and is what torch.save
writes. A command given a wrong path answers at once instead of after seconds of imports."""

from __future__ import annotations

from pathlib import Path

from dltrain.errors import CheckpointError
from dltrain.rundir.layout import RunDir


def checked_file(path: str | Path) -> Path:
    """`path`, refused where it is no file or does not start as torch.save's zip archive (or legacy pickle)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    with path.open("rb") as handle:
        start = handle.read(4)
    if not start.startswith((b"PK\x03\x04", b"\x80")):
        raise CheckpointError(f"{path} is not a checkpoint: torch.save writes a zip archive (or a pickle), and "
                              f"this file starts with {start!r}")
    return path


def checkpoint_file(ckpt_path: str | Path) -> Path:
    """The checkpoint file a command's ckpt_path= names (a run directory: its best checkpoint), checked."""
    return checked_file(RunDir.of_checkpoint(ckpt_path)[0])
