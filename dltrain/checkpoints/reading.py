"""Checkpoints read without running code: refused unless every part is what dltrain writes.

Free of Lightning at import, so a refused checkpoint costs no Lightning import. The module rebuilt from one:
dltrain.training.restore. Writing them: dltrain.checkpoints.writing; the state they carry: dltrain.training.callbacks.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from dltrain.checkpoints.header import checked_file
from dltrain.errors import CheckpointError, one_line
from dltrain.config.trust import check_stored_config, walk

def read_checkpoint(path: str | Path, trusted: Iterable[str] = (), config_dirs: Iterable[Path] = (),
                    network_only: bool = False) -> dict[str, Any]:
    """A checkpoint's contents, loaded with weights_only (plain containers and tensors, never code), whose
    stored config names only callables that dltrain's presets (or the user's `config_dirs`, or `trusted`,
    named on the command line) name, or (`network_only`: for a reader that builds no callback nor logger)
    Lightning's own callbacks and loggers: see dltrain.config.trust."""
    path = checked_file(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(
            f"{path} holds pickled objects beyond weights and plain values, which could run code when loaded; "
            f"refused (only load checkpoints you trust) [{first[:160]}]"
        ) from None
    except Exception as exc:  # torch.load of a file that is not a checkpoint raises any type (KeyError for text)
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated, corrupt or not a checkpoint: "
                              f"{type(exc).__name__}: {one_line(exc)[:200]})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "hyper_parameters" not in checkpoint:
        raise CheckpointError(f"{path} is not a dltrain checkpoint (no state_dict and hyper_parameters)")
    stored, state = checkpoint["hyper_parameters"], checkpoint["state_dict"]
    if not isinstance(stored, dict) or not isinstance(stored.get("config"), dict) \
            or not isinstance(stored.get("data_spec"), dict):
        raise CheckpointError(f"{path} is not a dltrain checkpoint (its hyper_parameters hold no config and "
                              "data_spec mappings)")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: its state_dict is a {type(state).__name__}, not a mapping of tensors")
    wrong = next((key for key, value in state.items() if not isinstance(value, torch.Tensor)), None)
    if wrong is not None:
        raise CheckpointError(f"{path}: state_dict[{wrong!r}] is a {type(state[wrong]).__name__} where a tensor "
                              "belongs; refused")
    stored["config"] = check_stored_config(stored["config"], path, trusted, config_dirs, network_only)
    return checkpoint




def describe(config: dict[str, Any], spec: dict[str, Any], parameters: int) -> str:
    """What a module is for, in a few words: model and size, data, input shape and outputs."""
    outputs = spec["num_classes"] if spec["task"] == "multiclass" else 1
    return (f"model={config['model']['name']} ({parameters:,} parameters) on data={spec['name']} "
            f"({spec['task']}, input {tuple(spec['input_shape'])}, {outputs} output(s))")




def without_start_weights(config: Any) -> Any:
    """`config` with the model's start weights left out (model=torchvision's weights file or download): where a
    checkpoint's weights replace them, they are neither read nor fetched again."""
    model = config.get("model") if isinstance(config, dict) else None
    if isinstance(model, dict) and (model.get("weights") or model.get("download")):
        return {**config, "model": {**model, "weights": None, "download": False}}
    return config




def check_training_state(checkpoint: dict[str, Any], module: torch.nn.Module, optimizer_factory: Any,
                         path: Path) -> None:
    """Refuse a checkpoint to resume from whose training state (what Lightning restores beside the weights:
    counters, loops, callbacks, optimizer state) is not of the kinds Lightning and torch write, before
    training starts: a crafted one would otherwise fail inside Lightning's restore or at the first step.

    The optimizer's state is compared with that of a probe: the same optimizer, one step on a one-value
    parameter, gives each parameter's state keys, and which of them are per-value tensors (the parameter's
    shape) or scalars.
    """
    def fail(what: str) -> CheckpointError:
        return CheckpointError(f"{path}: {what}; refused (resume needs a checkpoint dltrain wrote)")

    for key in ("epoch", "global_step"):
        value = checkpoint.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise fail(f"{key}={value!r} is not a count (an integer >= 0)")
    for key, kind in (("loops", dict), ("callbacks", dict), ("optimizer_states", list), ("lr_schedulers", list)):
        if not isinstance(checkpoint.get(key), kind):
            raise fail(f"{key} is a {type(checkpoint.get(key)).__name__}, not a {kind.__name__}")
    rng = checkpoint["callbacks"].get("RngState", {}).get("torch")
    if rng is not None and not (isinstance(rng, torch.Tensor) and rng.dtype == torch.uint8
                                and rng.shape == torch.get_rng_state().shape):
        raise fail("its random generator state is not a generator state of torch")
    probe = torch.nn.Parameter(torch.zeros(1))
    probe_optimizer = optimizer_factory([probe])
    probe.grad = torch.zeros(1)
    probe_optimizer.step()
    expected = dict(probe_optimizer.state[probe])
    shapes = [p.shape for p in module.parameters()]
    for state in checkpoint["optimizer_states"]:
        groups = state.get("param_groups") if isinstance(state, dict) else None
        if not isinstance(groups, list) or not isinstance(state.get("state"), dict) or not all(
                isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups):
            raise fail("its optimizer state is not torch's (state and param_groups)")
        ids = [i for group in groups for i in group["params"]]
        if sorted(ids) != list(range(len(shapes))):
            raise fail(f"its optimizer state holds {len(ids)} parameters, the network {len(shapes)}")
        for index, entry in state["state"].items():
            if index not in ids or not isinstance(entry, dict) or set(entry) != set(expected):
                raise fail(f"the optimizer state of parameter {index!r} is not that of this optimizer "
                           f"(expected {', '.join(sorted(expected))})")
            for key, value in entry.items():
                if not _like_probe(value, expected[key], shapes[index]):
                    raise fail(f"the optimizer's {key} of parameter {index} is not of the kind and shape it needs")


def _like_probe(value: Any, probe: Any, shape: torch.Size) -> bool:
    """Whether an optimizer state value is of the probe's kind: None, a number, a scalar tensor, or (where the
    probe's is a one-value tensor) a tensor of its parameter's shape."""
    if probe is None or not isinstance(probe, torch.Tensor):
        return value is None if probe is None else isinstance(value, (int, float)) and not isinstance(value, bool)
    if not isinstance(value, torch.Tensor):
        return False
    return value.dim() == 0 if probe.dim() == 0 else value.shape == shape


# A data spec read from a file: each field's type and the values it may hold.
def check_sizes(config: dict[str, Any], state: dict[str, torch.Tensor]) -> None:
    """Refuse a model config asking for more than the file's weights hold: no size above their number of
    values, no list of layer sizes longer than their number of tensors (building it would take the memory or
    time a network that size takes, even on the meta device)."""
    values, tensors = sum(t.numel() for t in state.values()), len(state)
    for path, value in walk(config.get("model"), "model"):
        if isinstance(value, int) and not isinstance(value, bool) and value > max(values, 1):
            raise CheckpointError(f"the checkpoint's config has {path}={value}, more than the {values:,} weight "
                                  "values it holds; refused")
        if isinstance(value, list) and all(isinstance(v, int) for v in value) and len(value) > max(tensors, 1):
            raise CheckpointError(f"the checkpoint's config has {len(value)} entries in {path}, more than the "
                                  f"{tensors} weight tensors it holds; refused")
