"""One training run: config -> data and model -> Lightning module -> trainer -> files in the run directory."""

from __future__ import annotations

import csv
import io
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.callbacks.early_stopping import EarlyStoppingReason
from pytorch_lightning.loggers import Logger, MLFlowLogger
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from dltrain import console
from dltrain.builders import build_module
from dltrain.callbacks import EpochMetricsCSV, InterruptCheckpoint, RngState
from dltrain.checkpoint_io import AtomicCheckpointIO
from dltrain.checkpoints import check_training_state, check_weights_fit, last_checkpoint_file, read_checkpoint
from dltrain.config_check import check_config
from dltrain.data.datamodule import build_datamodule
from dltrain.data.folds import Fold
from dltrain.distributed import is_rank_zero, share_cpu_threads
from dltrain.errors import ConfigError, DiskError, RunInterrupted, RunStopped, TrainingDiverged, one_line
from dltrain.instantiate import build
from dltrain.losses import loss_name
from dltrain.models.build import chosen_model
from dltrain.models.summary import network_summary
from dltrain.module import TrainingModule
from dltrain.preflight import check_before_data, check_before_training
from dltrain.progress import EpochProgressBar
from dltrain.quiet import quiet_libraries
from dltrain.run_claim import claimed, mark_running
from dltrain.run_files import remove_unfinished_writes, write_atomic, write_json
from dltrain.trust import targets_of

log = logging.getLogger("dltrain")

def skip_nvml_probe_without_gpus(trainer: pl.Trainer) -> None:
    """Stop torch from loading NVML at every optimizer step of a CPU run on a machine without GPUs.

    Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1 so that asking whether CUDA is there does not
    initialise CUDA before processes fork; torch's optimizers ask at every step, and with that flag each
    answer loads the NVML library anew (about 0.5 ms a step where it is missing). With no GPU at all
    there is no CUDA to protect, so the plain, cached check is used.
    """
    import torch

    if trainer.strategy.root_device.type == "cpu" and torch.cuda.device_count() == 0:
        os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)


def build_callbacks(cfg: DictConfig, run_dir: Path, added: list[pl.Callback]) -> list[pl.Callback]:
    """Configured callbacks (a null entry is off), checkpoints into run_dir/checkpoints, and dltrain's own."""
    callbacks: list[pl.Callback] = []
    for name, cb_cfg in cfg.callbacks.items():
        if cb_cfg is None:
            continue
        callbacks.append(build(cb_cfg, f"callbacks.{name}", **_checkpoint_dir(cb_cfg, run_dir)))
    callbacks = [InterruptCheckpoint(run_dir / "checkpoints" / "interrupted.ckpt"), *callbacks,
                 EpochMetricsCSV(run_dir / "metrics.csv"), RngState(), *added]
    if _progress_bar(cfg):
        callbacks.append(EpochProgressBar())
    return callbacks


def _progress_bar(cfg: DictConfig) -> bool:
    """trainer.enable_progress_bar as set, else a bar on a terminal only (in CI logs one line an epoch is enough)."""
    chosen = cfg.trainer.get("enable_progress_bar")
    return sys.stdout.isatty() if chosen is None else bool(chosen)


def _checkpoint_dir(cb_cfg: DictConfig, run_dir: Path) -> dict[str, str]:
    """dirpath=<run>/checkpoints for a ModelCheckpoint configured without one (Lightning would put its files
    under the logger's version folder, or beside the run)."""
    from hydra.utils import get_class

    target = cb_cfg.get("_target_")
    if not target or cb_cfg.get("dirpath") is not None:
        return {}
    try:
        is_checkpoint = issubclass(get_class(target), ModelCheckpoint)
    except (ImportError, ValueError, TypeError, AttributeError):  # not a class: build() names the problem
        return {}
    return {"dirpath": str(run_dir / "checkpoints")} if is_checkpoint else {}


def build_loggers(cfg: DictConfig, run_dir: Path) -> list[Logger]:
    """The configured experiment logger (TensorBoard, MLflow) writing for this run, if one is chosen."""
    logger_cfg = cfg.get("logger")
    if not logger_cfg:
        return []
    target = logger_cfg["_target_"]
    if target.endswith("TensorBoardLogger"):
        return [build(logger_cfg, "logger", save_dir=str(run_dir))]
    if target.endswith("MLFlowLogger"):
        return [build(logger_cfg, "logger", run_name=logger_cfg.get("run_name") or run_dir.name)]
    return [build(logger_cfg, "logger")]


