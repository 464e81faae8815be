"""Several processes: which one writes the run's files, and where each process's Hydra run directory is.

The distributed engine is Lightning's (DDP over torch.distributed). With `strategy: ddp` and no external
launcher, Lightning starts the other ranks by running the same command again, with Hydra's run directory
pinned to this run's (`hydra.run.dir`). Under an external launcher (torchrun, SLURM) every rank runs the
command itself; ranks other than zero then get a scratch run directory outside `outputs/`, so the run has
exactly one directory: rank zero's, where all its files go.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import read_write


def launcher_rank() -> int:
    """This process's global rank as an external launcher (torchrun, SLURM) set it; 0 without one."""
    for name in ("RANK", "SLURM_PROCID"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def is_rank_zero() -> bool:
    """Whether this process writes the run's files: global rank zero, before or after Lightning starts DDP."""
    from pytorch_lightning.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0 and os.environ.get("NODE_RANK", "0") in ("", "0")


def scratch_run_dir(stamp: str) -> str:
    """Hydra's run directory for a rank other than zero under an external launcher: outside outputs/."""
    return str(Path(tempfile.gettempdir()) / "dltrain-ranks" / f"{stamp}-rank{launcher_rank()}")


def cpu_cores() -> int:
    """The cores this process may run on (its affinity: a container's or taskset's share, not the machine's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def share_cpu_threads(processes: int) -> None:
    """Give torch an equal share of this machine's cores when `processes` processes train on them at once
    (DDP ranks on the CPU, parallel sweep jobs), as torchrun does for its processes; an OMP_NUM_THREADS the
    user set wins. Each process taking every core would make them wait on each other's threads."""
    if processes <= 1 or os.environ.get("OMP_NUM_THREADS"):
        return
    import torch

    torch.set_num_threads(max(1, cpu_cores() // processes))


# What Lightning's launcher sets in this process's environment when it starts the other ranks.
_LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


@contextmanager
def ddp_job(hydra_cfg: Any) -> Iterator[None]:
    """Run one Hydra job so that Lightning's DDP launcher starts its other ranks right, job after job.

    Lightning builds the other ranks' command from sys.argv plus hydra.run.dir. In a sweep job that would
    start the whole sweep again (argv holds -m and every value) in a new directory, so during the job argv
    is this job's own overrides and run.dir its own directory. Afterwards the process group and the
    launcher's environment are undone, so that the next job of the sweep starts its own processes.
    """
    from hydra.types import RunMode

    argv, env = list(sys.argv), {name: os.environ.get(name) for name in _LAUNCH_ENV}
    with read_write(hydra_cfg.run):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
    if hydra_cfg.mode == RunMode.MULTIRUN:
        sys.argv = [sys.argv[0], *hydra_cfg.overrides.task]
    try:
        yield
    finally:
        # Only if the job loaded it: a job stopped while importing torch must not import it again here.
        dist = sys.modules.get("torch.distributed")
        if dist is not None and getattr(dist, "is_initialized", None) and dist.is_available() \
                and dist.is_initialized():
            dist.destroy_process_group()
        sys.argv = argv
        for name, value in env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
