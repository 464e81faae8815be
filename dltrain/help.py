"""`dltrain --help`: the help template of train.yaml with every config group and its options.

Hydra renders the same template, but lists the options by copying its whole config cache once per
config group (its own groups included), which makes --help slow (benchmarks/performance.py times it). The
config folders say the same thing at once, so they are read directly.
"""

from __future__ import annotations

from omegaconf import OmegaConf

from dltrain.paths import config_dir


def config_groups() -> dict[str, list[str]]:
    """Each config group (a folder of conf/, Hydra's own settings excluded) with its options."""
    root = config_dir()
    return {
        folder.name: sorted(path.stem for path in folder.glob("*.yaml"))
        for folder in sorted(root.iterdir())
        if folder.is_dir() and folder.name != "hydra" and any(folder.glob("*.yaml"))
    }


def render_help() -> str:
    template = OmegaConf.load(config_dir() / "train.yaml").hydra.help.template
    groups = "\n".join(f"{group}: {', '.join(options)}" for group, options in config_groups().items())
    return template.replace("$APP_CONFIG_GROUPS", groups)
