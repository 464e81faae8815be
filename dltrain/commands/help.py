"""`dltrain --help` and the README's key reference, both written from dltrain.config.schema.

`dltrain --help` fills train.yaml's help template with every config group and its options, and the keys of
dltrain's own sections (their type, range, default and meaning). Hydra renders the same template, but lists
the options by copying its whole config cache once per config group, which makes --help slow
(benchmarks/performance.py times it); the config folders say the same at once, so they are read directly.
`dltrain --help model=transformer` lists one preset's keys, from its callable's signature.
"""

from __future__ import annotations

import re
import typing
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dltrain.paths import config_dir
from dltrain.config.schema import (GROUPS, PRESET_KEYS, TUNERS, Section, Target, TrainConfig, describe,
                                   signature_types)

NOT_ARGUMENTS = ("_target_", "_partial_", "defaults", *PRESET_KEYS)  # a preset's keys that no callable takes
_COMMENT = re.compile(r"^(\w+):[^#]*#\s*(.+)$")


def config_groups() -> dict[str, list[str]]:
    """Each config group (a folder of conf/, Hydra's own settings excluded) with its options."""
    root = config_dir()
    return {
        folder.name: sorted(path.stem for path in folder.glob("*.yaml"))
        for folder in sorted(root.iterdir())
        if folder.is_dir() and folder.name != "hydra" and any(folder.glob("*.yaml"))
    }


def _shown(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value).replace(" ", "")


def section_rows(section: type[Section], values: Any, where: str = "") -> list[tuple[str, str, str, str]]:
    """(key, expected value, default, meaning) for each field of `section`, nested sections' fields in turn."""
    rows = []
    hints = typing.get_type_hints(section, include_extras=True)
    for name, field in section.model_fields.items():
        key = f"{where}.{name}" if where else name
        value = (values or {}).get(name)
        annotation = hints[name]
        if annotation == Target:  # its keys are its callable's: dltrain --help <group>=<option>
            continue
        if isinstance(annotation, type) and issubclass(annotation, Section):
            rows += section_rows(annotation, value, key)
        else:
            rows.append((key, describe(annotation), _shown(value), field.description or ""))
    return rows


def own_key_rows() -> list[tuple[str, str, str, str]]:
    """The keys dltrain itself reads, with the shipped defaults (data's from the default data preset)."""
    root = config_dir()
    top = OmegaConf.to_container(OmegaConf.load(root / "train.yaml"))
    defaults = {next(iter(entry)): entry[next(iter(entry))] for entry in top["defaults"] if isinstance(entry, dict)}
    rows = section_rows(TrainConfig, top)
    for group, section in GROUPS.items():
        preset = OmegaConf.to_container(OmegaConf.load(root / group / f"{defaults[group]}.yaml"))
        rows += section_rows(section, preset, group)
    return rows


def _preset(group: str, option: str) -> tuple[dict[str, Any], dict[str, str]]:
    """conf/<group>/<option>.yaml over the presets of its group that its defaults list names, and the comment
    on each key's line."""
    path = config_dir() / group / f"{option}.yaml"
    own = OmegaConf.to_container(OmegaConf.load(path))
    preset: dict[str, Any] = {}
    comments: dict[str, str] = {}
    for parent in own.pop("defaults", []):
        if isinstance(parent, str) and parent != "_self_":
            preset, comments = _preset(group, parent)
    comments = comments | {m[1]: m[2].strip() for m in map(_COMMENT.match, path.read_text().splitlines()) if m}
    return preset | own, comments