def logger_locations(cfg: DictConfig, loggers: list[Logger]) -> dict[str, str]:
    """Where each logger wrote, for results.json and the terminal."""
    where = {}
    for logger in loggers:
        if isinstance(logger, MLFlowLogger):
            where["mlflow"] = f"{cfg.logger.tracking_uri} (experiment {logger.experiment_id}, run {logger.run_id})"
        elif logger.log_dir:
            where[type(logger).__name__.removesuffix("Logger").lower()] = str(Path(logger.log_dir).resolve())
    return where


def build_trainer(cfg: DictConfig, callbacks: list[pl.Callback], run_dir: Path, loggers: list[Logger]) -> pl.Trainer:
    """The configured Trainer, every trainer.* key passed to it as Lightning documents it.

    Checkpointing is on only where a checkpoint callback is configured: with both set to null Lightning would
    otherwise add its own, writing checkpoints/epoch=N-step=M.ckpt that results.json knows nothing of.
    """
    return build(
        cfg.trainer,
        "trainer",
        callbacks=callbacks,
        logger=loggers or False,
        default_root_dir=str(run_dir),
        enable_progress_bar=_progress_bar(cfg),
        enable_model_summary=bool(cfg.trainer.get("enable_model_summary", False)),  # dltrain shows its own
        enable_checkpointing=any(isinstance(callback, ModelCheckpoint) for callback in callbacks),
        plugins=[AtomicCheckpointIO()],
    )


def train(cfg: DictConfig, run_dir: Path, resume: bool = False, callbacks: tuple[pl.Callback, ...] = (),
          fold: Fold | None = None) -> dict[str, Any]:
    """Train, test the best checkpoint, and write config, metrics, checkpoints and results into run_dir.

    resume=True continues run_dir from its last epoch-end checkpoint, appending to metrics.csv (a run that
    ended before its first checkpoint starts again from its first epoch).
    `callbacks` join the configured ones (a search trial's pruning); one may end the run with RunStopped.
    `fold` trains one cross-validation fold: its data and rows instead of the config's split.
    """
    started = time.perf_counter()
    check_config(cfg)
    check_before_data(cfg)
    quiet_libraries()
    rank_zero = is_rank_zero()  # under DDP only rank zero writes files and talks; the others train
    if not rank_zero:
        log.setLevel(logging.WARNING)
    run_dir = Path(run_dir)
    if rank_zero:
        with claimed(run_dir, resume):
            return _train(cfg, run_dir, resume, callbacks, fold, started, rank_zero)
    run_dir.mkdir(parents=True, exist_ok=True)
    return _train(cfg, run_dir, resume, callbacks, fold, started, rank_zero)


