"""One training run: config -> data and model -> Lightning module -> trainer -> files in the run directory."""

from __future__ import annotations

import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import StochasticWeightAveraging
from pytorch_lightning.utilities.exceptions import MisconfigurationException
from pytorch_lightning.utilities.model_summary import ModelSummary

from dltrain.report import terminal as console
from dltrain.training.builders import build_module
from dltrain.training.callbacks import InterruptCheckpoint, sigterm_to_lightning
from dltrain.checkpoints.reading import check_training_state, read_checkpoint, without_start_weights
from dltrain.training.restore import check_weights_fit
from dltrain.data.datamodule import ArrayDataModule, build_datamodule, load_data
from dltrain.data.fingerprint import data_fingerprint
from dltrain.data.folds import Fold
from dltrain.distributed import is_rank_zero, share_cpu_threads
from dltrain.errors import ConfigError, DiskError, RunInterrupted, RunStopped, TrainingDiverged, one_line
from dltrain.models.build import choose_model
from dltrain.models.summary import network_summary
from dltrain.training.module import TrainingModule
from dltrain.quiet import quiet_libraries
from dltrain.rundir.claim import claimed, mark_running
from dltrain.rundir.files import read_record, remove_unfinished_writes, write_atomic, write_json
from dltrain.rundir.layout import RunDir
from dltrain.training.record import (best_checkpoint, best_epoch_in, drop_metrics_from, epochs_done, last_val_metrics,
                                     limits_in_force, relative_path, results_record, still_improving, stopped_early,
                                     weight_averagers)
from dltrain.training.loggers import build_loggers, end_tracking, logger_locations
from dltrain.training.trainer_setup import (build_callbacks, build_trainer, say_validation_schedule,
                                            skip_nvml_probe_without_gpus)
from dltrain.config.trust import targets_of
from dltrain.training.tuning import kept_on_resume, tune
from dltrain.training.preflight import ValidatedConfig, check_before_training, validate

log = logging.getLogger("dltrain")


def train(cfg: DictConfig | ValidatedConfig, run_dir: Path, resume: bool = False,
          callbacks: tuple[pl.Callback, ...] = (), fold: Fold | None = None) -> dict[str, Any]:
    """Train, test the best checkpoint, and write config, metrics, checkpoints and results into run_dir.

    resume=True continues run_dir from its last epoch-end checkpoint, appending to metrics.csv (a run that
    ended before its first checkpoint starts again from its first epoch).
    `callbacks` join the configured ones (a search trial's pruning); one may end the run with RunStopped.
    `fold` trains one cross-validation fold: its data and rows instead of the config's split.
    `cfg`: a ValidatedConfig (dltrain.training.preflight.validate's, once per run), or a config validated here.
    """
    started = time.perf_counter()
    cfg = (cfg if isinstance(cfg, ValidatedConfig) else validate(cfg)).cfg
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


@dataclass
class _Run:
    """What one run's steps share once it is built: its config record (resolved, model chosen), data, module,
    trainer."""

    cfg: DictConfig
    run_dir: Path
    started: float
    rank_zero: bool
    datamodule: ArrayDataModule
    module: TrainingModule
    summary: ModelSummary
    trainer: pl.Trainer | None = None
    loggers: list = field(default_factory=list)
    tuned: dict[str, Any] | None = None  # results.json's "tune": what tune=lr or tune=batch_size found and used

    def results(self, status: str, **extra: Any) -> dict[str, Any]:
        """The run's results.json record, written by rank zero (the other ranks only say how they ended)."""
        if not self.rank_zero:
            return {"status": status}
        record = results_record(self.cfg, self.trainer, self.datamodule, self.summary, self.run_dir,
                                started=self.started, status=status, **extra)
        if self.loggers:  # the run is over (results are written once it has ended, however it did)
            end_tracking(self.loggers)
            record["loggers"] = logger_locations(self.cfg, self.loggers)
        if self.tuned is not None:
            record["tune"] = self.tuned
        write_json(RunDir(self.run_dir).results, record)
        return record


