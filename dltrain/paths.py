"""Where the shipped configs live, in a source checkout and in an installed wheel."""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def config_dir() -> Path:
    """The folder holding train.yaml and the config groups.

    A wheel carries the top-level conf/ as dltrain/conf; a source checkout (or an editable
    install) reads conf/ beside the package.
    """
    packaged = _PACKAGE_DIR / "conf"
    return packaged if packaged.is_dir() else _PACKAGE_DIR.parent / "conf"