def _train(cfg: DictConfig, run_dir: Path, resume: bool, callbacks: tuple[pl.Callback, ...], fold: Fold | None,
           started: float, rank_zero: bool) -> dict[str, Any]:
    config = OmegaConf.to_container(cfg, resolve=True)
    last = last_checkpoint_file(run_dir)
    restart = resume and not last.is_file()
    if restart:
        log.info(f"{run_dir} ended before its first checkpoint: training it from its first epoch")
        resume = False
    if resume:  # refuse an unsafe or corrupt checkpoint before anything else is built or written
        resumed = read_checkpoint(last, trusted=targets_of(config))

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(config["data"], cfg.seed, *((fold.data, fold.rows) if fold else ()))
    config["model"] = chosen_model(config["model"], datamodule.spec)  # model=auto: the data's kind chooses
    with open_dict(cfg):
        cfg.model = config["model"]
    module = build_module(config, datamodule.spec.to_dict())
    check_before_training(cfg, datamodule, module)
    if resume:  # refuse a checkpoint of another model or data shape in one line
        check_weights_fit(resumed, config, datamodule.spec.to_dict())
        check_training_state(resumed, module, module.optimizer_factory, last)
        before = resumed["hyper_parameters"]["config"].get("optimizer") or {}
        module.resumed_settings = {key: value for key, value in config["optimizer"].items()
                                   if not key.startswith("_") and before.get(key) != value}
        epochs_done = resumed["epoch"] + 1
    if rank_zero:  # the run's files change only once every check has passed
        mark_running(run_dir)
        if resume:
            for unfinished in (*remove_unfinished_writes(run_dir), *remove_unfinished_writes(last.parent)):
                log.info(f"removed {unfinished}, a write the stopped run left unfinished")
            _drop_metrics_from(run_dir / "metrics.csv", epochs_done)
        elif restart:
            (run_dir / "metrics.csv").unlink(missing_ok=True)
        write_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(config))
    summary = network_summary(module.model, datamodule.spec.input_shape)
    if rank_zero:
        write_atomic(run_dir / "model_summary.txt", f"{summary}\n")

    loggers = build_loggers(cfg, run_dir)
    trainer = build_trainer(cfg, build_callbacks(cfg, run_dir, list(callbacks)), run_dir, loggers)
    skip_nvml_probe_without_gpus(trainer)
    if trainer.strategy.root_device.type == "cpu":
        share_cpu_threads(trainer.num_devices)  # DDP ranks on this machine's CPU
    console.show_start(cfg, run_dir, datamodule, summary, trainer, fold=f"{fold.number}/{fold.of}" if fold else None)
    if resume:
        log.info(f"resuming from {last} ({epochs_done} epoch(s) done)")
    interrupt = next(cb for cb in trainer.callbacks if isinstance(cb, InterruptCheckpoint))

    def results(status: str, **extra: Any) -> dict[str, Any]:
        """The run's results.json record, written by rank zero (the other ranks only say how they ended)."""
        if not rank_zero:
            return {"status": status}
        record = _results(cfg, config, trainer, datamodule, summary, run_dir, started, status, **extra)
        if loggers:
            record["loggers"] = logger_locations(cfg, loggers)
        write_json(run_dir / "results.json", record)
        return record

    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resume else None, weights_only=True)
    except MisconfigurationException as exc:  # Lightning's word for a setup it refuses: the user's to change
        raise ConfigError(f"Lightning refuses this set-up: {one_line(exc)}") from None
    except DiskError as exc:  # every file is whole (written atomically): what is there can be continued
        then = (f"continue with: dltrain resume={run_dir}" if last.exists() else "then start the run again")
        raise DiskError(f"{exc} (every file already there is whole; {then})") from None
    except RunStopped as exc:
        stopped = results(exc.status, val=_val_metrics(trainer), reason=str(exc))
        log.info(f"run stopped: {exc}")
        return stopped
    except FloatingPointError as exc:
        results("diverged", error=str(exc))
        kept = f"the last good checkpoint is {last}" if last.exists() else "no epoch finished, so no checkpoint"
        raise TrainingDiverged(f"{exc}; {kept} (try a lower optimizer.lr or trainer.gradient_clip_val)") from None
    except BaseException:
        if interrupt.signal_name is None:
            raise
        code = 128 + getattr(signal, interrupt.signal_name)
        results("interrupted", signal=interrupt.signal_name)
        then = (f"continue with: dltrain resume={run_dir}" if last.exists()
                else "no epoch had finished, so a resume has nothing to continue: start the run again")
        raise RunInterrupted(f"interrupted by {interrupt.signal_name}: saved {interrupt.path}", code, then) from None

    # before the test, which restores every callback's state from the best checkpoint, early stopping's included
    stop_reason = stopped_early(trainer)
    best_epoch, val = _best_epoch(run_dir / "metrics.csv", cfg.monitor, cfg.mode) if rank_zero else (None, {})
    checkpoint = best_checkpoint(trainer)
    best_path = checkpoint.best_model_path if checkpoint else ""
    # No best checkpoint (a fast_dev_run writes none, or checkpoints are off): the weights training ended with.
    tested = trainer.test(module, datamodule=datamodule, ckpt_path=best_path or None, verbose=False,
                          weights_only=True)
    plots = _predictions_and_plots(module, datamodule, run_dir, {"monitor": cfg.monitor, "best_epoch": best_epoch}
                                   ) if rank_zero else []
    final = results("completed", early_stopped=stop_reason is not None, stop_reason=stop_reason,
                    best_epoch=best_epoch, val=val, test={k: float(v) for k, v in sorted(tested[0].items())},
                    tested="best checkpoint" if best_path else "final weights (no best checkpoint was written"
                    + (": fast_dev_run)" if trainer.fast_dev_run else ")"),
                    plots=[_relative(str(p), run_dir) for p in plots])
    if rank_zero:
        console.show_results(final, run_dir)
    return final


def best_checkpoint(trainer: pl.Trainer) -> ModelCheckpoint | None:
    """The checkpoint callback that keeps the best epoch (the one that follows a metric), if there is one."""
    return next((cb for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint) and cb.monitor), None)


