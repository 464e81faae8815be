"""Turn a model config into a module sized for the data, after checking the model fits the task."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from dltrain.errors import ConfigError, one_line
from dltrain.paths import config_dir
from dltrain.tasks import DataSpec

# Keys of a model preset that describe it rather than being constructor arguments.
_META_KEYS = ("name", "fits")


def models_for_task(task: str) -> list[str]:
    """Names of the model presets whose `fits` list holds `task`."""
    names = []
    for path in sorted((config_dir() / "model").glob("*.yaml")):
        if task in OmegaConf.load(path).get("fits", []):
            names.append(path.stem)
    return names


def build_model(model_cfg: Mapping[str, Any], spec: DataSpec) -> nn.Module:
    """Instantiate the model preset with input and output sizes taken from the data."""
    cfg = dict(model_cfg)
    name, fits = cfg.pop("name"), list(cfg.pop("fits"))
    if spec.task not in fits:
        raise ConfigError(
            f"model={name} fits {' or '.join(fits)} data, but data={spec.name} is a {spec.task} task; "
            f"models that fit it: {', '.join(models_for_task(spec.task))}"
        )
    try:
        return instantiate(cfg, input_shape=spec.input_shape, num_outputs=spec.num_outputs, _convert_="all")
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, ConfigError):
            raise cause from None
        raise ConfigError(f"model={name} cannot be built: {one_line(cause or exc)}") from exc
