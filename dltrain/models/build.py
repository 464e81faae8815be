"""Turn a model config into a module sized for the data, after checking the model fits the task."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict
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


def choose_model(cfg: DictConfig, kind: str) -> tuple[DictConfig, dict[str, Any]]:
    """The run's config record: `cfg` with the model to train (model=auto: the preset the data's `kind` chooses,
    with the settings its conf/tuning file gives it), resolved once and read-only from here on. Returns it and
    what model=auto chose, to be said and recorded ({} for a model named on the command line)."""
    model = OmegaConf.to_container(cfg.model, resolve=True)
    auto = model.get("name") == "auto"
    chosen, tuning = auto_model(cfg, model, kind) if auto else (dict(model), ("", {}))
    record = copy.deepcopy(cfg)
    with open_dict(record):
        record.model = chosen
        for key, value in tuning[1].items():
            OmegaConf.update(record, key, value, merge=False)
    OmegaConf.resolve(record)
    OmegaConf.set_readonly(record, True)
    if not auto:
        return record, {}
    return record, {"model": chosen["name"], **({"tuning": tuning[0], "tuned": tuning[1]} if tuning[1] else {})}


def auto_model(cfg: DictConfig, model: dict[str, Any], kind: str) -> tuple[dict[str, Any], tuple[str, dict[str, Any]]]:
    """model=auto's choice for `kind` data (conf/model/auto.yaml) as `model=<choice>` composes it, the model
    keys the run sets kept; and the settings (dotted key -> value) that conf/tuning gives that choice with the
    run's optimizer, with their file's name (<choice>_<optimizer>). The config group `tuning` is composed by
    the model's name, which model=auto only knows once the data has loaded, so the config is composed again
    with the choice. A key the command line, an experiment or a debug preset sets keeps its value (composed
    after the tuning, they win over it)."""
    from hydra.core.hydra_config import HydraConfig

    from dltrain.config.compose import given_overrides

    choice = (model.get("choose") or {}).get(kind)
    if choice is None:
        raise ConfigError(f"model=auto has no model for {kind} data; name one (model=mlp)")
    if HydraConfig.initialized():  # the command's own overrides, composed again with the chosen model
        given = list(HydraConfig.get().overrides.task)
    elif (given := given_overrides(cfg)) is None:
        raise ConfigError("model=auto chooses its model as the config is composed again with it: compose the "
                          "config with dltrain.config.load_config, or name a model (model=mlp)")
    given = [o for o in given if not o.lstrip("+~").partition("=")[0].partition(".")[0] == "model"]
    after = _compose([*given, f"model={choice}"])  # `cfg` is the same composition with model=auto
    preset = OmegaConf.to_container(after.model, resolve=True)
    kept = {key: value for key, value in model.items() if key not in ("name", "choose") and value is not None}
    lacking = [key for key in kept if key not in preset]
    if lacking:
        raise ConfigError(f"model=auto chose {choice} for {kind} data, which has no {lacking[0]}; name a "
                          f"model that has it (model=mlp)")
    optimizer = _preset_building("optimizer", OmegaConf.select(after, "optimizer._target_"))
    after, before = _flat(after), _flat(cfg)
    return preset | kept, (f"{choice}_{optimizer}", {
        key: value for key, value in after.items()
        if not key.startswith(("model.", "hydra.")) and before.get(key, _UNSET) != value})


_UNSET = object()


def _flat(cfg: Any) -> dict[str, Any]:
    """Every leaf of a config as dotted key -> value, interpolations left as written."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = node

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    return flat


def _preset_building(group: str, target: str | None) -> str | None:
    """The one preset of a config group whose _target_ is `target` (None: none, or several)."""
    names = [path.stem for path in sorted((config_dir() / group).glob("*.yaml"))
             if OmegaConf.load(path).get("_target_") == target]
    return names[0] if len(names) == 1 else None


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