def _train(cfg: DictConfig, run_dir: Path, resume: bool, callbacks: tuple[pl.Callback, ...], fold: Fold | None,
           started: float, rank_zero: bool) -> dict[str, Any]:
    """Build, fit, test, write: each step below, in the order it runs."""
    last = RunDir(run_dir).last_checkpoint
    if resume and not last.is_file():
        log.info(f"{run_dir} ended before its first checkpoint: training it from its first epoch")
    resumed = checkpoint_to_resume(cfg, last) if resume and last.is_file() else None
    run = _build(cfg, run_dir, fold, resumed, last, started, rank_zero)
    cfg = run.cfg  # the record: resolved, with the model trained
    earlier = read_record(RunDir(run_dir).results) if resume and rank_zero else None  # before it says "running"
    if rank_zero:  # the run's files change only once every check has passed
        _start_files(run, resumed, restart=resume and resumed is None)
    run.loggers = build_loggers(cfg, run_dir)
    run.trainer = build_trainer(cfg, build_callbacks(cfg, run_dir, list(callbacks)), run_dir, run.loggers)
    skip_nvml_probe_without_gpus(run.trainer)
    if run.trainer.strategy.root_device.type == "cpu":
        share_cpu_threads(run.trainer.num_devices)  # DDP ranks on this machine's CPU
    console.show_start(cfg, run_dir, run.datamodule, run.summary, run.trainer,
                       fold=f"{fold.number}/{fold.of}" if fold else None)
    say_validation_schedule(run.trainer)
    if cfg.get("tune") is not None:
        _tune(run, resume, earlier.get("tune") if isinstance(earlier, dict) else None)
    if resumed is not None:
        done = epochs_done(resumed)
        within = f", and epoch {done + 1} up to step {resumed['global_step']}" if done == resumed["epoch"] else ""
        if within and not resumed.get("loops", {}).get("fit_loop", {}).get("state_dict", {}).get("combined_loader"):
            within += ": its loader kept no position (data in memory), so the epoch's other batches are drawn afresh"
        log.info(f"resuming from {last} ({done} epoch(s) done{within})")
    stopped = _fit(run, last if resumed is not None else None)
    return stopped if stopped is not None else _test_and_write(run)


def _tune(run: _Run, resume: bool, earlier: dict[str, Any] | None) -> None:
    """tune=lr or tune=batch_size before the first epoch: config.yaml written again with the value found, and the
    search's record added to the running record (a run killed later keeps it for its resume). A resume keeps its
    run's value and record (`earlier`) and does not search again."""
    if resume:
        run.tuned = kept_on_resume(run.cfg, earlier)
        return
    run.cfg, run.module, run.tuned = tune(run.cfg, run.run_dir, run.datamodule, run.module)
    if run.rank_zero:
        write_atomic(RunDir(run.run_dir).config, OmegaConf.to_yaml(run.cfg))
        running = read_record(RunDir(run.run_dir).results)
        write_json(RunDir(run.run_dir).results, (running if isinstance(running, dict) else {}) | {"tune": run.tuned})


def checked_data_and_module(cfg: DictConfig, fold: Fold | None = None, *, resumed: dict[str, Any] | None = None
                            ) -> tuple[DictConfig, ArrayDataModule, TrainingModule]:
    """The run's config record, the data, the model it sizes and the Lightning module, checked against each
    other before training (the same for a run and for `dltrain validate`). The record is `cfg` resolved once the
    data has let model=auto choose (dltrain.models.build.choose_model); `resumed`: the checkpoint a resume
    continues, whose weights are the run's (the file it started from is not read again) and whose optimizer
    keys this resume changes are given to the module."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    data = fold.data if fold else load_data(OmegaConf.to_container(cfg.data, resolve=True))
    cfg, chose = choose_model(cfg, data.kind)  # model=auto: by the data's kind, before its batches are set
    config = OmegaConf.to_container(cfg)
    datamodule = build_datamodule(config["data"], cfg.seed, data, fold.rows if fold else None)
    if chose:
        datamodule.facts["model_auto"] = chose  # said with the model at the start, and in results.json
    if is_rank_zero():  # what the run read, for its results.json, model card and dltrain-runs
        datamodule.facts["data_fingerprint"] = data_fingerprint(config["data"], data)
    module = build_module(without_start_weights(config) if resumed else config, datamodule.spec.to_dict(),
                          _changed_on_resume(resumed, config) if resumed else None,
                          per_image=not datamodule.augments_images)
    check_before_training(cfg, datamodule, module)
    return cfg, datamodule, module


def _changed_on_resume(resumed: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The optimizer keys this resume changes, which the module sets on its restored optimizer."""
    before = resumed["hyper_parameters"]["config"].get("optimizer") or {}
    return {key: value for key, value in config["optimizer"].items()
            if not key.startswith("_") and before.get(key) != value}


