"""The choice between the two data paths, and the loader every streamed source shares.

In memory, a source is decoded once into whole tensors (the fastest path for data that fits). Streamed, each
sample is read from its file while training, in DataLoader worker processes; the loader is torchdata's
StatefulDataLoader, whose position Lightning saves in a checkpoint and restores on resume, so a run resumed
mid-epoch sees the very batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import os
from typing import Any

from dltrain.errors import DataError

MEMORY_SHARE = 0.25  # stream=auto streams when the decoded data would take more than this share of free memory


def available_memory() -> int:
    """Bytes of memory this machine can still give (MemAvailable; all physical memory where that is unknown)."""
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def choose_stream(setting: bool | str, decoded_bytes: int, source: str) -> tuple[bool, str]:
    """Whether to stream `source` whose decoded samples take `decoded_bytes`, and the start line saying why."""
    size = f"{decoded_bytes / 2**30:.2f} GiB decoded"
    if setting is True:
        return True, f"{source}: streamed from its files (data.stream=true; {size})"
    if setting is False:
        return False, f"{source}: held in memory (data.stream=false; {size})"
    free = available_memory()
    share = decoded_bytes / max(free, 1)
    if share > MEMORY_SHARE:
        return True, (f"{source}: streamed from its files: {size}, {share:.0%} of the {free / 2**30:.1f} GiB "
                      f"available (data.stream=auto streams above {MEMORY_SHARE:.0%})")
    return False, (f"{source}: held in memory: {size}, {share:.0%} of the {free / 2**30:.1f} GiB available "
                   f"(data.stream=true streams it)")


def worker_count(setting: int | str, streamed: bool, ranks: int = 1) -> int:
    """DataLoader workers: as set, or auto: none in memory (slicing tensors needs no process), and streamed the
    cores this process may use shared among the ranks on this machine. (A streamed table's auto is none: the
    training process reads it, dltrain.data.table_module.)"""
    if setting != "auto":
        return int(setting)
    if not streamed:
        return 0
    from dltrain.distributed import cpu_cores

    return max(1, cpu_cores() // max(1, ranks))


def streamed_loader(dataset: Any, *, batch_size: int, num_workers: int, pin_memory: bool, **options: Any):
    """A StatefulDataLoader over `dataset` (map-style with a sampler, or iterable): workers kept between epochs
    and batches prefetched, its position saved in checkpoints by Lightning."""
    from torchdata.stateful_dataloader import StatefulDataLoader

    workers = {"persistent_workers": True, "prefetch_factor": 4} if num_workers > 0 else {}
    return StatefulDataLoader(dataset, batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory,
                              **workers, **options)


def refuse_stream(source: str) -> None:
    """data.stream=true on a source that is only read whole."""
    raise DataError(f"data.stream=true: {source} is read whole into memory; streaming is for image folders, "
                    "CSV/Parquet tables and data=streaming (set data.stream=auto or false)")
