"""Turn a model config into a module sized for the data, after checking the model fits the task."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import OmegaConf
from torch import nn

from dltrain.errors import ConfigError
from dltrain.instantiate import build
from dltrain.paths import config_dir
from dltrain.tasks import DataSpec

def models_for(task: str, kind: str | None = None) -> list[str]:
    """Names of the model presets that fit `task` (their `fits`) and take `kind` of input (their `inputs`)."""
    names = []
    for path in sorted((config_dir() / "model").glob("*.yaml")):
        preset = OmegaConf.load(path)
        if task in preset.get("fits", []) and (kind is None or kind in preset.get("inputs", [])):
            names.append(path.stem)
    return names


def build_model(model_cfg: Mapping[str, Any], spec: DataSpec) -> nn.Module:
    """Instantiate the model preset with input and output sizes taken from the data."""
    cfg = dict(model_cfg)
    name, fits, inputs = cfg.pop("name"), list(cfg.pop("fits")), list(cfg.pop("inputs"))
    if spec.task not in fits:
        raise ConfigError(
            f"model={name} fits {' or '.join(fits)} data, but data={spec.name} is a {spec.task} task; "
            f"models that fit it: {', '.join(models_for(spec.task, spec.kind))}"
        )
    if spec.kind not in inputs:
        raise ConfigError(
            f"model={name} takes {' or '.join(inputs)} input, but data={spec.name} is a {spec.kind}; "
            f"models that fit it: {', '.join(models_for(spec.task, spec.kind))}"
        )
    return build(cfg, f"model={name}", input_shape=spec.input_shape, num_outputs=spec.num_outputs, _convert_="all")