def checkpoint_to_resume(cfg: DictConfig, last: Path) -> dict[str, Any]:
    """The last checkpoint, refused when unsafe or corrupt before anything else is built or written."""
    return read_checkpoint(last, trusted=targets_of(OmegaConf.to_container(cfg, resolve=True)))


def _build(cfg: DictConfig, run_dir: Path, fold: Fold | None, resumed: dict[str, Any] | None, last: Path,
           started: float, rank_zero: bool) -> _Run:
    """The config record, data, then the model the data sizes, then the Lightning module; a resumed checkpoint
    is checked against them."""
    cfg, datamodule, module = checked_data_and_module(cfg, fold, resumed=resumed)
    if resumed is not None:  # refuse a checkpoint of another model or data shape in one line
        check_weights_fit(resumed, OmegaConf.to_container(cfg), datamodule.spec.to_dict())
        check_training_state(resumed, module, module.optimizer_factory, last)
    summary = network_summary(module.model, datamodule.spec.input_shape)
    return _Run(cfg, run_dir, started, rank_zero, datamodule, module, summary)


def _start_files(run: _Run, resumed: dict[str, Any] | None, restart: bool) -> None:
    """The run directory as the run starts: marked running, a resumed run's unfinished writes and later
    metrics rows gone (a restarted one's metrics.csv too), config.yaml and model_summary.txt written."""
    mark_running(run.run_dir)
    metrics = RunDir(run.run_dir).metrics
    if resumed is not None:
        last = RunDir(run.run_dir).last_checkpoint
        for unfinished in (*remove_unfinished_writes(run.run_dir), *remove_unfinished_writes(last.parent)):
            log.info(f"removed {unfinished}, a write the stopped run left unfinished")
        drop_metrics_from(metrics, epochs_done(resumed))
    elif restart:
        metrics.unlink(missing_ok=True)
    write_atomic(RunDir(run.run_dir).config, OmegaConf.to_yaml(run.cfg))
    write_atomic(RunDir(run.run_dir).model_summary, f"{run.summary}\n")


def _fit(run: _Run, resume_from: Path | None) -> dict[str, Any] | None:
    """trainer.fit; None when it ran to its end, the results record of a run a callback stopped. Lightning's
    refusals, a full disk, a diverged loss and an interrupt become one-line errors saying what is kept."""
    trainer, last = run.trainer, RunDir(run.run_dir).last_checkpoint
    interrupt = next(cb for cb in trainer.callbacks if isinstance(cb, InterruptCheckpoint))
    try:
        with sigterm_to_lightning():
            trainer.fit(run.module, datamodule=run.datamodule, ckpt_path=str(resume_from) if resume_from else None,
                        weights_only=True)
    except MisconfigurationException as exc:  # Lightning's word for a setup it refuses: the user's to change
        raise ConfigError(f"Lightning refuses this set-up: {one_line(exc)}") from None
    except DiskError as exc:  # every file is whole (written atomically): what is there can be continued
        then = (f"continue with: dltrain resume={run.run_dir}" if last.exists() else "then start the run again")
        raise DiskError(f"{exc} (every file already there is whole; {then})") from None
    except RunStopped as exc:
        log.info(f"run stopped: {exc}")
        return run.results(exc.status, val=last_val_metrics(trainer), reason=str(exc))
    except FloatingPointError as exc:
        run.results("diverged", error=str(exc))
        kept = f"the last good checkpoint is {last}" if last.exists() else "no epoch finished, so no checkpoint"
        raise TrainingDiverged(f"{exc}; {kept} (try a lower optimizer.lr or trainer.gradient_clip_val)") from None
    except BaseException:
        if interrupt.signal_name is None:
            raise
        code = 128 + getattr(signal, interrupt.signal_name)
        run.results("interrupted", signal=interrupt.signal_name)
        then = (f"continue with: dltrain resume={run.run_dir}" if last.exists()
                else "no epoch had finished, so a resume has nothing to continue: start the run again")
        raise RunInterrupted(f"interrupted by {interrupt.signal_name}: saved {interrupt.path}", code, then) from None
    return None


