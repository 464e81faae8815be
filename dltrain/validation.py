"""The one check of a composed config before anything runs: its keys, types and ranges, the arguments of the
callables it names, the devices it asks for, and (for `dltrain validate`) the data files it reads.

Run once per run by the entry that starts it - the dltrain command, or train() and cross_validate() called
in-process - and on its own by `dltrain validate`, which trains and writes nothing.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dltrain.config_check import check_config, check_known_keys
from dltrain.errors import DataError

DATA_FILE_KEYS = ("path", "targets_path", "val_path", "test_path")  # data keys that name a file or folder


def validate(cfg: DictConfig, config_dirs: tuple[Path, ...] = ()) -> None:
    """Refuse, in one line, a config that cannot train as asked: its keys, types and ranges by the schema
    (dltrain.schema, through dltrain.config_check), then the devices and the trainer's and components'
    callables (dltrain.preflight)."""
    check_known_keys(cfg, config_dirs)
    check_config(cfg)
    from dltrain.preflight import check_before_data  # imports torch: after the checks that need none

    check_before_data(cfg)


def check_data_files(cfg: DictConfig) -> list[Path]:
    """The files and folders the data config reads, each refused where it does not exist; a torchvision set's
    files under data.root where the config does not download them. Returns them."""
    from dltrain.data.images import VISION_SETS

    data = OmegaConf.to_container(cfg.data, resolve=True)
    found = []
    for key in DATA_FILE_KEYS:
        if data.get(key):
            path = Path(str(data[key])).expanduser()
            if not path.exists():
                raise DataError(f"data.{key}: no such file or folder {path}")
            found.append(path)
    if data.get("_target_") == "dltrain.data.tables.table" and data.get("path") and data.get("target"):
        _check_table_columns(data)
    name = data.get("name")
    if name in VISION_SETS and data.get("root") and not data.get("download"):
        folder = Path(str(data["root"])).expanduser() / VISION_SETS[name][1]
        if not folder.is_dir():
            raise DataError(f"data={name}: no {folder} (put the files there, or add data.download=true; they come "
                            f"from {VISION_SETS[name][2]})")
        found.append(folder)
    return found


def _check_table_columns(data: dict) -> None:
    """The column keys of a table config against the file's header (no data rows read), refused in the words
    training would use (dltrain.data.tables.check_columns)."""
    from dltrain.data.tables import check_columns, read_header

    path = Path(str(data["path"])).expanduser()
    if not path.is_file():
        return
    check_columns(read_header(path, str(data.get("encoding") or "utf-8")), path, target=data["target"],
                  features=data.get("features"), exclude=data.get("exclude"), categorical=data.get("categorical"),
                  split_column=data.get("split_column"), text_column=data.get("text_column"))
