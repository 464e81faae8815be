"""`dltrain validate <overrides>`: the config a run of these overrides would train, composed with Hydra's compose
API from the same config folders, checked as a run checks it (keys, types, callables, devices, the data's files,
then the data and model built), with nothing trained or written."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, open_dict

from dltrain.errors import ConfigError
from dltrain.paths import config_dir

CONFIG_DIR_FLAGS = ("--config-dir", "-cd")


def validate_command(args: list[str]) -> None:
    """Check the config of `args` (overrides, and --config-dir as the dltrain command takes it) and say it is
    valid in one line; a mistake is raised as a run raises it (the dltrain command reports it)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from dltrain.config.resume import find_run_dir, register_resolvers, resumed_config
    from dltrain.training.preflight import validate

    register_resolvers()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        composed = compose("train", overrides=_parse(args), return_hydra_config=True)
    HydraConfig.instance().set_config(composed)  # the presets chosen, as a run's job sees them
    config_dirs = tuple(Path(s.path) for s in composed.hydra.runtime.config_sources if s.schema == "file")
    cfg = _without_hydra(composed)
    if cfg.resume:
        cfg = resumed_config(find_run_dir(cfg.resume), list(composed.hydra.overrides.task), config_dirs)
    validate(cfg, config_dirs)
    _say_valid(cfg)


def _parse(args: list[str]) -> list[str]:
    """The overrides of `args`, a --config-dir folder among them as a hydra.searchpath entry after the shipped
    presets (where a run's Hydra puts it: a preset of a shipped name is the shipped one); -m and other Hydra flags
    are refused."""
    overrides, user_dir, rest = [], None, iter(args)
    for arg in rest:
        flag, sep, value = arg.partition("=")
        if flag in CONFIG_DIR_FLAGS:
            user_dir = Path(value if sep else next(rest, "")).expanduser().resolve()
            if not user_dir.is_dir():
                raise ConfigError(f"--config-dir={user_dir}: no such folder")
        elif arg in ("-m", "--multirun"):
            raise ConfigError("dltrain validate checks one config: leave out -m (validate a sweep's combinations one "
                              "at a time)")
        elif arg.startswith("-"):
            raise ConfigError(f"dltrain validate takes overrides and --config-dir, not {arg}")
        else:
            overrides.append(arg)
    if user_dir is None:
        return overrides
    given = next((o for o in overrides if o.startswith("hydra.searchpath=")), None)
    paths = [p.strip() for p in given.partition("=")[2].strip("[]").split(",") if p.strip()] if given else []
    return [o for o in overrides if o is not given] + [f"hydra.searchpath=[{','.join([*paths, f'file://{user_dir}'])}]"]


def _without_hydra(composed: DictConfig) -> DictConfig:
    """The job's config: the composed one without Hydra's own node, as a run's job receives it."""
    cfg = composed.copy()
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def _say_valid(cfg: DictConfig) -> None:
    """`dltrain validate`'s answer for a config that passed every check, the data's files included, and the
    checks a run makes once its data and model are built (a model's keys its constructor refuses, an input size
    its forward pass cannot take)."""
    from dltrain.quiet import quiet_libraries
    from dltrain.report.terminal import presets
    from dltrain.training.preflight import check_data_files
    from dltrain.rundir.layout import RunDir
    from dltrain.training.train import checked_data_and_module, checkpoint_to_resume

    files = check_data_files(cfg)
    quiet_libraries()  # the checks a run makes on its data and model (the model's keys among them), as train does
    last = RunDir(cfg.resume).last_checkpoint if cfg.resume else None
    checked_data_and_module(cfg, resumed=checkpoint_to_resume(cfg, last) if last and last.is_file() else None)
    where = f"; data files: {', '.join(map(str, files))}" if files else ""
    print(f"dltrain validate: the config is valid ({'resuming ' + cfg.resume if cfg.resume else presets()})"
          f"{where}; nothing was trained or written")
