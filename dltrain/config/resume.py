"""Continuing a run: which directory `resume=` names, and the config it continues with."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from dltrain.distributed import launcher_rank, scratch_run_dir
from dltrain.errors import ConfigError, one_line
from dltrain.paths import config_dir
from dltrain.config.trust import check_stored_config, targets_of
from dltrain.rundir.layout import FOLD_PREFIX, HYDRA_FOLDER, LAST_CHECKPOINT, RunDir, run_folder_name

RUNS = Path("outputs") / "runs"


def find_run_dir(resume: str) -> Path:
    """The run directory of `resume`: a path, or "last" for the newest run under outputs/runs."""
    if resume == "last":
        candidates = sorted(_last_checkpoints(RUNS, "*/"), key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise ConfigError(f"resume=last: no run with a checkpoint under {RUNS.resolve()}")
        found = candidates[-1].parent.parent
        return (found.parent if found.name.startswith(FOLD_PREFIX) else found).resolve()
    run_dir = Path(resume).expanduser().resolve()
    # config.yaml alone: a run stopped before its first checkpoint, which a resume trains from its start
    if not _last_checkpoints(run_dir) and not RunDir(run_dir).config.is_file():
        raise ConfigError(f"resume={resume}: {run_dir} is not a run directory (it has neither config.yaml nor "
                          "checkpoints/last.ckpt, nor fold_<k>/checkpoints/last.ckpt of a cross-validation run)")
    return run_dir


def _last_checkpoints(where: Path, runs: str = "") -> list[Path]:
    """The last.ckpt files of run directories (`runs` a glob of them under `where`), and of their folds."""
    last = f"checkpoints/{LAST_CHECKPOINT}"
    return [*where.glob(f"{runs}{last}"), *where.glob(f"{runs}{FOLD_PREFIX}*/{last}")]


def run_dir_resolver(resume: str | None, stamp: str, name: str | None = None) -> str:
    """hydra.run.dir: the resumed run's own directory, or a new one under outputs/runs (named by its start time
    and the run's name=, dltrain.rundir.layout.run_folder_name).

    A rank other than zero of an external launcher (torchrun, SLURM) gets a scratch directory instead.
    """
    if resume:
        return str(find_run_dir(resume))
    return scratch_run_dir(stamp) if launcher_rank() > 0 else str(RUNS / run_folder_name(stamp, name))


def hydra_subdir_resolver(resume: str | None, run_dir: str) -> str | None:
    """hydra.output_subdir: none when resuming (the run keeps the .hydra files of its first start), on rank > 0,
    and in a job folder that already holds a run (a single run refuses it, a continued sweep's job goes on with
    it: its first start's .hydra files stay as they were)."""
    from dltrain.rundir.claim import holds_run

    return None if resume or launcher_rank() > 0 or holds_run(Path(run_dir)) else HYDRA_FOLDER


def register_resolvers() -> None:
    for name, function in (("dltrain_run_dir", run_dir_resolver), ("dltrain_hydra_subdir", hydra_subdir_resolver)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function)


# Top-level keys a resume keeps: chosen when the run started, they decide what it trains on and follows.
FIXED_KEYS = ("seed", "monitor", "mode", "cv", "name")  # name: the run's folder is named by it
# The data keys a resume may change: how batches are served and weighted, not which rows each split holds.
OPEN_DATA_KEYS = ("batch_size", "num_workers", "pin_memory", "class_weights", "augment", "download")


# Trainer keys that decide how many optimizer steps a run takes
RUN_LENGTH_KEYS = ("max_epochs", "max_steps", "accumulate_grad_batches", "limit_train_batches")


def _check_schedule_length(stored: DictConfig, merged: DictConfig) -> None:
    """Refuse to lengthen or shorten a one-cycle run: its schedule was laid out for the run's steps when it
    started (torch's OneCycleLR keeps its total in the checkpoint and fails past it)."""
    target = OmegaConf.select(stored, "scheduler.scheduler._target_", default="") or ""
    if not target.endswith("OneCycleLR"):
        return
    for key in RUN_LENGTH_KEYS:
        before, after = (OmegaConf.select(c, f"trainer.{key}", default=None) for c in (stored, merged))
        if before != after:
            raise ConfigError(f"resume: trainer.{key}={after} would change the length of a scheduler=onecycle run "
                              f"(it started with {before}), and its one-cycle schedule was laid out for that "
                              "length; resume without it, or start a new run")


def _check_scheduled_optimizer(stored: DictConfig, merged: DictConfig) -> None:
    """A resumed run continues its optimizer's state, and a new optimizer.<key> is applied to it (see
    TrainingModule.on_train_start); but where a scheduler sets the learning rate, its restored state would
    undo a new optimizer.lr at its next step: refused rather than silently ignored."""
    if OmegaConf.select(stored, "scheduler.scheduler", default=None) is None:
        return
    before, after = (OmegaConf.select(c, "optimizer.lr", default=None) for c in (stored, merged))
    if before != after:
        raise ConfigError(f"resume: optimizer.lr={after} would be undone by the run's scheduler, which sets the "
                          f"learning rate from its own restored state (the run started with {before}); resume "
                          "without it, or start a new run")


WRITE_DIR_KEYS = ("dirpath", "save_dir", "default_root_dir", "log_dir", "root_dir")  # keys that say where files go
WRITE_NAME_KEYS = ("filename", "name", "version", "sub_dir")  # names joined to such a folder (a checkpoint's, a logger's)
WRITING_SECTIONS = ("callbacks", "logger", "trainer")


def _check_writes_inside(stored: dict, run_dir: Path, given: set[str]) -> None:
    """A folder or file name in the stored config.yaml is data, not a choice of where a run writes: each one in
    the callbacks, logger and trainer (a checkpoint's dirpath and filename, a logger's save_dir, a profiler's
    dirpath, ...) that leads outside the run folder is refused, unless this command line gives that key."""
    inside = run_dir.resolve()

    def outside(path: str, base: Path) -> bool:
        where = Path(path).expanduser()
        return not (where if where.is_absolute() else base / where).resolve().is_relative_to(inside)

    def walk(node: object, key: str) -> None:
        if not isinstance(node, dict) or any(key == g or key.startswith(g + ".") for g in given):
            return
        for name, value in node.items():
            dotted = f"{key}.{name}"
            if any(dotted == g or dotted.startswith(g + ".") for g in given):
                continue
            if isinstance(value, dict):
                walk(value, dotted)
                continue
            if not isinstance(value, str) or "${" in value:
                continue
            if name in WRITE_DIR_KEYS:
                leaves = outside(value, Path.cwd())  # a relative folder is taken from where the command runs
            elif name in WRITE_NAME_KEYS and ("/" in value or "\\" in value or ".." in value):
                folder = node.get("dirpath")
                leaves = outside(value, Path(folder).expanduser() if isinstance(folder, str) else inside)
            else:
                continue
            if leaves:
                raise ConfigError(f"resume={run_dir}: its config.yaml sets {dotted}={value}, which would write "
                                  f"outside the run folder; a stored path does not choose where files go: give "
                                  f"++{dotted}=<path> on this command line to write there, or remove it from "
                                  "config.yaml")

    for section in WRITING_SECTIONS:
        walk(stored.get(section), section)


def resumed_config(run_dir: Path, overrides: list[str], config_dirs: tuple[Path, ...] = ()) -> DictConfig:
    """The run's stored config with this command's key=value overrides on top (e.g. trainer.max_epochs=50).

    Refused, as they make a new run: a whole config group (model=mlp), the seed (the data split and the
    first weights), the monitored metric, cross-validation, and data keys that change the rows or the split.
    The stored config.yaml is data: it may name only callables that the presets (shipped, or in the user's
    `config_dirs`) or this command line name (dltrain.config.trust), and it downloads nothing unless this command
    says data.download=true. (About 50 lines: the refusals above, in the order a reader checks them.)
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
    stored_file = RunDir(run_dir).config
    try:
        stored = OmegaConf.load(stored_file)
    except FileNotFoundError:
        raise ConfigError(f"resume={run_dir}: the run has no config.yaml, so what it trained cannot be known; "
                          "start a new run") from None
    except (OSError, OmegaConfBaseException, ValueError) as exc:
        raise ConfigError(f"resume={run_dir}: {stored_file} is not a readable config ({one_line(exc)[:200]})"
                          ) from None
    # key=value changes keys the run has; +key=value adds one (as on a first start: +callbacks.x._target_=...)
    given = OmegaConf.from_dotlist([c for c in changes if not c.startswith("+")])
    added = OmegaConf.from_dotlist([c.lstrip("+") for c in changes if c.startswith("+")])
    stored = OmegaConf.create(check_stored_config(
        OmegaConf.to_container(stored, resolve=False), stored_file,
        trusted=targets_of(OmegaConf.to_container(OmegaConf.merge(given, added), resolve=False)),
        config_dirs=config_dirs))
    if OmegaConf.select(stored, "data.download", default=None):
        stored.data.download = False
    OmegaConf.set_struct(stored, True)
    merged = OmegaConf.merge(stored, given)
    with open_dict(merged):
        merged.merge_with(added)
    _check_schedule_length(stored, merged)
    _check_scheduled_optimizer(stored, merged)
    _check_writes_inside(OmegaConf.to_container(stored, resolve=False), run_dir,
                         given={change.split("=", 1)[0].lstrip("+~") for change in changes})
    merged.resume = str(run_dir)
    return merged
