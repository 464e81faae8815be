"""What a config that arrives in a file may ask for: only the callables dltrain's own presets name.

A checkpoint's stored config and a run directory's config.yaml are data. Built with Hydra's instantiate,
their `_target_` keys would choose which callables run, with which arguments; `weights_only` loading does
nothing about that. So before anything is built from such a config, every `_target_` in it is checked
against an allowlist read from the shipped conf/ folder: each callable at the place its preset puts it (a
data source under `data`, an optimizer under `optimizer`, ...). The command line and the config folders the
user names are trusted: what the user vouches for there is passed as `trusted` targets.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from dltrain.errors import UserError
from dltrain.paths import config_dir

# Groups whose presets hold named entries (callbacks.early_stopping, ...): any name may hold any of their targets.
NAMED_ENTRIES = ("callbacks",)
# Where a stored config names what only training builds, and the Lightning package whose own classes (its
# __all__) may stand there for a command that builds only the network, its data and its predictions
# (dltrain-eval, -predict, -export, -serve): to those, a Lightning callback or logger a run used is data.
LIGHTNING_OWN = {"callbacks.*": "pytorch_lightning.callbacks", "logger": "pytorch_lightning.loggers"}
_PACKAGE = re.compile(r"^#\s*@package\s+(\S+)", re.MULTILINE)
# dltrain's own callables whose module has moved, by the name a config stored by an earlier dltrain gives them
# (a checkpoint, a run's config.yaml, an export's model_config.json): read under their new name before the
# allowlist check, so that such a file still loads; a name not in this table is checked as it stands.
MOVED_TARGETS = {"dltrain.losses.SoftTargetKLDiv": "dltrain.training.losses.SoftTargetKLDiv"}


class UntrustedConfig(UserError):
    """A config from a file that names code dltrain's presets do not name, or asks to compute its values."""


def _place(path: str) -> str:
    """Where a `_target_` sits, as the allowlist keys it: callbacks.<any name> is callbacks.*."""
    head, _, rest = path.partition(".")
    if head in NAMED_ENTRIES and rest:
        return f"{head}.*"
    return path


def walk(node: Any, path: str = "") -> Iterable[tuple[str, Any]]:
    """(key path, value) of every value in a nested config of mappings and lists, containers included:
    model.hidden_sizes, then model.hidden_sizes[0], ..."""
    if path:
        yield path, node
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from walk(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            yield from walk(value, f"{path}[{index}]")


def _targets(config: Any) -> Iterable[tuple[str, Any]]:
    """(path of the mapping, callable) of every `_target_` in a nested config."""
    for path, value in walk(config):
        if path == "_target_" or path.endswith("._target_"):
            yield path.removesuffix("_target_").removesuffix("."), value


@lru_cache(maxsize=8)
def preset_targets(root: Path) -> frozenset[tuple[str, str]]:
    """(place, callable) of every `_target_` in the presets under `root` (a config folder), each at the
    package its file fills."""
    import yaml

    # libyaml's safe loader where PyYAML has it: the same mappings as OmegaConf.load gives (resolve=False) for
    # _target_ strings, some twenty times faster, and every run reads these files once to test its checkpoint.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    allowed = set()
    for file in sorted(root.rglob("*.yaml")):
        group = file.parent.relative_to(root).as_posix().replace("/", ".")
        text = file.read_text()
        declared = _PACKAGE.search(text)
        package = declared.group(1) if declared else group
        package = "" if package == "_global_" else package
        content = yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader: no tag builds an object
        if isinstance(content, dict):
            content.pop("defaults", None)
        for path, target in _targets(content):
            allowed.add((_place(".".join(p for p in (package, path) if p)), str(target)))
    return frozenset(allowed)


def renamed_targets(config: Any) -> Any:
    """A copy of a nested config of mappings and lists with each moved `_target_` (MOVED_TARGETS) renamed."""
    if isinstance(config, Mapping):
        return {key: (MOVED_TARGETS.get(value, value) if key == "_target_" and isinstance(value, str)
                      else renamed_targets(value)) for key, value in config.items()}
    if isinstance(config, (list, tuple)):
        return [renamed_targets(value) for value in config]
    return config


def lightning_own(place: str, target: Any) -> bool:
    """Whether `target` is exactly one of Lightning's own callback or logger classes, at the place that holds
    them (LIGHTNING_OWN): <package>.<name> with the name in the package's __all__, so no longer path through it
    reaches anything else."""
    package = LIGHTNING_OWN.get(place)
    if package is None or not isinstance(target, str) or target.rpartition(".")[0] != package:
        return False
    import importlib

    return target.rpartition(".")[2] in getattr(importlib.import_module(package), "__all__", ())


def check_stored_config(config: Mapping[str, Any], source: str | Path, trusted: Iterable[str] = (),
                        config_dirs: Iterable[Path] = (), network_only: bool = False) -> dict[str, Any]:
    """The config from `source` (a file) with its moved targets renamed (renamed_targets), once checked:
    refuse, in one line naming the key and the callable, one that names a `_target_` no preset names at that
    place, or holds an interpolation (${...}: a resolver would compute the value when it is built). The
    presets are the shipped ones and those of the user's `config_dirs`; `trusted` holds callables the user
    named on the command line. `network_only`: the reader builds no callback nor logger, so Lightning's own
    there pass too (lightning_own); a resume, which builds them, passes False."""
    if not isinstance(config, Mapping):
        raise UntrustedConfig(f"{source} holds no config (a {type(config).__name__} where a mapping belongs)")
    config = renamed_targets(config)
    trusted = set(trusted)
    allowed = preset_targets(config_dir()).union(*(preset_targets(Path(d)) for d in config_dirs))
    for path, target in _targets(config):
        if target in trusted or (network_only and lightning_own(_place(path), target)):
            continue
        if not isinstance(target, str) or (_place(path), target) not in allowed:
            places = sorted(t for p, t in allowed if p == _place(path))
            expected = (f"at {path} dltrain's presets name only {', '.join(places)}" if places
                        else f"no dltrain preset names a callable at {path}")
            raise UntrustedConfig(
                f"{source} asks to build {path or 'the config'} with _target_={target!r}, which is not dltrain's "
                f"own: refused, nothing was built ({expected}; a file's config may name only those - name your "
                "own code on the command line, see the README's Security section)")
    for path, value in walk(config):
        if isinstance(value, str) and "${" in value:
            raise UntrustedConfig(
                f"{source} holds an interpolation at {path} ({value!r}): a stored config holds resolved values "
                "only, so this file was not written by dltrain; refused, nothing was built")
    return config


def targets_of(config: Mapping[str, Any]) -> set[str]:
    """The callables a config names (a config the user gave, so trusted where a file repeats it)."""
    return {target for _, target in _targets(config) if isinstance(target, str)}