def _test_and_write(run: _Run) -> dict[str, Any]:
    """Test the weights every later command reads (the best checkpoint's, or with none written the final
    weights), then write the test predictions, the plots and results.json."""
    cfg, trainer, run_dir = run.cfg, run.trainer, run.run_dir
    stop_reason = stopped_early(trainer)
    best_epoch, val = best_epoch_in(RunDir(run_dir).metrics, cfg.monitor, cfg.mode) if run.rank_zero else (None, {})
    checkpoint = best_checkpoint(trainer)
    best_path = checkpoint.best_model_path if checkpoint else ""
    weights = _weights_to_test(run, best_path)
    if weights.val is not None:  # the averaged weights replaced the best epoch's in best.ckpt
        best_epoch, val = trainer.current_epoch, weights.val
    # The module holds the tested weights: no ckpt_path, which would let a weight-averaging callback restore its
    # checkpoint's "current_model_state" (the weights before averaging) rather than the state_dict others read.
    tested = trainer.test(run.module, datamodule=run.datamodule, verbose=False)
    limits = limits_in_force(trainer, run.datamodule)
    calibration = _calibrate(run, best_path, {stage: limit["rows"] for stage, limit in limits.items()}) \
        if run.rank_zero else None
    plots = _predictions_and_plots(run.module, run.datamodule, run_dir, {"monitor": cfg.monitor,
                                                                         "best_epoch": best_epoch},
                                   rows=limits.get("test", {}).get("rows")) if run.rank_zero else []
    extra = {"best_val": val.get(cfg.monitor)} if weights.val is not None else {}
    if calibration is not None:
        extra["calibration"] = calibration
    if cfg.get("explain") and run.rank_zero:
        from dltrain.report.explanations import explain

        extra["explanations"] = explain(run.module, run.datamodule.test_set, run_dir, cfg.seed)
    if trainer.max_steps and trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
        extra["max_steps_reached"] = trainer.max_steps
    final = run.results("completed", early_stopped=stop_reason is not None, stop_reason=stop_reason,
                        best_epoch=best_epoch, val=val, test={k: float(v) for k, v in sorted(tested[0].items())},
                        tested=weights.said, still_improving=still_improving(trainer, RunDir(run_dir).metrics,
                                                                             cfg.monitor, cfg.mode),
                        limits=limits, plots=[relative_path(str(p), run_dir) for p in plots], **extra)
    if run.rank_zero:
        from dltrain.report.model_card import write_model_card

        write_model_card(run_dir)
        console.show_results(final, run_dir)
    return final


def _calibrate(run: _Run, best_path: str, rows: dict[str, int]) -> dict[str, Any] | None:
    """Temperature scaling of a classifier's tested weights (dltrain.training.calibration) on the rows the batch
    limits covered (`rows`), the temperature stored in the best checkpoint that every later command reads
    (written whole again, atomically, by the trainer's checkpoint IO); the record for results.json, or None
    where nothing is calibrated."""
    from dltrain.training.calibration import calibrate
    from dltrain.training.restore import CALIBRATION_KEY

    record = calibrate(run.module, run.datamodule, str(run.cfg.get("calibration", "auto")), run.run_dir, rows)
    if not record or not record.get("method"):
        return record
    if not best_path:
        log.warning("calibration: no best checkpoint to store the temperature in (callbacks.model_checkpoint=null): "
                    "test_predictions.csv holds calibrated probabilities, later commands the network's own")
        return record | {"stored_in": None}
    stored = read_checkpoint(best_path, trusted=targets_of(OmegaConf.to_container(run.cfg)))
    stored[CALIBRATION_KEY] = {"temperature": float(run.module.temperature)}
    run.trainer.strategy.checkpoint_io.save_checkpoint(stored, best_path)
    return record | {"stored_in": relative_path(best_path, run.run_dir)}


