"""A trained module rebuilt from its checkpoint (read and checked by dltrain.checkpoints.reading): its weights
checked against the module its stored config builds, on the meta device, before any memory is taken."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dltrain.checkpoints.reading import (CheckpointError, describe, read_checkpoint, without_start_weights,
                                         check_sizes)
from dltrain.data.spec_check import checked_spec
from dltrain.config.checks import check_config
from dltrain.errors import ConfigError, one_line
from dltrain.rundir.layout import RunDir

if TYPE_CHECKING:
    from dltrain.training.module import TrainingModule

CALIBRATION_KEY = "dltrain_calibration"  # the best checkpoint's temperature, added once training has ended


def open_checkpoint(ckpt_path: str | Path, trust: str | None = None
                    ) -> tuple[Path, Path, dict[str, Any], TrainingModule]:
    """(checkpoint file, run directory, contents, rebuilt module) of a checkpoint or run directory, as the
    commands that read checkpoints take it; `trust`: comma-separated callables the user vouches for (their own
    code, named on the command line), which the stored config may name beside dltrain's presets."""
    path, run = RunDir.of_checkpoint(ckpt_path)
    trusted = [name.strip() for name in (trust or "").split(",") if name.strip()]
    checkpoint = read_checkpoint(path, trusted, network_only=True)  # these commands build no callback nor logger
    return path, run.path, checkpoint, load_module(checkpoint)


def load_module(checkpoint: dict[str, Any], config: dict[str, Any] | None = None, spec: dict | None = None
                ) -> TrainingModule:
    """The TrainingModule of a checkpoint (from read_checkpoint), rebuilt from its stored config (or the given
    one) once check_weights_fit has passed, and loaded strictly."""
    config, spec = check_weights_fit(checkpoint, config, spec)
    from dltrain.training.builders import build_module

    module = build_module(config, spec)
    module.load_state_dict(checkpoint["state_dict"], strict=True)
    module.temperature = stored_temperature(checkpoint)
    return module


def stored_temperature(checkpoint: dict[str, Any]) -> float:
    """The temperature a completed run's calibration stored in its best checkpoint (1: none), refused unless a
    finite positive number (the file is data)."""
    import math

    entry = checkpoint.get(CALIBRATION_KEY)
    if entry is None:
        return 1.0
    temperature = entry.get("temperature") if isinstance(entry, dict) else None
    if not isinstance(temperature, float) or not math.isfinite(temperature) or temperature <= 0:
        raise CheckpointError(f"the checkpoint's {CALIBRATION_KEY} entry holds no positive temperature "
                              f"({str(entry)[:80]}): not a checkpoint dltrain wrote")
    return temperature


def check_weights_fit(checkpoint: dict[str, Any], config: dict[str, Any] | None = None,
                      spec: dict | None = None, network_only: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """Refuse a checkpoint whose weights do not fit the module its stored config (or the given one) builds;
    returns that config and data spec. `network_only`: the weights are the network's alone (model.*), as an
    export's safetensors file holds them.

    The module is built on the meta device, which allocates nothing, and its tensors' names, shapes and
    dtypes compared with the file's: a crafted data spec or config asking for a huge network is refused
    before any memory is taken, and the real module holds no more than the file's own weights.
    """
    stored = checkpoint["hyper_parameters"]
    state = checkpoint["state_dict"]
    from_file = config is None
    config, spec = config or stored["config"], spec or stored["data_spec"]
    config = without_start_weights(config)
    try:
        if from_file:
            spec = checked_spec(spec)
            check_sizes(config, state)
            try:
                # the logger is data here (nothing logs): its package need not be installed where this runs
                check_config(OmegaConf.create({**config, "logger": None}))
            except ConfigError as exc:
                raise CheckpointError(f"the checkpoint's stored config is not valid: {exc}; refused") from None
        from dltrain.training.builders import build_module  # Lightning's import: only once the cheap checks have passed

        with torch.device("meta"):
            expected = {key: value for key, value in build_module(config, spec).state_dict().items()
                        if not network_only or key.startswith("model.")}
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OmegaConfBaseException) as exc:
        if not from_file:
            raise
        raise CheckpointError(f"the checkpoint's stored config or data spec is malformed ({type(exc).__name__}: "
                              f"{one_line(exc)[:200]}); refused") from None
    asked = describe(config, spec, sum(v.numel() for k, v in expected.items() if k.startswith("model.")))
    if set(expected) != set(state):
        if from_file:
            raise CheckpointError(f"the checkpoint's weights do not fit the network its own config describes "
                                  f"({asked}); refused")
        trained = sum(v.numel() for k, v in state.items() if k.startswith("model."))
        raise CheckpointError(
            f"the checkpoint was trained for {describe(stored['config'], stored['data_spec'], trained)}, "
            f"but {asked} was asked"
        )
    for key, want in expected.items():
        got = state[key]
        if got.shape != want.shape or got.dtype != want.dtype:
            raise CheckpointError(
                f"the checkpoint's {key} is a {got.dtype} tensor of shape {tuple(got.shape)}, but {asked} has a "
                f"{want.dtype} tensor of shape {tuple(want.shape)} there; refused")
    return config, spec
