"""Turn a model config into a module sized for the data, after checking the model fits the task."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import OmegaConf
from torch import nn

from dltrain.data.spec import TEXT, DataSpec
from dltrain.errors import ConfigError
from dltrain.config.instantiate import build
from dltrain.paths import config_dir


def models_for(task: str, kind: str | None = None) -> list[str]:
    """Names of the model presets that fit `task` (their `fits`) and take `kind` of input (their `inputs`)."""
    names = []
    for path in sorted((config_dir() / "model").glob("*.yaml")):
        preset = OmegaConf.load(path)
        if preset.get("name") == "auto":
            continue
        if task in preset.get("fits", []) and (kind is None or kind in preset.get("inputs", [])):
            names.append(path.stem)
    return names


def chosen_model(model_cfg: Mapping[str, Any], spec: DataSpec) -> dict[str, Any]:
    """The model config to train: `model_cfg` itself, or for model=auto the preset its data kind names
    (conf/model/auto.yaml), composed as `model=<preset>` on the command line would compose it."""
    if model_cfg.get("name") != "auto":
        return dict(model_cfg)
    choice = (model_cfg.get("choose") or {}).get(spec.kind)
    if choice is None:
        raise ConfigError(f"model=auto has no model for {spec.kind} data; name one (model=mlp)")
    preset = OmegaConf.to_container(_compose([f"model={choice}"]).model, resolve=True)
    given = {key: value for key, value in model_cfg.items() if key not in ("name", "choose") and value is not None}
    lacking = [key for key in given if key not in preset]
    if lacking:
        raise ConfigError(f"model=auto chose {choice} for {spec.kind} data, which has no {lacking[0]}; name a "
                          f"model that has it (model=mlp)")
    return preset | given


def _compose(overrides: list[str]):
    """The train config with `overrides`: in the running command's Hydra context (its config folders), or
    in-process from the shipped ones."""
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return compose(config_name="train", overrides=overrides)
    from dltrain.config.compose import load_config

    return load_config(overrides)


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
    if spec.kind == TEXT:  # the model reads the tokens' embeddings as a sequence
        from dltrain.data.text import TextEncoder
        from dltrain.models.embedding import TokenEmbedding

        encoder = TextEncoder.from_dict(spec.encoder)
        network = build(cfg, f"model={name}", input_shape=(encoder.max_length, encoder.embedding_size),
                        num_outputs=spec.num_outputs, _convert_="all")
        return TokenEmbedding(encoder.num_tokens, encoder.embedding_size, network)
    return build(cfg, f"model={name}", input_shape=spec.input_shape, num_outputs=spec.num_outputs, _convert_="all")