@dataclass
class _Tested:
    """Which weights the test uses, in words for results.json, and the validation metrics of averaged weights
    that were validated after training (None where the best epoch's are the ones that count)."""

    said: str
    val: dict[str, float] | None = None


def _weights_to_test(run: _Run, best_path: str) -> _Tested:
    """Put into the module the weights that best.ckpt holds for every later command (dltrain-eval, -predict,
    -export, -serve read its state_dict), and say which they are.

    EMA-like WeightAveraging validates and saves its averaged weights, so best.ckpt's state_dict holds those.
    StochasticWeightAveraging puts its average into the module only when training ends (checkpoints hold the
    weights it averages): its averaged weights are validated and written to best.ckpt, as they are what the
    user added it for; where the run ended before SWA's last epoch (early stopping) nothing was averaged in."""
    trainer, module = run.trainer, run.module
    averagers = weight_averagers(trainer)
    swa = next((cb for cb in averagers if isinstance(cb, StochasticWeightAveraging)), None)
    averaged_in = swa is not None and (trainer.max_epochs == -1 or trainer.current_epoch > swa.swa_end)
    if averaged_in and not trainer.fast_dev_run:  # as SWA's on_train_end: at its last epoch, or with no max
        epochs = f"epochs {swa.swa_start + 1}-{trainer.current_epoch}"
        validated = trainer.validate(module, datamodule=run.datamodule, verbose=False)
        if best_path:  # a save, not a load: the whole training state, as the best checkpoint Lightning wrote
            trainer.save_checkpoint(best_path, weights_only=False)
        saved = ", saved as the best checkpoint" if best_path else ""
        log.info(f"StochasticWeightAveraging: testing and saving its averaged weights ({epochs}), validated "
                 f"{'  '.join(f'{k}={v:.4f}' for k, v in sorted(validated[0].items()))}")
        return _Tested(f"averaged weights (StochasticWeightAveraging, {epochs}){saved}",
                       {k: float(v) for k, v in sorted(validated[0].items())})
    names = ", ".join(type(cb).__name__ for cb in averagers if cb is not swa)
    if best_path:
        stored = read_checkpoint(best_path, trusted=targets_of(OmegaConf.to_container(run.cfg)))
        module.load_state_dict(stored["state_dict"], strict=True)
        said = "best checkpoint" + (f" (averaged weights, {names})" if names else "")
        if swa is not None:
            said += (f" (StochasticWeightAveraging averaged nothing in: the run ended at epoch "
                     f"{trainer.current_epoch} before its last)")
        return _Tested(said)
    said = ("final weights (no best checkpoint was written" + (": fast_dev_run)" if trainer.fast_dev_run else ")")
            + (f" (averaged weights, {names})" if names else ""))
    return _Tested(said)


def _predictions_and_plots(module: TrainingModule, datamodule: ArrayDataModule, run_dir: Path, record: dict[str, Any],
                           rows: int | None = None) -> list[Path]:
    """test_predictions.csv (the tested weights', true beside predicted) and the plots drawn from the files;
    `rows`: the first rows only, those a limited test (trainer.limit_test_batches) covered."""
    from dltrain.report.plots import plot_run
    from dltrain.report.predictions import labelled_predictions

    table = labelled_predictions(module, datamodule.test_set, rows=rows)
    write_atomic(RunDir(run_dir).test_predictions, table.to_csv(index=False))
    return plot_run(run_dir, record)
