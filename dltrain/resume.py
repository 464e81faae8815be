"""Continuing a run: which directory `resume=` names, and the config it continues with."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dltrain.distributed import launcher_rank, scratch_run_dir
from dltrain.errors import ConfigError
from dltrain.paths import config_dir

RUNS = Path("outputs") / "runs"


def find_run_dir(resume: str) -> Path:
    """The run directory of `resume`: a path, or "last" for the newest run under outputs/runs."""
    if resume == "last":
        candidates = sorted(_last_checkpoints(RUNS, "*/"), key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise ConfigError(f"resume=last: no run with a checkpoint under {RUNS.resolve()}")
        found = candidates[-1].parent.parent
        return (found.parent if found.name.startswith("fold_") else found).resolve()
    run_dir = Path(resume).expanduser().resolve()
    if not _last_checkpoints(run_dir):
        raise ConfigError(f"resume={resume}: {run_dir} is not a run directory with checkpoints/last.ckpt "
                          "(or a cross-validation run with fold_<k>/checkpoints/last.ckpt)")
    return run_dir


def _last_checkpoints(where: Path, runs: str = "") -> list[Path]:
    """The last.ckpt files of run directories (`runs` a glob of them under `where`), and of their folds."""
    return [*where.glob(f"{runs}checkpoints/last.ckpt"), *where.glob(f"{runs}fold_*/checkpoints/last.ckpt")]


def run_dir_resolver(resume: str | None, stamp: str) -> str:
    """hydra.run.dir: the resumed run's own directory, or a new one under outputs/runs.

    A rank other than zero of an external launcher (torchrun, SLURM) gets a scratch directory instead.
    """
    if resume:
        return str(find_run_dir(resume))
    return scratch_run_dir(stamp) if launcher_rank() > 0 else str(RUNS / stamp)


def hydra_subdir_resolver(resume: str | None) -> str | None:
    """hydra.output_subdir: none when resuming (the run keeps the .hydra files of its first start) or on rank > 0."""
    return None if resume or launcher_rank() > 0 else ".hydra"


def register_resolvers() -> None:
    for name, function in (("dltrain_run_dir", run_dir_resolver), ("dltrain_hydra_subdir", hydra_subdir_resolver)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function)


# Top-level keys a resume keeps: chosen when the run started, they decide what it trains on and follows.
FIXED_KEYS = ("seed", "monitor", "mode", "cv")
# The data keys a resume may change: how batches are served and weighted, not which rows each split holds.
OPEN_DATA_KEYS = ("batch_size", "num_workers", "pin_memory", "class_weights", "augment")


def resumed_config(run_dir: Path, overrides: list[str]) -> DictConfig:
    """The run's stored config with this command's key=value overrides on top (e.g. trainer.max_epochs=50).

    Refused, as they make a new run: a whole config group (model=mlp), the seed (the data split and the
    first weights), the monitored metric, cross-validation, and data keys that change the rows or the split.
    """
    changes = [o for o in overrides if not o.startswith("resume=")]
    groups = {path.name for path in config_dir().iterdir() if path.is_dir()}
    for change in changes:
        key = change.split("=", 1)[0].lstrip("+~")
        parts = key.split(".")
        if key in groups:
            what = "a whole group"
        elif parts[0] in FIXED_KEYS:
            what = f"{parts[0]}, which a run keeps from its start"
        elif parts[0] == "data" and parts[1] not in OPEN_DATA_KEYS:
            what = (f"the data or its split, which a run keeps from its start (data keys it may change: "
                    f"{', '.join(OPEN_DATA_KEYS)})")
        else:
            continue
        raise ConfigError(f"resume continues the run's stored config; {change} would change {what}: start a new "
                          "run for that, or change other keys (e.g. trainer.max_epochs=50)")
    stored = OmegaConf.load(run_dir / "config.yaml")
    OmegaConf.set_struct(stored, True)
    merged = OmegaConf.merge(stored, OmegaConf.from_dotlist(changes))
    merged.resume = str(run_dir)
    return merged
