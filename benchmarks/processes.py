"""The memory of a process tree, read from /proc (Linux): a run's main process with its DataLoader workers and
DDP ranks, each page shared between them counted once (proportional set size)."""

from __future__ import annotations

from pathlib import Path


def pss(pid: int) -> int:
    """Bytes of the process's proportional set size (0 once it has gone)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def descendants(root: int) -> list[int]:
    """`root` and every process below it."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        found += frontier
    return found


def local_rank(pid: int) -> str:
    """The process's LOCAL_RANK ("0" where unset: rank zero), or "" once it has gone."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return ""
    return next((v.split(b"=", 1)[1].decode() for v in environ if v.startswith(b"LOCAL_RANK=")), "0")