def stopped_early(trainer: pl.Trainer) -> str | None:
    """Why early stopping ended the run, in words, or None where it did not: also where it fired at the last
    epoch, which trainer.max_epochs ended anyway."""
    stopper = trainer.early_stopping_callback
    if stopper is None or stopper.stopping_reason is EarlyStoppingReason.NOT_STOPPED:
        return None
    if trainer.max_epochs and 0 < trainer.max_epochs <= trainer.current_epoch:
        return None
    monitor = stopper.monitor
    return {
        EarlyStoppingReason.PATIENCE_EXHAUSTED: f"{monitor} did not improve by more than {abs(stopper.min_delta):g} "
                                                f"in {stopper.patience} epoch(s) (callbacks.early_stopping.patience)",
        EarlyStoppingReason.NON_FINITE_METRIC: f"{monitor} became non-finite (nan or inf)",
        EarlyStoppingReason.STOPPING_THRESHOLD: f"{monitor} reached stopping_threshold={stopper.stopping_threshold}",
        EarlyStoppingReason.DIVERGENCE_THRESHOLD: f"{monitor} passed divergence_threshold="
                                                  f"{stopper.divergence_threshold}",
    }[stopper.stopping_reason]


def _results(cfg, config, trainer, datamodule, summary, run_dir: Path, started: float, status: str, **extra) -> dict:
    """results.json: what the run was, how it went, and where its checkpoints are."""
    checkpoint = best_checkpoint(trainer)
    last = last_checkpoint_file(run_dir)
    best = checkpoint.best_model_score if checkpoint else None
    stop_reason = stopped_early(trainer)
    results = {
        "status": status,
        "model": config["model"]["name"],
        "data": datamodule.spec.name,
        "task": datamodule.spec.task,
        "monitor": cfg.monitor,
        "mode": cfg.mode,
        "best_val": float(best) if best is not None else None,
        "val": {},
        "test": {},
        "epochs_run": trainer.current_epoch,
        "max_epochs": cfg.trainer.max_epochs,
        "early_stopped": stop_reason is not None,
        "stop_reason": stop_reason,
        "wall_time_s": round(time.perf_counter() - started, 3),
        "num_parameters": summary.total_parameters,
        "trainable_parameters": summary.trainable_parameters,
        "best_checkpoint": _relative(checkpoint.best_model_path, run_dir) if checkpoint else None,
        "last_checkpoint": _relative(last, run_dir) if last.exists() else None,
        "seed": cfg.seed,
        "loss": loss_name(config.get("loss"), datamodule.spec.task),
        "class_weights": datamodule.spec.class_weights,
    }
    return results | extra


def _predictions_and_plots(module: TrainingModule, datamodule, run_dir: Path, record: dict[str, Any]) -> list[Path]:
    """test_predictions.csv (the best checkpoint's, true beside predicted) and the plots drawn from the files."""
    from dltrain.plots import plot_run
    from dltrain.predictions import labelled_predictions

    write_atomic(run_dir / "test_predictions.csv", labelled_predictions(module, datamodule.test_set).to_csv(index=False))
    return plot_run(run_dir, record)


def _val_metrics(trainer: pl.Trainer) -> dict[str, float]:
    """The validation metrics of the last epoch."""
    return {k: float(v) for k, v in sorted(trainer.callback_metrics.items()) if k.startswith("val_")}


def _best_epoch(path: Path, monitor: str, mode: str) -> tuple[int | None, dict[str, float]]:
    """The best checkpoint's epoch (counted from 1) and its validation metrics, from metrics.csv (the first of
    equal values, like ModelCheckpoint); of the run so far, a resumed one included."""
    if not path.exists():  # no epoch ended (a Timer or max_steps stopped the first)
        return None, {}
    with path.open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get(monitor)]
    if not rows:
        return None, {}
    pick = min if mode == "min" else max
    best = pick(rows, key=lambda row: float(row[monitor]))
    return int(best["epoch"]) + 1, {k: float(v) for k, v in sorted(best.items()) if k.startswith("val_") and v != ""}


def _drop_metrics_from(path: Path, epoch: int) -> None:
    """Keep metrics.csv rows of epochs before `epoch`: a resumed run writes the later ones again."""
    if not path.exists():
        return
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        fields, rows = reader.fieldnames or [], [row for row in reader if int(row["epoch"]) < epoch]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, text.getvalue())


def _relative(path: str, run_dir: Path) -> str | None:
    return str(Path(path).resolve().relative_to(run_dir.resolve())) if path else None
