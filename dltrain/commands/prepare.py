"""`dltrain-prepare data=<source> data.path=... output=DIR [overwrite=true]`: a data source written once into
LitData's optimized format, for `dltrain data=streaming data.path=DIR` (or the folder copied to s3://...).

The data keys are the training command's (data=image_folder data.path=photos/ data.image_size=[64,64],
data=csv data.path=t.csv data.target=label, seed=, data.val_fraction=, data.test_fraction=), composed from
the same presets. The split is drawn here as training in memory draws it (same seed and fractions, same rows)
and written as DIR/train, DIR/val and DIR/test; DIR/dltrain.json holds what training needs to know (task,
classes, input shape, the table encoding fitted on the training rows, the image size and channels). A progress
bar shows each split's conversion.
"""

from __future__ import annotations

import os
import sys

from dltrain.commands.shared import fail, parse_keys, skip_final_collection, tool_help
from dltrain.errors import ConfigError

KEYS = {"output": None, "overwrite": "false"}


def prepare_command(overrides: list[str], output: str, overwrite: bool) -> dict:
    """Compose the data config of `overrides` (as `dltrain` would), check it, and write it into `output`."""
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from dltrain.config.checks import check_config
    from dltrain.config.compose import load_config
    from dltrain.data.litdata_writer import prepare
    from dltrain.quiet import quiet_libraries
    from dltrain.training.preflight import check_data_files

    quiet_libraries()
    try:
        cfg = load_config(overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(str(exc).strip().splitlines()[0]) from None
    if cfg.data.get("_target_") == "dltrain.data.litdata_source.prepared":
        raise ConfigError("data=streaming is already prepared: give the source (data=image_folder, data=csv, ...)")
    check_config(cfg)
    check_data_files(cfg)
    description = prepare(OmegaConf.to_container(cfg.data, resolve=True), cfg.seed, output, overwrite)
    rows = description["rows"]
    print(f"dltrain-prepare: {output}: train {rows['train']:,} / val {rows['val']:,} / test {rows['test']:,} rows "
          f"of {description['spec']['name']} ({description['spec']['task']}, input "
          f"{tuple(description['spec']['input_shape'])}); train with: dltrain data=streaming data.path={output}")
    return description


def main() -> None:
    argv = sys.argv[1:]
    try:
        if any(arg in ("-h", "--help") for arg in argv):
            print(tool_help(__doc__, KEYS, ("output",)) + "\n  data=... and data.<key>=...: the data config, as "
                  "for dltrain (dltrain --help data=<preset> lists a preset's keys)")
            return
        own = [arg for arg in argv if arg.partition("=")[0] in KEYS]
        keys = parse_keys(own, KEYS, ("output",))
        if keys["overwrite"] not in ("true", "false"):
            raise ConfigError(f"overwrite={keys['overwrite']}: expected true or false")
        prepare_command([arg for arg in argv if arg not in own], keys["output"], keys["overwrite"] == "true")
    except Exception as exc:
        fail("dltrain-prepare", exc, full_error=os.environ.get("HYDRA_FULL_ERROR") == "1")
    finally:
        skip_final_collection()
