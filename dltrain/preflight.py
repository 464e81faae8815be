"""What a run will need, checked before it starts: the trainer's and each component's arguments against
their signatures and the GPUs asked for (before the data loads), then the monitored metrics and the first
validation against the data and module (before training). Each mistake is one line, not a failure later."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from dltrain.config_check import check_monitor_logged
from dltrain.errors import ConfigError
from dltrain.schema import check_target

if TYPE_CHECKING:
    from dltrain.data.datamodule import ArrayDataModule
    from dltrain.module import TrainingModule


def check_before_data(cfg: DictConfig) -> None:
    check_gpus(cfg.trainer)
    check_trainer_keys_dltrain_sets(cfg.trainer)
    check_component_arguments(cfg)


def check_before_training(cfg: DictConfig, datamodule: ArrayDataModule, module: TrainingModule) -> None:
    """The monitored metrics are ones this task's module logs, and a validation comes before they are needed."""
    config = OmegaConf.to_container(cfg.callbacks or {}, resolve=True)
    monitors = {"monitor": cfg.monitor} | {f"callbacks.{name}.monitor": callback["monitor"] for name, callback in
                                          config.items() if isinstance(callback, dict) and callback.get("monitor")}
    check_monitor_logged(monitors, module.epoch_columns())
    _check_first_validation(cfg, config, datamodule)


def _check_first_validation(cfg: DictConfig, callbacks: dict, datamodule) -> None:
    """trainer.max_steps that ends training before the first validation leaves early stopping's validation
    metric unlogged (Lightning's EarlyStopping then fails at the end of training): refused before it starts."""
    trainer = cfg.trainer
    max_steps = trainer.get("max_steps")
    stoppers = {f"callbacks.{name}.monitor": callback["monitor"] for name, callback in callbacks.items()
                if isinstance(callback, dict) and str(callback.get("_target_", "")).endswith("EarlyStopping")
                and str(callback.get("monitor", "")).startswith("val_") and callback.get("strict", True)}
    if not stoppers or not isinstance(max_steps, int) or max_steps <= 0:
        return
    batches = math.ceil(len(datamodule.train_set) / datamodule.batch_size)
    limit = trainer.get("limit_train_batches", 1.0)
    batches = min(batches, limit) if isinstance(limit, int) else max(1, int(batches * float(limit)))
    interval = trainer.get("val_check_interval")
    first = interval if isinstance(interval, int) else batches if interval is None else max(1, int(batches * interval))
    needed = math.ceil(min(first, batches) / int(trainer.get("accumulate_grad_batches") or 1))
    if max_steps < needed:
        key, name = next(iter(stoppers.items()))
        raise ConfigError(f"trainer.max_steps={max_steps} ends training before the first validation (after "
                          f"{needed} optimizer steps), so {key}={name} is never logged: allow at least {needed} "
                          "steps, or turn early stopping off (callbacks.early_stopping=null)")


def check_component_arguments(cfg: DictConfig) -> None:
    """The keys of the trainer, optimizer, scheduler, loss, callbacks and logger against their callables'
    signatures, before the data loads (a misspelt +optimizer.<key> would otherwise fail at the first training
    step; Lightning would say only that Trainer.__init__ got an unexpected keyword)."""
    check_target(cfg.get("trainer"), "trainer", named="Lightning's Trainer")
    check_target(cfg.get("optimizer"), "optimizer")
    check_target(OmegaConf.select(cfg, "scheduler.scheduler"), "scheduler.scheduler")
    check_target(cfg.get("logger"), "logger")
    for name, callback in (cfg.get("callbacks") or {}).items():
        check_target(callback, f"callbacks.{name}")


# Trainer arguments a run sets itself, and where the user sets what they stand for. Passed as +trainer.<key>,
# Hydra's instantiate would let the run's own value win without a word.
_SET_BY_THE_RUN = {
    "callbacks": "add one with +callbacks.<name>={_target_: ...} (see conf/callbacks/default.yaml)",
    "logger": "choose logger=tensorboard or logger=mlflow (metrics.csv is always written)",
    "default_root_dir": "every run writes into its own directory: set hydra.run.dir",
    "enable_checkpointing": "set callbacks.model_checkpoint=null callbacks.last_checkpoint=null",
    "plugins": "dltrain installs its atomic checkpoint IO; a precision or cluster plugin has its trainer key "
               "(trainer.precision, trainer.num_nodes)",
}


def check_trainer_keys_dltrain_sets(trainer_cfg: DictConfig) -> None:
    for key, instead in _SET_BY_THE_RUN.items():
        if key in trainer_cfg:
            raise ConfigError(f"trainer.{key} is set by dltrain for every run: {instead}")


def check_gpus(trainer_cfg: DictConfig) -> None:
    """Refuse a trainer asking for more GPUs than this machine has, in one line naming what would run here
    (Lightning's own error names neither the count nor the way out)."""
    import torch

    wanted = trainer_cfg.get("devices")
    if trainer_cfg.get("accelerator") not in ("gpu", "cuda") or not isinstance(wanted, int) or wanted < 1:
        return
    here = torch.cuda.device_count()
    if wanted > here:
        raise ConfigError(f"trainer.accelerator={trainer_cfg.accelerator} with trainer.devices={wanted} asks for "
                          f"{wanted} GPU(s) and this machine has {here}; use trainer.devices={here} or fewer"
                          if here else
                          f"trainer.accelerator={trainer_cfg.accelerator} asks for a GPU and this machine has none; "
                          "use trainer=cpu (trainer=ddp_cpu for several processes), or trainer=default, which "
                          "takes a GPU where there is one")
