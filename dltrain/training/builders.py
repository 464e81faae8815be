"""Config -> the TrainingModule's built parts: network, loss, metrics, augmentation, and the optimizer and
scheduler factories (lightning-hydra-template's split: the module gets objects, only this module reads the
config). The config and data spec travel along as the module's record, which a checkpoint stores."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from torch.optim import Optimizer

from dltrain.data.augment import build_augmentation, build_mixing
from dltrain.data.spec import DataSpec
from dltrain.config.instantiate import build
from dltrain.training.losses import build_loss, loss_name
from dltrain.training.metrics import make_metrics
from dltrain.models.build import build_model
from dltrain.training.module import Schedule, TrainingModule


def build_module(config: dict[str, Any], data_spec: dict[str, Any], resumed_settings: dict[str, Any] | None = None,
                 per_image: bool = True) -> TrainingModule:
    """The TrainingModule a resolved config and a data spec (plain containers) describe; `resumed_settings`: the
    optimizer keys a resume changes, set on the restored optimizer when training starts; `per_image=False`: the
    data's loader augments each image itself (a streamed source), the module only whole batches."""
    spec = DataSpec.from_dict(data_spec)
    augment = config["data"].get("augment")
    return TrainingModule(
        network=build_model(config["model"], spec),
        loss=build_loss(config.get("loss"), spec),
        metrics=make_metrics(spec),
        optimizer=build(config["optimizer"], "optimizer"),
        schedule=build_schedule(config.get("scheduler") or {}),
        spec=spec,
        l1=float(config["regularization"]["l1"]),
        augment=build_augmentation(augment, spec.kind, spec.input_shape, per_image, spec.normalize),
        mix=build_mixing(augment, spec.task, spec.num_classes, loss_name(config.get("loss"), spec.task)),
        compile_options=config.get("compile") or {},
        record={"config": config, "data_spec": data_spec},
        resumed_settings=resumed_settings,
    )


def build_schedule(scheduler_cfg: dict[str, Any]) -> Schedule | None:
    """The scheduler group as a Schedule: its factory (a partial, picklable for spawned processes), interval,
    frequency and the metric a plateau scheduler follows; None for scheduler=none."""
    factory = scheduler_cfg.get("scheduler")
    if factory is None:
        return None
    return Schedule(functools.partial(_scheduler, dict(factory)), scheduler_cfg.get("interval", "epoch"),
                    int(scheduler_cfg.get("frequency") or 1), scheduler_cfg.get("monitor"))


def _scheduler(factory: dict[str, Any], optimizer: Optimizer, total_steps: Callable[[], int]):
    """The configured scheduler over `optimizer`; a one-cycle total_steps of null is the whole run's steps."""
    if "total_steps" in factory and factory["total_steps"] is None:
        factory = factory | {"total_steps": total_steps()}
    return build(factory, "scheduler")(optimizer)