def preset_rows(group: str, option: str) -> list[tuple[str, str, str, str]]:
    """(key, expected value, value in the preset, its comment there) for each key of conf/<group>/<option>.yaml:
    a callable's arguments typed by its signature, the group's own keys by the schema; a preset of the global
    package (experiment, debug, hparams_search) by the keys it sets."""
    preset, comments = _preset(group, option)
    path = config_dir() / group / f"{option}.yaml"
    if path.read_text().lstrip().startswith("# @package _global_"):
        chosen = [(str(key).removeprefix("override").strip(" /"), option) for entry in OmegaConf.load(path).get("defaults", [])
                  if isinstance(entry, DictConfig) for key, option in entry.items()]
        return [(group_key, "the preset it chooses", str(value), "") for group_key, value in chosen] + [
            (key, "set by this preset", _shown(value), "") for key, value in _flat(preset)]
    if group == "tune":  # dltrain's own keys, by what the preset finds
        return section_rows(TUNERS[preset["find"]], preset, group)
    section = GROUPS.get(group)
    rows = section_rows(section, preset, group) if section is not None and group != "data" else []
    if group == "callbacks":  # named entries, each a callable of its own
        return [row for name, node in preset.items() if isinstance(node, dict)
                for row in _argument_rows(f"callbacks.{name}", node, {})]
    node = (preset.get(group) or {}) if group == "scheduler" else preset
    return _argument_rows(f"{group}.{group}" if group == "scheduler" else group, node, comments,
                          skip=tuple(GROUPS["data"].model_fields) if group == "data" else ()) + rows


def _argument_rows(prefix: str, node: dict[str, Any], comments: dict[str, str], skip: tuple[str, ...] = ()
                   ) -> list[tuple[str, str, str, str]]:
    """A `_target_` node's keys, each with what its callable's signature takes there."""
    from hydra.utils import get_object

    hints = signature_types(get_object(node["_target_"]))[1] if node.get("_target_") else {}
    return [(f"{prefix}.{key}", describe(hints[key]) if key in hints else "any value its callable takes",
             _shown(value), comments.get(key, ""))
            for key, value in node.items() if key not in NOT_ARGUMENTS and key not in skip]


def _flat(node: dict[str, Any], where: str = "") -> list[tuple[str, Any]]:
    """Nested keys as dotted paths with their values."""
    pairs = []
    for key, value in node.items():
        path = f"{where}.{key}" if where else str(key)
        pairs += _flat(value, path) if isinstance(value, dict) and value else [(path, value)]
    return pairs


def _table(rows: list[tuple[str, str, str, str]]) -> str:
    width = max(len(key) for key, *_ in rows) + 2
    return "\n".join(f"  {key:<{width}}{expected} ({default})" + (f": {meaning}" if meaning else "")
                     for key, expected, default, meaning in rows)


def render_help(args: list[str] | tuple[str, ...] = ()) -> str:
    """The whole help; with `group=option` arguments, those presets' keys instead."""
    chosen = [arg.split("=", 1) for arg in args if "=" in arg and not arg.startswith("-")]
    if chosen:
        groups = config_groups()
        parts = []
        for group, option in chosen:
            if option not in groups.get(group, []):
                return f"dltrain: no preset {group}={option}; the groups and options: dltrain --help"
            rows = preset_rows(group, option)
            parts.append(f"== {group}={option} ==\n" + (_table(rows) if rows else "  (no keys of its own)"))
        return "\n\n".join(parts)
    template = OmegaConf.load(config_dir() / "train.yaml").hydra.help.template
    groups = "\n".join(f"{group}: {', '.join(options)}" for group, options in config_groups().items())
    return template.replace("$APP_CONFIG_GROUPS", groups).replace("$APP_KEYS", _table(own_key_rows()))


def markdown_reference() -> str:
    """The README's key reference: dltrain's own keys, then the model presets' (each key once, with the
    presets that have it and their values)."""
    lines = ["| key | value | default | meaning |", "| --- | --- | --- | --- |"]
    lines += [f"| `{key}` | {_cell(expected)} | `{default}` | {_cell(meaning)} |" for key, expected, default, meaning
              in own_key_rows()]
    models: dict[tuple[str, str], list[str]] = {}
    meanings: dict[tuple[str, str], str] = {}  # per row: presets that type a key differently mean it differently
    for option in config_groups()["model"]:
        if option == "auto":
            continue
        for key, expected, default, meaning in preset_rows("model", option):
            models.setdefault((key, expected), []).append(f"{option}: `{default}`")
            meanings.setdefault((key, expected), meaning)
    lines += [f"| `{key}` | {_cell(expected)} | {', '.join(values)} | {_cell(meanings[key, expected])} |"
              for (key, expected), values in sorted(models.items())]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "&#124;")
