"""One training run: config -> data and model -> Lightning module -> trainer -> files in the run directory."""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from dltrain import console
from dltrain.builders import build_module
from dltrain.callbacks import InterruptCheckpoint
from dltrain.checkpoints import check_training_state, check_weights_fit, last_checkpoint_file, read_checkpoint
from dltrain.data.datamodule import build_datamodule
from dltrain.data.folds import Fold
from dltrain.distributed import is_rank_zero, share_cpu_threads
from dltrain.errors import ConfigError, DiskError, RunInterrupted, RunStopped, TrainingDiverged, one_line
from dltrain.models.build import chosen_model
from dltrain.models.summary import network_summary
from dltrain.module import TrainingModule
from dltrain.preflight import check_before_training
from dltrain.quiet import quiet_libraries
from dltrain.run_claim import claimed, mark_running
from dltrain.run_files import remove_unfinished_writes, write_atomic, write_json
from dltrain.run_record import (best_checkpoint, best_epoch_in, drop_metrics_from, last_val_metrics, relative_path,
                                results_record, stopped_early)
from dltrain.trainer_setup import (build_callbacks, build_loggers, build_trainer, logger_locations,
                                   skip_nvml_probe_without_gpus)
from dltrain.trust import targets_of
from dltrain.validation import validate

log = logging.getLogger("dltrain")

def train(cfg: DictConfig, run_dir: Path, resume: bool = False, callbacks: tuple[pl.Callback, ...] = (),
          fold: Fold | None = None, *, validated: bool = False) -> dict[str, Any]:
    """Train, test the best checkpoint, and write config, metrics, checkpoints and results into run_dir.

    resume=True continues run_dir from its last epoch-end checkpoint, appending to metrics.csv (a run that
    ended before its first checkpoint starts again from its first epoch).
    `callbacks` join the configured ones (a search trial's pruning); one may end the run with RunStopped.
    `fold` trains one cross-validation fold: its data and rows instead of the config's split.
    `validated`: the caller has validated cfg already (dltrain.validation), which is done once per run.
    """
    started = time.perf_counter()
    if not validated:
        validate(cfg)
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
            drop_metrics_from(run_dir / "metrics.csv", epochs_done)
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
        record = results_record(cfg, config, trainer, datamodule, summary, run_dir, started=started, status=status,
                                **extra)
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
        stopped = results(exc.status, val=last_val_metrics(trainer), reason=str(exc))
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
    best_epoch, val = best_epoch_in(run_dir / "metrics.csv", cfg.monitor, cfg.mode) if rank_zero else (None, {})
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
                    plots=[relative_path(str(p), run_dir) for p in plots])
    if rank_zero:
        console.show_results(final, run_dir)
    return final


def _predictions_and_plots(module: TrainingModule, datamodule, run_dir: Path, record: dict[str, Any]) -> list[Path]:
    """test_predictions.csv (the best checkpoint's, true beside predicted) and the plots drawn from the files."""
    from dltrain.plots import plot_run
    from dltrain.predictions import labelled_predictions

    write_atomic(run_dir / "test_predictions.csv", labelled_predictions(module, datamodule.test_set).to_csv(index=False))
    return plot_run(run_dir, record)
